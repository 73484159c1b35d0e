package scheduler

import (
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

var (
	testAZs    = []string{"", "nova", "az2", "az3"}
	testArches = []string{"x86_64", "x86_64", "x86_64", "aarch64", ""}
	policies   = []string{"", statedb.PolicyAffinity, statedb.PolicyAntiAffinity, statedb.PolicySoftAffinity, statedb.PolicySoftAntiAffinity}
)

// randomHosts returns n hosts with mixed sizes, usage, zones, arches, some
// dead or disabled, some over-committed, a few sharing IDs.
func randomHosts(rng *rand.Rand, n int) []Host {
	hosts := make([]Host, n)
	for i := range hosts {
		h := Host{
			ID:      fmt.Sprintf("h%05d", rng.Intn(n*4)),
			Alive:   rng.Intn(20) != 0,
			Enabled: rng.Intn(20) != 0,
			AZ:      testAZs[rng.Intn(len(testAZs))],
			Arch:    testArches[rng.Intn(len(testArches))],
			VCPUs:   1 << rng.Intn(7),         // 1..64
			RAMMB:   1024 << rng.Intn(8),      // 1..128 GiB
			DiskGB:  10 * (1 + rng.Intn(100)), // 10..1000
		}
		h.Name = h.ID
		switch rng.Intn(5) { // what the host maps (statedb.HostNetworks)
		case 0:
			h.Physnets = map[string]string{"physnet1": "eth0"}
		case 1:
			h.Physnets = map[string]string{"physnet1": "eth0", "physnet2": "eth1"}
		case 2:
			h.Physnets = map[string]string{"physnet2": "eth1"}
		case 3: // rare: a few hosts map physnet3; an empty interface maps nothing
			if rng.Intn(8) == 0 {
				h.Physnets = map[string]string{"physnet3": "eth2", "physnet1": ""}
			}
		}
		// Usage between nothing and a little past full (ratios may be lower
		// than what the claims were made under).
		h.UsedVCPUs = rng.Intn(h.VCPUs*4 + 2)
		h.UsedRAMMB = rng.Intn(h.RAMMB + 1024)
		h.UsedDiskGB = rng.Intn(h.DiskGB + 5)
		if rng.Intn(4) == 0 { // plenty of empty hosts, so ties happen
			h.UsedVCPUs, h.UsedRAMMB, h.UsedDiskGB = 0, 0, 0
		}
		hosts[i] = h
	}
	return hosts
}

func randomGroups(rng *rand.Rand, hosts []Host) map[string]Group {
	groups := make(map[string]Group)
	for i := range 1 + rng.Intn(6) {
		g := Group{ID: fmt.Sprintf("g%d", i), Policy: policies[rng.Intn(len(policies))], Hosts: map[string]int{}}
		if rng.Intn(3) == 0 { // max_server_per_host; only anti-affinity heeds it
			g.MaxPerHost = rng.Intn(4)
		}
		for range rng.Intn(4) {
			if rng.Intn(5) == 0 || len(hosts) == 0 {
				g.Hosts["unknown"] += 1 + rng.Intn(2)
			} else {
				g.Hosts[hosts[rng.Intn(len(hosts))].ID] += 1 + rng.Intn(2)
			}
		}
		groups[g.ID] = g
	}
	return groups
}

var flavors = [][3]int{{1, 512, 1}, {1, 1024, 10}, {2, 2048, 20}, {2, 4096, 40}, {4, 8192, 80}, {8, 16384, 160}, {16, 65536, 320}, {0, 0, 0}}

func randomRequests(rng *rand.Rand, n int, groups map[string]Group) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		f := flavors[rng.Intn(len(flavors))]
		r := Request{InstanceID: fmt.Sprintf("i%d", i), VCPUs: f[0], RAMMB: f[1], DiskGB: f[2]}
		if rng.Intn(4) == 0 {
			r.AZ = testAZs[1+rng.Intn(len(testAZs)-1)]
		}
		if rng.Intn(4) == 0 {
			r.Arch = testArches[rng.Intn(len(testArches)-1)]
		}
		if groups != nil && rng.Intn(3) == 0 {
			r.Group = fmt.Sprintf("g%d", rng.Intn(len(groups)))
		}
		switch rng.Intn(8) { // ports straight on provider networks
		case 0:
			r.Physnets = []string{"physnet1"}
		case 1:
			r.Physnets = []string{"physnet1", "physnet2"}
		case 2: // as a caller might pass them: unsorted, repeated
			r.Physnets = []string{"physnet2", "physnet1", "physnet2"}
		case 3:
			r.Physnets = []string{"physnet3"}
		case 4:
			r.Physnets = []string{"physnet3", "physnet1"}
		}
		reqs[i] = r
	}
	return reqs
}

// refMaps reports whether host h maps every physical network q needs.
func refMaps(h Host, q Request) bool {
	for _, p := range q.Physnets {
		if h.Physnets[p] == "" { // mapped to no interface
			return false
		}
	}
	return true
}

// refPlace is the brute-force reference: every request scans every host and
// sorts nothing, written independently from the indexed implementation.
func refPlace(hosts []Host, groups map[string]Group, reqs []Request, opt Options) ([]Placement, []Failure) {
	r := opt.Ratios.WithDefaults()
	type cand struct {
		h    Host
		free [3]float64
	}
	var cs []*cand
	seen := map[string]bool{}
	for _, h := range hosts {
		if !h.Alive || !h.Enabled || seen[h.ID] {
			continue
		}
		seen[h.ID] = true
		if h.AZ == "" {
			h.AZ = "nova"
		}
		u := func(v int) float64 { return math.Max(float64(v), 0) }
		cs = append(cs, &cand{h: h, free: [3]float64{
			math.Floor(float64(h.VCPUs)*r.CPU) - u(h.UsedVCPUs),
			math.Floor(float64(h.RAMMB)*r.RAM) - u(h.UsedRAMMB),
			math.Floor(float64(h.DiskGB)*r.Disk) - u(h.UsedDiskGB),
		}})
	}
	members := map[string]map[string]int{}
	for id, g := range groups {
		members[id] = map[string]int{}
		for h, n := range g.Hosts {
			if n > 0 {
				members[id][h] += n
			}
		}
	}
	var ps []Placement
	var fs []Failure
	for _, q := range reqs {
		need := [3]float64{float64(q.VCPUs), float64(q.RAMMB), float64(q.DiskGB)}
		g, known := groups[q.Group]
		if q.Group != "" && !known {
			fs = append(fs, Failure{q.InstanceID, "Instance group " + q.Group + " could not be found."})
			continue
		}
		switch g.Policy {
		case "", statedb.PolicyAffinity, statedb.PolicyAntiAffinity, statedb.PolicySoftAffinity, statedb.PolicySoftAntiAffinity:
		default:
			fs = append(fs, Failure{q.InstanceID, "Invalid server group policy " + g.Policy + "."})
			continue
		}
		m := members[q.Group]
		total := 0
		for _, n := range m {
			total += n
		}
		// key: smaller is better; [member preference, weigher].
		key := func(c *cand) [2]float64 {
			w := -c.free[1]
			if opt.Weigher == Pack {
				w = c.free[1]
			}
			switch g.Policy {
			case statedb.PolicySoftAffinity:
				return [2]float64{-float64(m[c.h.ID]), w}
			case statedb.PolicySoftAntiAffinity:
				return [2]float64{float64(m[c.h.ID]), w}
			}
			return [2]float64{0, w}
		}
		var best *cand
		for _, c := range cs {
			if need[0] < 0 || need[1] < 0 || need[2] < 0 ||
				need[0] > c.free[0] || need[1] > c.free[1] || need[2] > c.free[2] ||
				(q.AZ != "" && c.h.AZ != q.AZ) || (q.Arch != "" && c.h.Arch != q.Arch) ||
				(q.Pin != "" && c.h.ID != q.Pin) || !refMaps(c.h, q) ||
				(g.Policy == statedb.PolicyAffinity && total > m[c.h.ID]) ||
				(g.Policy == statedb.PolicyAntiAffinity && m[c.h.ID] >= max(g.MaxPerHost, 1)) {
				continue
			}
			if best == nil {
				best = c
				continue
			}
			kc, kb := key(c), key(best)
			if kc[0] < kb[0] || kc[0] == kb[0] && (kc[1] < kb[1] || kc[1] == kb[1] && c.h.ID < best.h.ID) {
				best = c
			}
		}
		if best == nil {
			fs = append(fs, Failure{q.InstanceID, statedb.NoValidHost})
			continue
		}
		for d := range need {
			best.free[d] -= need[d]
		}
		if m != nil {
			m[best.h.ID]++
		}
		ps = append(ps, Placement{q.InstanceID, best.h.ID})
	}
	return ps, fs
}

// checkPlan verifies the invariants of a plan without trusting any code
// under test: no host over-committed, every request placed or failed once,
// and, for Spread and requests without a group, the chosen host has the
// maximum free RAM among the hosts that fit at that point.
func checkPlan(t *testing.T, hosts []Host, reqs []Request, opt Options, ps []Placement, fs []Failure) {
	t.Helper()
	r := opt.Ratios.WithDefaults()
	byID := map[string]*Host{}
	for i := range hosts {
		h := &hosts[i]
		if _, dup := byID[h.ID]; !dup && h.Alive && h.Enabled {
			c := *h
			byID[h.ID] = &c
		}
	}
	reqByID := map[string]Request{}
	for _, q := range reqs {
		reqByID[q.InstanceID] = q
	}
	seen := map[string]int{}
	for _, p := range ps {
		seen[p.InstanceID]++
	}
	for _, f := range fs {
		seen[f.InstanceID]++
		if f.Reason == "" {
			t.Errorf("failure %v has no reason", f)
		}
	}
	for _, q := range reqs {
		if seen[q.InstanceID] != 1 {
			t.Errorf("request %s placed or failed %d times; want exactly once", q.InstanceID, seen[q.InstanceID])
		}
	}
	if len(ps)+len(fs) != len(reqs) {
		t.Errorf("%d placements + %d failures; want %d requests", len(ps), len(fs), len(reqs))
	}
	over := func(used, total int, ratio float64) bool { return float64(used) > float64(total)*ratio }
	fitsNow := func(h *Host, q Request) bool {
		return q.VCPUs >= 0 && q.RAMMB >= 0 && q.DiskGB >= 0 &&
			!over(max(h.UsedVCPUs, 0)+q.VCPUs, h.VCPUs, r.CPU) &&
			!over(max(h.UsedRAMMB, 0)+q.RAMMB, h.RAMMB, r.RAM) &&
			!over(max(h.UsedDiskGB, 0)+q.DiskGB, h.DiskGB, r.Disk) &&
			(q.AZ == "" || q.AZ == h.AZ || q.AZ == "nova" && h.AZ == "") &&
			(q.Arch == "" || q.Arch == h.Arch) && refMaps(*h, q)
	}
	freeRAM := func(h *Host) float64 { return math.Floor(float64(h.RAMMB)*r.RAM) - float64(max(h.UsedRAMMB, 0)) }
	// Replay in request order: placements are in request order too.
	pi := 0
	for _, q := range reqs {
		if pi >= len(ps) || ps[pi].InstanceID != q.InstanceID {
			continue
		}
		p := ps[pi]
		pi++
		h := byID[p.HostID]
		if h == nil {
			t.Errorf("placement %v on a host that is unknown, dead or disabled", p)
			continue
		}
		if !fitsNow(h, q) {
			t.Errorf("placement %v over-commits or breaks a filter on %+v", p, *h)
		}
		if q.Pin != "" && p.HostID != q.Pin {
			t.Errorf("placement %v; want the pinned host %s", p, q.Pin)
		}
		if opt.Weigher == Spread && q.Group == "" && q.Pin == "" {
			for _, o := range byID {
				if fitsNow(o, q) && freeRAM(o) > freeRAM(h) {
					t.Errorf("placement %v: host %s has %v MB free, more than the chosen %v", p, o.ID, freeRAM(o), freeRAM(h))
					break
				}
			}
		}
		h.UsedVCPUs = max(h.UsedVCPUs, 0) + q.VCPUs
		h.UsedRAMMB = max(h.UsedRAMMB, 0) + q.RAMMB
		h.UsedDiskGB = max(h.UsedDiskGB, 0) + q.DiskGB
	}
	if pi != len(ps) {
		t.Errorf("placements %v are not in request order", ps)
	}
}

func TestPlaceProperties(t *testing.T) {
	seeds := 400
	if testing.Short() {
		seeds = 50
	}
	ratios := []statedb.Ratios{{}, {CPU: 1, RAM: 1.5, Disk: 2}, {CPU: 16, RAM: 0.9, Disk: 1}}
	for seed := range int64(seeds) {
		rng := rand.New(rand.NewSource(seed))
		hosts := randomHosts(rng, 1+rng.Intn(150))
		if seed%3 == 0 { // as the state store lists them: the one-pass ranking
			slices.SortStableFunc(hosts, func(a, b Host) int { return strings.Compare(a.ID, b.ID) })
		}
		var groups map[string]Group
		if seed%2 == 1 {
			groups = randomGroups(rng, hosts)
		}
		reqs := randomRequests(rng, 1+rng.Intn(300), groups)
		for i := range reqs {
			switch rng.Intn(8) {
			case 0:
				reqs[i].Pin = hosts[rng.Intn(len(hosts))].ID
			case 1:
				reqs[i].Pin = "unknown"
			}
		}
		opt := Options{Ratios: ratios[rng.Intn(len(ratios))], Weigher: Weigher(rng.Intn(2))}
		wp, wf := refPlace(hosts, groups, reqs, opt)
		want := result{wp, wf}
		for _, linear := range []bool{false, true} {
			p, f := place(hosts, groups, reqs, opt, linear)
			got := result{p, f}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d linear=%v %v: Place(%v) = %v; want %v", seed, linear, opt, reqs, got, want)
			}
			checkPlan(t, hosts, reqs, opt, p, f)
			if t.Failed() {
				t.Fatalf("seed %d linear=%v %v: invariants broken", seed, linear, opt)
			}
		}
	}
}

// TestPlaceCPUBound exercises the case the RAM order handles worst: the
// hosts with the most free RAM have no vCPU left.
func TestPlaceCPUBound(t *testing.T) {
	rng := rand.New(rand.NewSource(99))
	hosts := randomHosts(rng, 2000)
	for i := range hosts {
		if i%3 == 0 {
			hosts[i].RAMMB, hosts[i].UsedRAMMB = 1<<20, 0
			hosts[i].UsedVCPUs = hosts[i].VCPUs * 4
		}
	}
	reqs := randomRequests(rng, 3000, nil)
	for _, w := range []Weigher{Spread, Pack} {
		opt := Options{Weigher: w}
		wp, wf := refPlace(hosts, nil, reqs, opt)
		p, f := place(hosts, nil, reqs, opt, false)
		if got, want := (result{p, f}), (result{wp, wf}); !reflect.DeepEqual(got, want) {
			t.Fatalf("%v: Place(%d requests) = %v; want %v", w, len(reqs), got, want)
		}
		checkPlan(t, hosts, reqs, opt, p, f)
	}
}
