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
	before := suspended()
	if err := WriteHeartbeat(file, deadline, 0, []GuardVM{{ID: "a", PID: 11}}); err != nil {
		t.Fatal(err)
	}
	after := suspended()
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
	before = suspended()
	got := old.Deadline()
	after = suspended()
	if got < time.Hour+before-slack || got > time.Hour+after+slack {
		t.Fatalf("an older daemon's deadline read as %v; want 1h plus the time suspended (%v–%v)", got, before, after)
	}
	if (Heartbeat{}).Deadline() != 0 {
		t.Fatal("an empty heartbeat has a deadline")
	}
}
