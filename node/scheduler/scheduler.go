// Package scheduler owns instance placement: given a snapshot of host
// capacities, server groups and pending requests, it decides which host each
// instance goes to, with Nova-like filters (liveness, capacity with
// over-commit ratios, availability zone, architecture, server-group
// affinity) and weighers (spread or pack by free RAM).
//
// Placement is a pure function of its input. The package does no I/O, reads
// no clock, uses no randomness and imports nothing but the standard library
// and consensus/statedb, whose placement rule (statedb.Headroom,
// Room.Holds, statedb.GroupAllows, host pins, statedb.MapsPhysnets) it applies: the rule is
// written once, there, and the state machine re-checks every claim of a
// plan with it against the state the plan is applied to, so a stale plan
// can never over-commit a host or break a constraint, and a fresh one is
// never refused. [Plan] turns a state snapshot and host liveness into
// [Host], [Group] and [Request] values, runs [Place] and returns the
// statedb.PlaceInstancesCmd the leader commits through Raft; it must stay
// free of I/O too.
//
// # Cost
//
// For each distinct (availability zone, architecture, physical networks)
// constraint a batch uses, Place keeps a treap of the eligible hosts that
// meet it, ordered best-first by the weigher score (free RAM after ratios,
// then host ID), where every subtree also records the largest free vCPU,
// RAM and disk it contains. The best host for a request is the first host
// in that order that fits, found by a descent that skips every subtree
// whose maxima cannot hold the request, and a claim re-keys the host in
// O(log N) in each tree holding it. This is exact, not a heuristic: the
// top host lacking vCPU or disk only costs the walk past it. (Only when the
// subtree maxima of different dimensions keep coming from different hosts,
// none of which fits, does the walk grow toward O(N).) A plain heap
// would answer "best host" but not "best host with at least R MB free", so
// Pack would pop every nearly full host on every request.
//
// Building the trees costs O(N log N) (about 2 ms for 10,000 hosts), so
// small batches (up to 16 requests) scan every host per request instead.
// Both strategies choose from the same total order and give identical
// plans; the tests hold both to a brute-force reference.
//
// A pinned request (Request.Pin) considers its one host only. A request
// whose ports need physical networks (Request.Physnets) only ever visits
// hosts that map them: its tree holds just those (built from a per-call
// list of the hosts mapping each physical network, starting from the
// rarest one it needs), and a small batch scans just those, so its cost
// follows the hosts mapping the networks, not the cluster.
//
// Server groups: anti-affinity (with max_server_per_host, a host at its
// limit) and soft-anti-affinity skip member hosts during the same tree
// descent (cost grows with the members met on the
// way); affinity with existing members and soft-affinity scan the group's
// member hosts, which are few.
package scheduler

import (
	"slices"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// DefaultAZ is the availability zone of a host that names none.
const DefaultAZ = "nova"

// Host is one hypervisor as the scheduler sees it: liveness from gossip,
// physical totals, and the claims already committed against it.
type Host struct {
	ID      string
	Name    string
	Alive   bool   // gossip alive
	Enabled bool   // not disabled by admin
	AZ      string // availability zone; "" means DefaultAZ
	Arch    string // e.g. "x86_64"; "" matches only requests with no Arch

	VCPUs, RAMMB, DiskGB             int // physical totals
	UsedVCPUs, UsedRAMMB, UsedDiskGB int // committed claims; negative counts as 0

	// Physnets is what the host maps: physical network → interface
	// (statedb.HostNetworks). Only the networks some request needs
	// matter; Plan fills in just the hosts mapping one of those.
	Physnets map[string]string
}

// Request is one instance to place.
type Request struct {
	InstanceID string

	VCPUs, RAMMB, DiskGB int // negative sizes never fit

	AZ    string // "" = any
	Arch  string // "" = any (image hw_architecture)
	Group string // server group id, "" = none; must be a key of groups
	// Pin is the only host the instance may go on ("" = any): where its
	// local boot volume lives (statedb.Constraints.Pin).
	Pin string
	// Physnets are the physical networks the instance's ports sit on
	// directly; only hosts mapping all of them fit
	// (statedb.MapsPhysnets).
	Physnets []string
}

// Group is a server group and where its members already run.
type Group struct {
	ID     string
	Policy string // a statedb.Policy… constant, or ""
	// MaxPerHost is anti-affinity's max_server_per_host rule: up to this
	// many members per host; 0 (no rule) means one. Other policies ignore
	// it (statedb.GroupAllows).
	MaxPerHost int
	Hosts      map[string]int // host id → members already placed there
}

// Weigher orders the hosts that pass the filters.
type Weigher int

const (
	// Spread prefers the host with the most free RAM (the default).
	Spread Weigher = iota
	// Pack prefers the host with the least free RAM that still fits.
	Pack
)

func (w Weigher) String() string {
	switch w {
	case Spread:
		return "spread"
	case Pack:
		return "pack"
	}
	return "Weigher(" + strconv.Itoa(int(w)) + ")"
}

// Options tune Place. The zero value spreads with statedb.DefaultRatios; a
// Weigher other than Pack spreads.
type Options struct {
	Ratios  statedb.Ratios
	Weigher Weigher
}

// Placement assigns an instance to a host.
type Placement struct{ InstanceID, HostID string }

// Failure reports an instance that could not be placed and why.
type Failure struct{ InstanceID, Reason string }

// Place computes placements for reqs in order. Each request is either placed
// or failed, exactly once, and both results keep the order of reqs (either
// may be nil). It never over-commits: each placement's claims are added to
// the host before the next request is considered. It is deterministic for
// the same input, and with unique host IDs whatever their order: ties are
// broken by the smaller host ID. Hosts that are not Alive and Enabled are never chosen; of
// several hosts with the same ID only the first counts.
//
// A request for a group that groups lacks, or whose policy is unknown, fails
// rather than risk breaking a policy the scheduler cannot see.
func Place(hosts []Host, groups map[string]Group, reqs []Request, opt Options) ([]Placement, []Failure) {
	return place(hosts, groups, reqs, opt, len(reqs) <= linearMax)
}

// demand is what req claims; ok is false for negative sizes.
func demand(req Request) (statedb.Room, bool) {
	return statedb.HostCap{VCPUs: req.VCPUs, RAMMB: req.RAMMB, DiskGB: req.DiskGB}.Demand()
}

// linearMax is the largest batch placed by scanning every host per request
// instead of building trees: over 10,000 hosts a scan costs about 70 µs and
// ranking the IDs and building the tree about 2 ms.
const linearMax = 16

// host is an eligible host during one Place call. It holds no pointers, so
// ten thousand of them cost the garbage collector nothing.
type host struct {
	free  statedb.Room
	first int32 // the host's first tree node (forest.nodes), -1 if none
	src   int32 // index in planner.in
	rank  int32 // position in ID order, once planner.ranked
	dup   bool  // a later host with an ID already seen: never chosen
}

// groupState is a server group with the placements of this batch added.
type groupState struct {
	policy     string
	maxPerHost int
	total      int // members anywhere, including hosts not eligible
	// on counts members per eligible host index, and those on hosts not
	// eligible under elsewhere, so statedb.GroupAllows sees them all.
	on map[int32]int
}

// elsewhere is the groupState.on key of members on hosts not eligible.
const elsewhere = -1

type planner struct {
	in     []Host
	hosts  []host  // alive and enabled hosts, in input order
	byRank []int32 // hosts by ID, then input order; built by rankIDs
	ranked bool
	pack   bool
	linear bool
	src    map[string]Group
	groups map[string]*groupState
	// need is the physical networks of the request being placed.
	need []string
	forest
}

func place(hosts []Host, groups map[string]Group, reqs []Request, opt Options, linear bool) ([]Placement, []Failure) {
	p := newPlanner(hosts, groups, opt, linear)
	var placed []Placement
	var failed []Failure
	for _, req := range reqs {
		h, reason := p.choose(req)
		if h < 0 {
			failed = append(failed, Failure{InstanceID: req.InstanceID, Reason: reason})
			continue
		}
		n, _ := demand(req)
		p.claim(h, n)
		if g := p.groups[req.Group]; g != nil {
			g.on[h]++
			g.total++
		}
		placed = append(placed, Placement{InstanceID: req.InstanceID, HostID: p.id(h)})
	}
	return placed, failed
}

func newPlanner(in []Host, groups map[string]Group, opt Options, linear bool) *planner {
	r := opt.Ratios.WithDefaults()
	p := &planner{
		in:     in,
		hosts:  make([]host, 0, len(in)),
		pack:   opt.Weigher == Pack,
		linear: linear,
		src:    groups,
		groups: make(map[string]*groupState),
	}
	for i := range in {
		if h := &in[i]; h.Alive && h.Enabled {
			total := statedb.HostCap{VCPUs: h.VCPUs, RAMMB: h.RAMMB, DiskGB: h.DiskGB}
			used := statedb.HostCap{VCPUs: h.UsedVCPUs, RAMMB: h.UsedRAMMB, DiskGB: h.UsedDiskGB}
			p.hosts = append(p.hosts, host{free: statedb.Headroom(total, used, r), first: -1, src: int32(i)})
		}
	}
	if !linear {
		p.rankIDs() // trees compare ranks and must never hold a duplicate
	}
	return p
}

func (p *planner) id(h int32) string { return p.in[p.hosts[h].src].ID }

// rankIDs orders the hosts by ID (input order among equal IDs), so that
// ties compare integers and lookups bisect, and marks every host but the
// first of an ID dup. Hosts usually arrive sorted by ID from the state
// store; then this is one pass.
func (p *planner) rankIDs() {
	if p.ranked {
		return
	}
	p.ranked = true
	p.byRank = make([]int32, len(p.hosts))
	sorted := true
	for i := range p.byRank {
		p.byRank[i] = int32(i)
		if i > 0 && p.id(int32(i)) < p.id(int32(i-1)) {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(p.byRank, func(a, b int32) int { return strings.Compare(p.id(a), p.id(b)) })
	}
	for r, h := range p.byRank {
		p.hosts[h].rank = int32(r)
		if r > 0 && p.id(h) == p.id(p.byRank[r-1]) {
			p.hosts[h].dup = true
		}
	}
}

// lookup returns the first eligible host with the given ID, or -1.
func (p *planner) lookup(id string) int32 {
	p.rankIDs()
	r, found := slices.BinarySearchFunc(p.byRank, id, func(h int32, id string) int { return strings.Compare(p.id(h), id) })
	if !found {
		return -1
	}
	return p.byRank[r]
}

// first reports whether no eligible host before h has h's ID. Before the
// ranks exist it scans, which small batches can afford once per placement.
func (p *planner) first(h int32) bool {
	if p.ranked {
		return !p.hosts[h].dup
	}
	id := p.id(h)
	for i := range h {
		if p.id(i) == id {
			return false
		}
	}
	return true
}

// better reports whether host a comes before host b in weigher order.
func (p *planner) better(a, b int32) bool {
	ra, rb := p.hosts[a].free[statedb.DimRAM], p.hosts[b].free[statedb.DimRAM]
	if ra != rb {
		return (ra > rb) != p.pack
	}
	if p.ranked {
		return p.hosts[a].rank < p.hosts[b].rank
	}
	return p.id(a) < p.id(b)
}

// group returns the batch state of group id (nil for none), or the reason
// the request must fail.
func (p *planner) group(id string) (g *groupState, reason string) {
	if id == "" {
		return nil, ""
	}
	if g := p.groups[id]; g != nil {
		return g, ""
	}
	src, ok := p.src[id]
	if !ok {
		return nil, "Instance group " + id + " could not be found."
	}
	if src.Policy != "" && !statedb.ValidPolicy(src.Policy) {
		return nil, "Invalid server group policy " + src.Policy + "."
	}
	g = &groupState{policy: src.Policy, maxPerHost: src.MaxPerHost, on: make(map[int32]int)}
	for id, n := range src.Hosts {
		if n <= 0 {
			continue
		}
		g.total += n
		h := p.lookup(id)
		if h < 0 {
			h = elsewhere
		}
		g.on[h] += n
	}
	p.groups[id] = g
	return g, ""
}

// choose returns the host for req, or -1 and the reason it fails.
func (p *planner) choose(req Request) (int32, string) {
	for {
		h, reason := p.choose1(req)
		if h < 0 || p.first(h) {
			return h, reason
		}
		p.hosts[h].dup = true // a shadowed duplicate won: drop it, choose again
	}
}

func (p *planner) choose1(req Request) (int32, string) {
	n, ok := demand(req)
	if !ok {
		return -1, statedb.NoValidHost
	}
	g, reason := p.group(req.Group)
	if reason != "" {
		return -1, reason
	}
	k, need := keyOf(req)
	p.need = need
	h := int32(-1)
	switch {
	case req.Pin != "":
		h = p.pinned(req.Pin, g, k, n)
	case g == nil || g.policy == "":
		h = p.best(k, n, nil, "")
	case g.policy == statedb.PolicyAffinity && g.total > 0:
		h = p.bestMember(g, k, n, 0)
	case g.policy == statedb.PolicyAffinity:
		h = p.best(k, n, nil, "")
	case g.policy == statedb.PolicyAntiAffinity:
		h = p.best(k, n, g, g.policy)
	case g.policy == statedb.PolicySoftAffinity:
		if h = p.bestMember(g, k, n, +1); h < 0 {
			h = p.best(k, n, nil, "")
		}
	case g.policy == statedb.PolicySoftAntiAffinity:
		// Members' hosts are avoided as anti-affinity would, while others fit.
		if h = p.best(k, n, g, statedb.PolicyAntiAffinity); h < 0 {
			h = p.bestMember(g, k, n, -1)
		}
	}
	if h < 0 {
		return -1, statedb.NoValidHost
	}
	return h, ""
}

// pinned returns the host with ID pin if it is eligible, matches k, maps
// the request's physical networks, fits n
// and g's hard policy allows it; -1 otherwise.
func (p *planner) pinned(pin string, g *groupState, k poolKey, n statedb.Room) int32 {
	h := p.lookup(pin)
	if h < 0 || !p.hosts[h].free.Holds(n) || !p.matches(k, h) || !p.mapsNeed(h) || !p.groupAllows(g, "", h) {
		return -1
	}
	return h
}

// groupAllows applies statedb.GroupAllows to host h with g's members,
// policy and rule (or, when policy is not "", that policy instead, without
// the rule); nil g allows all.
func (p *planner) groupAllows(g *groupState, policy string, h int32) bool {
	if g == nil {
		return true
	}
	if policy == "" || policy == g.policy {
		return statedb.GroupAllows(g.policy, g.maxPerHost, g.on, h)
	}
	return statedb.GroupAllows(policy, 0, g.on, h)
}

// best returns the first host in weigher order that matches k, maps the
// request's physical networks, fits n and
// that policy allows with g's members (any host for a nil g); -1 if none.
func (p *planner) best(k poolKey, n statedb.Room, g *groupState, policy string) int32 {
	if !p.linear {
		return p.find(p.tree(k, p.need), n, g, policy)
	}
	// Only hosts mapping the request's physical networks are visited.
	cands, all := p.candidates(p.need)
	count := len(cands)
	if all {
		count = len(p.hosts)
	}
	best := int32(-1)
	for i := range count {
		h := int32(i)
		if !all {
			h = cands[i]
		}
		if p.hosts[h].dup || !p.hosts[h].free.Holds(n) || !p.matches(k, h) || !p.mapsNeed(h) || !p.groupAllows(g, policy, h) {
			continue
		}
		if best < 0 || p.better(h, best) {
			best = h
		}
	}
	return best
}

// bestMember picks among the group's eligible member hosts that match k,
// fit n and g's policy allows: by member count (most first if pref is +1,
// fewest first if -1, ignored if 0), then weigher order; -1 if none.
func (p *planner) bestMember(g *groupState, k poolKey, n statedb.Room, pref int) int32 {
	best := int32(-1)
	for h, c := range g.on {
		if h == elsewhere || !p.hosts[h].free.Holds(n) || !p.matches(k, h) || !p.mapsNeed(h) || !p.groupAllows(g, "", h) {
			continue
		}
		if d := pref * (c - g.on[best]); best < 0 || d > 0 || d == 0 && p.better(h, best) {
			best = h
		}
	}
	return best
}

// claim takes n from host h, keeping every built tree in order.
func (p *planner) claim(h int32, n statedb.Room) {
	hs := &p.hosts[h]
	for x := hs.first; x >= 0; x = p.nodes[x].next {
		t := p.nodes[x].tree
		p.roots[t] = p.remove(p.roots[t], x)
	}
	for d := range n {
		hs.free[d] -= n[d]
	}
	for x := hs.first; x >= 0; x = p.nodes[x].next {
		t := p.nodes[x].tree
		p.roots[t] = p.insert(p.roots[t], x)
	}
}
