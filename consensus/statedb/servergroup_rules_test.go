package statedb

import (
	"errors"
	"testing"
)

// TestCreateGroupWithRules: CreateServerGroupWithRules keeps an
// anti-affinity group's max_server_per_host; it refuses the rule on any
// other policy and a value below 1, writing nothing; the older
// CreateServerGroup never carries the rule, so an entry of it applies
// alike on hosts that do not know the field.
func TestCreateGroupWithRules(t *testing.T) {
	cs := newCStore(t, "h1")
	cs.must(CmdCreateGroupWithRules, ServerGroup{ID: "g", Name: "g", ProjectID: "p1", Policy: PolicyAntiAffinity, MaxServerPerHost: 3})
	if g, _ := cs.s.Snapshot().ServerGroup("g"); g.MaxServerPerHost != 3 || g.Policy != PolicyAntiAffinity {
		t.Fatalf("group = %+v; want anti-affinity with max_server_per_host 3", g)
	}
	for _, bad := range []ServerGroup{
		{ID: "b1", Name: "b", ProjectID: "p1", Policy: PolicyAffinity, MaxServerPerHost: 2},
		{ID: "b2", Name: "b", ProjectID: "p1", Policy: PolicySoftAntiAffinity, MaxServerPerHost: 2},
		{ID: "b3", Name: "b", ProjectID: "p1", Policy: PolicyAntiAffinity},
		{ID: "b4", Name: "b", ProjectID: "p1", Policy: PolicyAntiAffinity, MaxServerPerHost: -1},
	} {
		if err := cs.do(CmdCreateGroupWithRules, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateServerGroupWithRules %+v = %v; want invalid", bad, err)
		}
		if _, ok := cs.s.Snapshot().ServerGroup(bad.ID); ok {
			t.Errorf("refused group %s was written", bad.ID)
		}
	}
	cs.must(CmdCreateServerGroup, ServerGroup{ID: "old", Name: "old", ProjectID: "p1", Policy: PolicyAntiAffinity, MaxServerPerHost: 5})
	if g, _ := cs.s.Snapshot().ServerGroup("old"); g.MaxServerPerHost != 0 {
		t.Fatalf("CreateServerGroup kept max_server_per_host %d; an older host would not", g.MaxServerPerHost)
	}
	spec, _ := Commands().Lookup(CmdCreateGroupWithRules)
	if spec.MinVersion == "" {
		t.Fatal("CreateServerGroupWithRules is not version-gated")
	}
}

// TestPlaceInstancesMaxServerPerHost: with max_server_per_host 2 the
// state machine accepts two members on a host and refuses a third, from
// one plan or from stale ones; a group without the rule keeps one.
func TestPlaceInstancesMaxServerPerHost(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.must(CmdCreateGroupWithRules, ServerGroup{ID: "g", Name: "g", ProjectID: "p1", Policy: PolicyAntiAffinity, MaxServerPerHost: 2})
	var ics []InstanceCreate
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		ic := newInst(id, "p1", tiny)
		ic.Instance.GroupID = "g"
		ics = append(ics, ic)
	}
	cs.must(CmdCreateInstances, CreateInstancesCmd{Instances: ics})
	big := HostCap{VCPUs: 64, RAMMB: 65536, DiskGB: 1000}
	caps := map[string]HostCap{"h1": big, "h2": big}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"a", "h1"}, {"b", "h1"}, {"c", "h1"}}})
	if cs.inst("a").Host != "h1" || cs.inst("b").Host != "h1" || cs.inst("c").Host != "" {
		t.Fatalf("one plan of three on h1 placed a=%q b=%q c=%q; want two there, c pending", cs.inst("a").Host, cs.inst("b").Host, cs.inst("c").Host)
	}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"c", "h1"}}})
	if cs.inst("c").Host != "" {
		t.Fatal("a stale plan put a third member on h1")
	}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"c", "h2"}, {"d", "h2"}, {"e", "h2"}}})
	if cs.inst("c").Host != "h2" || cs.inst("d").Host != "h2" || cs.inst("e").Host != "" {
		t.Fatalf("plan on h2 placed c=%q d=%q e=%q; want c and d", cs.inst("c").Host, cs.inst("d").Host, cs.inst("e").Host)
	}
	c := cs.s.Snapshot().PlacementConstraints(cs.inst("e"), nil)
	if c.MaxPerHost != 2 || c.Allows("h1") || c.Allows("h2") {
		t.Fatalf("constraints of e = %+v; want the rule, neither host", c)
	}

	cs.must(CmdCreateServerGroup, ServerGroup{ID: "one", Name: "one", ProjectID: "p1", Policy: PolicyAntiAffinity})
	x, y := newInst("x", "p1", tiny), newInst("y", "p1", tiny)
	x.Instance.GroupID, y.Instance.GroupID = "one", "one"
	cs.must(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{x, y}})
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"x", "h1"}, {"y", "h1"}}})
	if cs.inst("x").Host != "h1" || cs.inst("y").Host != "" {
		t.Fatal("a group without the rule took two members on one host")
	}
}
