package agent_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestAgentSnapshot runs createImage through the agent: the image goes
// active with the copy's sums; a failed copy kills the image and ends the
// action in error with the server as it was; a snapshot found saving
// after a restart (the try before died) is killed, not left saving.
func TestAgentSnapshot(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	snapshot := func(img string) {
		h.t.Helper()
		h.apply(statedb.CmdSnapshotServer, statedb.SnapshotServerCmd{ID: "i-1",
			Image: statedb.Image{ID: img, Name: img, ProjectID: "proj", DiskFormat: "qcow2", ContainerFormat: "bare"}})
	}
	image := func(id string) *statedb.Image {
		i, _ := h.st.Snapshot().Image(id)
		return i
	}

	snapshot("snap-1")
	h.eventually("snap-1 active", func() bool { return image("snap-1").Status == statedb.ImageActive })
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if img := image("snap-1"); img.SHA256 == "" || !slices.Contains(img.Holders, hostA) || img.VirtualSize == 0 {
		t.Fatalf("snapshot image = %+v", img)
	}
	if ops := h.hv.Ops("i-1"); !slices.Contains(ops, "SnapshotRoot:snap-1") || !slices.Contains(ops, "DropSnapshot:/fake/vms/i-1/snapshot-snap-1.qcow2") {
		t.Fatalf("hypervisor ops = %v", ops)
	}
	if a := h.st.Snapshot().InstanceActions("i-1")[0]; a.Action != "createImage" || a.Events[0].Result != statedb.ResultSuccess {
		t.Fatalf("action = %+v", a)
	}

	h.hv.Fail("SnapshotRoot", errors.New("disk gone"))
	snapshot("snap-2")
	h.eventually("snap-2 killed", func() bool { return image("snap-2").Status == statedb.ImageKilled })
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if a := h.st.Snapshot().InstanceActions("i-1")[0]; a.Events[0].Result != statedb.ResultError || a.Message == "" {
		t.Fatalf("failed snapshot action = %+v", a)
	}
	h.hv.Fail("SnapshotRoot", nil)

	h.stop()
	snapshot("snap-3")
	h.apply(statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: "snap-3", HostID: hostA})
	h.run()
	h.eventually("snap-3 killed", func() bool { return image("snap-3").Status == statedb.ImageKilled })
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
}

// TestAgentResizeRevertConfirm resizes through the agent: the VM is
// prepared (disk grown) and started with the new flavor; revert starts it
// with the old one and the kept disk; confirm drops the kept disk.
func TestAgentResizeRevertConfirm(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.apply(statedb.CmdCreateFlavor, statedb.Flavor{ID: "2", Name: "m1.small", VCPUs: 2, RAMMB: 256, DiskGB: 3, Public: true})
	caps := statedb.HostCap{VCPUs: 100, RAMMB: 1 << 20, DiskGB: 1000}
	h.apply(statedb.CmdResizeServer, statedb.ResizeCmd{ID: "i-1", Action: statedb.ActionResize, FlavorID: "2", HostCap: caps})
	h.waitState("i-1", statedb.VMResized, statedb.PowerRunning)
	if vm, _ := h.hv.VM("i-1"); vm.Spec.VCPUs != 2 || vm.Spec.RAMMB != 256 || vm.RootGB != 3 || !vm.ResizeKept || vm.State != "running" {
		t.Fatalf("vm after resize = %+v", vm)
	}
	h.apply(statedb.CmdResizeServer, statedb.ResizeCmd{ID: "i-1", Action: statedb.ActionRevertResize})
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if vm, _ := h.hv.VM("i-1"); vm.Spec.VCPUs != 1 || vm.Spec.RAMMB != 128 || vm.RootGB != 0 || vm.ResizeKept {
		t.Fatalf("vm after revert = %+v", vm)
	}
	if i := h.inst("i-1"); i.Flavor.ID != "1" || i.Resize != nil {
		t.Fatalf("instance after revert: flavor %s, resize %+v", i.Flavor.ID, i.Resize)
	}
	h.apply(statedb.CmdResizeServer, statedb.ResizeCmd{ID: "i-1", Action: statedb.ActionResize, FlavorID: "2", HostCap: caps})
	h.waitState("i-1", statedb.VMResized, statedb.PowerRunning)
	h.apply(statedb.CmdResizeServer, statedb.ResizeCmd{ID: "i-1", Action: statedb.ActionConfirmResize})
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if vm, _ := h.hv.VM("i-1"); vm.ResizeKept || vm.Spec.VCPUs != 2 {
		t.Fatalf("vm after confirm = %+v", vm)
	}
	if i := h.inst("i-1"); i.Flavor.ID != "2" || i.Resize != nil || i.Claim().VCPUs != 2 {
		t.Fatalf("instance after confirm: flavor %s, resize %+v", i.Flavor.ID, i.Resize)
	}
}
