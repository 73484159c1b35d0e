package scheduler

// The index: one treap per host pool a batch asks for. A pool is the
// eligible hosts of an availability zone and architecture constraint (each
// optional) that map a set of physical networks (possibly none), so a
// request queries exactly one tree, and a request needing physical networks
// walks a tree of mapping hosts only. In-order is weigher order
// (planner.better); each node also carries the per-dimension maxima of free
// capacity in its subtree, which lets find skip subtrees that cannot hold a
// request. Priorities are a fixed hash of the node number, so the shape,
// like everything else, is deterministic.

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// poolKey names a pool. level bit 0 means az is set, bit 1 that arch is set;
// need is the physical networks every host of the pool maps (needs of
// them, sorted, without repeats): the name itself for one, each name
// prefixed by its length for more, so no two sets share a key.
type poolKey struct {
	level    uint8
	az, arch string
	needs    int
	need     string
}

// keyOf returns req's pool and its physical networks, sorted without
// repeats.
func keyOf(req Request) (poolKey, []string) {
	var k poolKey
	if req.AZ != "" {
		k.level |= 1
		k.az = req.AZ
	}
	if req.Arch != "" {
		k.level |= 2
		k.arch = req.Arch
	}
	need := req.Physnets
	for i := 1; i < len(need); i++ {
		if need[i-1] >= need[i] { // as Plan passes them, sorted and unique, this never copies
			need = slices.Compact(slices.Sorted(slices.Values(need)))
			break
		}
	}
	k.needs = len(need)
	switch {
	case len(need) == 1:
		k.need = need[0]
	case len(need) > 1:
		var b strings.Builder
		for _, n := range need {
			b.WriteString(strconv.Itoa(len(n)))
			b.WriteByte(':')
			b.WriteString(n)
		}
		k.need = b.String()
	}
	return k, need
}

// matches reports whether host h is in the zone and architecture of pool k
// (the physical networks are mapsNeed's).
func (p *planner) matches(k poolKey, h int32) bool {
	if k.level == 0 {
		return true
	}
	in := &p.in[p.hosts[h].src]
	if k.level&1 != 0 && in.AZ != k.az && (in.AZ != "" || k.az != DefaultAZ) {
		return false
	}
	return k.level&2 == 0 || in.Arch == k.arch
}

// mapsNeed reports whether host h maps the physical networks of the
// request being placed (statedb.MapsPhysnets): the rule that decides which
// hosts a pool needing them holds, and the filter of the paths that look at
// given hosts (pins, group members, small batches).
func (p *planner) mapsNeed(h int32) bool {
	return len(p.need) == 0 || statedb.MapsPhysnets(p.in[p.hosts[h].src].Physnets, p.need)
}

// candidates returns the hosts that may map every one of need: all
// eligible hosts for none, else those mapping the one of need the fewest
// hosts map (in input order; the caller still applies mapsNeed).
func (p *planner) candidates(need []string) (hosts []int32, all bool) {
	if len(need) == 0 {
		return nil, true
	}
	if p.mapping == nil {
		p.mapping = make(map[string][]int32)
		for i := range p.hosts {
			for name, dev := range p.in[p.hosts[i].src].Physnets {
				if dev != "" {
					p.mapping[name] = append(p.mapping[name], int32(i))
				}
			}
		}
	}
	hosts = p.mapping[need[0]]
	for _, n := range need[1:] {
		if c := p.mapping[n]; len(c) < len(hosts) {
			hosts = c
		}
	}
	return hosts, false
}

type tnode struct {
	l, r int32
	prio uint32
	host int32        // index in planner.hosts
	tree int32        // index in forest.roots
	next int32        // the host's node in its next tree, -1 if none
	max  statedb.Room // largest free capacity per dimension in the subtree
}

// forest holds the trees of one Place call. Each tree's nodes are allocated
// when it is built; a host's nodes form a list (host.first, tnode.next)
// that claim re-keys.
type forest struct {
	nodes []tnode
	roots []int32
	index map[poolKey]int32 // pool → index in roots
	// mapping lists, per physical network, the eligible hosts mapping it,
	// in input order; built on the first request needing one.
	mapping map[string][]int32
}

func (p *planner) n(x int32) *tnode { return &p.nodes[x] }

// less orders nodes of one tree by their hosts.
func (p *planner) less(a, b int32) bool { return p.better(p.nodes[a].host, p.nodes[b].host) }

// tree returns the root of pool k's tree, building it on first use from the
// hosts that match k and map need (k's physical networks).
func (p *planner) tree(k poolKey, need []string) int32 {
	if t, ok := p.index[k]; ok {
		return p.roots[t]
	}
	// Sort on copied keys (free RAM, ID rank): no indirection per compare.
	type sortKey struct {
		ram  int64
		rank int32
		h    int32
	}
	var keys []sortKey
	add := func(h int32) {
		hs := &p.hosts[h]
		if hs.dup || !p.matches(k, h) || len(need) > 0 && !statedb.MapsPhysnets(p.in[hs.src].Physnets, need) {
			return
		}
		ram := hs.free[statedb.DimRAM]
		if !p.pack {
			ram = -ram // Spread: most free RAM first
		}
		keys = append(keys, sortKey{ram, hs.rank, h})
	}
	if cands, all := p.candidates(need); all {
		keys = make([]sortKey, 0, len(p.hosts))
		for i := range p.hosts {
			add(int32(i))
		}
	} else {
		for _, h := range cands {
			add(h)
		}
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if a.ram != b.ram {
			return cmp.Compare(a.ram, b.ram)
		}
		return cmp.Compare(a.rank, b.rank) // distinct: IDs are unique in trees
	})
	t := int32(len(p.roots))
	first := int32(len(p.nodes))
	p.nodes = slices.Grow(p.nodes, len(keys))[:int(first)+len(keys)]
	// Cartesian-tree build from the sorted keys, O(n). A node leaves the
	// stack with its subtree complete, so its maxima are pulled then.
	var stack []int32
	for j, key := range keys {
		x := first + int32(j)
		hs := &p.hosts[key.h]
		nx := p.n(x)
		*nx = tnode{l: -1, r: -1, prio: prio(x), host: key.h, tree: t, next: hs.first}
		hs.first = x
		last := int32(-1)
		for len(stack) > 0 && p.n(stack[len(stack)-1]).prio < nx.prio {
			last = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			p.pull(last)
		}
		nx.l = last
		if len(stack) > 0 {
			p.n(stack[len(stack)-1]).r = x
		}
		stack = append(stack, x)
	}
	root := int32(-1)
	for i := len(stack) - 1; i >= 0; i-- {
		p.pull(stack[i])
		root = stack[i]
	}
	if p.index == nil {
		p.index = make(map[poolKey]int32)
	}
	p.index[k] = t
	p.roots = append(p.roots, root)
	return root
}

// prio is a fixed pseudo-random priority for node x (splitmix64 finaliser).
func prio(x int32) uint32 {
	z := uint64(x) + 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return uint32((z ^ z>>31) >> 32)
}

// pull recomputes x's maxima from its host and children.
func (p *planner) pull(x int32) {
	nx := p.n(x)
	m := p.hosts[nx.host].free
	for _, c := range [2]int32{nx.l, nx.r} {
		if c < 0 {
			continue
		}
		cm := &p.n(c).max
		for d := range m {
			m[d] = max(m[d], cm[d])
		}
	}
	nx.max = m
}

// find returns the host of the first node in t, in weigher order, whose
// host fits n and that policy allows with g's members (see best); -1 if
// none. Subtrees whose maxima cannot hold n are not entered, so without a
// group the walk leaves the direct path only for hosts that pass on each
// dimension's maximum but miss the combination.
func (p *planner) find(t int32, n statedb.Room, g *groupState, policy string) int32 {
	for t >= 0 {
		nt := p.n(t)
		if !nt.max.Holds(n) {
			return -1
		}
		if h := p.find(nt.l, n, g, policy); h >= 0 {
			return h
		}
		h := nt.host
		if p.hosts[h].free.Holds(n) && p.groupAllows(g, policy, h) {
			return h
		}
		t = nt.r
	}
	return -1
}

// split divides t into the nodes before x and those after it (x not in t).
func (p *planner) split(t, x int32) (a, b int32) {
	if t < 0 {
		return -1, -1
	}
	nt := p.n(t)
	if p.less(t, x) {
		nt.r, b = p.split(nt.r, x)
		p.pull(t)
		return t, b
	}
	a, nt.l = p.split(nt.l, x)
	p.pull(t)
	return a, t
}

// merge joins a and b, every node of a being before every node of b.
func (p *planner) merge(a, b int32) int32 {
	if a < 0 {
		return b
	}
	if b < 0 {
		return a
	}
	na, nb := p.n(a), p.n(b)
	if na.prio > nb.prio {
		na.r = p.merge(na.r, b)
		p.pull(a)
		return a
	}
	nb.l = p.merge(a, nb.l)
	p.pull(b)
	return b
}

// insert adds node x to t, keyed by its host's current free RAM and ID.
func (p *planner) insert(t, x int32) int32 {
	a, b := p.split(t, x)
	nx := p.n(x)
	nx.l, nx.r = -1, -1
	p.pull(x)
	return p.merge(p.merge(a, x), b)
}

// remove takes node x out of t; x's host must still have the free RAM it was
// inserted with.
func (p *planner) remove(t, x int32) int32 {
	if t < 0 {
		return -1
	}
	nt := p.n(t)
	if t == x {
		return p.merge(nt.l, nt.r)
	}
	if p.less(x, t) {
		nt.l = p.remove(nt.l, x)
	} else {
		nt.r = p.remove(nt.r, x)
	}
	p.pull(t)
	return t
}
