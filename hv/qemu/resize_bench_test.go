package qemu

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// waitMarkerCount waits until path holds marker n times.
func waitMarkerCount(b *testing.B, path, marker string, n int) {
	b.Helper()
	deadline := time.Now().Add(bootTimeout)
	for time.Now().Before(deadline) {
		if c, err := os.ReadFile(path); err == nil && strings.Count(string(c), marker) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s: %d× %q not within %s", path, n, marker, bootTimeout)
}

// BenchmarkResizeDowntime times a same-host resize of a running guest
// (PrepareResize: shutdown, keep the disk, grow it; Start with the new
// size) from the request to the guest's READY marker, against a plain
// Stop + Start of the same guest, and reports their ratio (the goal is at
// most 1.1). Run with -benchtime=2x or more.
func BenchmarkResizeDowntime(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	d := newTestDriver(b, stateDir(b))
	s := guestSpec(b, d, guestOpts{hostname: "rbench"})
	killVMs(b, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		b.Fatalf("Start = %v", err)
	}
	log := d.Paths(s.UUID).ConsoleLog()
	boots := 1
	waitMarkerCount(b, log, "PEERSTACK-READY", boots)
	var resize, plain time.Duration
	gb := 1
	b.ResetTimer()
	for range b.N {
		gb++
		t0 := time.Now()
		if err := d.PrepareResize(ctx, s.UUID, gb); err != nil {
			b.Fatalf("PrepareResize = %v", err)
		}
		if err := d.Start(ctx, s); err != nil {
			b.Fatalf("Start = %v", err)
		}
		boots++
		waitMarkerCount(b, log, "PEERSTACK-READY", boots)
		resize += time.Since(t0)
		if err := d.ConfirmResize(ctx, s.UUID); err != nil {
			b.Fatal(err)
		}

		t0 = time.Now()
		if err := d.Stop(ctx, s.UUID); err != nil {
			b.Fatalf("Stop = %v", err)
		}
		if err := d.Start(ctx, s); err != nil {
			b.Fatalf("Start = %v", err)
		}
		boots++
		waitMarkerCount(b, log, "PEERSTACK-READY", boots)
		plain += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(resize.Seconds()/float64(b.N), "s/resize")
	b.ReportMetric(plain.Seconds()/float64(b.N), "s/stop-start")
	b.ReportMetric(resize.Seconds()/plain.Seconds(), "resize/stop-start")
	_ = d.Delete(ctx, s.UUID)
}
