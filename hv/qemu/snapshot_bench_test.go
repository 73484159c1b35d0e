package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkSnapshotRoot times SnapshotRoot of a running VM whose root disk
// holds 1 GiB of written data (a drive-backup job) against qemu-img
// convert of the same disk to the same storage, and reports both and
// their ratio (convert time / snapshot time: at least 0.8 is the goal),
// and the same for a convert that writes through to the disk (-t none),
// as the backup job's target is flushed when it ends.
// The VM only needs to run, not boot. Run with -benchtime=1x.
func BenchmarkSnapshotRoot(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	dir := stateDir(b)
	d := newTestDriver(b, dir)
	base := filepath.Join(b.TempDir(), "base.qcow2")
	for _, args := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "1G"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1G", base},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	uuid := newUUID()
	killVMs(b, uuid)
	root, err := d.CreateRootDisk(ctx, uuid, base, "qcow2", 1)
	if err != nil {
		b.Fatal(err)
	}
	s := Spec{UUID: uuid, Name: "bench", VCPUs: 1, RAMMB: 64, RootDisk: Disk{ID: "root", Path: root, Format: "qcow2"}}
	if err := d.Start(ctx, s); err != nil {
		b.Fatalf("Start = %v", err)
	}
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		b.Fatal(err)
	}
	var snap, conv, durable time.Duration
	b.ResetTimer()
	for range b.N {
		dest := filepath.Join(out, "snap.qcow2")
		t0 := time.Now()
		if err := d.SnapshotRoot(ctx, uuid, dest); err != nil {
			b.Fatalf("SnapshotRoot = %v", err)
		}
		snap += time.Since(t0)
		_ = os.Remove(dest)
		t0 = time.Now()
		if o, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", root, dest).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img convert: %v: %s", err, o)
		}
		conv += time.Since(t0)
		_ = os.Remove(dest)
		t0 = time.Now()
		if o, err := exec.Command("qemu-img", "convert", "-U", "-t", "none", "-f", "qcow2", "-O", "qcow2", root, dest).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img convert -t none: %v: %s", err, o)
		}
		durable += time.Since(t0)
		_ = os.Remove(dest)
	}
	b.StopTimer()
	b.ReportMetric(snap.Seconds()/float64(b.N), "s/snapshot")
	b.ReportMetric(conv.Seconds()/float64(b.N), "s/convert")
	b.ReportMetric(conv.Seconds()/snap.Seconds(), "convert/snapshot")
	b.ReportMetric(durable.Seconds()/float64(b.N), "s/convert-direct")
	b.ReportMetric(durable.Seconds()/snap.Seconds(), "convert-direct/snapshot")
	_ = d.Delete(ctx, uuid)
}
