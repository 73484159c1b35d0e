package qemu

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPauseSuspendResume boots the test guest, pauses and unpauses it
// (QMP stop/cont), suspends it (memory to the VM's directory, process
// gone) and resumes it from the saved memory with -incoming.
func TestPauseSuspendResume(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	d := newTestDriver(t, stateDir(t))
	s := guestSpec(t, d, guestOpts{hostname: "pause"})
	killVMs(t, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	wantState := func(want State) VMStatus {
		t.Helper()
		st, err := d.Status(ctx, s.UUID)
		if err != nil || st.State != want {
			t.Fatalf("Status = %+v, %v; want %s", st, err, want)
		}
		return st
	}
	pid := wantState(StateRunning).PID
	if err := d.Pause(ctx, s.UUID); err != nil {
		t.Fatalf("Pause = %v", err)
	}
	wantState(StatePaused)
	if err := d.Unpause(ctx, s.UUID); err != nil {
		t.Fatalf("Unpause = %v", err)
	}
	if st := wantState(StateRunning); st.PID != pid {
		t.Fatalf("pid after unpause = %d, want %d", st.PID, pid)
	}

	if err := d.Suspend(ctx, s.UUID); err != nil {
		t.Fatalf("Suspend = %v", err)
	}
	wantState(StateShutoff)
	fi, err := os.Stat(d.Paths(s.UUID).SavedState())
	if err != nil || fi.Size() < 1<<20 {
		t.Fatalf("saved memory: %v, %v; want a file of at least 1 MiB", fi, err)
	}
	if err := d.Unpause(ctx, s.UUID); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Unpause of a suspended vm = %v, want ErrNotRunning", err)
	}
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start (resume) = %v", err)
	}
	if st := wantState(StateRunning); st.PID == pid {
		t.Fatalf("resumed vm kept pid %d", pid)
	}
	if _, err := os.Stat(d.Paths(s.UUID).SavedState()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved memory after resume: %v, want removed", err)
	}
	qlog, err := os.ReadFile(d.Paths(s.UUID).QEMULog())
	if err != nil || !strings.Contains(string(qlog), "-incoming") {
		t.Fatalf("qemu.log does not show a restore (-incoming): %v", err)
	}
	// The restored guest runs on without booting again.
	if log, _ := d.ConsoleLog(s.UUID, 0); strings.Count(log, "PEERSTACK-READY") != 1 {
		t.Fatalf("guest booted again after resume:\n%s", tail(log, 2000))
	}
	if err := d.Delete(ctx, s.UUID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
}

// BenchmarkPauseUnpause times a QMP stop → cont round trip of a running
// guest.
func BenchmarkPauseUnpause(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	d := newTestDriver(b, stateDir(b))
	s := guestSpec(b, d, guestOpts{hostname: "bench"})
	killVMs(b, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		b.Fatalf("Start = %v", err)
	}
	waitFileMarker(b, d.Paths(s.UUID).ConsoleLog(), "PEERSTACK-READY")
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		if err := d.Pause(ctx, s.UUID); err != nil {
			b.Fatal(err)
		}
		if err := d.Unpause(ctx, s.UUID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(t0).Microseconds())/float64(b.N), "µs/round-trip")
	b.StopTimer()
	_ = d.Delete(ctx, s.UUID)
}
