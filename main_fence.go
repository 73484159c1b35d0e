package main

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/peerstack/peerstack/node"
)

// fenceGuardCmd is the guard the daemon starts in its own session: it
// kills the HA servers' QEMUs once the daemon stops renewing the heartbeat
// file past T_fence (docs/ha.md). It is not meant to be run by hand.
func fenceGuardCmd() *cobra.Command {
	var heartbeat, lock, dataDir, logLevel string
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
			// SIGTERM and SIGINT are ignored: the guard must outlive a
			// daemon stop; only SIGKILL ends it.
			signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			return node.RunGuard(context.Background(), heartbeat, lock, dataDir, log.With("sub", "fence-guard", "pid", os.Getpid()))
		},
	}
	c.Flags().StringVar(&heartbeat, "heartbeat", "", "the heartbeat file the daemon writes")
	c.Flags().StringVar(&lock, "lock", "", "the lock file that keeps one guard per host")
	c.Flags().StringVar(&dataDir, "data-dir", "", "the daemon's data dir: the guard exits once its identity is gone or has left")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = c.MarkFlagRequired("heartbeat")
	_ = c.MarkFlagRequired("lock")
	return c
}

// guardCommand is how the daemon starts its fence guard: this binary.
func guardCommand() []string {
	exe, err := os.Executable()
	if err != nil || strings.HasSuffix(exe, ".test") {
		return nil // a test binary cannot be the guard: it would run its tests
	}
	return []string{exe, "fence-guard"}
}
