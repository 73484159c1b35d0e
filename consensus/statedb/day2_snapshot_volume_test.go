package statedb

import (
	"errors"
	"strings"
	"testing"
)

// TestSnapshotVolumeBackedServer: createImage of a server booted from a
// volume is accepted while the boot volume is settled, refused (409,
// nothing written) while it is extending, and the boot volume cannot be
// extended while its copy runs.
func TestSnapshotVolumeBackedServer(t *testing.T) {
	e := newBootEnv(t, "")
	if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", New: newRoot("v1")})); err != nil {
		t.Fatal(err)
	}
	e.place("s1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "s1", HostID: "host1", VMState: VMActive, PowerState: PowerRunning})
	snap := func(img string) error {
		return e.apply(CmdSnapshotServer, SnapshotServerCmd{ID: "s1", By: ActionBy{UserID: "u1", ProjectID: "p1"},
			Image: Image{ID: img, Name: img, ProjectID: "p1", DiskFormat: "qcow2", ContainerFormat: "bare"}})
	}

	e.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 2})
	err := snap("i1")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "boot volume v1 is extending") {
		t.Fatalf("snapshot while the boot volume extends = %v; want 409", err)
	}
	if _, ok := e.s.Snapshot().Image("i1"); ok || e.inst("s1").TaskState != "" {
		t.Fatalf("a refused snapshot wrote state: task %q", e.inst("s1").TaskState)
	}
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeInUse)

	if err := snap("i2"); err != nil {
		t.Fatalf("snapshot of a volume-backed server = %v", err)
	}
	img, ok := e.s.Snapshot().Image("i2")
	if inst := e.inst("s1"); !ok || img.Status != ImageQueued || inst.TaskState != TaskImageSnapshot || inst.SnapshotImage != "i2" {
		t.Fatalf("after snapshot: image %+v, server task %q image %q", img, inst.TaskState, inst.SnapshotImage)
	}
	if err := e.apply(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 3}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "image is being made") {
		t.Fatalf("extend while the boot volume is copied = %v; want 409", err)
	}
	if v := e.vol("v1"); v.SizeGB != 2 || v.Status != VolumeInUse {
		t.Fatalf("boot volume after a refused extend = %d GB %s", v.SizeGB, v.Status)
	}
	e.must(CmdFinishSnapshot, FinishSnapshotCmd{InstanceID: "s1", HostID: "host1", ImageID: "i2"})
	if inst := e.inst("s1"); inst.TaskState != "" {
		t.Fatalf("task after the snapshot = %q", inst.TaskState)
	}
	e.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 3})
	e.wantStatus("v1", VolumeExtending)
}
