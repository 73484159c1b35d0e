package statedb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"slices"
	"testing"
)

// hostsMappingIDs is HostsMapping as host ids.
func hostsMappingIDs(sn *Snapshot, need ...string) []string {
	var ids []string
	for _, h := range sn.HostsMapping(need) {
		ids = append(ids, h.ID)
	}
	return ids
}

// refHostsMapping reads every report and applies MapsPhysnets: what the
// index must answer.
func refHostsMapping(sn *Snapshot, need []string) []string {
	var ids []string
	for _, h := range list[HostNetworks](sn, tblHostNets) {
		if MapsPhysnets(h.Physnets, need) {
			ids = append(ids, h.ID)
		}
	}
	return ids
}

// TestHostsMappingFollowsApplies: the hosts listed for a physical network
// follow a host changing its mapping, a new host reporting, an interface
// going empty and a host leaving (its report stays, as HostNetworks does).
func TestHostsMappingFollowsApplies(t *testing.T) {
	ns := routedStore(t)
	ns.must(CmdRegisterMember, Member{ID: "h2", Name: "host2"})
	check := func(what string, need []string, want ...string) {
		t.Helper()
		if got := hostsMappingIDs(ns.s.Snapshot(), need...); !slices.Equal(got, want) {
			t.Errorf("%s: HostsMapping(%v) = %v; want %v", what, need, got, want)
		}
	}
	p1, p2, both := []string{"physnet1"}, []string{"physnet2"}, []string{"physnet1", "physnet2"}
	check("nothing reported", p1)
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h1", Physnets: map[string]string{"physnet1": "eth0"}})
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h2", Physnets: map[string]string{"physnet1": "eth1", "physnet2": "eth2"}})
	check("both report", p1, "h1", "h2")
	check("both report", both, "h2")
	check("both report", p2, "h2")
	check("both report", []string{"physnet3"})
	check("no need", nil, "h1", "h2")

	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h2", Physnets: map[string]string{"physnet2": "eth2"}})
	check("h2 no longer maps physnet1", p1, "h1")
	check("h2 no longer maps physnet1", p2, "h2")
	check("h2 no longer maps physnet1", both)

	ns.must(CmdRegisterMember, Member{ID: "h3", Name: "host3"})
	check("h3 joined, not reported", p1, "h1")
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h3", Physnets: map[string]string{"physnet2": "eth0", "physnet1": "eth1"}})
	check("h3 reported", p1, "h1", "h3")
	check("h3 reported", both, "h3")

	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h1", Physnets: nil})
	check("h1 maps nothing", p1, "h3")

	// A refused report changes nothing.
	if err := ns.do(CmdSetHostNetworks, HostNetworks{ID: "h3", Physnets: map[string]string{"physnet1": ""}}); err == nil {
		t.Error("a mapping to no interface was accepted")
	}
	if err := ns.do(CmdSetHostNetworks, HostNetworks{ID: "gone", Physnets: map[string]string{"physnet1": "eth0"}}); err == nil {
		t.Error("a report from a host that is not a member was accepted")
	}
	check("refused reports", p1, "h3")

	ns.must(CmdRemoveMember, RemoveMemberCmd{ID: "h3"})
	check("h3 left: its report stays, like HostNetworks(h3)", p1, "h3")
	if _, ok := ns.s.Snapshot().HostNetworks("h3"); !ok {
		t.Error("HostNetworks(h3) gone after it left; the index must follow the table, not membership")
	}
}

// TestHostsMappingAgreesWithRule: over random reports, replacements and
// member removals, and across a snapshot and restore, HostsMapping lists
// exactly the hosts whose report MapsPhysnets allows, for every need.
func TestHostsMappingAgreesWithRule(t *testing.T) {
	names := []string{"physnet1", "physnet2", "physnet3"}
	needs := [][]string{nil, {"physnet1"}, {"physnet2"}, {"physnet3"}, {"physnet1", "physnet2"}, {"physnet1", "physnet3"}, {"physnet4"}}
	compare := func(seed int64, step int, sn *Snapshot) {
		t.Helper()
		for _, need := range needs {
			if got, want := hostsMappingIDs(sn, need...), refHostsMapping(sn, need); !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d: HostsMapping(%v) = %v; want %v", seed, step, need, got, want)
			}
		}
	}
	for seed := range int64(40) {
		rng := rand.New(rand.NewSource(seed))
		ns := routedStore(t)
		for step := range 60 {
			id := fmt.Sprint("h", 1+rng.Intn(6))
			switch rng.Intn(5) {
			case 0:
				ns.must(CmdRemoveMember, RemoveMemberCmd{ID: id})
			case 1:
				ns.must(CmdRegisterMember, Member{ID: id, Name: "name-" + id})
			default:
				m := map[string]string{}
				for _, n := range names {
					if rng.Intn(2) == 0 {
						m[n] = fmt.Sprint("eth", rng.Intn(3))
					}
				}
				if _, member := ns.s.Snapshot().Member(id); member {
					ns.must(CmdSetHostNetworks, HostNetworks{ID: id, Physnets: m})
				}
			}
			compare(seed, step, ns.s.Snapshot())
		}
		var buf bytes.Buffer
		if err := ns.s.Snapshot().Dump(json.NewEncoder(&buf)); err != nil {
			t.Fatal(err)
		}
		restored := NewStore()
		if err := restored.Restore(json.NewDecoder(&buf), ns.idx); err != nil {
			t.Fatal(err)
		}
		compare(seed, -1, restored.Snapshot())
		if a, b := hostsMappingIDs(ns.s.Snapshot(), "physnet1"), hostsMappingIDs(restored.Snapshot(), "physnet1"); !slices.Equal(a, b) {
			t.Fatalf("seed %d: restored HostsMapping(physnet1) = %v; before the snapshot %v", seed, b, a)
		}
	}
}

func TestPhysnetIndexerArgs(t *testing.T) {
	var ix physnetIndexer
	if _, err := ix.FromArgs(); err == nil {
		t.Error("FromArgs() accepted no argument")
	}
	if _, err := ix.FromArgs(1); err == nil {
		t.Error("FromArgs(1) accepted a non-string")
	}
	if _, _, err := ix.FromObject(&Member{}); err == nil {
		t.Error("FromObject(*Member) accepted another table's row")
	}
	ok, keys, err := ix.FromObject(&HostNetworks{ID: "h", Physnets: map[string]string{"b": "eth0", "a": "eth1", "c": ""}})
	if err != nil || !ok || len(keys) != 2 || string(keys[0]) != "a\x00" || string(keys[1]) != "b\x00" {
		t.Errorf("FromObject = %v, %q, %v; want the two mapped names, sorted", ok, keys, err)
	}
}
