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

// A snapshot under way is never left half-done by what happens to its
// server meanwhile: a stale report does not clear image_snapshot, the
// server's failed host strands it (the image is killed, the action ends,
// the boot volume may grow again), and the boot volume keeps its size
// while the copy runs even when an admin reset its attachment.
func TestSnapshotVolumeBackedServerSurvivesItsHost(t *testing.T) {
	e := newBootEnv(t, "")
	if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", New: newRoot("v1")})); err != nil {
		t.Fatal(err)
	}
	e.place("s1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "s1", HostID: "host1", VMState: VMActive, PowerState: PowerRunning})
	e.must(CmdSnapshotServer, SnapshotServerCmd{ID: "s1", By: ActionBy{UserID: "u1", ProjectID: "p1"},
		Image: Image{ID: "i1", Name: "i1", ProjectID: "p1", DiskFormat: "qcow2", ContainerFormat: "bare"}})

	// The agent's report made before it saw the snapshot.
	e.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "s1", HostID: "host1", VMState: VMActive, PowerState: PowerRunning})
	if inst := e.inst("s1"); inst.TaskState != TaskImageSnapshot || inst.SnapshotImage != "i1" {
		t.Fatalf("after a stale report: task %q image %q; want image_snapshot of i1", inst.TaskState, inst.SnapshotImage)
	}

	// An admin detaches the boot volume's record by a status reset: the
	// copy still runs, the volume still may not grow.
	e.must(CmdResetVolumeStatus, ResetVolumeStatusCmd{ID: "v1", Status: VolumeAvailable, AttachStatus: "detached"})
	if a := e.vol("v1").Attachment(); a != nil {
		t.Fatalf("the reset left the attachment %+v", a)
	}
	if err := e.apply(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 2}); !errors.Is(err, ErrConflict) {
		t.Fatalf("extend of a boot volume being copied = %v; want 409", err)
	}

	// host1 fails; the server cannot move (its boot volume is local).
	e.must(CmdSetHostHealth, SetHostHealthCmd{ID: "host1", Down: true, Fenced: true})
	e.must(CmdFailoverInstance, FailoverCmd{From: "host1", Stranded: []PlacementFailure{{"s1", "local disk"}}})
	inst := e.inst("s1")
	if inst.VMState != VMError || inst.TaskState != "" || inst.SnapshotImage != "" {
		t.Fatalf("stranded server: vm %q task %q image %q; want error, no task, no snapshot", inst.VMState, inst.TaskState, inst.SnapshotImage)
	}
	if img, _ := e.s.Snapshot().Image("i1"); img.Status != ImageKilled {
		t.Fatalf("image of the stranded snapshot is %s; want killed", img.Status)
	}
	for _, a := range e.s.Snapshot().InstanceActions("s1") {
		if a.Action == ActionCreateImage && (!a.Finished() || a.Message == "") {
			t.Fatalf("createImage action after the host failed: %+v; want finished with an error", a)
		}
	}
	e.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 2})
}

// An evacuation of a server whose snapshot runs, voided by its host
// coming back: the snapshot goes on there (the agent finishes or kills
// it) instead of the server forgetting it with the image left saving.
func TestSnapshotResumesWhenEvacuationIsVoid(t *testing.T) {
	e := newBootEnv(t, "")
	if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", New: newRoot("v1")})); err != nil {
		t.Fatal(err)
	}
	e.place("s1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "s1", HostID: "host1", VMState: VMActive, PowerState: PowerRunning})
	e.must(CmdSnapshotServer, SnapshotServerCmd{ID: "s1", By: ActionBy{UserID: "u1", ProjectID: "p1"},
		Image: Image{ID: "i1", Name: "i1", ProjectID: "p1", DiskFormat: "qcow2", ContainerFormat: "bare"}})
	e.must(CmdSetHostHealth, SetHostHealthCmd{ID: "host1", Down: true})
	e.must(CmdEvacuateInstance, EvacuateCmd{ID: "s1", By: ActionBy{UserID: "u1", ProjectID: "p1"}})
	e.must(CmdSetHostHealth, SetHostHealthCmd{ID: "host1"})
	if inst := e.inst("s1"); inst.TaskState != TaskImageSnapshot || inst.SnapshotImage != "i1" {
		t.Fatalf("after the void evacuation: task %q image %q; want image_snapshot of i1", inst.TaskState, inst.SnapshotImage)
	}
}
