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

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Sleep is the fence around a system suspend (docs/ha.md). On resume
// the kernel thaws every process at once: a QEMU could run guest code
// and write to its shared disk before the guard or the daemon, thawing
// at the same moment, sees that the lease lapsed during the suspend and
// kills it. So before the host sleeps (systemd-sleep's "pre" hook) the
// HA QEMUs a heartbeat lists are SIGSTOPped and recorded next to it;
// after the resume ("post") they are SIGKILLed if the heartbeat's
// lease shows it may run, and SIGKILLed otherwise. Nothing else in
// peerstack sends SIGCONT, so a QEMU stopped here runs again only
// through SleepPost, and only if the heartbeat shows one lease unbroken
// from before the stop until now: its deadline has not passed, it began
// (Heartbeat.LeaseSince) before the stop, and it still lists that QEMU.
// A valid deadline alone will not do: after a lapse the daemon kills
// only the VMs it still counts as its own (the state may have moved a
// server elsewhere meanwhile), and a daemon restarted after the resume
// knows nothing of the lapse; either then writes a fresh deadline, but
// one of a lease that began after the stop.

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
	// Stopped is when it was stopped (CLOCK_BOOTTIME, read before the
	// signal): it runs again only on a lease that began before.
	Stopped int64 `json:"stopped_boot_ns,omitempty"`
}

// key is the process a record names, whenever it was stopped.
func (v SleptVM) key() SleptVM { return SleptVM{ID: v.ID, PID: v.PID, Start: v.Start} }

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
	hb, err := readOwnHeartbeat(cfg.Heartbeat)
	if err != nil {
		return fmt.Errorf("fence-sleep pre %s: %w", cfg.Heartbeat, err)
	}
	rec, err := readSleepRecord(cfg.Record)
	if err != nil {
		// It may name QEMUs a failed step stopped: kept aside for an
		// operator (docs/ha.md), never overwritten.
		aside := cfg.Record + ".unreadable"
		if rerr := os.Rename(cfg.Record, aside); rerr != nil {
			return fmt.Errorf("fence-sleep pre %s: %w; keep it aside: %w", cfg.Heartbeat, err, rerr)
		}
		cfg.Logger.Error("fence-sleep: unreadable record of stopped VMs kept aside; starting a new one", "file", aside, "err", err)
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
			recorded[v.key()] = true
			keep = append(keep, v)
		}
	}
	rec.VMs = keep
	var stop []SleptVM
	stopped := int64(cfg.Clock()) // before any signal: no earlier than the stops
	for _, vm := range hb.VMs {
		if vm.PID <= 0 || !isInstanceID(vm.ID) || !procNames(cfg.Proc, vm.PID, vm.ID) {
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
			v.Stopped = stopped
			rec.VMs = append(rec.VMs, v)
		}
		stop = append(stop, v)
	}
	if len(rec.VMs) == 0 {
		// nothing stopped: nothing to undo
		if err := removeSleepRecord(cfg.Record); err != nil {
			return fmt.Errorf("fence-sleep pre %s: %w", cfg.Heartbeat, err)
		}
		return nil
	}
	if err := writeSleepRecord(cfg.Record, rec); err != nil {
		return fmt.Errorf("fence-sleep pre %s: %w", cfg.Heartbeat, err)
	}
	var errs []error
	for _, v := range stop {
		sent, err := signalVM(cfg.Proc, v, unix.SIGSTOP)
		if err != nil {
			errs = append(errs, fmt.Errorf("fence-sleep pre %s: stop vm %s (pid %d): %w", cfg.Heartbeat, v.ID, v.PID, err))
			continue
		}
		if !sent {
			continue // gone since
		}
		cfg.Logger.Info("fence-sleep: stopped the VM of an HA server until the host resumes", "instance", v.ID, "pid", v.PID)
	}
	return errors.Join(errs...)
}

// SleepPost acts on what SleepPre recorded: a recorded QEMU is SIGCONTed
// only if the heartbeat shows a lease unbroken since before its stop —
// the deadline has not passed, the lease began (LeaseSince) before the
// stop, and the heartbeat still lists that pid for that VM; otherwise
// (a lapse, a lease of a restarted daemon, a heartbeat of an older
// daemon or none that can be read) it is SIGKILLed, as the guard would. A pid whose start time changed is
// another process now and is left alone. The record is removed once
// every signal went out, so running it again does nothing.
func SleepPost(cfg SleepConfig) error {
	cfg = cfg.withDefaults()
	rec, err := readSleepRecord(cfg.Record)
	if err != nil {
		// Unreadable: which pids were stopped is unknown. The guard and
		// the daemon still kill them at the deadline; the file stays for
		// an operator.
		return fmt.Errorf("fence-sleep post %s: %w", cfg.Heartbeat, err)
	}
	done := func() error {
		if err := removeSleepRecord(cfg.Record); err != nil {
			return fmt.Errorf("fence-sleep post %s: %w", cfg.Heartbeat, err)
		}
		return nil
	}
	if len(rec.VMs) == 0 {
		return done()
	}
	if boot := BootID(); rec.BootID != "" && boot != "" && rec.BootID != boot {
		cfg.Logger.Info("fence-sleep: record of another boot; dropping it", "file", cfg.Record)
		return done()
	}
	hb, err := readOwnHeartbeat(cfg.Heartbeat)
	now := cfg.Clock()
	lease := ""
	switch {
	case err != nil:
		lease = "heartbeat unreadable: " + err.Error()
	case hb.Deadline() == 0:
		lease = "no lease deadline"
	case now > hb.Deadline():
		lease = fmt.Sprintf("the lease deadline passed %s ago", (now - hb.Deadline()).Round(time.Millisecond))
	case hb.LeaseSince <= 0:
		lease = "the heartbeat does not say when the lease began"
	}
	listed := map[GuardVM]bool{}
	for _, vm := range hb.VMs {
		listed[vm] = true
	}
	var errs []error
	for _, v := range rec.VMs {
		why := lease
		switch {
		case why != "":
		case v.Stopped <= 0 || hb.LeaseSince >= v.Stopped:
			why = "the lease began after the VM was stopped (it lapsed, or the daemon restarted)"
		case !listed[GuardVM{ID: v.ID, PID: v.PID}]:
			why = "the daemon no longer counts the VM as an HA server of this host"
		}
		sig, verb := unix.SIGCONT, "continued"
		if why != "" {
			sig, verb = unix.SIGKILL, "killed"
		}
		sent, err := signalVM(cfg.Proc, v, sig)
		if err != nil {
			errs = append(errs, fmt.Errorf("fence-sleep post %s: signal vm %s (pid %d): %w", cfg.Heartbeat, v.ID, v.PID, err))
			continue
		}
		if !sent {
			cfg.Logger.Info("fence-sleep: VM process gone (or its pid reused); leaving it", "instance", v.ID, "pid", v.PID)
			continue
		}
		if why != "" {
			cfg.Logger.Error("fence-sleep: the lease does not cover the sleep; killed the VM of an HA server stopped before it", "instance", v.ID, "pid", v.PID, "why", why)
		} else {
			cfg.Logger.Info("fence-sleep: "+verb+" the VM of an HA server", "instance", v.ID, "pid", v.PID)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return done()
}

// signalVM sends sig to v's QEMU if pid v.PID is still that process: the
// same start time, a command line naming the VM. It opens a pidfd first
// and signals through it, so a pid reused between the check and the
// signal is never hit (without pidfds, kernels before 5.3, it checks and
// then signals the pid). sent is false when the process is gone or
// another one.
func signalVM(proc string, v SleptVM, sig unix.Signal) (sent bool, err error) {
	fd, err := unix.PidfdOpen(v.PID, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return false, nil
	case err != nil:
		fd = -1
	default:
		defer unix.Close(fd)
	}
	// With the pidfd open, the process it names cannot be replaced: what
	// /proc says from now on is about that one, or it is gone.
	if start, _, ok := procStartState(proc, v.PID); !ok || start != v.Start || !isInstanceID(v.ID) || !procNames(proc, v.PID, v.ID) {
		return false, nil
	}
	if fd >= 0 {
		err = unix.PidfdSendSignal(fd, sig, nil, 0)
	} else {
		err = unix.Kill(v.PID, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	return err == nil, err
}

// isInstanceID tells whether id is an instance's id, a UUID in its
// canonical form: only then does a command line naming it make the
// process its QEMU (a short or empty id is part of every other's).
func isInstanceID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}

// procNames tells whether process pid's command line names instance id
// (an empty id names none).
func procNames(proc string, pid int, id string) bool {
	if id == "" {
		return false
	}
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

// checkOwnFile refuses a file that another user could have written: the
// hook runs as root and signals the pids it reads, so a heartbeat or a
// record must be a regular file of its own user, writable by no one
// else. A missing file passes.
func checkOwnFile(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s: not a regular file", path)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s: not owned by uid %d", path, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s: writable by group or others (%v)", path, fi.Mode().Perm())
	}
	return nil
}

// readOwnHeartbeat is ReadHeartbeat of a file checkOwnFile accepts.
func readOwnHeartbeat(path string) (Heartbeat, error) {
	if err := checkOwnFile(path); err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat: %w", err)
	}
	return ReadHeartbeat(path)
}

func readSleepRecord(path string) (SleepRecord, error) {
	var rec SleepRecord
	if err := checkOwnFile(path); err != nil {
		return rec, fmt.Errorf("fence-sleep record: %w", err)
	}
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
	if err := writeFileAtomic(path, b); err != nil {
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
