package scheduler

import (
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestPlanVolumes: volumes on local storage go to live, enabled hosts with
// disk room beside their instances and local volumes; a volume no host can
// hold fails with the reason; the state machine accepts every choice.
func TestPlanVolumes(t *testing.T) {
	e := &agreeEnv{t: t, s: statedb.NewStore()}
	e.must(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:     statedb.ClusterConfig{ClusterID: "c"},
		Member:     statedb.Member{ID: "h0", Name: "name-h0"},
		Project:    statedb.Project{ID: "p", Name: "admin"},
		Admin:      statedb.User{ID: "u", Name: "admin"},
		Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k"},
	})
	for _, h := range []string{"h1", "h2", "h3"} {
		e.must(statedb.CmdRegisterMember, statedb.Member{ID: h, Name: "name-" + h})
	}
	e.must(statedb.CmdSetHostEnabled, statedb.SetHostEnabledCmd{ID: "h2", Disabled: true, Reason: "test"})
	live := []Live{
		{ID: "h0", Alive: true, VCPUs: 4, RAMMB: 4096, DiskGB: 10},
		{ID: "h1", Alive: true, VCPUs: 4, RAMMB: 4096, DiskGB: 30},
		{ID: "h2", Alive: true, VCPUs: 4, RAMMB: 4096, DiskGB: 1000}, // disabled
		{ID: "h3", Alive: false, VCPUs: 4, RAMMB: 4096, DiskGB: 1000},
	}
	// An instance takes 20 GB of h1's disk.
	e.must(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
		ID: "i1", Name: "i1", ProjectID: "p", Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 128, DiskGB: 20}}}}})
	e.must(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{{InstanceID: "i1", HostID: "h1"}},
		HostCaps: map[string]statedb.HostCap{"h1": {VCPUs: 4, RAMMB: 4096, DiskGB: 30}}})
	for _, v := range []struct {
		id   string
		size int
	}{{"v1", 8}, {"v2", 8}, {"v3", 50}, {"v4", 2}} {
		e.must(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: v.id, ProjectID: "p", SizeGB: v.size, Format: "qcow2"}})
	}
	plan := PlanVolumes(e.s.Snapshot(), live)
	got := map[string]string{}
	for _, p := range plan {
		got[p.VolumeID] = p.HostID
		if p.Failure != "" {
			got[p.VolumeID] = "fail"
			if !strings.HasPrefix(p.Failure, statedb.NoValidHost) || !strings.Contains(p.Failure, "50 GB") {
				t.Errorf("failure of %s = %q", p.VolumeID, p.Failure)
			}
		}
	}
	// The weigher spreads by free RAM, so h0 (no instance) comes first
	// while its 10 GB disk holds: v1 fills it to 8, v2 goes to h1's 10 GB
	// left, v3 fits nowhere live and enabled, v4 takes h0's last 2.
	want := map[string]string{"v1": "h0", "v2": "h1", "v3": "fail", "v4": "h0"}
	for id, h := range want {
		if got[id] != h {
			t.Errorf("PlanVolumes: %s on %q; want %q (plan %+v)", id, got[id], h, plan)
		}
	}
	for _, p := range plan {
		e.must(statedb.CmdPlaceVolume, p)
	}
	sn := e.s.Snapshot()
	for id, h := range want {
		v, _ := sn.Volume(id)
		if h == "fail" && (v.Status != statedb.VolumeError || v.Host != "") || h != "fail" && v.Host != h {
			t.Errorf("after apply %s = %s on %q; want %s", id, v.Status, v.Host, h)
		}
	}
	if left := PlanVolumes(sn, live); len(left) != 0 {
		t.Errorf("second round = %+v; want nothing left to place", left)
	}
}
