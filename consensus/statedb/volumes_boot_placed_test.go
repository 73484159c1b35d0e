package statedb

import (
	"errors"
	"testing"
)

// placedRoot is a boot volume to make from img whose host the server's
// placement chooses (local storage: no host, no path).
func placedRoot(id string) *Volume {
	return &Volume{ID: id, SizeGB: 1, Format: "qcow2", ImageID: "img", VolumeType: "local"}
}

func (e bootEnv) createPlaced(ics ...InstanceCreate) error {
	return e.apply(CmdCreateInstancesPlacedBoot, CreateInstancesCmd{Instances: ics})
}

// TestBootVolumePlacedWithServer: the server's placement gives the volume
// its host, that host's report its path; the leader's volume placement
// leaves it alone meanwhile.
func TestBootVolumePlacedWithServer(t *testing.T) {
	e := newBootEnv(t, "")
	// The plain command still needs a host and a path (its entries apply
	// alike on every release).
	if err := e.create(bootServer("s0", &RootDisk{AttachmentID: "a0", New: placedRoot("v0")})); !errors.Is(err, ErrInvalid) {
		t.Fatalf("CreateInstances with an unplaced boot volume = %v; want invalid", err)
	}
	if err := e.createPlaced(bootServer("s1", &RootDisk{AttachmentID: "a1", New: placedRoot("v1")})); err != nil {
		t.Fatal(err)
	}
	sn := e.s.Snapshot()
	if v := e.wantStatus("v1", VolumeCreating); v.Host != "" || v.Path != "" || Unplaced(sn, v) || len(sn.UnplacedVolumes()) != 0 {
		t.Fatalf("boot volume = host %q path %q; want neither, and not waiting for the volume placer", v.Host, v.Path)
	}
	if pin := sn.PlacementPin(e.inst("s1")); pin != "" {
		t.Fatalf("pin = %q; want none: the server's placement chooses", pin)
	}
	e.place("s1", "host2")
	if inst := e.inst("s1"); inst.Host != "host2" || inst.TaskState != TaskBlockDeviceMapping {
		t.Fatalf("server = %s/%s; want host2/block_device_mapping", inst.Host, inst.TaskState)
	}
	if v := e.vol("v1"); v.Host != "host2" || v.Status != VolumeCreating || v.Path != "" {
		t.Fatalf("volume after placement = %+v; want creating on host2, no path yet", v)
	}
	// host2's agent made it and says where.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", Status: VolumeAvailable, Path: "/var/lib/peerstack/volumes/v1.qcow2"})
	v := e.wantStatus("v1", VolumeInUse)
	if a := v.Attachment(); v.Path != "/var/lib/peerstack/volumes/v1.qcow2" || a.State != AttachAttached || a.HostID != "host2" {
		t.Fatalf("volume = %+v; want in-use at the reported path, attached on host2", v)
	}
	if inst := e.inst("s1"); inst.TaskState != TaskSpawning {
		t.Fatalf("server task = %s; want spawning", inst.TaskState)
	}
	// From now on the file pins the server (failover, evacuate).
	if pin := e.s.Snapshot().PlacementPin(e.inst("s1")); pin != "host2" {
		t.Fatalf("pin after the volume was made = %q; want host2", pin)
	}
}

// TestBootVolumePlacedServerDeletedEarly: a server deleted before it was
// placed leaves no volume stuck: deleted on termination, its record goes
// (there is no file); kept, it becomes a volume of its own for the volume
// placer.
func TestBootVolumePlacedServerDeletedEarly(t *testing.T) {
	e := newBootEnv(t, "")
	if err := e.createPlaced(
		bootServer("s1", &RootDisk{AttachmentID: "a1", DeleteOnTermination: true, New: placedRoot("v1")}),
		bootServer("s2", &RootDisk{AttachmentID: "a2", New: placedRoot("v2")}),
	); err != nil {
		t.Fatal(err)
	}
	e.deleteServer("s1")
	if _, ok := e.s.Snapshot().Volume("v1"); ok {
		t.Fatal("the never-made boot volume of a server deleted before placement is still recorded")
	}
	e.deleteServer("s2")
	sn := e.s.Snapshot()
	v, ok := sn.Volume("v2")
	if !ok || v.Status != VolumeCreating || len(v.Attachments) != 0 || !Unplaced(sn, v) {
		t.Fatalf("kept volume = %+v (%v); want creating, detached, waiting for the volume placer", v, ok)
	}
}

// TestBootVolumePlacedServerNoHost: no host for the server, so none makes
// its volume: the volume fails with the server, and deleting the server
// removes it.
func TestBootVolumePlacedServerNoHost(t *testing.T) {
	e := newBootEnv(t, "")
	if err := e.createPlaced(bootServer("s1", &RootDisk{AttachmentID: "a1", DeleteOnTermination: true, New: placedRoot("v1")})); err != nil {
		t.Fatal(err)
	}
	e.must(CmdPlaceInstances, PlaceInstancesCmd{Failures: []PlacementFailure{{InstanceID: "s1", Reason: NoValidHost}}})
	if inst := e.inst("s1"); inst.VMState != VMError {
		t.Fatalf("server = %s; want error", inst.VMState)
	}
	if v := e.wantStatus("v1", VolumeError); v.ErrorReason == "" || v.Host != "" {
		t.Fatalf("volume = %+v; want error with a reason, no host", v)
	}
	e.deleteServer("s1")
	if _, ok := e.s.Snapshot().Volume("v1"); ok {
		t.Fatal("the failed boot volume is still recorded after its server was deleted")
	}
}

// TestBootVolumePlacedSharedStorageNeedsPath: on shared storage the
// proposer names host and path as before, whatever the command.
func TestBootVolumePlacedSharedStorageNeedsPath(t *testing.T) {
	e := newBootEnv(t, "nfs://nas/vols")
	if err := e.createPlaced(bootServer("s1", &RootDisk{AttachmentID: "a1", New: placedRoot("v1")})); !errors.Is(err, ErrInvalid) {
		t.Fatalf("shared storage, no host or path = %v; want invalid", err)
	}
}

// TestBootVolumePlacedOnRequestedHost: an admin's requested host takes
// the server and, with it, its new boot volume (whichever host took the
// request).
func TestBootVolumePlacedOnRequestedHost(t *testing.T) {
	e := newBootEnv(t, "")
	ic := bootServer("s1", &RootDisk{AttachmentID: "a1", New: placedRoot("v1")})
	ic.Instance.RequestedHost = "host2"
	if err := e.apply(CmdCreateInstancesOnHost, CreateInstancesCmd{Instances: []InstanceCreate{ic}}); err != nil {
		t.Fatal(err)
	}
	if pin := e.s.Snapshot().PlacementPin(e.inst("s1")); pin != "host2" {
		t.Fatalf("pin = %q; want the requested host2", pin)
	}
	e.place("s1", "host2")
	if v := e.vol("v1"); e.inst("s1").Host != "host2" || v.Host != "host2" {
		t.Fatalf("server on %q, volume on %q; want both on host2", e.inst("s1").Host, v.Host)
	}
}

// TestBootVolumePlacedNeedsDisk: the volume made with its server counts
// against the disk of the host the server goes to.
func TestBootVolumePlacedNeedsDisk(t *testing.T) {
	e := newBootEnv(t, "")
	root := placedRoot("v1")
	root.SizeGB = 500
	if err := e.createPlaced(bootServer("s1", &RootDisk{AttachmentID: "a1", New: root})); err != nil {
		t.Fatal(err)
	}
	if need := e.s.Snapshot().PlacementNeed(e.inst("s1")); need.DiskGB < 500 {
		t.Fatalf("placement need = %+v; want the volume's 500 GB in it", need)
	}
	e.must(CmdPlaceInstances, PlaceInstancesCmd{Placements: []PlacementRec{{InstanceID: "s1", HostID: "host2"}},
		HostCaps: map[string]HostCap{"host2": {VCPUs: 8, RAMMB: 8192, DiskGB: 20}}})
	if inst := e.inst("s1"); inst.Host != "" {
		t.Fatalf("placed on a 20 GB host with a 500 GB boot volume to make there")
	}
	e.must(CmdPlaceInstances, PlaceInstancesCmd{Placements: []PlacementRec{{InstanceID: "s1", HostID: "host2"}},
		HostCaps: map[string]HostCap{"host2": {VCPUs: 8, RAMMB: 8192, DiskGB: 1000}}})
	if v := e.vol("v1"); e.inst("s1").Host != "host2" || v.Host != "host2" {
		t.Fatalf("server on %q, volume on %q; want both on host2 (1000 GB)", e.inst("s1").Host, v.Host)
	}
}
