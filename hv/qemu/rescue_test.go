package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lastBoot is the console output of the guest's last boot.
func lastBoot(t testing.TB, d *Driver, uuid string) string {
	t.Helper()
	log, err := d.ConsoleLog(uuid, 0)
	if err != nil {
		t.Fatalf("ConsoleLog = %v", err)
	}
	i := strings.LastIndex(log, "PEERSTACK-BOOT")
	if i < 0 {
		t.Fatalf("no boot in the console:\n%s", tail(log, 2000))
	}
	return log[i:]
}

// TestRescueUnrescue boots the test guest, rescues it from the guest image
// (a disk much smaller than its 1 GiB root disk, so the console tells the
// two apart): the rescue VM boots from the image with the root disk as
// vdb; unrescue boots the root disk again and drops the rescue overlay.
func TestRescueUnrescue(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	d := newTestDriver(t, stateDir(t))
	s := guestSpec(t, d, guestOpts{hostname: "rescue"})
	killVMs(t, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	info, err := imageInfo(ctx, "qemu-img", guestImage, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	imageDisk := fmt.Sprintf("vda sectors=%d", info.VirtualSize/512)
	rootAs := func(dev string) string { return fmt.Sprintf("%s sectors=%d", dev, (1<<30)/512) }
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK "+rootAs("vda"), 1)

	if err := d.Rescue(ctx, s.UUID, Disk{Path: "relative.qcow2", Format: "qcow2"}); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("Rescue from a relative path = %v, want ErrInvalidSpec", err)
	}
	if err := d.Rescue(ctx, s.UUID, Disk{Path: guestImage, Format: "qcow2"}); err != nil {
		t.Fatalf("Rescue = %v", err)
	}
	// The rescue VM boots the image as vda, with the root disk as vdb.
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK "+imageDisk, 1)
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK "+rootAs("vdb"), 1)
	if boot := lastBoot(t, d, s.UUID); !strings.Contains(boot, "hostname=rescue") {
		t.Fatalf("rescue boot did not read the config drive:\n%s", boot)
	}
	if !d.Rescued(s.UUID) {
		t.Fatal("Rescued = false after Rescue")
	}
	if st, _ := d.Status(ctx, s.UUID); st.State != StateRunning {
		t.Fatalf("Status after Rescue = %+v", st)
	}
	// A second rescue of a running rescue VM changes nothing.
	if err := d.Rescue(ctx, s.UUID, Disk{Path: guestImage, Format: "qcow2"}); err != nil {
		t.Fatalf("Rescue again = %v", err)
	}
	dest := filepath.Join(t.TempDir(), "snap.qcow2")
	if err := d.SnapshotRoot(ctx, s.UUID, dest); err == nil {
		t.Fatal("SnapshotRoot of a rescued vm succeeded")
	}

	if err := d.Unrescue(ctx, s.UUID); err != nil {
		t.Fatalf("Unrescue = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-DISK "+rootAs("vda"), 2)
	if boot := lastBoot(t, d, s.UUID); strings.Contains(boot, imageDisk) || strings.Contains(boot, rootAs("vdb")) {
		t.Fatalf("boot after unrescue still shows the rescue disks:\n%s", boot)
	}
	if d.Rescued(s.UUID) {
		t.Fatal("Rescued = true after Unrescue")
	}
	if _, err := os.Stat(d.Paths(s.UUID).RescueDisk()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rescue overlay after unrescue: %v, want removed", err)
	}
	got, err := readSpec(d.Paths(s.UUID))
	if err != nil || got.RootDisk.Path != s.RootDisk.Path || got.RescuedRoot != nil {
		t.Fatalf("spec after unrescue = %+v, %v; want the original", got, err)
	}
	if err := d.Delete(ctx, s.UUID); err != nil {
		t.Fatalf("Delete = %v", err)
	}
}

// TestSnapshotRoot copies the root disk of a running guest (drive-backup)
// and of a stopped one (qemu-img convert) into standalone qcow2 images,
// then boots a new VM from the running guest's copy.
func TestSnapshotRoot(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	d := newTestDriver(t, stateDir(t))
	s := guestSpec(t, d, guestOpts{hostname: "snapsrc"})
	killVMs(t, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	dir := t.TempDir()
	live := filepath.Join(dir, "live.qcow2")
	if err := d.SnapshotRoot(ctx, s.UUID, live); err != nil {
		t.Fatalf("SnapshotRoot (running) = %v", err)
	}
	if err := d.SnapshotRoot(ctx, s.UUID, live); !errors.Is(err, os.ErrExist) {
		t.Fatalf("SnapshotRoot over an existing file = %v, want ErrExist", err)
	}
	checkStandalone := func(path string) {
		t.Helper()
		info, err := imageInfo(ctx, "qemu-img", path, "qcow2")
		if err != nil {
			t.Fatal(err)
		}
		if info.Backing != "" || info.VirtualSize != 1<<30 || info.Format != "qcow2" {
			t.Fatalf("%s: %+v; want a standalone 1 GiB qcow2", path, info)
		}
	}
	checkStandalone(live)
	if st, _ := d.Status(ctx, s.UUID); st.State != StateRunning {
		t.Fatalf("source after a live snapshot: %+v, want running", st)
	}
	if err := d.Stop(ctx, s.UUID); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	cold := filepath.Join(dir, "cold.qcow2")
	if err := d.SnapshotRoot(ctx, s.UUID, cold); err != nil {
		t.Fatalf("SnapshotRoot (stopped) = %v", err)
	}
	checkStandalone(cold)

	// The copy boots as a new server's image.
	uuid := newUUID()
	killVMs(t, uuid)
	root, err := d.CreateRootDisk(ctx, uuid, live, "qcow2", 1)
	if err != nil {
		t.Fatalf("CreateRootDisk over the snapshot = %v", err)
	}
	s2 := Spec{UUID: uuid, Name: "fromsnap", VCPUs: 1, RAMMB: 128, RootDisk: Disk{ID: "root", Path: root, Format: "qcow2"}}
	if err := d.Start(ctx, s2); err != nil {
		t.Fatalf("Start from the snapshot = %v", err)
	}
	waitConsole(t, d, uuid, "PEERSTACK-READY", 1)
	for _, u := range []string{s.UUID, uuid} {
		if err := d.Delete(ctx, u); err != nil {
			t.Fatalf("Delete = %v", err)
		}
	}
}
