package scheduler

// The index: one treap per host pool a batch asks for. A pool is every
// eligible host (level 0), the hosts of one AZ (level 1), of one
// architecture (level 2), or of one AZ and architecture (level 3), so a host
// sits in at most one tree per level and a request queries exactly one tree.
// In-order is weigher order (planner.better); each node also carries the
// per-dimension maxima of free capacity in its subtree, which lets find skip
// subtrees that cannot hold a request. Priorities are a fixed hash of the
// node number, so the shape, like everything else, is deterministic.

import (
	"cmp"
	"slices"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// levels is the number of pool levels.
const levels = 4

// poolKey names a pool. level bit 0 means az is set, bit 1 that arch is set.
type poolKey struct {
	level    uint8
	az, arch string
}

func keyOf(req Request) poolKey {
	var k poolKey
	if req.AZ != "" {
		k.level |= 1
		k.az = req.AZ
	}
	if req.Arch != "" {
		k.level |= 2
		k.arch = req.Arch
	}
	return k
}

// matches reports whether host h is in pool k.
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
// request being placed (statedb.MapsPhysnets). It is a filter beside the
// pools, not part of them: a pool's tree serves every request of its zone
// and architecture.
func (p *planner) mapsNeed(h int32) bool {
	return len(p.need) == 0 || statedb.MapsPhysnets(p.in[p.hosts[h].src].Physnets, p.need)
}

type tnode struct {
	l, r int32
	prio uint32
	max  statedb.Room // largest free capacity per dimension in the subtree
}

// forest holds the trees of one Place call. A node number is
// host*levels+level; nodes[level] is allocated when a tree of that level is
// first built.
type forest struct {
	nodes [levels][]tnode
	roots []int32
	index map[poolKey]int32 // pool → index in roots
}

func node(h int32, level int) int32 { return h*levels + int32(level) }

func (p *planner) n(x int32) *tnode { return &p.nodes[x%levels][x/levels] }

// less orders nodes of one tree by their hosts.
func (p *planner) less(a, b int32) bool { return p.better(a/levels, b/levels) }

// tree returns the root of pool k's tree, building it on first use.
func (p *planner) tree(k poolKey) int32 {
	if t, ok := p.index[k]; ok {
		return p.roots[t]
	}
	level := int(k.level)
	if p.nodes[level] == nil {
		p.nodes[level] = make([]tnode, len(p.hosts))
	}
	// Sort on copied keys (free RAM, ID rank): no indirection per compare.
	type sortKey struct {
		ram  int64
		rank int32
		x    int32
	}
	var keys []sortKey
	for i := range p.hosts {
		if h := &p.hosts[i]; !h.dup && p.matches(k, int32(i)) {
			ram := h.free[statedb.DimRAM]
			if !p.pack {
				ram = -ram // Spread: most free RAM first
			}
			keys = append(keys, sortKey{ram, h.rank, node(int32(i), level)})
		}
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if a.ram != b.ram {
			return cmp.Compare(a.ram, b.ram)
		}
		return cmp.Compare(a.rank, b.rank) // distinct: IDs are unique in trees
	})
	// Cartesian-tree build from the sorted keys, O(n). A node leaves the
	// stack with its subtree complete, so its maxima are pulled then.
	var stack []int32
	for _, key := range keys {
		x, nx := key.x, p.n(key.x)
		*nx = tnode{l: -1, r: -1, prio: prio(x)}
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
	t := int32(len(p.roots))
	p.index[k] = t
	p.roots = append(p.roots, root)
	for _, key := range keys {
		p.hosts[key.x/levels].tree[level] = t
	}
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
	m := p.hosts[x/levels].free
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
// host fits n, maps the request's physical networks and that policy allows
// with g's members (see best); -1 if
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
		h := t / levels
		if p.hosts[h].free.Holds(n) && p.groupAllows(g, policy, h) && p.mapsNeed(h) {
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
