package scheduler

import (
	"reflect"
	"slices"
	"testing"
)

// TestKeyOfPhysnets: requests needing the same set of physical networks,
// however listed, share a pool; different sets never do, whatever bytes
// the names hold.
func TestKeyOfPhysnets(t *testing.T) {
	key := func(need ...string) poolKey { k, _ := keyOf(Request{Physnets: need}); return k }
	if a, b := key("p2", "p1", "p2"), key("p1", "p2"); a != b {
		t.Errorf("keyOf(p2 p1 p2) = %+v, keyOf(p1 p2) = %+v; want one pool", a, b)
	}
	if a, b := key("p1", "p1"), key("p1"); a != b {
		t.Errorf("keyOf(p1 p1) = %+v, keyOf(p1) = %+v; want one pool", a, b)
	}
	for _, pair := range [][2][]string{
		{{"a\x00b"}, {"a", "b"}},
		{{"a\x00b", "c"}, {"a", "b\x00c"}},
		{{"1:a"}, {"a"}},
		{{"1:a1:b"}, {"a", "b"}},
		{{}, {""}},
	} {
		if a, b := key(pair[0]...), key(pair[1]...); a == b {
			t.Errorf("keyOf(%q) = keyOf(%q) = %+v; want distinct pools", pair[0], pair[1], a)
		}
	}
	if _, need := keyOf(Request{Physnets: []string{"b", "a", "b"}}); !slices.Equal(need, []string{"a", "b"}) {
		t.Errorf("keyOf needs = %v; want [a b]", need)
	}
	in := []string{"b", "a"}
	keyOf(Request{Physnets: in})
	if !slices.Equal(in, []string{"b", "a"}) {
		t.Errorf("keyOf reordered the request's own slice to %v", in)
	}
}

// TestPlacePhysnetPoolsApart: in one batch, requests whose network sets
// would run together under a naive key each get a host mapping exactly
// theirs, and a claim through one pool is seen by the others.
func TestPlacePhysnetPoolsApart(t *testing.T) {
	maps := func(h Host, m map[string]string) Host { h.Physnets = m; return h }
	hosts := make([]Host, 0, 40)
	for i := range 20 { // many empty hosts, so trees are built
		hosts = append(hosts, hostOf(string(rune('a'+i)), 4, 8192, 100))
	}
	joined := maps(hostOf("joined", 1, 1024, 10), map[string]string{"x\x00y": "eth0"})
	split := maps(hostOf("split", 1, 1024, 1000), map[string]string{"x": "eth0", "y": "eth1"})
	hosts = append(hosts, joined, split)
	reqs := []Request{
		{InstanceID: "i0", VCPUs: 1, RAMMB: 1, DiskGB: 1}, // builds the tree of every host first
		{InstanceID: "i1", VCPUs: 1, RAMMB: 1024, DiskGB: 1, Physnets: []string{"x\x00y"}},
		{InstanceID: "i2", VCPUs: 1, RAMMB: 1024, DiskGB: 1, Physnets: []string{"x", "y"}},
		{InstanceID: "i3", VCPUs: 1, RAMMB: 1024, DiskGB: 1, Physnets: []string{"y"}}, // split's RAM is taken
		{InstanceID: "i4", VCPUs: 1, RAMMB: 1, DiskGB: 500},                           // only split has the disk, not the RAM
	}
	for _, linear := range []bool{false, true} {
		p, f := place(hosts, nil, reqs, Options{}, linear)
		want := result{P: placed("i0", "a", "i1", "joined", "i2", "split"), F: failed("i3", "i4")}
		if got := (result{p, f}); !reflect.DeepEqual(got, want) {
			t.Errorf("linear=%v: Place = %v; want %v", linear, got, want)
		}
	}
}
