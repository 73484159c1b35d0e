package agent

import (
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

// Sleep is the fence around a system suspend (docs/ha.md). On resume
// the kernel thaws every process at once: a QEMU could run guest code
// and write to its shared disk before the guard or the daemon, thawing
// at the same moment, sees that the lease lapsed during the suspend and
// kills it. So before the host sleeps (systemd-sleep's "pre" hook) the
// HA QEMUs a heartbeat lists are SIGSTOPped and recorded next to it;
// after the resume ("post") they are SIGKILLed if the heartbeat's
// deadline has passed, and SIGCONTed otherwise. Nothing else in
// peerstack sends SIGCONT, so a QEMU stopped here runs again only
// through SleepPost, and only on a valid lease: the daemon's fence
// counts a renewal, and writes its deadline, only after it has killed
// the HA VMs of a lapsed lease (Fence.Check; a stopped QEMU stays in its
// list: its process lives), so a deadline that is valid at "post" comes
// from a lease that never lapsed.

// SleepRecord is what SleepPre stopped, for SleepPost.
type SleepRecord struct {
	// BootID is the boot the record was made in: a record of another
	// boot (left in a data dir, which outlives a reboot) names pids of
	// processes long gone.
	BootID string    `json:"boot_id,omitempty"`
	VMs    []SleptVM `json:"vms"`
}

// SleptVM is one QEMU SleepPre stopped.
type SleptVM struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
	// Start is the process's start time (/proc/PID/stat): a pid reused by
	// another process since has another one, and is left alone.
	Start string `json:"start"`
}

// SleepConfig is the heartbeat SleepPre and SleepPost act on.
type SleepConfig struct {
	Heartbeat string // the heartbeat file the guard reads
	// Record is where SleepPre records what it stopped ("": the
	// heartbeat's path plus ".sleep").
	Record string
	// Clock is the fence's clock (nil: BootNow).
	Clock func() time.Duration
	// Proc is the proc file system ("": /proc).
	Proc   string
	Logger *slog.Logger
}

func (c SleepConfig) withDefaults() SleepConfig {
	if c.Record == "" {
		c.Record = SleepRecordPath(c.Heartbeat)
	}
	if c.Clock == nil {
		c.Clock = BootNow
	}
	if c.Proc == "" {
		c.Proc = "/proc"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// SleepRecordPath is where SleepPre records the QEMUs it stopped for the
// heartbeat file heartbeat.
func SleepRecordPath(heartbeat string) string { return heartbeat + ".sleep" }

// SleepPre SIGSTOPs the HA QEMUs the heartbeat lists, recording them
// first (a stop never goes unrecorded, so SleepPost can always undo it).
// A pid that is no longer its VM's QEMU is left alone, and so is one
// already stopped that this did not stop (a debugger's, an operator's).
// Running it again stops what is new and keeps what it recorded before.
func SleepPre(cfg SleepConfig) error {
	cfg = cfg.withDefaults()
	hb, err := ReadHeartbeat(cfg.Heartbeat)
	if err != nil {
		return err
	}
	rec, err := readSleepRecord(cfg.Record)
	if err != nil {
		cfg.Logger.Warn("fence-sleep: unreadable record of stopped VMs; starting a new one", "file", cfg.Record, "err", err)
		rec = SleepRecord{}
	}
	boot := BootID()
	if rec.BootID != boot {
		rec = SleepRecord{}
	}
	rec.BootID = boot
	recorded := map[SleptVM]bool{}
	var keep []SleptVM
	for _, v := range rec.VMs {
		if start, _, ok := procStartState(cfg.Proc, v.PID); ok && start == v.Start {
			recorded[v] = true
			keep = append(keep, v)
		}
	}
	rec.VMs = keep
	var stop []SleptVM
	for _, vm := range hb.VMs {
		if vm.PID <= 0 || !procNames(cfg.Proc, vm.PID, vm.ID) {
			continue
		}
		start, state, ok := procStartState(cfg.Proc, vm.PID)
		if !ok {
			continue
		}
		v := SleptVM{ID: vm.ID, PID: vm.PID, Start: start}
		if !recorded[v] {
			if state == "T" {
				cfg.Logger.Info("fence-sleep: VM already stopped by someone else; leaving it", "instance", vm.ID, "pid", vm.PID)
				continue
			}
			recorded[v] = true
			rec.VMs = append(rec.VMs, v)
		}
		stop = append(stop, v)
	}
	if len(rec.VMs) == 0 {
		return removeSleepRecord(cfg.Record) // nothing stopped: nothing to undo
	}
	if err := writeSleepRecord(cfg.Record, rec); err != nil {
		return err
	}
	var errs []error
	for _, v := range stop {
		if err := syscall.Kill(v.PID, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("fence-sleep: stop vm %s (pid %d): %w", v.ID, v.PID, err))
			continue
		}
		cfg.Logger.Info("fence-sleep: stopped the VM of an HA server until the host resumes", "instance", v.ID, "pid", v.PID)
	}
	return errors.Join(errs...)
}

// SleepPost acts on what SleepPre recorded: past the heartbeat's
// deadline (or with no deadline that can be read: the lease cannot be
// shown valid) the recorded QEMUs are SIGKILLed, as the guard would;
// otherwise they are SIGCONTed. A pid whose start time changed is
// another process now and is left alone. The record is removed once
// every signal went out, so running it again does nothing.
func SleepPost(cfg SleepConfig) error {
	cfg = cfg.withDefaults()
	rec, err := readSleepRecord(cfg.Record)
	if err != nil {
		// Unreadable: which pids were stopped is unknown. The guard and
		// the daemon still kill them at the deadline; the file stays for
		// an operator.
		return err
	}
	if len(rec.VMs) == 0 {
		return removeSleepRecord(cfg.Record)
	}
	if boot := BootID(); rec.BootID != "" && boot != "" && rec.BootID != boot {
		cfg.Logger.Info("fence-sleep: record of another boot; dropping it", "file", cfg.Record)
		return removeSleepRecord(cfg.Record)
	}
	lapsed, why := true, ""
	hb, err := ReadHeartbeat(cfg.Heartbeat)
	now := cfg.Clock()
	switch {
	case err != nil:
		why = "heartbeat unreadable: " + err.Error()
	case hb.Deadline() == 0:
		why = "no lease deadline"
	case now > hb.Deadline():
		why = fmt.Sprintf("the lease deadline passed %s ago", (now - hb.Deadline()).Round(time.Millisecond))
	default:
		lapsed = false
	}
	sig, verb := syscall.SIGCONT, "continued"
	if lapsed {
		sig, verb = syscall.SIGKILL, "killed"
		cfg.Logger.Error("fence-sleep: the lease lapsed while the host slept; killing the VMs of the HA servers stopped before it", "why", why)
	}
	var errs []error
	for _, v := range rec.VMs {
		if start, _, ok := procStartState(cfg.Proc, v.PID); !ok || start != v.Start {
			cfg.Logger.Info("fence-sleep: VM process gone (or its pid reused); leaving it", "instance", v.ID, "pid", v.PID)
			continue
		}
		if err := syscall.Kill(v.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("fence-sleep: signal vm %s (pid %d): %w", v.ID, v.PID, err))
			continue
		}
		cfg.Logger.Info("fence-sleep: "+verb+" the VM of an HA server", "instance", v.ID, "pid", v.PID)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return removeSleepRecord(cfg.Record)
}

// procNames tells whether process pid's command line names instance id.
func procNames(proc string, pid int, id string) bool {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cmdline"))
	return err == nil && strings.Contains(string(b), id)
}

// procStartState reads a process's start time and state letter from its
// stat file.
func procStartState(proc string, pid int) (start, state string, ok bool) {
	if pid <= 0 {
		return "", "", false
	}
	dir := filepath.Join(proc, strconv.Itoa(pid))
	start, ok = procStart(dir)
	if !ok {
		return "", "", false
	}
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return "", "", false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) > 0 {
			state = f[0]
		}
	}
	return start, state, true
}

func readSleepRecord(path string) (SleepRecord, error) {
	var rec SleepRecord
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		return SleepRecord{}, fmt.Errorf("fence-sleep record: %w", err)
	}
	return rec, nil
}

// writeSleepRecord replaces the record atomically, as WriteHeartbeat
// does the heartbeat.
func writeSleepRecord(path string, rec SleepRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("fence-sleep record: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("fence-sleep record: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("fence-sleep record: %w", err)
	}
	return nil
}

func removeSleepRecord(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fence-sleep record: %w", err)
	}
	return nil
}
