package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The fence and the guard count on CLOCK_BOOTTIME unless told otherwise:
// CLOCK_MONOTONIC stops while the host is suspended.
func TestFenceAndGuardDefaultToBootTime(t *testing.T) {
	boot := reflect.ValueOf(BootNow).Pointer()
	f := NewFence(FenceConfig{})
	if reflect.ValueOf(f.cfg.Clock).Pointer() != boot {
		t.Fatal("the fence's default clock is not BootNow")
	}
	if m, b := MonoNow(), BootNow(); b < m {
		t.Fatalf("CLOCK_BOOTTIME %v behind CLOCK_MONOTONIC %v", b, m)
	}
}

// The heartbeat carries the deadline on CLOCK_BOOTTIME, and on
// CLOCK_MONOTONIC for a guard of an older release; a file of an older
// daemon (CLOCK_MONOTONIC only) is read as the BOOTTIME deadline it
// stands for.
func TestHeartbeatDeadlineOnBootTime(t *testing.T) {
	const slack = time.Millisecond // between the two clock reads of one sample
	file := filepath.Join(t.TempDir(), "hb.json")
	deadline := BootNow() + 10*time.Second
	before := suspendedAtLeast(BootNow, MonoNow)
	if err := WriteHeartbeat(file, deadline, 0, []GuardVM{{ID: "a", PID: 11}}); err != nil {
		t.Fatal(err)
	}
	after := suspendedAtLeast(BootNow, MonoNow)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["deadline_boot_ns"] != float64(deadline) {
		t.Fatalf("file %s: want deadline_boot_ns %d", b, deadline)
	}
	hb, err := ReadHeartbeat(file)
	if err != nil || hb.Deadline() != deadline || len(hb.VMs) != 1 {
		t.Fatalf("read back %+v, %v; want deadline %v", hb, err, deadline)
	}
	if off := deadline - time.Duration(hb.DeadlineMono); off < before-slack || off > after+slack {
		t.Fatalf("CLOCK_MONOTONIC deadline off by %v; the host was suspended %v–%v", off, before, after)
	}

	old := Heartbeat{DeadlineMono: int64(time.Hour)}
	before = suspendedAtLeast(BootNow, MonoNow)
	got := old.Deadline()
	after = suspendedAtLeast(BootNow, MonoNow)
	if got < time.Hour+before-slack || got > time.Hour+after+slack {
		t.Fatalf("an older daemon's deadline read as %v; want 1h plus the time suspended (%v–%v)", got, before, after)
	}
	if (Heartbeat{}).Deadline() != 0 {
		t.Fatal("an empty heartbeat has a deadline")
	}
}

// Each conversion errs early: with clocks that move between reads, the
// time suspended is under-counted when a MONOTONIC deadline becomes a
// BOOTTIME one and over-counted the other way.
func TestSuspendedErrsEarly(t *testing.T) {
	const gone, step = time.Minute, time.Millisecond
	var now time.Duration
	mono := func() time.Duration { now += step; return now }
	boot := func() time.Duration { now += step; return now + gone }
	if s := suspendedAtMost(boot, mono); s > gone {
		t.Errorf("suspendedAtMost = %v; want at most the %v suspended", s, gone)
	}
	if s := suspendedAtLeast(boot, mono); s < gone {
		t.Errorf("suspendedAtLeast = %v; want at least the %v suspended", s, gone)
	}
	old := Heartbeat{DeadlineMono: int64(time.Hour)}
	if d := old.deadlineOn("", boot, mono); d > time.Hour+gone {
		t.Errorf("an older daemon's deadline read as %v; want at most %v", d, time.Hour+gone)
	}
}

// A heartbeat left from another boot (in the data dir, which survives a
// reboot; CLOCK_BOOTTIME starts again at 0) is expired, whatever its
// deadline; one of this boot, or of a daemon that wrote no boot id,
// keeps its deadline.
func TestHeartbeatOfAnotherBootExpired(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hb.json")
	deadline := BootNow() + time.Hour
	if err := WriteHeartbeat(file, deadline, 0, nil); err != nil {
		t.Fatal(err)
	}
	hb, err := ReadHeartbeat(file)
	if err != nil {
		t.Fatal(err)
	}
	if hb.BootID == "" || hb.BootID != BootID() {
		t.Fatalf("heartbeat boot id %q; want this boot's %q", hb.BootID, BootID())
	}
	if got := hb.Deadline(); got != deadline {
		t.Fatalf("deadline of this boot = %v; want %v", got, deadline)
	}
	if got := hb.deadlineOn("another-boot", BootNow, MonoNow); got != 0 {
		t.Fatalf("deadline of another boot = %v; want 0 (expired)", got)
	}
	hb.BootID = ""
	if got := hb.deadlineOn("another-boot", BootNow, MonoNow); got != deadline {
		t.Fatalf("deadline without a boot id = %v; want %v", got, deadline)
	}
}
