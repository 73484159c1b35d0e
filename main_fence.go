package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/peerstack/peerstack/node"
)

// fenceGuardCmd is the guard the daemon starts in its own session: it
// kills the HA servers' QEMUs once the daemon stops renewing the heartbeat
// file past T_fence (docs/ha.md). It is not meant to be run by hand.
func fenceGuardCmd() *cobra.Command {
	var heartbeat, lock, dataDir, watchdog, logLevel string
	c := &cobra.Command{
		Use:    "fence-guard",
		Short:  "Kill this host's HA VMs when its daemon loses quorum contact (started by the daemon)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			// SIGINT and SIGHUP are ignored: the guard must outlive a
			// daemon stop (the unit's KillMode=process signals only the
			// daemon). SIGTERM comes at system shutdown, to every process
			// left: the guard then ends, disarming its watchdog, once no
			// HA VM it lists is alive (their QEMUs got the same SIGTERM);
			// SIGKILLed while armed, it would have the host reset in the
			// middle of a slow shutdown.
			signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM)
			stop := make(chan struct{})
			go func() { <-term; close(stop) }()
			return node.RunGuard(context.Background(), heartbeat, lock, dataDir, watchdog, stop, log.With("sub", "fence-guard", "pid", os.Getpid()))
		},
	}
	c.Flags().StringVar(&heartbeat, "heartbeat", "", "the heartbeat file the daemon writes")
	c.Flags().StringVar(&lock, "lock", "", "the lock file that keeps one guard per host")
	c.Flags().StringVar(&dataDir, "data-dir", "", "the daemon's data dir: the guard exits once its identity is gone or has left")
	c.Flags().StringVar(&watchdog, "watchdog", "", "the watchdog device to pet while the lease is valid (the daemon's --watchdog)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = c.MarkFlagRequired("heartbeat")
	_ = c.MarkFlagRequired("lock")
	return c
}

// fenceSleepCmd is what the package's systemd-sleep hook runs
// (packaging/peerstack.sleep): with "pre" before the host suspends or
// hibernates it stops the QEMUs of this host's HA servers, with "post"
// after the resume it kills them if the lease lapsed while the host slept
// and lets them run again otherwise, so no HA guest runs a moment on a
// lapsed lease (docs/ha.md). systemd-sleep passes the kind of sleep as a
// second argument; it changes nothing.
func fenceSleepCmd() *cobra.Command {
	var dataDirs []string
	var logLevel string
	c := &cobra.Command{
		Use:    "fence-sleep pre|post [KIND]",
		Short:  "Hold this host's HA VMs across a system sleep (run by systemd-sleep)",
		Hidden: true,
		Args:   cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			kind := ""
			if len(args) > 1 {
				kind = args[1]
			}
			return node.FenceSleep(args[0], dataDirs, log.With("sub", "fence-sleep", "phase", args[0], "kind", kind))
		},
	}
	c.Flags().StringSliceVar(&dataDirs, "data-dir", []string{node.DefaultDataDir},
		"data dirs whose daemon may keep its heartbeat there (only when /run/peerstack is not writable)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

// watchdogFlags are the daemon's watchdog options (docs/ha.md): the fence
// guard pets the device while the lease is valid, so a host whose daemon
// and guard are both dead reboots.
type watchdogFlags struct {
	device  string
	timeout time.Duration
}

// defaultWatchdogTimeout is --watchdog-timeout's default: short, as the
// host fences W before T_fence after a renewal, which leaves T_fence − W
// for a daemon restart before the guard kills the HA VMs.
const defaultWatchdogTimeout = 2 * time.Second

func (w *watchdogFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&w.device, "watchdog", "", "a Linux watchdog device (e.g. /dev/watchdog) the fence guard pets while this host's lease is valid; the host reboots if the daemon and the guard both die (default: none)")
	fl.DurationVar(&w.timeout, "watchdog-timeout", defaultWatchdogTimeout, "longest timeout given to the --watchdog device (at least 1s); the fence uses at most half of T_fence, in whole seconds, and fences that much before T_fence")
}

// guard returns the guard command with the watchdog named, and the
// watchdog timeout the fence may use (0: none). The device must exist.
func (w *watchdogFlags) guard(command []string) ([]string, time.Duration, error) {
	if w.device == "" {
		return command, 0, nil
	}
	if w.timeout < node.MinWatchdogTimeout {
		return nil, 0, fmt.Errorf("--watchdog-timeout %s: at least %s", w.timeout, node.MinWatchdogTimeout)
	}
	st, err := os.Stat(w.device)
	if err != nil {
		return nil, 0, fmt.Errorf("--watchdog: %w", err)
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		return nil, 0, fmt.Errorf("--watchdog %s: not a character device", w.device)
	}
	if command == nil {
		return nil, 0, nil // no guard, no watchdog
	}
	return append(command, "--watchdog", w.device), w.timeout, nil
}

// guardCommand is how the daemon starts its fence guard: this binary.
func guardCommand() []string {
	exe, err := os.Executable()
	if err != nil || strings.HasSuffix(exe, ".test") {
		return nil // a test binary cannot be the guard: it would run its tests
	}
	return []string{exe, "fence-guard"}
}
