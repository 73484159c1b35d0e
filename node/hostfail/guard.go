package hostfail

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/peerstack/peerstack/node/agent"
)

// RunDir holds the guards' heartbeat files: a tmpfs, reset at boot like
// CLOCK_BOOTTIME, that a full data disk does not fill.
const RunDir = "/run/peerstack"

// The heartbeat's file names: in the run dir, the prefix followed by a
// hash of the data dir's path and ".json"; in the data dir, the other.
const (
	runHeartbeatPrefix = "fence-heartbeat-"
	dataDirHeartbeat   = "fence-heartbeat.json"
)

// HeartbeatPath is the heartbeat file of the daemon of dataDir: in
// runDir, named after the data dir's absolute path (one host may run
// several daemons), or in the data dir when runDir is not writable. The
// guard's lock (".lock") and pid (".pid") files sit next to it.
func HeartbeatPath(runDir, dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	if err := os.MkdirAll(runDir, 0o700); err == nil {
		if f, err := os.CreateTemp(runDir, ".probe-*"); err == nil {
			f.Close()
			_ = os.Remove(f.Name())
			return filepath.Join(runDir, runHeartbeatPrefix+hex.EncodeToString(sum[:8])+".json")
		}
	}
	return filepath.Join(dataDir, dataDirHeartbeat)
}

// FenceConfig is what the agent's fence is made from.
type FenceConfig struct {
	// Renew is one lease round trip reporting this host's fence timeout
	// (Lease.Renew).
	Renew func(context.Context, FenceReport) (uint64, error)
	// Applied is the index this host's state has applied.
	Applied func() uint64
	// Setting is T_fence from the cluster settings; the fence adopts it
	// at a renewal (FenceTimeouts).
	Setting  func() time.Duration
	Interval time.Duration
	// GuardCommand, when set, is the guard process to keep running (with
	// its arguments); the fence then writes its heartbeat file.
	GuardCommand []string
	// Watchdog is the longest timeout the guard's watchdog device may be
	// given (0: no watchdog; agent.FenceConfig.Watchdog).
	Watchdog time.Duration
	DataDir  string
	Logger   *slog.Logger
}

// NewFence makes the agent's fence and the fence timeouts it counts
// (FenceTimeouts). With a guard command it also returns the loop that
// keeps the guard running, for the caller to run in a goroutine it owns
// until its context ends; otherwise keep is nil.
func NewFence(cfg FenceConfig) (fence *agent.Fence, timeouts *FenceTimeouts, keep func(context.Context)) {
	log := cfg.Logger
	var guardDeadline time.Duration
	var initial []agent.GuardVM
	path := ""
	if len(cfg.GuardCommand) > 0 {
		path = HeartbeatPath(RunDir, cfg.DataDir)
		// Until the agent's first sync, the previous run's HA VMs stay in
		// the heartbeat: the guard must still kill them.
		if hb, err := agent.ReadHeartbeat(path); err != nil {
			log.Warn("fence: previous heartbeat unreadable; guarding no VM until the first sync", "err", err)
		} else {
			initial, guardDeadline = hb.VMs, hb.Deadline()
		}
	}
	timeouts = NewFenceTimeouts(cfg.Setting, agent.BootNow, guardDeadline)
	fc := agent.FenceConfig{
		Renew: timeouts.Renew(cfg.Renew), Applied: cfg.Applied, Clock: agent.BootNow,
		Timeout: timeouts.Timeout, Interval: cfg.Interval, Initial: initial, Logger: log.With("sub", "fence"),
	}
	if path != "" {
		fc.Watchdog = cfg.Watchdog
		if cfg.Watchdog > 0 {
			fc.WatchdogInEffect = func() time.Duration { return readWatchdogInEffect(path) }
		}
		fc.Heartbeat = func(deadline, watchdog, leaseSince time.Duration, vms []agent.GuardVM) error {
			if err := agent.WriteHeartbeatSince(path, deadline, watchdog, leaseSince, vms); err != nil {
				return err
			}
			timeouts.Wrote(deadline)
			return nil
		}
		keep = func(ctx context.Context) { keepGuard(ctx, log, cfg.GuardCommand, path, cfg.DataDir) }
	}
	return agent.NewFence(fc), timeouts, keep
}

// guardRestartInterval is how often keepGuard checks that the guard
// runs: a guard that died is started again within it, which must be well
// within the shortest watchdog timeout (the host reboots if nobody pets
// the device for that long).
const guardRestartInterval = agent.MinWatchdog / 2

// keepGuard runs the guard process and starts it again when it exits,
// until ctx ends. The guard lives in its own session, so it outlives the
// daemon; when ctx ends it is left running (a restarted daemon takes it
// over through the lock the guard holds).
func keepGuard(ctx context.Context, log *slog.Logger, command []string, heartbeat, dataDir string) {
	lock := heartbeat + ".lock"
	for ctx.Err() == nil {
		if guardRunning(lock) {
			if !sleepCtx(ctx, guardRestartInterval) {
				return
			}
			continue
		}
		args := append(append([]string{}, command[1:]...), "--heartbeat", heartbeat, "--lock", lock, "--data-dir", dataDir)
		cmd := exec.Command(command[0], args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		// Its own log file, not the daemon's output: a guard that held the
		// daemon's stdout or stderr open would outlive it there too.
		logf, err := os.OpenFile(filepath.Join(dataDir, "fence-guard.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err == nil {
			cmd.Stdout, cmd.Stderr = logf, logf
			err = cmd.Start()
			logf.Close()
		}
		if err != nil {
			log.Error("fence guard not started", "err", err)
		} else {
			log.Info("fence guard started", "pid", cmd.Process.Pid)
			go func() { _ = cmd.Wait() }()
		}
		if !sleepCtx(ctx, guardRestartInterval) {
			return
		}
	}
}

// guardRunning reports whether a guard holds the lock file.
func guardRunning(lock string) bool {
	f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// GuardConfig configures `peerstack fence-guard`.
type GuardConfig struct {
	Heartbeat, Lock string
	// HostGone, when set, tells why the host is gone ("" = it is not): its
	// identity was removed or it left the cluster. Without it the guard
	// exits when the heartbeat's directory disappears.
	HostGone func() string
	// Watchdog is the watchdog device to pet while the lease is valid
	// ("": none; agent/fence_watchdog.go).
	Watchdog string
	// Stop, once closed, ends the guard as soon as no VM its heartbeat
	// lists is alive (agent.GuardConfig.Stop): SIGTERM at shutdown.
	Stop   <-chan struct{}
	Logger *slog.Logger
}

// RunGuard is `peerstack fence-guard`: it takes the lock (exiting when
// another guard holds it), writes its pid to the heartbeat's path plus
// ".pid" and guards the heartbeat file until ctx ends, or until the host
// is gone (HostGone) or the heartbeat file it saw has been removed.
func RunGuard(ctx context.Context, cfg GuardConfig) error {
	log, heartbeat := cfg.Logger, cfg.Heartbeat
	f, err := os.OpenFile(cfg.Lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("fence guard: another guard holds %s", cfg.Lock)
	}
	pidfile := heartbeat + ".pid"
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	defer os.Remove(pidfile)
	log.Info("fence guard running", "heartbeat", heartbeat, "pid", os.Getpid())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = os.Stat(heartbeat)
	seen := err == nil
	go func() {
		for sleepCtx(ctx, time.Second) {
			if why := guardDone(cfg, &seen); why != "" {
				log.Info("fence guard: exiting", "why", why)
				cancel()
				return
			}
		}
	}()
	wdfile := watchdogInEffectPath(heartbeat)
	gc := agent.GuardConfig{File: heartbeat, Logger: log, Stop: cfg.Stop, WatchdogInEffect: func(d time.Duration) {
		if err := os.WriteFile(wdfile, []byte(strconv.FormatInt(int64(d), 10)+"\n"), 0o600); err != nil {
			log.Error("fence guard: publish the watchdog's timeout", "err", err)
		}
	}}
	defer os.Remove(wdfile)
	if cfg.Watchdog != "" {
		// A device that cannot be opened leaves the guard running without
		// it: a guard that exited would be started again and again, and
		// guard nothing.
		if wd, err := agent.OpenWatchdog(cfg.Watchdog); err != nil {
			log.Error("fence guard: running WITHOUT the watchdog", "err", err)
		} else {
			gc.Watchdog = wd
			log.Info("fence guard: watchdog armed", "device", cfg.Watchdog)
		}
	}
	agent.Guard(ctx, gc)
	return nil
}

// guardDone tells why the guard should exit ("" = it should not): the
// host is gone, or the heartbeat file was removed after the guard saw it
// (seen remembers that).
func guardDone(cfg GuardConfig, seen *bool) string {
	if cfg.HostGone != nil {
		if why := cfg.HostGone(); why != "" {
			return why
		}
	} else if _, err := os.Stat(filepath.Dir(cfg.Heartbeat)); errors.Is(err, os.ErrNotExist) {
		return "the heartbeat's directory is gone"
	}
	_, err := os.Stat(cfg.Heartbeat)
	switch {
	case err == nil:
		*seen = true
	case errors.Is(err, os.ErrNotExist) && *seen:
		return "the heartbeat file was removed"
	}
	return ""
}

// watchdogInEffectPath is where the guard publishes the timeout its
// watchdog device took (nanoseconds), next to its heartbeat.
func watchdogInEffectPath(heartbeat string) string { return heartbeat + ".watchdog" }

// readWatchdogInEffect reads the timeout the guard's device took (0:
// none published).
func readWatchdogInEffect(heartbeat string) time.Duration {
	b, err := os.ReadFile(watchdogInEffectPath(heartbeat))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n)
}
