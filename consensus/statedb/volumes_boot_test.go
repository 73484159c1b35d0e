package statedb

import (
	"errors"
	"strings"
	"testing"
)

// bootEnv is a volEnv with an image "img" and helpers for servers that
// boot from volumes.
type bootEnv struct{ *volEnv }

func newBootEnv(t *testing.T, storage string) bootEnv {
	t.Helper()
	e := bootEnv{newVolEnv(t, storage)}
	e.must(CmdCreateImage, Image{ID: "img", Name: "img", ProjectID: "p1", Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"})
	return e
}

// newRoot is a boot volume to make from img on host1.
func newRoot(id string) *Volume {
	return &Volume{ID: id, SizeGB: 1, Format: "qcow2", ImageID: "img", Host: "host1", Path: "/v/" + id, VolumeType: "local"}
}

// bootServer is an InstanceCreate of server id booting from root.
func bootServer(id string, root *RootDisk) InstanceCreate {
	return InstanceCreate{
		Instance: Instance{ID: id, Name: "vm-" + id, ProjectID: "p1", UserID: "u1", Flavor: Flavor{ID: "1", VCPUs: 1, RAMMB: 128}},
		Root:     root,
	}
}

func (e bootEnv) create(ics ...InstanceCreate) error {
	return e.apply(CmdCreateInstances, CreateInstancesCmd{Instances: ics})
}

func (e bootEnv) place(id, host string) {
	e.t.Helper()
	e.must(CmdPlaceInstances, PlaceInstancesCmd{Placements: []PlacementRec{{InstanceID: id, HostID: host}},
		HostCaps: map[string]HostCap{host: {VCPUs: 100, RAMMB: 1 << 20, DiskGB: 1000}}})
}

func (e bootEnv) inst(id string) *Instance {
	e.t.Helper()
	i, ok := e.s.Snapshot().Instance(id)
	if !ok {
		e.t.Fatalf("instance %s not found", id)
	}
	return i
}

// deleteServer deletes a placed server as its agent would: delete, then
// report it gone.
func (e bootEnv) deleteServer(id string) {
	e.t.Helper()
	host := e.inst(id).Host
	e.must(CmdDeleteInstance, DeleteCmd{ID: id})
	if host != "" {
		e.must(CmdReportInstance, ReportInstanceCmd{InstanceID: id, HostID: host, VMState: VMDeleted, Gone: true})
	}
	if _, ok := e.s.Snapshot().Instance(id); ok {
		e.t.Fatalf("server %s still there after delete", id)
	}
}

func TestBootVolumeCreatedWithServer(t *testing.T) {
	e := newBootEnv(t, "")
	if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", New: newRoot("v1")})); err != nil {
		t.Fatal(err)
	}
	inst := e.inst("s1")
	if inst.RootVolume != "v1" || inst.VMState != VMBuilding || inst.TaskState != TaskScheduling || !inst.Pending() {
		t.Fatalf("server = root %q %s/%s pending %v; want root v1, building/scheduling, pending", inst.RootVolume, inst.VMState, inst.TaskState, inst.Pending())
	}
	v := e.wantStatus("v1", VolumeCreating)
	a := v.Attachment()
	if v.ProjectID != "p1" || v.UserID != "u1" || !v.Bootable || v.ImageID != "img" || v.Name != "" || a == nil ||
		a.ServerID != "s1" || a.ID != "a1" || a.Device != RootDevice || a.State != AttachAttaching || a.HostID != "" || a.DeleteOnTermination {
		t.Fatalf("boot volume = %+v; want p1/u1, bootable from img, attaching to s1 on %s with no host", v, RootDevice)
	}
	if got := e.s.Snapshot().PendingInstances(); len(got) != 1 {
		t.Fatalf("pending = %d; want the server pending while its volume is made", len(got))
	}

	// Local storage: the server may only go where the volume's file is.
	e.place("s1", "host2")
	if inst := e.inst("s1"); inst.Host != "" {
		t.Fatalf("placed on %s, away from its local boot volume on host1", inst.Host)
	}
	if h := e.s.Snapshot().BootVolumeHost(e.inst("s1")); h != "host1" {
		t.Fatalf("BootVolumeHost = %q; want host1", h)
	}
	e.place("s1", "host1")
	if inst := e.inst("s1"); inst.Host != "host1" || inst.TaskState != TaskBlockDeviceMapping {
		t.Fatalf("server = %s/%s; want host1/block_device_mapping", inst.Host, inst.TaskState)
	}
	if a := e.vol("v1").Attachment(); a.HostID != "" || a.State != AttachAttaching {
		t.Fatalf("attachment while creating = %+v; want attaching without a host", a)
	}

	// Reports from the wrong host are ignored; the right one settles both.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeCreating)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	v = e.wantStatus("v1", VolumeInUse)
	if a := v.Attachment(); a.State != AttachAttached || a.HostID != "host1" || a.AttachedAt.IsZero() {
		t.Fatalf("attachment after create = %+v; want attached on host1", a)
	}
	if inst := e.inst("s1"); inst.TaskState != TaskSpawning || inst.VMState != VMBuilding {
		t.Fatalf("server = %s/%s; want building/spawning", inst.VMState, inst.TaskState)
	}

	// A boot volume is not detached, attached elsewhere or deleted.
	if err := e.apply(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "root device") {
		t.Fatalf("detach root = %v; want invalid", err)
	}
	if err := e.apply(CmdDeleteVolume, DeleteVolumeCmd{ID: "v1"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("delete root = %v; want invalid", err)
	}
}

func TestBootVolumeReadyBeforePlacement(t *testing.T) {
	e := newBootEnv(t, "nfs://srv/export")
	root := newRoot("v1")
	root.Path = "nfs://srv/export/vol-v1.qcow2"
	if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", New: root})); err != nil {
		t.Fatal(err)
	}
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	if a := e.wantStatus("v1", VolumeInUse).Attachment(); a.State != AttachAttached || a.HostID != "" {
		t.Fatalf("attachment before placement = %+v; want attached, no host yet", a)
	}
	if inst := e.inst("s1"); inst.TaskState != TaskScheduling || !inst.Pending() {
		t.Fatalf("server = %s; want still scheduling", inst.TaskState)
	}
	// Shared storage: any host will do.
	if h := e.s.Snapshot().BootVolumeHost(e.inst("s1")); h != "" {
		t.Fatalf("BootVolumeHost on shared storage = %q; want none", h)
	}
	e.place("s1", "host2")
	if inst := e.inst("s1"); inst.Host != "host2" || inst.TaskState != TaskSpawning {
		t.Fatalf("server = %s/%s; want host2/spawning", inst.Host, inst.TaskState)
	}
	if a := e.vol("v1").Attachment(); a.HostID != "host2" {
		t.Fatalf("attachment host = %q; want host2", a.HostID)
	}
	if err := e.apply(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 2}); err != nil {
		t.Fatalf("extend a placed boot volume: %v", err)
	}
}

func TestBootVolumeCreateFails(t *testing.T) {
	for _, placed := range []bool{false, true} {
		e := newBootEnv(t, "")
		if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", New: newRoot("v1")})); err != nil {
			t.Fatal(err)
		}
		if placed {
			e.place("s1", "host1")
		}
		e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeError, Error: "qemu-img: disk full"})
		e.wantStatus("v1", VolumeError)
		inst := e.inst("s1")
		if inst.VMState != VMError || inst.TaskState != "" || inst.Fault == nil || !strings.Contains(inst.Fault.Message, "disk full") ||
			!strings.Contains(inst.Fault.Message, "v1") || inst.Pending() {
			t.Fatalf("placed=%v: server = %s/%q fault %+v; want ERROR naming the volume and the cause", placed, inst.VMState, inst.TaskState, inst.Fault)
		}
		// Kept (no delete_on_termination): the failed volume stays, detached.
		e.deleteServer("s1")
		if v := e.wantStatus("v1", VolumeError); len(v.Attachments) != 0 {
			t.Fatalf("placed=%v: attachments after server delete = %v; want none", placed, v.Attachments)
		}
	}
}

func TestBootVolumeDeleteOnTermination(t *testing.T) {
	tests := []struct {
		name   string
		dot    bool
		ready  bool // volume created before the server is deleted
		placed bool
		want   string
	}{
		{"delete, ready", true, true, true, VolumeDeleting},
		{"keep, ready", false, true, true, VolumeAvailable},
		{"delete while creating", true, false, false, VolumeDeleting},
		{"keep while creating", false, false, true, VolumeCreating},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBootEnv(t, "")
			if err := e.create(bootServer("s1", &RootDisk{AttachmentID: "a1", DeleteOnTermination: tt.dot, New: newRoot("v1")})); err != nil {
				t.Fatal(err)
			}
			if tt.placed {
				e.place("s1", "host1")
			}
			if tt.ready {
				e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
			}
			e.deleteServer("s1")
			if v := e.wantStatus("v1", tt.want); len(v.Attachments) != 0 {
				t.Fatalf("attachments = %v; want none", v.Attachments)
			}
			// The create in flight ends: ignored while deleting, plain
			// available otherwise.
			e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
			if tt.dot {
				e.wantStatus("v1", VolumeDeleting)
				e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeDeleted})
				if _, ok := e.s.Snapshot().Volume("v1"); ok {
					t.Fatal("volume still there after the agent deleted it")
				}
				return
			}
			e.wantStatus("v1", VolumeAvailable)
			e.must(CmdDeleteVolume, DeleteVolumeCmd{ID: "v1"})
		})
	}
}

func TestBootFromExistingVolume(t *testing.T) {
	e := newBootEnv(t, "")
	e.volEnv.create("v1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	ic := bootServer("s1", &RootDisk{AttachmentID: "a1"})
	ic.Instance.RootVolume = "v1"
	if err := e.create(ic); err != nil {
		t.Fatal(err)
	}
	v := e.wantStatus("v1", VolumeInUse)
	if a := v.Attachment(); a.State != AttachAttached || a.ServerID != "s1" || a.Device != RootDevice || a.HostID != "" {
		t.Fatalf("attachment = %+v; want attached to s1 on %s, no host yet", a, RootDevice)
	}
	e.place("s1", "host1")
	if inst := e.inst("s1"); inst.TaskState != TaskSpawning {
		t.Fatalf("task = %s; want spawning (the volume exists)", inst.TaskState)
	}
	if a := e.vol("v1").Attachment(); a.HostID != "host1" {
		t.Fatalf("attachment host = %q; want host1", a.HostID)
	}
	e.deleteServer("s1")
	if v := e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 {
		t.Fatalf("attachments = %v; want none", v.Attachments)
	}

	// An entry without Root (written before reservations) replays exactly
	// as it did then: the volume stays available, the server is placed
	// even on another host with local storage, and the volume attaches.
	legacy := bootServer("s2", nil)
	legacy.Instance.RootVolume = "v1"
	if err := e.create(legacy); err != nil {
		t.Fatal(err)
	}
	e.wantStatus("v1", VolumeAvailable)
	e.place("s2", "host2")
	if inst := e.inst("s2"); inst.Host != "host2" || inst.TaskState != TaskSpawning {
		t.Fatalf("legacy s2 = host %q task %s; want placed on host2 as before reservations", inst.Host, inst.TaskState)
	}
	// New entries may not reserve a volume another server boots from.
	ic = bootServer("s4", &RootDisk{AttachmentID: "a4"})
	ic.Instance.RootVolume = "v1"
	if err := e.create(ic); !errors.Is(err, ErrInvalid) {
		t.Fatalf("boot s4 from the root of s2 = %v; want invalid", err)
	}
	e.putInstance(activeServer("s3", "host1"))
	if err := e.apply(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s3", AttachmentID: "a3"}); err != nil {
		t.Fatalf("attach the unreserved root of legacy s2 to s3 = %v; want nil, as before reservations", err)
	}
}

func TestBootVolumeBadInputWritesNothing(t *testing.T) {
	e := newBootEnv(t, "")
	e.volEnv.create("busy", "host1") // still creating
	e.volEnv.create("free", "host1")
	e.report(ReportVolumeCmd{VolumeID: "free", HostID: "host1", Status: VolumeAvailable})
	withRoot := func(id, root string, r *RootDisk) InstanceCreate {
		ic := bootServer(id, r)
		ic.Instance.RootVolume = root
		return ic
	}
	mod := func(f func(v *Volume)) *RootDisk {
		v := newRoot("vn")
		f(v)
		return &RootDisk{AttachmentID: "a", New: v}
	}
	tests := []struct {
		name string
		ics  []InstanceCreate
		want error
	}{
		{"no attachment id", []InstanceCreate{bootServer("s1", &RootDisk{New: newRoot("vn")})}, ErrInvalid},
		{"no volume id", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.ID = "" }))}, ErrInvalid},
		{"no path", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.Path = "" }))}, ErrInvalid},
		{"size 0", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.SizeGB = 0 }))}, ErrInvalid},
		{"bad format", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.Format = "vmdk" }))}, ErrInvalid},
		{"no image", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.ImageID = "" }))}, ErrInvalid},
		{"unknown image", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.ImageID = "nope" }))}, ErrInvalid},
		{"unknown host", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.Host = "host9" }))}, ErrInvalid},
		{"volume exists", []InstanceCreate{bootServer("s1", mod(func(v *Volume) { v.ID = "free" }))}, ErrConflict},
		{"root names another volume", []InstanceCreate{withRoot("s1", "free", mod(func(*Volume) {}))}, ErrInvalid},
		{"existing volume missing", []InstanceCreate{withRoot("s1", "nope", &RootDisk{AttachmentID: "a"})}, ErrInvalid},
		{"existing volume not available", []InstanceCreate{withRoot("s1", "busy", &RootDisk{AttachmentID: "a"})}, ErrInvalid},
		{"one volume for two servers", []InstanceCreate{withRoot("s1", "free", &RootDisk{AttachmentID: "a"}),
			withRoot("s2", "free", &RootDisk{AttachmentID: "b"})}, ErrInvalid},
		{"second server's volume bad", []InstanceCreate{bootServer("s1", &RootDisk{AttachmentID: "a", New: newRoot("vn")}),
			bootServer("s2", mod(func(v *Volume) { v.ID = "vn" }))}, ErrConflict},
	}
	before := e.s.Snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.create(tt.ics...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("create(%s) = %v; want %v", tt.name, err, tt.want)
			}
			sn := e.s.Snapshot()
			if len(sn.Instances()) != len(before.Instances()) || len(sn.Volumes()) != len(before.Volumes()) {
				t.Fatalf("create(%s) left %d instances and %d volumes; want %d and %d", tt.name,
					len(sn.Instances()), len(sn.Volumes()), len(before.Instances()), len(before.Volumes()))
			}
			if v := e.vol("free"); v.Status != VolumeAvailable || len(v.Attachments) != 0 {
				t.Fatalf("create(%s) touched volume free: %+v", tt.name, v)
			}
		})
	}
}
