package agent_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

func (h *harness) volume(id string) *statedb.Volume {
	v, _ := h.st.Snapshot().Volume(id)
	return v
}

func (h *harness) waitVolume(id, status string) *statedb.Volume {
	h.t.Helper()
	h.eventually("volume "+id+" "+status, func() bool { v := h.volume(id); return v != nil && v.Status == status })
	return h.volume(id)
}

func (h *harness) newVolume(id string, sizeGB int) {
	h.t.Helper()
	h.apply(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: id, ProjectID: "proj", SizeGB: sizeGB,
		Format: "qcow2", Host: hostA, Path: "/vols/" + id + ".qcow2"}})
	h.waitVolume(id, statedb.VolumeAvailable)
}

func TestAgentVolumeAttachDetach(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.newVolume("v-1", 1)

	h.apply(statedb.CmdAttachVolume, statedb.AttachVolumeCmd{VolumeID: "v-1", ServerID: "i-1", AttachmentID: "att-1"})
	v := h.waitVolume("v-1", statedb.VolumeInUse)
	if a := v.Attachment(); a == nil || a.State != statedb.AttachAttached || a.Device != "/dev/vdb" {
		t.Fatalf("attachment = %+v; want attached as /dev/vdb", a)
	}
	vm, _ := h.hv.VM("i-1")
	if want := []agent.Disk{{ID: "v-1", Path: "/vols/v-1.qcow2", Format: "qcow2"}}; !slices.Equal(vm.Disks, want) {
		t.Errorf("VM disks = %v; want %v", vm.Disks, want)
	}

	// The guest ignores the unplug until the budget is spent: the detach
	// is given up, the volume in-use again with the reason.
	h.hv.HangDetach("v-1", true)
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	v = h.waitVolume("v-1", statedb.VolumeInUse)
	if a := v.Attachment(); a == nil || a.State != statedb.AttachAttached || !strings.Contains(v.ErrorReason, "did not release") {
		t.Errorf("volume after an ignored unplug = %s %+v %q; want in-use, attached, with the reason", v.Status, a, v.ErrorReason)
	}
	calls := h.hv.Count("DetachDisk", "i-1")
	h.settle()
	if n := h.hv.Count("DetachDisk", "i-1"); n != calls {
		t.Errorf("DetachDisk called %d more times after the give-up; want none until asked", n-calls)
	}
	// Asked again, the guest now cooperates.
	h.hv.HangDetach("v-1", false)
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	v = h.waitVolume("v-1", statedb.VolumeAvailable)
	if v.Attachment() != nil || v.ErrorReason != "" {
		t.Errorf("volume after detach = %+v; want no attachment and no error", v)
	}
	if vm, _ := h.hv.VM("i-1"); len(vm.Disks) != 0 {
		t.Errorf("VM disks after detach = %v; want none", vm.Disks)
	}
}

// attached starts server i-1 with volume v-1 attached.
func (h *harness) attached() {
	h.t.Helper()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.newVolume("v-1", 1)
	h.apply(statedb.CmdAttachVolume, statedb.AttachVolumeCmd{VolumeID: "v-1", ServerID: "i-1", AttachmentID: "att-1"})
	h.waitVolume("v-1", statedb.VolumeInUse)
}

// A DetachDisk that fails at once (the monitor briefly unreachable) is
// called again within the budget, and the detach goes through.
func TestAgentVolumeDetachRetries(t *testing.T) {
	h := newHarness(t)
	h.detachTimeout = time.Minute
	h.run()
	h.attached()
	h.hv.FailNext("DetachDisk", "i-1", 2, errors.New("qmp: connection reset by peer"))
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	v := h.waitVolume("v-1", statedb.VolumeAvailable)
	if v.Attachment() != nil || v.ErrorReason != "" {
		t.Errorf("volume after a retried detach = %+v; want available, no attachment, no reason", v)
	}
	if n := h.hv.Count("DetachDisk", "i-1"); n != 3 {
		t.Errorf("DetachDisk called %d times; want 3 (two failures, then success)", n)
	}
	for _, r := range h.prop.VolumeReports("v-1") {
		if r.Error != "" {
			t.Errorf("report %+v: a retried detach reports no error", r)
		}
	}
}

// A stopped server's volume detaches at once, whatever its guest would do.
func TestAgentVolumeDetachStopped(t *testing.T) {
	h := newHarness(t)
	h.detachTimeout = time.Hour
	h.run()
	h.attached()
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStop})
	h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
	h.hv.HangDetach("v-1", true) // a running guest would never let go
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	h.waitVolume("v-1", statedb.VolumeAvailable)
	if n := h.hv.Count("DetachDisk", "i-1"); n != 1 {
		t.Errorf("DetachDisk called %d times; want 1", n)
	}
	if vm, _ := h.hv.VM("i-1"); len(vm.Disks) != 0 {
		t.Errorf("VM disks after detach = %v; want none", vm.Disks)
	}
}

// A daemon that stops mid-detach reports nothing; the next one resumes the
// detach from the state.
func TestAgentVolumeDetachResumesAfterRestart(t *testing.T) {
	h := newHarness(t)
	h.detachTimeout = time.Hour
	h.run()
	h.attached()
	h.hv.HangDetach("v-1", true)
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	h.eventually("detach under way", func() bool { return h.hv.Count("DetachDisk", "i-1") == 1 })
	h.stop()
	v := h.volume("v-1")
	if v.Status != statedb.VolumeDetaching || v.ErrorReason != "" {
		t.Fatalf("volume after the daemon stopped mid-detach = %s %q; want detaching, no reason", v.Status, v.ErrorReason)
	}
	for _, r := range h.prop.VolumeReports("v-1") {
		if r.AttachmentState == statedb.AttachDetached || r.Error != "" {
			t.Errorf("report %+v sent by an agent stopped mid-detach", r)
		}
	}
	h.hv.HangDetach("v-1", false) // the guest got to it meanwhile
	h.run()
	v = h.waitVolume("v-1", statedb.VolumeAvailable)
	if v.Attachment() != nil {
		t.Errorf("attachment after the resumed detach = %+v; want none", v.Attachment())
	}
	if n := h.hv.Count("DetachDisk", "i-1"); n != 2 {
		t.Errorf("DetachDisk called %d times; want 2 (cut short, resumed)", n)
	}
}

// A detach waiting for its guest holds up neither another VM's start nor
// its own volume's siblings on other servers, even with one slot for
// operations.
func TestAgentVolumeDetachDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t)
	h.detachTimeout = time.Hour
	h.parallel = 1
	h.run()
	h.attached()
	h.hv.HangDetach("v-1", true)
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	h.eventually("detach under way", func() bool { return h.hv.Count("DetachDisk", "i-1") == 1 })
	h.server("i-2", hostA, noNICs)
	h.waitState("i-2", statedb.VMActive, statedb.PowerRunning)
	if v := h.volume("v-1"); v.Status != statedb.VolumeDetaching {
		t.Errorf("v-1 = %s; want still detaching", v.Status)
	}
	h.hv.HangDetach("v-1", false)
	h.waitVolume("v-1", statedb.VolumeAvailable)
}

func TestAgentVolumeAttachFailure(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.newVolume("v-1", 1)
	h.hv.FailFor("AttachDisk", "i-1", errors.New("qmp: command failed: GenericError: Could not open '/vols/v-1.qcow2'"))
	h.apply(statedb.CmdAttachVolume, statedb.AttachVolumeCmd{VolumeID: "v-1", ServerID: "i-1", AttachmentID: "att-1"})
	v := h.waitVolume("v-1", statedb.VolumeAvailable)
	if v.Attachment() != nil || !strings.Contains(v.ErrorReason, "Could not open") {
		t.Errorf("volume after a failed attach = %+v; want available, no attachment, the reason", v)
	}
}

func TestAgentVolumeFileOperations(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.newVolume("v-1", 1)
	if size, _, ok := h.vols.File("/vols/v-1.qcow2"); !ok || size != 1 {
		t.Fatalf("file = %d GB (%v); want 1 GB", size, ok)
	}
	h.apply(statedb.CmdExtendVolume, statedb.ExtendVolumeCmd{ID: "v-1", NewSizeGB: 3})
	h.waitVolume("v-1", statedb.VolumeAvailable)
	if size, _, _ := h.vols.File("/vols/v-1.qcow2"); size != 3 || h.volume("v-1").SizeGB != 3 {
		t.Errorf("after extend: file %d GB, record %d GB; want 3", size, h.volume("v-1").SizeGB)
	}
	// A failed extend goes back to the old size with the reason.
	h.vols.Fail("Extend", errors.New("qemu-img resize: No space left on device"))
	h.apply(statedb.CmdExtendVolume, statedb.ExtendVolumeCmd{ID: "v-1", NewSizeGB: 5})
	v := h.waitVolume("v-1", statedb.VolumeErrorExtending)
	if v.SizeGB != 3 || !strings.Contains(v.ErrorReason, "No space") {
		t.Errorf("after a failed extend: %d GB %q; want 3 GB and the reason", v.SizeGB, v.ErrorReason)
	}
	h.vols.Fail("Extend", nil)
	h.apply(statedb.CmdDeleteVolume, statedb.DeleteVolumeCmd{ID: "v-1"})
	h.eventually("record gone", func() bool { return h.volume("v-1") == nil })
	if _, _, ok := h.vols.File("/vols/v-1.qcow2"); ok {
		t.Errorf("volume file survived the delete")
	}
	// A failed create is an error volume with the cause.
	h.vols.Fail("Create", errors.New("disk full"))
	h.apply(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: "v-2", ProjectID: "proj", SizeGB: 1,
		Format: "raw", Host: hostA, Path: "/vols/v-2.raw"}})
	if v := h.waitVolume("v-2", statedb.VolumeError); !strings.Contains(v.ErrorReason, "disk full") {
		t.Errorf("failed create reason = %q; want the cause", v.ErrorReason)
	}
	// Volumes of another host are not touched here.
	h.apply(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: "v-b", ProjectID: "proj", SizeGB: 1,
		Format: "raw", Host: hostB, Path: "/vols/v-b.raw"}})
	h.settle()
	if slices.ContainsFunc(h.vols.Calls(), func(c string) bool { return strings.HasSuffix(c, ":v-b") }) {
		t.Errorf("host A acted on host B's volume: %v", h.vols.Calls())
	}
}

func TestAgentNetworksAcrossTwoHosts(t *testing.T) {
	h := newHarness(t)
	h.run()
	// A second agent, host B, on the same state.
	hvB, netB := agenttest.NewHypervisor(), &agenttest.Network{}
	b := &harness{t: t, st: h.st, prop: h.prop, hv: hvB, net: netB, vols: agenttest.NewVolumes(), imgs: h.imgs, vteps: h.vteps}
	b.runAs(hostB)

	h.server("i-a", hostA)
	h.server("i-b", hostB)
	h.waitState("i-a", statedb.VMActive, statedb.PowerRunning)
	h.waitState("i-b", statedb.VMActive, statedb.PowerRunning)
	pa, _ := h.st.Snapshot().Port("port-i-a")
	pb, _ := h.st.Snapshot().Port("port-i-b")
	check := func(n *agenttest.Network, local *statedb.Port, remote *statedb.Port, remoteVTEP string) {
		t.Helper()
		h.eventually("remote entries", func() bool {
			d, _ := n.Last()
			return len(d.Networks) == 1 && len(d.Networks[0].MACs) == 1
		})
		d, _ := n.Last()
		seg := d.Networks[0]
		if len(seg.Ports) != 1 || seg.Ports[0].ID != local.ID || len(seg.Remotes) != 1 || seg.Remotes[0].String() != remoteVTEP ||
			seg.MACs[0].MAC.String() != remote.MAC || seg.MACs[0].VTEP.String() != remoteVTEP {
			t.Errorf("network state = %+v; want local %s, remote %s at %s", seg, local.ID, remote.MAC, remoteVTEP)
		}
	}
	check(h.net, pa, pb, "192.0.2.2")
	check(netB, pb, pa, "192.0.2.1")
	if n := hvB.Count("Start", "i-a") + h.hv.Count("Start", "i-b"); n != 0 {
		t.Errorf("a host started another host's server (%d starts)", n)
	}
	// Deleting B's server removes its MAC from A.
	h.apply(statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: "i-b"})
	h.eventually("A forgets B's port", func() bool {
		d, _ := h.net.Last()
		return len(d.Networks) == 1 && len(d.Networks[0].MACs) == 0 && len(d.Networks[0].Remotes) == 0
	})
}

// runAs runs the harness's agent as another host.
func (h *harness) runAs(host string) {
	h.t.Helper()
	h.hostID = host
	h.run()
}

// A server stopped while its guest ignores an unplug stops without waiting
// for the detach's budget; the detach then completes on the stopped VM.
func TestAgentVolumeDetachYieldsToStop(t *testing.T) {
	h := newHarness(t)
	h.detachTimeout = time.Hour
	h.run()
	h.attached()
	h.hv.HangDetach("v-1", true)
	h.apply(statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: "v-1", ServerID: "i-1"})
	h.eventually("detach under way", func() bool { return h.hv.Count("DetachDisk", "i-1") == 1 })
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStop})
	h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
	v := h.waitVolume("v-1", statedb.VolumeAvailable)
	if v.Attachment() != nil || v.ErrorReason != "" {
		t.Errorf("volume after stop = %+v; want detached, no reason", v)
	}
	if vm, _ := h.hv.VM("i-1"); len(vm.Disks) != 0 {
		t.Errorf("VM disks = %v; want none", vm.Disks)
	}
}

// TestAgentVolumePlacedWithoutPath: a volume on local storage placed on
// this host without a path is made where this host's store keeps it, and
// the report tells the state that path. Before placement no agent acts.
func TestAgentVolumePlacedWithoutPath(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.apply(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: "v-p", ProjectID: "proj", SizeGB: 2, Format: "qcow2"}})
	h.settle()
	if calls := h.vols.Calls(); len(calls) != 0 {
		t.Fatalf("volume calls before placement = %v; want none", calls)
	}
	h.apply(statedb.CmdPlaceVolume, statedb.PlaceVolumeCmd{VolumeID: "v-p", HostID: hostA,
		HostCap: statedb.HostCap{VCPUs: 4, RAMMB: 4096, DiskGB: 100}})
	v := h.waitVolume("v-p", statedb.VolumeAvailable)
	if want, _ := h.vols.Path(v); v.Path != want || v.Host != hostA {
		t.Fatalf("volume = %+v; want on %s at %s", v, hostA, want)
	}
	if size, _, ok := h.vols.File(v.Path); !ok || size != 2 {
		t.Fatalf("file at %s = %d GB (%v); want 2 GB", v.Path, size, ok)
	}
}
