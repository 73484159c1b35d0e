package scheduler

import (
	"fmt"
	"go/parser"
	"go/token"
	"math/rand"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// result bundles Place's two results so messages read Place(%v) = %v; want %v.
type result struct {
	P []Placement
	F []Failure
}

func (r result) String() string { return fmt.Sprintf("placed %v failed %v", r.P, r.F) }

// hostOf returns an alive, enabled, empty host in AZ nova on x86_64.
func hostOf(id string, vcpus, ramMB, diskGB int) Host {
	return Host{ID: id, Name: id, Alive: true, Enabled: true, AZ: DefaultAZ, Arch: "x86_64", VCPUs: vcpus, RAMMB: ramMB, DiskGB: diskGB}
}

func used(h Host, vcpus, ramMB, diskGB int) Host {
	h.UsedVCPUs, h.UsedRAMMB, h.UsedDiskGB = vcpus, ramMB, diskGB
	return h
}

func with(h Host, f func(*Host)) Host {
	f(&h)
	return h
}

func req(id string, vcpus, ramMB, diskGB int) Request {
	return Request{InstanceID: id, VCPUs: vcpus, RAMMB: ramMB, DiskGB: diskGB}
}

func inGroup(r Request, g string) Request {
	r.Group = g
	return r
}

func placed(pairs ...string) []Placement {
	var out []Placement
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, Placement{InstanceID: pairs[i], HostID: pairs[i+1]})
	}
	return out
}

func failed(ids ...string) []Failure {
	var out []Failure
	for _, id := range ids {
		out = append(out, Failure{InstanceID: id, Reason: statedb.NoValidHost})
	}
	return out
}

func group(id, policy string, hosts map[string]int) map[string]Group {
	return map[string]Group{id: {ID: id, Policy: policy, Hosts: hosts}}
}

// placeAll runs Place and both internal strategies and fails unless all
// three agree.
func placeAll(t *testing.T, hosts []Host, groups map[string]Group, reqs []Request, opt Options) result {
	t.Helper()
	p, f := Place(hosts, groups, reqs, opt)
	got := result{p, f}
	for _, linear := range []bool{true, false} {
		p, f := place(hosts, groups, reqs, opt, linear)
		if other := (result{p, f}); !reflect.DeepEqual(other, got) {
			t.Fatalf("place(%v, linear=%v) = %v; want %v (same as Place)", reqs, linear, other, got)
		}
	}
	return got
}

func TestPlace(t *testing.T) {
	a, b, c := hostOf("a", 8, 8192, 100), hostOf("b", 8, 8192, 100), hostOf("c", 8, 8192, 100)
	small := req("i1", 1, 1024, 10)
	tests := []struct {
		name   string
		hosts  []Host
		groups map[string]Group
		reqs   []Request
		opt    Options
		want   result
	}{
		{
			name:  "spread picks most free RAM",
			hosts: []Host{used(a, 0, 2048, 0), used(b, 0, 4096, 0), used(c, 0, 1024, 0)},
			reqs:  []Request{small},
			want:  result{P: placed("i1", "c")},
		},
		{
			name:  "spread ties broken by host ID then alternates",
			hosts: []Host{c, b, a},
			reqs:  []Request{req("i1", 1, 1024, 1), req("i2", 1, 1024, 1), req("i3", 1, 1024, 1), req("i4", 1, 1024, 1)},
			want:  result{P: placed("i1", "a", "i2", "b", "i3", "c", "i4", "a")},
		},
		{
			name:  "pack picks least free RAM that fits",
			hosts: []Host{used(a, 0, 6144, 0), used(b, 0, 4096, 0), used(c, 0, 7168, 0)},
			reqs:  []Request{req("i1", 1, 2048, 1)},
			opt:   Options{Weigher: Pack},
			want:  result{P: placed("i1", "a")},
		},
		{
			name:  "pack fills one host before the next",
			hosts: []Host{c, b, a},
			reqs:  []Request{req("i1", 1, 4096, 1), req("i2", 1, 4096, 1), req("i3", 1, 4096, 1)},
			opt:   Options{Weigher: Pack},
			want:  result{P: placed("i1", "a", "i2", "a", "i3", "b")},
		},
		{
			name:  "dead and disabled hosts are filtered",
			hosts: []Host{with(a, func(h *Host) { h.Alive = false }), with(b, func(h *Host) { h.Enabled = false }), used(c, 0, 7168, 0)},
			reqs:  []Request{small},
			want:  result{P: placed("i1", "c")},
		},
		{
			name:  "vCPU filter with default ratio 4",
			hosts: []Host{used(hostOf("a", 2, 8192, 100), 6, 0, 0)},
			reqs:  []Request{req("i1", 2, 512, 1), req("i2", 1, 512, 1)},
			want:  result{P: placed("i1", "a"), F: failed("i2")},
		},
		{
			name:  "vCPU ratio 1 leaves no over-commit",
			hosts: []Host{hostOf("a", 4, 8192, 100)},
			reqs:  []Request{req("i1", 5, 512, 1), req("i2", 4, 512, 1)},
			opt:   Options{Ratios: statedb.Ratios{CPU: 1}},
			want:  result{P: placed("i2", "a"), F: failed("i1")},
		},
		{
			name:  "RAM ratio 1.5 over-commits RAM",
			hosts: []Host{hostOf("a", 8, 1000, 100)},
			reqs:  []Request{req("i1", 1, 1500, 1), req("i2", 1, 1, 1)},
			opt:   Options{Ratios: statedb.Ratios{RAM: 1.5}},
			want:  result{P: placed("i1", "a"), F: failed("i2")},
		},
		{
			name:  "RAM filter",
			hosts: []Host{used(a, 0, 7168, 0), used(b, 0, 7680, 0)},
			reqs:  []Request{req("i1", 1, 1024, 1), req("i2", 1, 1024, 1)},
			want:  result{P: placed("i1", "a"), F: failed("i2")},
		},
		{
			name:  "disk filter with ratio 2",
			hosts: []Host{hostOf("a", 8, 8192, 10)},
			reqs:  []Request{req("i1", 1, 1, 15), req("i2", 1, 1, 6), req("i3", 1, 1, 5)},
			opt:   Options{Ratios: statedb.Ratios{Disk: 2}},
			want:  result{P: placed("i1", "a", "i3", "a"), F: failed("i2")},
		},
		{
			name:  "top host by RAM lacks vCPU: next best that fits",
			hosts: []Host{used(hostOf("a", 1, 65536, 100), 4, 0, 0), used(b, 0, 4096, 0), used(c, 0, 2048, 0)},
			reqs:  []Request{small},
			want:  result{P: placed("i1", "c")},
		},
		{
			name:  "top host by RAM lacks disk: next best that fits",
			hosts: []Host{used(hostOf("a", 8, 65536, 100), 0, 0, 95), b},
			reqs:  []Request{small},
			want:  result{P: placed("i1", "b")},
		},
		{
			name: "AZ filter; empty host AZ is nova",
			hosts: []Host{
				with(hostOf("a", 8, 65536, 100), func(h *Host) { h.AZ = "" }),
				with(b, func(h *Host) { h.AZ = "az2" }),
				with(c, func(h *Host) { h.AZ = "az2"; h.UsedRAMMB = 1024 }),
			},
			reqs: []Request{
				{InstanceID: "i1", VCPUs: 1, RAMMB: 1024, AZ: "az2"},
				{InstanceID: "i2", VCPUs: 1, RAMMB: 1024, AZ: "nova"},
				{InstanceID: "i3", VCPUs: 1, RAMMB: 1024, AZ: "az3"},
				{InstanceID: "i4", VCPUs: 1, RAMMB: 1024},
			},
			want: result{P: placed("i1", "b", "i2", "a", "i4", "a"), F: failed("i3")},
		},
		{
			name:  "arch filter",
			hosts: []Host{hostOf("a", 8, 65536, 100), with(b, func(h *Host) { h.Arch = "aarch64" }), with(c, func(h *Host) { h.Arch = "" })},
			reqs: []Request{
				{InstanceID: "i1", VCPUs: 1, RAMMB: 1024, Arch: "aarch64"},
				{InstanceID: "i2", VCPUs: 1, RAMMB: 1024, Arch: "x86_64"},
				{InstanceID: "i3", VCPUs: 1, RAMMB: 1024, Arch: "ppc64le"},
				{InstanceID: "i4", VCPUs: 1, RAMMB: 1024, Arch: "aarch64", AZ: "nova"},
			},
			want: result{P: placed("i1", "b", "i2", "a", "i4", "b"), F: failed("i3")},
		},
		{
			name:   "affinity: only the host with members",
			hosts:  []Host{a, used(b, 0, 4096, 0), c},
			groups: group("g", statedb.PolicyAffinity, map[string]int{"b": 1}),
			reqs:   []Request{inGroup(small, "g"), inGroup(req("i2", 1, 4096, 1), "g"), inGroup(req("i3", 1, 1, 1), "g")},
			want:   result{P: placed("i1", "b", "i3", "b"), F: failed("i2")},
		},
		{
			name:   "affinity: members only on a dead host",
			hosts:  []Host{a, with(b, func(h *Host) { h.Alive = false })},
			groups: group("g", statedb.PolicyAffinity, map[string]int{"b": 2}),
			reqs:   []Request{inGroup(small, "g")},
			want:   result{F: failed("i1")},
		},
		{
			name:   "affinity: first of the batch chooses, the rest follow",
			hosts:  []Host{a, b, c},
			groups: group("g", statedb.PolicyAffinity, nil),
			reqs:   []Request{inGroup(req("i1", 1, 1024, 1), "g"), inGroup(req("i2", 1, 1024, 1), "g"), req("i3", 1, 1024, 1), inGroup(req("i4", 1, 1024, 1), "g")},
			want:   result{P: placed("i1", "a", "i2", "a", "i3", "b", "i4", "a")},
		},
		{
			name:   "anti-affinity: hosts without members, counting the batch",
			hosts:  []Host{a, b, c},
			groups: group("g", statedb.PolicyAntiAffinity, map[string]int{"a": 1, "gone": 3}),
			reqs:   []Request{inGroup(req("i1", 1, 1024, 1), "g"), inGroup(req("i2", 1, 1024, 1), "g"), inGroup(req("i3", 1, 1024, 1), "g"), req("i4", 1, 1024, 1)},
			want:   result{P: placed("i1", "b", "i2", "c", "i4", "a"), F: failed("i3")},
		},
		{
			name:   "soft-affinity prefers member hosts and falls back",
			hosts:  []Host{a, used(b, 0, 4096, 0), used(c, 0, 7168, 0)},
			groups: group("g", statedb.PolicySoftAffinity, map[string]int{"b": 1, "c": 2}),
			reqs:   []Request{inGroup(req("i1", 1, 1024, 1), "g"), inGroup(req("i2", 1, 2048, 1), "g"), inGroup(req("i3", 1, 4096, 1), "g")},
			want:   result{P: placed("i1", "c", "i2", "b", "i3", "a")},
		},
		{
			name:   "soft-affinity with no members spreads, then sticks",
			hosts:  []Host{a, b},
			groups: group("g", statedb.PolicySoftAffinity, nil),
			reqs:   []Request{inGroup(req("i1", 1, 1024, 1), "g"), inGroup(req("i2", 1, 1024, 1), "g")},
			want:   result{P: placed("i1", "a", "i2", "a")},
		},
		{
			name:   "soft-anti-affinity avoids members, then takes the fewest",
			hosts:  []Host{a, b, c},
			groups: group("g", statedb.PolicySoftAntiAffinity, map[string]int{"a": 2, "b": 1}),
			reqs:   []Request{inGroup(req("i1", 1, 1024, 1), "g"), inGroup(req("i2", 1, 1024, 1), "g"), inGroup(req("i3", 1, 1024, 1), "g")},
			want:   result{P: placed("i1", "c", "i2", "b", "i3", "c")},
		},
		{
			name:   "group missing from groups fails closed",
			hosts:  []Host{a},
			groups: group("g", statedb.PolicyAntiAffinity, nil),
			reqs:   []Request{inGroup(small, "nope")},
			want:   result{F: []Failure{{InstanceID: "i1", Reason: "Instance group nope could not be found."}}},
		},
		{
			name:   "unknown policy fails closed",
			hosts:  []Host{a},
			groups: group("g", "best-effort", nil),
			reqs:   []Request{inGroup(small, "g")},
			want:   result{F: []Failure{{InstanceID: "i1", Reason: "Invalid server group policy best-effort."}}},
		},
		{
			name:  "no valid host",
			hosts: []Host{a, b},
			reqs:  []Request{req("i1", 1, 16384, 1)},
			want:  result{F: []Failure{{InstanceID: "i1", Reason: "No valid host was found. There are not enough hosts available."}}},
		},
		{
			name: "no hosts at all",
			reqs: []Request{small},
			want: result{F: failed("i1")},
		},
		{
			name:  "negative sizes never fit",
			hosts: []Host{a},
			reqs:  []Request{req("i1", -1, 1, 1), req("i2", 1, -1, 1), req("i3", 1, 1, -1)},
			want:  result{F: failed("i1", "i2", "i3")},
		},
		{
			name:  "already over-committed host takes nothing",
			hosts: []Host{used(hostOf("a", 1, 1024, 10), 8, 2048, 20)},
			reqs:  []Request{req("i1", 0, 0, 0)},
			want:  result{F: failed("i1")},
		},
		{
			name:  "duplicate host IDs: the first counts",
			hosts: []Host{used(a, 0, 7168, 0), hostOf("a", 64, 65536, 1000)},
			reqs:  []Request{req("i1", 1, 1024, 1), req("i2", 1, 1024, 1)},
			want:  result{P: placed("i1", "a"), F: failed("i2")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := placeAll(t, tc.hosts, tc.groups, tc.reqs, tc.opt)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Place(%v) = %v; want %v", tc.reqs, got, tc.want)
			}
		})
	}
}

func TestPlacePinned(t *testing.T) {
	a, b, c := hostOf("a", 4, 8192, 100), hostOf("b", 4, 8192, 100), hostOf("c", 4, 8192, 100)
	pin := func(r Request, h string) Request { r.Pin = h; return r }
	for _, linear := range []bool{true, false} {
		for _, tc := range []struct {
			name   string
			hosts  []Host
			groups map[string]Group
			reqs   []Request
			want   result
		}{
			{"the pin only, even against the weigher", []Host{a, used(b, 0, 4096, 0), c},
				nil, []Request{pin(req("i1", 1, 1024, 1), "b"), pin(req("i2", 1, 4096, 1), "b")},
				result{P: placed("i1", "b"), F: failed("i2")}},
			{"a pin on a dead, disabled or unknown host", []Host{with(a, func(h *Host) { h.Alive = false }), with(b, func(h *Host) { h.Enabled = false }), c},
				nil, []Request{pin(req("i1", 1, 1, 1), "a"), pin(req("i2", 1, 1, 1), "b"), pin(req("i3", 1, 1, 1), "z")},
				result{F: failed("i1", "i2", "i3")}},
			{"a pin keeps the hard group policy", []Host{a, b, c},
				group("g", statedb.PolicyAntiAffinity, map[string]int{"a": 1}),
				[]Request{inGroup(pin(req("i1", 1, 1, 1), "a"), "g"), inGroup(pin(req("i2", 1, 1, 1), "b"), "g"), inGroup(pin(req("i3", 1, 1, 1), "b"), "g")},
				result{P: placed("i2", "b"), F: failed("i1", "i3")}},
			{"a pin in another zone", []Host{a, with(b, func(h *Host) { h.AZ = "z2" })},
				nil, []Request{func() Request { r := pin(req("i1", 1, 1, 1), "b"); r.AZ = "z1"; return r }()},
				result{F: failed("i1")}},
		} {
			t.Run(fmt.Sprint(tc.name, " linear=", linear), func(t *testing.T) {
				ps, fs := place(tc.hosts, tc.groups, tc.reqs, Options{}, linear)
				if got := (result{ps, fs}); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("Place(%v) = %v; want %v", tc.reqs, got, tc.want)
				}
			})
		}
	}
}

// TestPlacePhysnets: a request whose ports sit on provider networks goes
// only to a host mapping all their physical networks, whatever the weigher
// prefers, pinned or grouped, and fails when none does.
func TestPlacePhysnets(t *testing.T) {
	maps := func(h Host, nets ...string) Host {
		h.Physnets = map[string]string{}
		for i, n := range nets {
			h.Physnets[n] = fmt.Sprint("eth", i)
		}
		return h
	}
	need := func(r Request, nets ...string) Request { r.Physnets = nets; return r }
	// a has the most free RAM, so the weigher prefers it.
	a, b, c := hostOf("a", 4, 16384, 100), maps(hostOf("b", 4, 8192, 100), "physnet1"), maps(hostOf("c", 4, 4096, 100), "physnet1", "physnet2")
	for _, linear := range []bool{true, false} {
		for _, tc := range []struct {
			name   string
			hosts  []Host
			groups map[string]Group
			reqs   []Request
			want   result
		}{
			{"no need goes by the weigher", []Host{a, b, c}, nil,
				[]Request{req("i1", 1, 1024, 1)}, result{P: placed("i1", "a")}},
			{"physnet1 skips the host without it", []Host{a, b, c}, nil,
				[]Request{need(req("i1", 1, 1024, 1), "physnet1")}, result{P: placed("i1", "b")}},
			{"two physnets need a host with both", []Host{a, b, c}, nil,
				[]Request{need(req("i1", 1, 1024, 1), "physnet1", "physnet2")}, result{P: placed("i1", "c")}},
			{"the only mapping host full", []Host{a, used(b, 0, 8192, 0)}, nil,
				[]Request{need(req("i1", 1, 1024, 1), "physnet1")}, result{F: failed("i1")}},
			{"no host maps it", []Host{a, b, c}, nil,
				[]Request{need(req("i1", 1, 1024, 1), "physnet3")}, result{F: failed("i1")}},
			{"a pin on a host without the mapping", []Host{a, b, c}, nil,
				[]Request{func() Request { r := need(req("i1", 1, 1, 1), "physnet1"); r.Pin = "a"; return r }()}, result{F: failed("i1")}},
			{"affinity with a member on a host without the mapping", []Host{a, b, c},
				group("g", statedb.PolicyAffinity, map[string]int{"a": 1}),
				[]Request{inGroup(need(req("i1", 1, 1, 1), "physnet1"), "g")}, result{F: failed("i1")}},
			{"soft affinity falls back to a mapping host", []Host{a, b, c},
				group("g", statedb.PolicySoftAffinity, map[string]int{"a": 1}),
				[]Request{inGroup(need(req("i1", 1, 1, 1), "physnet1"), "g")}, result{P: placed("i1", "b")}},
			{"anti-affinity among the mapping hosts", []Host{a, b, c},
				group("g", statedb.PolicyAntiAffinity, map[string]int{"b": 1}),
				[]Request{inGroup(need(req("i1", 1, 1, 1), "physnet1"), "g")}, result{P: placed("i1", "c")}},
		} {
			t.Run(fmt.Sprint(tc.name, " linear=", linear), func(t *testing.T) {
				ps, fs := place(tc.hosts, tc.groups, tc.reqs, Options{}, linear)
				if got := (result{ps, fs}); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("Place(%v) = %v; want %v", tc.reqs, got, tc.want)
				}
			})
		}
	}
}

func TestPlaceDeterministic(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	hosts := randomHosts(rng, 300)
	for i := range hosts { // shuffling must not change which duplicate counts
		hosts[i].ID = fmt.Sprintf("h%05d", i)
	}
	groups := randomGroups(rng, hosts)
	reqs := randomRequests(rng, 400, groups)
	for _, w := range []Weigher{Spread, Pack} {
		opt := Options{Weigher: w}
		want := placeAll(t, hosts, groups, reqs, opt)
		for i := range 5 {
			shuffled := append([]Host(nil), hosts...)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got := placeAll(t, shuffled, groups, reqs, opt); !reflect.DeepEqual(got, want) {
				t.Fatalf("%v shuffle %d: Place(%d requests) = %v; want %v", w, i, len(reqs), got, want)
			}
		}
	}
}

func TestPlaceDoesNotModifyInput(t *testing.T) {
	hosts := []Host{hostOf("a", 8, 8192, 100), hostOf("b", 8, 8192, 100)}
	groups := group("g", statedb.PolicyAntiAffinity, map[string]int{"a": 1})
	reqs := []Request{inGroup(req("i1", 1, 1024, 1), "g"), inGroup(req("i2", 1, 1024, 1), "g")}
	wantHosts := append([]Host(nil), hosts...)
	placeAll(t, hosts, groups, reqs, Options{})
	if !reflect.DeepEqual(hosts, wantHosts) {
		t.Errorf("hosts = %v; want unchanged %v", hosts, wantHosts)
	}
	if want := map[string]int{"a": 1}; !reflect.DeepEqual(groups["g"].Hosts, want) {
		t.Errorf("group hosts = %v; want unchanged %v", groups["g"].Hosts, want)
	}
}

func TestWeigherString(t *testing.T) {
	for w, want := range map[Weigher]string{Spread: "spread", Pack: "pack", 7: "Weigher(7)"} {
		if got := w.String(); got != want {
			t.Errorf("Weigher(%d).String() = %q; want %q", int(w), got, want)
		}
	}
}

// TestImportsStdlibOnly keeps the package a pure function: no imports in
// non-test files but the standard library and the state types (whose
// placement rule it applies).
func TestImportsStdlibOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") && path != "github.com/peerstack/peerstack/consensus/statedb" {
				t.Errorf("%s imports %q; the scheduler may import only the standard library and consensus/statedb", name, path)
			}
		}
	}
}
