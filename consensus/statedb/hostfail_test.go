package statedb

import (
	"errors"
	"testing"
)

// haOn seeds server id booted from an NFS volume, placed on host and
// active, so it is HA; local makes its root an image overlay instead.
func (cs *cstore) haOn(id, host string, local bool) {
	cs.t.Helper()
	inst := &Instance{ID: id, Name: "vm-" + id, ProjectID: "p1", UserID: "u1", Flavor: tiny, Host: host,
		Desired: DesiredRunning, VMState: VMActive, PowerState: PowerRunning, Metadata: map[string]string{}}
	if local {
		inst.ImageID = "img"
	} else {
		inst.RootVolume = "vol-" + id
		cs.seed(tblVolumes, &Volume{ID: inst.RootVolume, Path: "nfs://nas/export/vol-" + id, Status: VolumeInUse,
			Attachments: []VolumeAttachment{{ID: "att-" + id, ServerID: id, HostID: host, State: AttachAttached}}})
	}
	cs.seed(tblInstances, inst)
}

func TestHAPolicy(t *testing.T) {
	cs := newCStore(t, "h1")
	cs.haOn("shared", "h1", false)
	cs.haOn("local", "h1", true)
	sn := cs.s.Snapshot()
	if !sn.HA(cs.inst("shared")) {
		t.Errorf("HA(boot from NFS volume) = false; want true")
	}
	if sn.HA(cs.inst("local")) || sn.LocalDisks(cs.inst("local")) == "" {
		t.Errorf("HA(image overlay) = true or no reason; want false with a reason")
	}
	out := cs.inst("shared")
	out.Metadata = map[string]string{HAMetadataKey: "False"}
	if sn.HA(out) {
		t.Errorf("HA(opted out with %s=False) = true", HAMetadataKey)
	}
	cs.seed(tblMeta, &ClusterConfig{ID: clusterConfigID})
	off := true
	cs.must(CmdUpdateSettings, UpdateSettingsCmd{HADisabled: &off})
	if cs.s.Snapshot().HA(cs.inst("shared")) {
		t.Errorf("HA with the cluster setting off = true")
	}
}

func TestFailoverNeedsFencedHost(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.haOn("a", "h1", false)
	caps := map[string]HostCap{"h2": {VCPUs: 8, RAMMB: 8192, DiskGB: 80}}
	mv := FailoverCmd{From: "h1", Moves: []PlacementRec{{"a", "h2"}}, HostCaps: caps}
	var e *Error
	if err := cs.do(CmdFailoverInstance, mv); !errors.As(err, &e) || e.Kind != KindConflict {
		t.Fatalf("failover of a host that is up: err = %v; want a conflict", err)
	}
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true})
	if err := cs.do(CmdFailoverInstance, mv); !errors.As(err, &e) || e.Kind != KindConflict {
		t.Fatalf("failover of a host down but not fenced: err = %v; want a conflict", err)
	}
	if cs.inst("a").Host != "h1" {
		t.Fatal("server moved off a host that is not fenced")
	}
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	cs.must(CmdFailoverInstance, mv)
	i := cs.inst("a")
	if i.Host != "h2" || i.VMState != VMBuilding || i.TaskState != TaskSpawning || i.Fault == nil {
		t.Fatalf("after failover: host %q vm %q task %q fault %v; want h2, building, spawning and a fault", i.Host, i.VMState, i.TaskState, i.Fault)
	}
	v, _ := cs.s.Snapshot().Volume("vol-a")
	if v.Attachments[0].HostID != "h2" {
		t.Errorf("boot volume attachment host = %q; want h2", v.Attachments[0].HostID)
	}
	acts := cs.s.Snapshot().InstanceActions("a")
	if len(acts) == 0 || acts[0].Action != "evacuate" {
		t.Errorf("actions = %+v; want an evacuate action first", acts)
	}
	// A repeated plan is stale: nothing changes.
	cs.must(CmdFailoverInstance, FailoverCmd{From: "h1", Moves: []PlacementRec{{"a", "h1"}}, HostCaps: caps})
	if cs.inst("a").Host != "h2" {
		t.Fatal("a stale plan moved the server back")
	}
	// The host comes back: the record goes.
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1"})
	if _, ok := cs.s.Snapshot().HostHealth("h1"); ok {
		t.Fatal("host health record kept after the host came back")
	}
}

func TestFailoverKeepsCapacityAndStrands(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.haOn("a", "h1", false)
	cs.haOn("b", "h1", false)
	cs.haOn("c", "h1", true)
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	// Room for one tiny server only: the second move must not over-commit.
	caps := map[string]HostCap{"h2": {VCPUs: 1, RAMMB: 512, DiskGB: 80}}
	cs.must(CmdFailoverInstance, FailoverCmd{From: "h1", Moves: []PlacementRec{{"a", "h2"}, {"b", "h2"}},
		Stranded: []PlacementFailure{{"c", "local disk"}}, HostCaps: caps})
	if cs.inst("a").Host != "h2" || cs.inst("b").Host != "h1" {
		t.Fatalf("hosts a=%q b=%q; want a on h2 and b left on h1 (no room)", cs.inst("a").Host, cs.inst("b").Host)
	}
	c := cs.inst("c")
	if c.Host != "h1" || c.VMState != VMError || c.Fault == nil || c.Fault.Message != "local disk" {
		t.Fatalf("stranded server = host %q vm %q fault %v; want ERROR on h1 with the reason", c.Host, c.VMState, c.Fault)
	}
}

func TestEvacuateAndLocalDelete(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.haOn("a", "h1", true)
	cs.haOn("d", "h1", false)
	var e *Error
	if err := cs.do(CmdEvacuateInstance, EvacuateCmd{ID: "a", By: ActionBy{Admin: true}}); !errors.As(err, &e) || e.Kind != KindConflict {
		t.Fatalf("evacuate from a host that is up: err = %v; want a conflict", err)
	}
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true})
	cs.must(CmdEvacuateInstance, EvacuateCmd{ID: "a", TargetHost: "h2", By: ActionBy{Admin: true}})
	if i := cs.inst("a"); i.TaskState != TaskRebuilding {
		t.Fatalf("evacuating server task = %q; want rebuilding", i.TaskState)
	}
	if err := cs.do(CmdEvacuateInstance, EvacuateCmd{ID: "a", By: ActionBy{Admin: true}}); !errors.As(err, &e) || e.Kind != KindConflict {
		t.Fatalf("second evacuate: err = %v; want a conflict", err)
	}
	// The host comes back before it is fenced: the request is void.
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1"})
	if _, ok := cs.s.Snapshot().Evacuation("a"); ok || cs.inst("a").TaskState != "" {
		t.Fatalf("after the host came back: evacuation kept or task %q; want both cleared", cs.inst("a").TaskState)
	}
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true})
	cs.must(CmdEvacuateInstance, EvacuateCmd{ID: "a", TargetHost: "h2", By: ActionBy{Admin: true}})
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "d"})
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	caps := map[string]HostCap{"h2": {VCPUs: 8, RAMMB: 8192, DiskGB: 80}}
	cs.must(CmdFailoverInstance, FailoverCmd{From: "h1", Moves: []PlacementRec{{"a", "h2"}}, Deleted: []string{"d"}, HostCaps: caps})
	if i := cs.inst("a"); i.Host != "h2" {
		t.Fatalf("evacuated server on %q; want h2", i.Host)
	}
	if _, ok := cs.s.Snapshot().Evacuation("a"); ok {
		t.Fatal("evacuation request kept after the move")
	}
	if _, ok := cs.s.Snapshot().Instance("d"); ok {
		t.Fatal("server deleted on a fenced host still exists")
	}
}

// TestFailoverClearsDay2State: a server moved off a fenced host leaves no
// resize waiting for a confirm, no rescue and no snapshot queued behind.
func TestFailoverClearsDay2State(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.haOn("a", "h1", false)
	cs.haOn("b", "h1", false)
	big := tiny
	big.ID, big.Name, big.RAMMB = "big", "big", tiny.RAMMB*2
	a := cs.inst("a")
	a.VMState, a.Flavor, a.Resize = VMResized, big, &ResizeState{OldFlavor: tiny, NewFlavor: big}
	a.SnapshotImage = "snap-a"
	cs.seed(tblInstances, a)
	cs.seed(tblImages, &Image{ID: "snap-a", Name: "snap-a", ProjectID: "p1", Status: ImageQueued})
	b := cs.inst("b")
	b.TaskState, b.Flavor, b.Resize = TaskResizePrep, big, &ResizeState{OldFlavor: tiny, NewFlavor: big}
	b.Desired, b.RescueImage = DesiredRescued, "img-rescue"
	cs.seed(tblInstances, b)
	cs.must(CmdSetHostHealth, SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	caps := map[string]HostCap{"h2": {VCPUs: 8, RAMMB: 8192, DiskGB: 80}}
	cs.must(CmdFailoverInstance, FailoverCmd{From: "h1", Moves: []PlacementRec{{"a", "h2"}, {"b", "h2"}}, HostCaps: caps})
	a, b = cs.inst("a"), cs.inst("b")
	if a.Host != "h2" || a.Resize != nil || a.Flavor.ID != "big" || a.SnapshotImage != "" || a.VMState == VMResized {
		t.Fatalf("a after failover: host %q resize %+v flavor %q snapshot %q vm %q; want h2, no resize, the new flavor, no snapshot",
			a.Host, a.Resize, a.Flavor.ID, a.SnapshotImage, a.VMState)
	}
	if img, _ := cs.s.Snapshot().Image("snap-a"); img.Status != ImageKilled {
		t.Errorf("snapshot image of the moved server = %s; want killed", img.Status)
	}
	if b.Host != "h2" || b.Resize != nil || b.Flavor.ID != tiny.ID || b.RescueImage != "" || b.Desired != DesiredRunning {
		t.Fatalf("b after failover: host %q resize %+v flavor %q rescue %q desired %q; want h2, no resize, the old flavor, no rescue, running",
			b.Host, b.Resize, b.Flavor.ID, b.RescueImage, b.Desired)
	}
}
