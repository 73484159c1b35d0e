package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The guard is a small process apart from the daemon (`peerstack
// fence-guard`, in its own session) that holds the fence when the daemon
// cannot: SIGKILLed, hung or SIGSTOPped. The daemon writes a heartbeat
// file after each fresh quorum contact, and again when its HA VMs change:
// the fence deadline on the host's CLOCK_BOOTTIME, when the lease began
// and the pids of its HA servers' QEMUs. Past the
// deadline the guard SIGKILLs those pids, so the VMs stop on time whatever
// became of the daemon.

// Heartbeat is the file the daemon writes and the guard reads.
type Heartbeat struct {
	// DeadlineBoot is the fence deadline, in nanoseconds of
	// CLOCK_BOOTTIME (BootNow).
	DeadlineBoot int64 `json:"deadline_boot_ns,omitempty"`
	// DeadlineMono is the same deadline on CLOCK_MONOTONIC, as of the
	// write, for a guard of an older release that still runs (it outlives
	// the daemon that is upgraded); such a file without DeadlineBoot was
	// written by an older daemon.
	DeadlineMono int64     `json:"deadline_mono_ns"`
	VMs          []GuardVM `json:"vms"`
	// Watchdog is the watchdog timeout the deadline was counted with (the
	// deadline is T_fence minus it after the renewal; 0: none), which the
	// guard sets on its watchdog device (fence_watchdog.go).
	Watchdog int64 `json:"watchdog_ns,omitempty"`
	// BootID is the kernel's boot id when the file was written
	// (/proc/sys/kernel/random/boot_id). CLOCK_BOOTTIME restarts at boot,
	// so a deadline of another boot means nothing: such a file (left in
	// the data dir, which outlives a reboot) counts as expired.
	BootID string `json:"boot_id,omitempty"`
	// LeaseSince is when the current unbroken lease began, on
	// CLOCK_BOOTTIME: the send time of its first acknowledged renewal
	// after the daemon started or after the last lapse (0: unknown, a
	// file of an older daemon). SleepPost continues a QEMU it stopped
	// only if the lease it sees began before that stop.
	LeaseSince int64 `json:"lease_since_boot_ns,omitempty"`
}

// Deadline is the fence deadline on CLOCK_BOOTTIME (0: none, or
// expired: a file written during another boot). A file of an older
// daemon has only the CLOCK_MONOTONIC one: it is moved by the time the
// host spent suspended until now.
func (hb Heartbeat) Deadline() time.Duration {
	return hb.deadlineOn(BootID(), BootNow, MonoNow)
}

// deadlineOn is Deadline during boot bootID with these clocks.
func (hb Heartbeat) deadlineOn(bootID string, boot, mono func() time.Duration) time.Duration {
	if hb.BootID != "" && bootID != "" && hb.BootID != bootID {
		return 0
	}
	if hb.DeadlineBoot != 0 || hb.DeadlineMono == 0 {
		return time.Duration(hb.DeadlineBoot)
	}
	return time.Duration(hb.DeadlineMono) + suspendedAtMost(boot, mono)
}

// suspendedAtMost and suspendedAtLeast are how long the host has been
// suspended since it booted: CLOCK_BOOTTIME less CLOCK_MONOTONIC, read
// one after the other. Time passing between the two reads counts as
// suspended when MONOTONIC is read first, so each errs on one side: a
// deadline converted to BOOTTIME must not come out later than it was
// (read BOOTTIME first), one converted to MONOTONIC not later either
// (read MONOTONIC first, then subtract).
func suspendedAtMost(boot, mono func() time.Duration) time.Duration {
	b := boot()
	return max(0, b-mono())
}

func suspendedAtLeast(boot, mono func() time.Duration) time.Duration {
	m := mono()
	return max(0, boot()-m)
}

// BootID is the kernel's id of this boot ("" if unreadable).
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// WriteHeartbeat replaces the heartbeat file atomically; deadline is on
// CLOCK_BOOTTIME, watchdog is the watchdog timeout it was counted with
// (0: none). It records no lease start (WriteHeartbeatSince).
func WriteHeartbeat(path string, deadline, watchdog time.Duration, vms []GuardVM) error {
	return WriteHeartbeatSince(path, deadline, watchdog, 0, vms)
}

// WriteHeartbeatSince is WriteHeartbeat with the start of the current
// lease (Heartbeat.LeaseSince; 0: unknown).
func WriteHeartbeatSince(path string, deadline, watchdog, leaseSince time.Duration, vms []GuardVM) error {
	b, err := json.Marshal(Heartbeat{DeadlineBoot: int64(deadline), DeadlineMono: int64(deadline - suspendedAtLeast(BootNow, MonoNow)),
		Watchdog: int64(watchdog), VMs: vms, BootID: BootID(), LeaseSince: int64(leaseSince)})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with b (mode 0600) through a temporary
// file of its own in the same directory, so two writers never share one.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// ReadHeartbeat reads the heartbeat file; a missing file is an empty
// heartbeat.
func ReadHeartbeat(path string) (Heartbeat, error) {
	var hb Heartbeat
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return hb, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &hb)
	}
	if err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat: %w", err)
	}
	return hb, nil
}

// GuardConfig configures Guard.
type GuardConfig struct {
	File string // the heartbeat file
	// Clock is the fence's clock, CLOCK_BOOTTIME (nil: BootNow).
	Clock func() time.Duration
	// Kill kills a pid (nil: SIGKILL); Owns tells whether pid is still the
	// QEMU of instance id (nil: procOwner), so a reused pid is never
	// killed, and a VM counts alive while any thread of it is.
	Kill     func(pid int) error
	Owns     func(pid int, id string) bool
	Interval time.Duration // default 100 ms
	// Watchdog, when set, is the device the guard pets while the lease is
	// valid (fence_watchdog.go); it is disarmed when ctx ends.
	Watchdog Watchdog
	// WatchdogInEffect, when set, is told the timeout the device took
	// each time the guard sets one; the daemon's fence counts with it
	// (FenceConfig.WatchdogInEffect) when the device took a longer one.
	WatchdogInEffect func(time.Duration)
	// Stop, once closed, asks the guard to end (disarming its watchdog)
	// as soon as no VM its heartbeat lists is alive: the host is shutting
	// down (SIGTERM). Until then it guards as before.
	Stop   <-chan struct{}
	Logger *slog.Logger
}

// Guard watches the heartbeat file until ctx ends and kills the VMs it
// lists once its deadline passed. A missing file means nothing to guard.
func Guard(ctx context.Context, cfg GuardConfig) {
	if cfg.Clock == nil {
		cfg.Clock = BootNow
	}
	if cfg.Kill == nil {
		cfg.Kill = func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
	}
	if cfg.Owns == nil {
		cfg.Owns = newProcOwner("/proc").owns
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	killed := map[int]bool{}
	wd := &watchdogTender{dev: cfg.Watchdog, log: cfg.Logger, pet: true, inEffect: cfg.WatchdogInEffect}
	stop, stopping := cfg.Stop, false
	for {
		v := guardOnce(cfg, killed)
		wd.tend(v)
		if stopping && noneAlive(cfg) {
			cfg.Logger.Info("fence guard: stopping, and no HA VM is alive")
			wd.disarm()
			return
		}
		select {
		case <-ctx.Done():
			wd.disarm()
			return
		case <-stop:
			stop, stopping = nil, true
			cfg.Logger.Info("fence guard: asked to stop; guarding until no HA VM it lists is alive")
		case <-t.C:
		}
	}
}

// noneAlive tells whether no VM the heartbeat lists is alive (an
// unreadable heartbeat: unknown, so no).
func noneAlive(cfg GuardConfig) bool {
	hb, err := ReadHeartbeat(cfg.File)
	if err != nil {
		return false
	}
	for _, vm := range hb.VMs {
		if vm.PID > 0 && cfg.Owns(vm.PID, vm.ID) {
			return false
		}
	}
	return true
}

// guardVerdict is what one check of the heartbeat concluded.
type guardVerdict struct {
	read bool // the heartbeat was readable, or absent (else keep the last verdict)
	// safe: the lease is valid, or nothing the heartbeat lists is alive:
	// the watchdog may be petted.
	safe     bool
	watchdog time.Duration // the heartbeat's watchdog timeout (0: none)
}

// guardOnce is one check of the heartbeat; killed remembers the pids
// already killed for this deadline.
func guardOnce(cfg GuardConfig, killed map[int]bool) guardVerdict {
	b, err := os.ReadFile(cfg.File)
	if errors.Is(err, fs.ErrNotExist) {
		return guardVerdict{read: true, safe: true}
	}
	var hb Heartbeat
	if err == nil {
		err = json.Unmarshal(b, &hb)
	}
	if err != nil {
		cfg.Logger.Warn("fence guard: unreadable heartbeat; keeping the last verdict", "file", cfg.File, "err", err)
		return guardVerdict{}
	}
	v := guardVerdict{read: true, safe: true, watchdog: time.Duration(hb.Watchdog)}
	if cfg.Clock() <= hb.Deadline() {
		clear(killed)
		return v
	}
	for _, vm := range hb.VMs {
		if vm.PID <= 0 || !cfg.Owns(vm.PID, vm.ID) {
			continue
		}
		// Still alive: killed a moment ago and not gone yet, or the kill
		// failed (a QEMU stuck in the kernel on a hung NFS server).
		v.safe = false
		if killed[vm.PID] {
			continue
		}
		killed[vm.PID] = true
		if err := cfg.Kill(vm.PID); err != nil && !errors.Is(err, syscall.ESRCH) {
			cfg.Logger.Error("fence guard: kill", "instance", vm.ID, "pid", vm.PID, "err", err)
			continue
		}
		cfg.Logger.Error("fence guard: the daemon has had no quorum contact past T_fence; killed the VM of an HA server",
			"instance", vm.ID, "pid", vm.PID)
	}
	return v
}

// procOwns tells whether process pid's command line names instance id.
func procOwns(pid int, id string) bool { return procNames("/proc", pid, id) }

// procOwner tells whether a pid is still an instance's QEMU, for the
// guard, which must count a VM alive as long as any of its threads is.
// Its command line alone will not do: it reads empty once QEMU's main
// thread has exited, while other threads may still be stuck in the
// kernel (on a hung NFS server) holding the VM's disks. So it remembers
// the start time of each process whose command line named the instance,
// and a process with that start time (the same process: a pid is not
// reused while its thread group exists) counts until no thread of it is
// left but a zombie.
type procOwner struct {
	root string               // "/proc"
	seen map[int]procIdentity // pid -> the process seen naming the instance
}

type procIdentity struct {
	id    string
	start string // /proc/pid/stat's starttime
}

func newProcOwner(root string) *procOwner {
	return &procOwner{root: root, seen: map[int]procIdentity{}}
}

func (o *procOwner) owns(pid int, id string) bool {
	// As in the sleep hook: only an instance's full id names its QEMU; an
	// empty or short one is part of every other command line.
	if !isInstanceID(id) {
		return false
	}
	dir := filepath.Join(o.root, strconv.Itoa(pid))
	start, ok := procStart(dir)
	if !ok {
		delete(o.seen, pid)
		return false
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(b) > 0 {
		if !strings.Contains(string(b), id) {
			delete(o.seen, pid)
			return false
		}
		o.seen[pid] = procIdentity{id: id, start: start}
		return true
	}
	// No command line: the main thread is gone (or a kernel thread).
	if o.seen[pid] != (procIdentity{id: id, start: start}) {
		return false
	}
	return procLive(dir)
}

// procStart reads a process's start time from its stat file.
func procStart(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return "", false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses;
	// starttime is the 22nd field, the 20th after comm.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", false
	}
	return f[19], true
}

// procLive tells whether a process has a thread left that is not a
// zombie: its main thread's state, or more threads than that one.
func procLive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return false
	}
	state, threads := "", 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			state = v
		case "Threads":
			threads, _ = strconv.Atoi(v)
		}
	}
	dead := strings.HasPrefix(state, "Z") || strings.HasPrefix(state, "X")
	return !dead || threads > 1
}
