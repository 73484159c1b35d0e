package statedb

import (
	"slices"
	"testing"
)

func TestMapsPhysnets(t *testing.T) {
	m := map[string]string{"physnet1": "eth0", "physnet2": "eth1", "empty": ""}
	for _, tc := range []struct {
		mapped map[string]string
		need   []string
		want   bool
	}{
		{nil, nil, true},
		{m, nil, true},
		{nil, []string{"physnet1"}, false},
		{m, []string{"physnet1"}, true},
		{m, []string{"physnet1", "physnet2"}, true},
		{m, []string{"physnet1", "physnet3"}, false},
		{m, []string{"empty"}, false},
	} {
		if got := MapsPhysnets(tc.mapped, tc.need); got != tc.want {
			t.Errorf("MapsPhysnets(%v, %v) = %v; want %v", tc.mapped, tc.need, got, tc.want)
		}
	}
}

// TestPlacementPhysnets: a server with a port straight on a flat network is
// placed only on a host mapping that network's physical network; the state
// machine refuses a plan putting it elsewhere, and a server on a VXLAN
// network goes anywhere.
func TestPlacementPhysnets(t *testing.T) {
	ns := routedStore(t)
	ns.must(CmdRegisterMember, Member{ID: "h2", Name: "host2"})
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h1", Physnets: map[string]string{"physnet1": "eth0"}})
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h2", Physnets: map[string]string{"physnet9": "eth0"}})
	flavor := Flavor{ID: "1", VCPUs: 1, RAMMB: 512, DiskGB: 1}
	create := func(id, network string) {
		ns.must(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{{
			Instance: Instance{ID: id, Name: id, ProjectID: "p1", Flavor: flavor},
			NICs:     []NICRequest{{Create: &PortRequest{ID: id + "-port", NetworkID: network}}},
		}}})
	}
	create("onext", "ext")
	create("onvx", "n1")
	sn := ns.s.Snapshot()
	ext, _ := sn.Instance("onext")
	vx, _ := sn.Instance("onvx")
	if got := sn.PlacementPhysnets(ext); !slices.Equal(got, []string{"physnet1"}) {
		t.Fatalf("PlacementPhysnets(server on ext) = %v; want [physnet1]", got)
	}
	if got := sn.PlacementPhysnets(vx); len(got) != 0 {
		t.Fatalf("PlacementPhysnets(server on a VXLAN network) = %v; want none", got)
	}
	c := sn.PlacementConstraints(ext, nil)
	if c.Allows("h2") || !c.Allows("h1") || c.Allows("h3") {
		t.Errorf("constraints of the server on ext allow h1=%v h2=%v h3=%v; want only h1", c.Allows("h1"), c.Allows("h2"), c.Allows("h3"))
	}

	caps := map[string]HostCap{"h1": {VCPUs: 8, RAMMB: 8192, DiskGB: 100}, "h2": {VCPUs: 8, RAMMB: 8192, DiskGB: 100}}
	place := func(inst, host string) string {
		ns.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{inst, host}}})
		i, _ := ns.s.Snapshot().Instance(inst)
		return i.Host
	}
	if h := place("onext", "h2"); h != "" {
		t.Fatalf("the state machine placed the server on ext on h2, which does not map physnet1 (host %q)", h)
	}
	if h := place("onvx", "h2"); h != "h2" {
		t.Fatalf("server on a VXLAN network on h2: host %q; want h2", h)
	}
	// The mapping is read when the plan applies: once h2 maps physnet1 it fits.
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h2", Physnets: map[string]string{"physnet1": "eth1"}})
	if h := place("onext", "h2"); h != "h2" {
		t.Fatalf("server on ext on h2 after h2 maps physnet1: host %q; want h2", h)
	}
}
