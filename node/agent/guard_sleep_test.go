package agent

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeQEMU is a real process standing in for an instance's QEMU: `sleep`
// with a command line that names the instance, as QEMU's does.
type fakeQEMU struct {
	pid  int
	done chan struct{} // closed once the process is reaped
	ps   *os.ProcessState
}

func startFakeQEMU(t *testing.T, id string) *fakeQEMU {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.Args[0] = "qemu-system-x86_64 -name guest=" + id
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	q := &fakeQEMU{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); q.ps = cmd.ProcessState; close(q.done) }()
	// Start returns while the kernel may still be setting up the new
	// program's arguments (the command line reads empty for a moment):
	// wait until it names the VM, as a running QEMU's does.
	for deadline := time.Now().Add(5 * time.Second); !procNames("/proc", q.pid, id); {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never showed a command line naming %s", q.pid, id)
		}
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(q.pid, syscall.SIGKILL)
		select {
		case <-q.done:
		case <-time.After(5 * time.Second):
		}
	})
	return q
}

// state is the process's state letter ("" once it is reaped).
func (q *fakeQEMU) state() string {
	_, st, _ := procStartState("/proc", q.pid)
	return st
}

// waitState waits up to 10 s for the process to reach state want (a
// signal is handled when the process is next scheduled: late on a busy
// machine).
func (q *fakeQEMU) waitState(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for q.state() != want {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d in state %q; want %q", q.pid, q.state(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holds checks that the process stays in state want for a moment ("S"
// takes "R" too: a sleeping process the scheduler is running).
func (q *fakeQEMU) holds(t *testing.T, want, why string) {
	t.Helper()
	for range 10 {
		if st := q.state(); st != want && (want != "S" || st != "R") {
			t.Fatalf("%s: pid %d in state %q; want %q", why, q.pid, st, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitKilled waits for the process to die of SIGKILL.
func (q *fakeQEMU) waitKilled(t *testing.T) {
	t.Helper()
	select {
	case <-q.done:
		ws, ok := q.ps.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("pid %d ended with %v; want killed by SIGKILL", q.pid, q.ps)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("pid %d (state %q) not killed within 5 s", q.pid, q.state())
	}
}

func sleepRig(t *testing.T, deadline time.Duration, vms ...GuardVM) SleepConfig {
	t.Helper()
	hb := filepath.Join(t.TempDir(), "fence-heartbeat-x.json")
	// A lease that began well before the stop.
	if err := WriteHeartbeatSince(hb, deadline, 0, max(1, BootNow()-time.Minute), vms); err != nil {
		t.Fatal(err)
	}
	return SleepConfig{Heartbeat: hb, Logger: slog.New(slog.DiscardHandler)}
}

func readRecord(t *testing.T, cfg SleepConfig) SleepRecord {
	t.Helper()
	rec, err := readSleepRecord(SleepRecordPath(cfg.Heartbeat))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// Before the host sleeps the HA QEMUs the heartbeat lists are stopped
// (and nothing else); after a resume within the lease they run again.
// Both steps may run twice.
func TestSleepStopsHAVMsAndContinuesThemOnAValidLease(t *testing.T) {
	a, b, other := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a"), startFakeQEMU(t, "00000000-0000-4000-8000-00000000000b"), startFakeQEMU(t, "00000000-0000-4000-8000-00000000000c")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: a.pid}, GuardVM{ID: "00000000-0000-4000-8000-00000000000b", PID: b.pid})
	for i := range 2 {
		if err := SleepPre(cfg); err != nil {
			t.Fatalf("pre #%d: %v", i+1, err)
		}
		a.waitState(t, "T")
		b.waitState(t, "T")
		if rec := readRecord(t, cfg); len(rec.VMs) != 2 || rec.BootID != BootID() {
			t.Fatalf("pre #%d recorded %+v; want a and b once each, this boot", i+1, rec)
		}
	}
	other.holds(t, "S", "a process the heartbeat does not list")

	for i := range 2 {
		if err := SleepPost(cfg); err != nil {
			t.Fatalf("post #%d: %v", i+1, err)
		}
		a.waitState(t, "S")
		b.waitState(t, "S")
		if _, err := os.Stat(SleepRecordPath(cfg.Heartbeat)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("post #%d left the record: %v", i+1, err)
		}
	}
}

// The host slept past the lease's deadline: the QEMUs stopped before it
// are killed, never continued.
func TestSleepKillsStoppedVMsWhenTheLeaseLapsed(t *testing.T) {
	a, b := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a"), startFakeQEMU(t, "00000000-0000-4000-8000-00000000000b")
	cfg := sleepRig(t, BootNow()+10*time.Second, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: a.pid}, GuardVM{ID: "00000000-0000-4000-8000-00000000000b", PID: b.pid})
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "T")
	b.waitState(t, "T")
	// A minute asleep: CLOCK_BOOTTIME moved on by that much.
	slept := BootNow() + time.Minute
	cfg.Clock = func() time.Duration { return slept }
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitKilled(t)
	b.waitKilled(t)
	if err := SleepPost(cfg); err != nil {
		t.Fatalf("post again: %v", err)
	}
}

// A heartbeat gone between the two steps (or one with no deadline)
// cannot show the lease valid: the stopped QEMUs are killed.
func TestSleepKillsWhenTheLeaseCannotBeShownValid(t *testing.T) {
	a := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: a.pid})
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "T")
	if err := os.Remove(cfg.Heartbeat); err != nil {
		t.Fatal(err)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitKilled(t)
}

// A pid that is no longer the process that was stopped (its start time
// differs: reused) is neither continued nor killed; a pid listed for an
// instance its command line does not name is not stopped, nor one listed
// with an id that is not an instance's (empty, or short enough to be part
// of any command line); a process someone else stopped is left stopped.
func TestSleepLeavesProcessesItDidNotStop(t *testing.T) {
	a, reused, wrong, stopped := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a"), startFakeQEMU(t, "00000000-0000-4000-8000-00000000000e"), startFakeQEMU(t, "00000000-0000-4000-8000-000000000010"), startFakeQEMU(t, "00000000-0000-4000-8000-00000000000f")
	if err := syscall.Kill(stopped.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped.waitState(t, "T")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: a.pid}, GuardVM{ID: "00000000-0000-4000-8000-00000000000e", PID: reused.pid},
		GuardVM{ID: "00000000-0000-4000-8000-000000000011", PID: wrong.pid}, GuardVM{ID: "qemu", PID: wrong.pid}, GuardVM{ID: "", PID: wrong.pid},
		GuardVM{ID: "00000000-0000-4000-8000-00000000000f", PID: stopped.pid})
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "T")
	reused.waitState(t, "T")
	wrong.holds(t, "S", "a pid listed for an instance its command line does not name")
	rec := readRecord(t, cfg)
	if len(rec.VMs) != 2 {
		t.Fatalf("recorded %+v; want inst-a and inst-r only", rec.VMs)
	}
	// inst-r's pid now belongs to another process: another start time.
	for i := range rec.VMs {
		if rec.VMs[i].ID == "00000000-0000-4000-8000-00000000000e" {
			rec.VMs[i].Start += "1"
		}
	}
	if err := writeSleepRecord(SleepRecordPath(cfg.Heartbeat), rec); err != nil {
		t.Fatal(err)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "S")
	reused.holds(t, "T", "a reused pid after a valid post")
	stopped.holds(t, "T", "a process stopped by someone else")

	// The same on a lapsed lease: nothing but what was stopped is killed.
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, "T")
	rec = readRecord(t, cfg)
	if len(rec.VMs) != 1 || rec.VMs[0].ID != "00000000-0000-4000-8000-00000000000a" {
		t.Fatalf("second pre recorded %+v; want inst-a only (inst-r's pid is stopped by someone else now)", rec.VMs)
	}
	rec.VMs = append(rec.VMs, SleptVM{ID: "00000000-0000-4000-8000-00000000000e", PID: reused.pid, Start: "1"})
	if err := writeSleepRecord(SleepRecordPath(cfg.Heartbeat), rec); err != nil {
		t.Fatal(err)
	}
	slept := BootNow() + 2*time.Hour
	cfg.Clock = func() time.Duration { return slept }
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	a.waitKilled(t)
	reused.holds(t, "T", "a reused pid after a lapsed post")
	wrong.holds(t, "S", "an unlisted process after a lapsed post")
}

// A heartbeat that lists no live VM leaves no record behind.
func TestSleepWithNothingToStopRecordsNothing(t *testing.T) {
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-000000000099", PID: 0})
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(SleepRecordPath(cfg.Heartbeat)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("record after a pre that stopped nothing: %v", err)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
}

// fenceSleepRig is a real Fence writing a real heartbeat file on a clock
// that follows CLOCK_BOOTTIME plus what the test adds (a sleep).
type fenceSleepRig struct {
	*fenceRig
	off time.Duration
	hb  string
	cfg SleepConfig
}

func newFenceSleepRig(t *testing.T) *fenceSleepRig {
	r := &fenceSleepRig{fenceRig: newFenceRig(), hb: filepath.Join(t.TempDir(), "fence-heartbeat-x.json")}
	clock := func() time.Duration { return BootNow() + r.off }
	r.f = r.newFence(clock, nil)
	r.cfg = SleepConfig{Heartbeat: r.hb, Clock: clock, Logger: slog.New(slog.DiscardHandler)}
	return r
}

// newFence is a (re)started daemon's fence: initial are the VMs of the
// heartbeat it found.
func (r *fenceSleepRig) newFence(clock func() time.Duration, initial []GuardVM) *Fence {
	cfg := r.f.cfg
	cfg.Clock, cfg.Initial = clock, initial
	cfg.Heartbeat = func(d, w, since time.Duration, vms []GuardVM) error {
		return WriteHeartbeatSince(r.hb, d, w, since, vms)
	}
	return NewFence(cfg)
}

// SleepPost continues a QEMU only on the lease it was stopped under. A
// fresh deadline alone does not do: after a lapse the daemon kills only
// the VMs it still counts (the state may have moved a server away
// before its first check), and a daemon restarted after the resume knows
// of no lapse; either writes a fresh deadline, of a lease that began
// after the stop. Nor does a lease whose heartbeat no longer lists the
// VM.
func TestSleepPostContinuesOnlyOnTheLeaseOfTheStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resume func(t *testing.T, r *fenceSleepRig)
		cont   bool
	}{
		{"short sleep, same lease", func(t *testing.T, r *fenceSleepRig) {
			r.off += 2 * time.Second
			r.check()
		}, true},
		{"lapse, server moved before the first check", func(t *testing.T, r *fenceSleepRig) {
			r.off += time.Minute
			r.f.setHA(nil) // the state has it on another host now
			r.check()
		}, false},
		{"daemon restarted after the resume", func(t *testing.T, r *fenceSleepRig) {
			r.off += 3 * time.Second // within the lease
			hb, err := ReadHeartbeat(r.hb)
			if err != nil {
				t.Fatal(err)
			}
			r.f = r.newFence(r.cfg.Clock, hb.VMs)
			r.check()
		}, false},
		{"same lease, VM no longer listed", func(t *testing.T, r *fenceSleepRig) {
			r.f.setHA(nil)
			r.check() // a rewrite keeps it listed until the next renewal
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000d")
			r := newFenceSleepRig(t)
			r.f.setHA([]GuardVM{{ID: "00000000-0000-4000-8000-00000000000d", PID: q.pid}})
			r.check()
			if err := SleepPre(r.cfg); err != nil {
				t.Fatal(err)
			}
			q.waitState(t, "T")
			tc.resume(t, r)
			if hb, err := ReadHeartbeat(r.hb); err != nil || hb.Deadline() < r.cfg.Clock() {
				t.Fatalf("heartbeat %+v (%v); want a valid deadline", hb, err)
			}
			if err := SleepPost(r.cfg); err != nil {
				t.Fatal(err)
			}
			if tc.cont {
				q.waitState(t, "S")
			} else {
				q.waitKilled(t)
			}
		})
	}
}

// A heartbeat of an older daemon (no lease start) cannot show the lease
// unbroken since the stop: its QEMUs are killed.
func TestSleepPostKillsOnAHeartbeatWithoutLeaseStart(t *testing.T) {
	q := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: q.pid})
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "T")
	if err := WriteHeartbeat(cfg.Heartbeat, BootNow()+time.Hour, 0, []GuardVM{{ID: "00000000-0000-4000-8000-00000000000a", PID: q.pid}}); err != nil {
		t.Fatal(err)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitKilled(t)
}

// A record SleepPre cannot read may name QEMUs a step before stopped: it
// is kept aside, unchanged, never overwritten.
func TestSleepPreKeepsAnUnreadableRecordAside(t *testing.T) {
	q := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: q.pid})
	rec := SleepRecordPath(cfg.Heartbeat)
	garbage := []byte(`{"vms":[{"id":"00000000-0000-4000-8000-000000000012","pid":`)
	if err := os.WriteFile(rec, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SleepPost(cfg); err == nil || !strings.Contains(err.Error(), cfg.Heartbeat) {
		t.Fatalf("post on an unreadable record: %v; want an error naming the heartbeat", err)
	}
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "T")
	if b, err := os.ReadFile(rec + ".unreadable"); err != nil || string(b) != string(garbage) {
		t.Fatalf("record kept aside: %q, %v; want the unreadable one unchanged", b, err)
	}
	if r := readRecord(t, cfg); len(r.VMs) != 1 || r.VMs[0].PID != q.pid {
		t.Fatalf("new record %+v; want inst-a", r)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "S")
}

// A record of another boot names pids of processes long gone: post drops
// it without a signal, pre starts a new one.
func TestSleepIgnoresARecordOfAnotherBoot(t *testing.T) {
	q := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: q.pid})
	start, _, _ := procStartState("/proc", q.pid)
	old := SleepRecord{BootID: "another-boot", VMs: []SleptVM{{ID: "00000000-0000-4000-8000-00000000000a", PID: q.pid, Start: start, Stopped: 1}}}
	if err := writeSleepRecord(SleepRecordPath(cfg.Heartbeat), old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(q.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "T")
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	q.holds(t, "T", "a pid named by a record of another boot")
	if _, err := os.Stat(SleepRecordPath(cfg.Heartbeat)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("post left a record of another boot: %v", err)
	}
	if err := syscall.Kill(q.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "S")
	if err := writeSleepRecord(SleepRecordPath(cfg.Heartbeat), old); err != nil {
		t.Fatal(err)
	}
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "T")
	if r := readRecord(t, cfg); r.BootID != BootID() || len(r.VMs) != 1 || r.VMs[0].Stopped <= 1 {
		t.Fatalf("pre over a record of another boot recorded %+v; want a new one of this boot", r)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "S")
}

// Errors name the heartbeat they are about: the hook acts on several.
func TestSleepErrorsNameTheHeartbeat(t *testing.T) {
	cfg := sleepRig(t, BootNow()+time.Hour)
	if err := os.WriteFile(cfg.Heartbeat, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SleepPre(cfg); err == nil || !strings.Contains(err.Error(), cfg.Heartbeat) {
		t.Fatalf("pre on an unreadable heartbeat: %v; want an error naming it", err)
	}
}

// The hook runs as root and signals the pids it reads: a heartbeat that
// another user could have written is not acted on (pre stops nothing,
// post cannot show the lease held and kills), and a record another user
// could have written is not signalled from (kept aside by pre).
func TestSleepRefusesFilesOthersCouldWrite(t *testing.T) {
	q := startFakeQEMU(t, "00000000-0000-4000-8000-00000000000a")
	q.waitState(t, "S")
	cfg := sleepRig(t, BootNow()+time.Hour, GuardVM{ID: "00000000-0000-4000-8000-00000000000a", PID: q.pid})
	if err := os.Chmod(cfg.Heartbeat, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := SleepPre(cfg); err == nil || !strings.Contains(err.Error(), cfg.Heartbeat) {
		t.Fatalf("pre on a world-writable heartbeat: %v; want an error naming it", err)
	}
	q.holds(t, "S", "a VM listed in a world-writable heartbeat")
	if err := os.Chmod(cfg.Heartbeat, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SleepPre(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitState(t, "T")
	rec := SleepRecordPath(cfg.Heartbeat)
	if err := os.Chmod(rec, 0o622); err != nil {
		t.Fatal(err)
	}
	if err := SleepPost(cfg); err == nil {
		t.Fatal("post acted on a record others could write")
	}
	q.holds(t, "T", "a VM named by a record others could write")
	if err := os.Chmod(rec, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.Heartbeat, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := SleepPost(cfg); err != nil {
		t.Fatal(err)
	}
	q.waitKilled(t)
}
