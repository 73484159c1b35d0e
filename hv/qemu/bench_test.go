package qemu

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BenchmarkBootToMarker times Start → PEERSTACK-READY on the console through
// the Driver, and a bare qemu-system-x86_64 with the same arguments (from
// BuildArgs) → the same marker, alternating which goes first. Run with
// -benchtime=3x for three pairs.
func BenchmarkBootToMarker(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	d := newTestDriver(b, stateDir(b))
	var drv, bare time.Duration
	viaDriver := func() time.Duration {
		s := guestSpec(b, d, guestOpts{hostname: "bench"})
		killVMs(b, s.UUID)
		t0 := time.Now()
		if err := d.Start(ctx, s); err != nil {
			b.Fatalf("Start = %v", err)
		}
		waitFileMarker(b, d.Paths(s.UUID).ConsoleLog(), "PEERSTACK-READY")
		took := time.Since(t0)
		if err := d.Delete(ctx, s.UUID); err != nil {
			b.Fatalf("Delete = %v", err)
		}
		return took
	}
	viaBare := func() time.Duration {
		s := guestSpec(b, d, guestOpts{hostname: "bench"})
		killVMs(b, s.UUID)
		p := d.Paths(s.UUID)
		args, err := BuildArgs(s, p, d.Accel())
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		cmd := exec.Command("qemu-system-x86_64", args...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitFileMarker(b, p.ConsoleLog(), "PEERSTACK-READY")
		took := time.Since(t0)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.RemoveAll(p.Dir)
		return took
	}
	for i := range b.N {
		if i%2 == 0 {
			drv += viaDriver()
			bare += viaBare()
		} else {
			bare += viaBare()
			drv += viaDriver()
		}
	}
	n := float64(b.N)
	b.ReportMetric(drv.Seconds()/n, "driver-s/boot")
	b.ReportMetric(bare.Seconds()/n, "bare-s/boot")
	b.ReportMetric(drv.Seconds()/bare.Seconds(), "driver/bare")
}

func waitFileMarker(b *testing.B, path, marker string) {
	b.Helper()
	deadline := time.Now().Add(bootTimeout)
	for time.Now().Before(deadline) {
		if c, err := os.ReadFile(path); err == nil && strings.Contains(string(c), marker) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s: no %q within %s", path, marker, bootTimeout)
}
