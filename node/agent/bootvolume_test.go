package agent_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// withNewBootVolume makes the server boot from a new 1 GB volume made from
// the image on host A.
func withNewBootVolume(vol string, dot bool) func(*statedb.InstanceCreate) {
	return func(ic *statedb.InstanceCreate) {
		ic.Instance.ImageID = ""
		ic.Root = &statedb.RootDisk{AttachmentID: "att-" + vol, DeleteOnTermination: dot, New: &statedb.Volume{ID: vol, SizeGB: 1,
			Format: "qcow2", ImageID: image, Host: hostA, Path: "/vols/" + vol + ".qcow2"}}
	}
}

// imageRecord adds the harness image to the state (apply checks it).
func (h *harness) imageRecord() {
	h.apply(statedb.CmdCreateImage, statedb.Image{ID: image, Name: image, ProjectID: "proj", Visibility: "public",
		DiskFormat: "qcow2", ContainerFormat: "bare"})
}

func TestAgentBootsFromNewVolume(t *testing.T) {
	h := newHarness(t)
	h.imageRecord()
	h.run()
	h.server("i-1", hostA, noNICs, withNewBootVolume("root-1", true))
	vm := h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if vm.RootVolume != "root-1" {
		t.Fatalf("root volume = %q; want root-1", vm.RootVolume)
	}
	if size, from, ok := h.vols.File("/vols/root-1.qcow2"); !ok || size != 1 || from != "/images/img-1.qcow2" {
		t.Fatalf("boot volume file = %d GB from %q (%v); want 1 GB from the image", size, from, ok)
	}
	got, _ := h.hv.VM("i-1")
	if got.Spec.Root.Path != "/vols/root-1.qcow2" || got.RootDisk != nil || len(got.Spec.ExtraDisks) != 0 {
		t.Fatalf("vm root = %+v, overlay %v, extra %v; want the boot volume only", got.Spec.Root, got.RootDisk, got.Spec.ExtraDisks)
	}
	v, _ := h.st.Snapshot().Volume("root-1")
	if v.Status != statedb.VolumeInUse || v.Attachment().HostID != hostA {
		t.Fatalf("boot volume = %s on %q; want in-use on host A", v.Status, v.Attachment().HostID)
	}
	if n := h.hv.Count("AttachDisk", "i-1"); n != 0 {
		t.Errorf("AttachDisk called %d times for the boot volume; want 0", n)
	}
	// Delete: the VM goes, then the volume (delete_on_termination).
	h.apply(statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: "i-1"})
	h.eventually("server and boot volume gone", func() bool {
		sn := h.st.Snapshot()
		_, inst := sn.Instance("i-1")
		_, vol := sn.Volume("root-1")
		return !inst && !vol
	})
	if _, _, ok := h.vols.File("/vols/root-1.qcow2"); ok {
		t.Fatal("boot volume file still there")
	}
}

func TestAgentBootVolumeCreateFails(t *testing.T) {
	h := newHarness(t)
	h.imageRecord()
	h.vols.Fail("Create", errors.New("no space left on device"))
	h.run()
	h.server("i-1", hostA, noNICs, withNewBootVolume("root-1", false))
	h.eventually("server in ERROR", func() bool { i := h.inst("i-1"); return i.VMState == statedb.VMError })
	if f := h.inst("i-1").Fault; f == nil || !strings.Contains(f.Message, "no space left on device") {
		t.Fatalf("fault = %+v; want the volume's failure", f)
	}
	h.settle()
	if n := h.hv.Count("Start", "i-1"); n != 0 {
		t.Fatalf("Start called %d times without a boot volume; want 0", n)
	}
}
