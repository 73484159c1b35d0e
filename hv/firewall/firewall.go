package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrPermission: the process lacks CAP_NET_ADMIN.
var ErrPermission = errors.New("firewall: permission denied: needs CAP_NET_ADMIN")

// Config configures a Manager.
type Config struct {
	// NetNS is an open network namespace file to work in; 0 means the
	// namespace of the process.
	NetNS  int
	Logger *slog.Logger
}

// Stats counts what an Apply wrote: Tx is 0 or 1 (one atomic batch).
type Stats struct {
	Tx            int // nftables transactions sent
	Tables        int // tables created or deleted
	Chains        int // chains created, rewritten or deleted
	Sets          int // sets created or deleted
	Elements      int // set elements added or deleted
	Rules         int // rules added or deleted (a rewritten chain's old rules count once, as its flush)
	FlowsDeleted  int // conntrack entries cut
	PortsAffected int // ports whose connections were re-checked
}

// Writes is the number of kernel objects changed.
func (s Stats) Writes() int { return s.Tables + s.Chains + s.Sets + s.Elements }

// Manager applies desired filtering to the kernel. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	cur  *model            // last applied; nil = unknown (rebuild)
	idx  map[string]uint16 // port id -> mark index
	brT  *nftables.Table
	inT  *nftables.Table
	sets map[string]*nftables.Set
}

// New makes a Manager and turns on br_netfilter for IPv4 and IPv6 in its
// namespace, without which bridged traffic is not tracked.
func New(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, idx: map[string]uint16{},
		brT: &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge},
		inT: &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}}
	if err := m.inNS(func() error {
		for _, f := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
			if err := os.WriteFile("/proc/sys/net/bridge/"+f, []byte("1\n"), 0o644); err != nil {
				return fmt.Errorf("firewall: enable %s: %w", f, err)
			}
		}
		return nil
	}); err != nil {
		return nil, permission(err)
	}
	return m, nil
}

func permission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: %v", ErrPermission, err)
	}
	return err
}

// inNS runs fn on a thread inside the configured namespace.
func (m *Manager) inNS(fn func() error) error {
	if m.cfg.NetNS == 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return // thread stays locked and exits with the goroutine
		}
		defer orig.Close()
		if err := unix.Setns(m.cfg.NetNS, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func (m *Manager) conn() (*nftables.Conn, error) {
	// A batch gets one acknowledgement per message: make room for them.
	// The batch itself is one sendmsg, which the kernel refuses (EMSGSIZE)
	// beyond the send buffer: ports with a thousand rules each need MBs.
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := c.SetWriteBuffer(32 << 20); err != nil {
			return err
		}
		return c.SetReadBuffer(8 << 20)
	})}
	if m.cfg.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(m.cfg.NetNS))
	}
	return nftables.New(opts...)
}

// assign gives every port a stable mark index (1-65535).
func (m *Manager) assign(ports []Port) (map[string]uint16, error) {
	want := map[string]bool{}
	for _, p := range ports {
		want[p.ID] = true
	}
	used := map[uint16]bool{}
	for id, n := range m.idx {
		if want[id] {
			used[n] = true
		}
	}
	out := map[string]uint16{}
	next := uint16(1)
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if n, ok := m.idx[id]; ok {
			out[id] = n
			continue
		}
		for used[next] {
			if next == 0xffff {
				return nil, fmt.Errorf("firewall: more than 65535 ports")
			}
			next++
		}
		used[next] = true
		out[id] = next
	}
	return out, nil
}

// Apply makes the kernel filter exactly d: one nftables batch holding the
// difference with the last Apply (none if there is none), then cuts the
// connections the new rules no longer allow.
func (m *Manager) Apply(ctx context.Context, d Desired) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st Stats
	if err := ctx.Err(); err != nil {
		return st, err
	}
	idx, err := m.assign(d.Ports)
	if err != nil {
		return st, err
	}
	want, err := build(d, idx)
	if err != nil {
		return st, err
	}
	c, err := m.conn()
	if err != nil {
		return st, permission(fmt.Errorf("firewall: netlink: %w", err))
	}
	cur := m.cur
	if cur != nil {
		// Someone removed our tables: start over.
		if ok, err := m.tablesExist(c); err != nil {
			return st, err
		} else if !ok {
			cur = nil
		}
	}
	fresh := cur == nil
	if fresh {
		if ok, err := m.anyTable(c); err != nil {
			return st, err
		} else if ok {
			st.Tables += m.delTables(c)
		}
		cur = &model{chains: map[string]*chainSpec{}, sets: map[string]*setSpec{}, ports: map[string]*Port{}}
		c.AddTable(m.brT)
		c.AddTable(m.inT)
		st.Tables += 2
		m.sets = map[string]*nftables.Set{}
	}
	narrowed := m.diff(c, cur, want, d.Verify && !fresh, &st)
	if st.Writes() == 0 && !fresh {
		m.idx = idx
		return st, nil
	}
	if err := c.Flush(); err != nil {
		m.cur = nil // unknown now: rebuild next time
		return st, permission(fmt.Errorf("firewall: apply: %w", err))
	}
	st.Tx = 1
	m.cur, m.idx = want, idx
	if len(narrowed) > 0 && !fresh {
		n, ports, err := m.cutFlows(cur, want, narrowed, d.Groups)
		st.FlowsDeleted, st.PortsAffected = n, ports
		if err != nil {
			return st, err
		}
	}
	m.log.Debug("firewall applied", "chains", st.Chains, "sets", st.Sets, "elements", st.Elements, "flows_cut", st.FlowsDeleted)
	return st, nil
}

func (m *Manager) tablesExist(c *nftables.Conn) (bool, error) {
	n := 0
	for _, f := range []nftables.TableFamily{nftables.TableFamilyBridge, nftables.TableFamilyINet} {
		ts, err := c.ListTablesOfFamily(f)
		if err != nil {
			return false, permission(fmt.Errorf("firewall: list tables: %w", err))
		}
		for _, t := range ts {
			if t.Name == TableName {
				n++
			}
		}
	}
	return n == 2, nil
}

func (m *Manager) anyTable(c *nftables.Conn) (bool, error) {
	for _, f := range []nftables.TableFamily{nftables.TableFamilyBridge, nftables.TableFamilyINet} {
		ts, err := c.ListTablesOfFamily(f)
		if err != nil {
			return false, permission(fmt.Errorf("firewall: list tables: %w", err))
		}
		for _, t := range ts {
			if t.Name == TableName {
				return true, nil
			}
		}
	}
	return false, nil
}

// delTables queues the deletion of whichever of our tables exist and
// returns how many.
func (m *Manager) delTables(c *nftables.Conn) int {
	n := 0
	for _, f := range []nftables.TableFamily{nftables.TableFamilyBridge, nftables.TableFamilyINet} {
		if ts, err := c.ListTablesOfFamily(f); err == nil {
			for _, t := range ts {
				if t.Name == TableName {
					c.DelTable(t)
					n++
				}
			}
		}
	}
	return n
}

func (m *Manager) table(f nftables.TableFamily) *nftables.Table {
	if f == nftables.TableFamilyBridge {
		return m.brT
	}
	return m.inT
}

// diff queues the changes from cur to want on c and returns the ids of
// ports whose allowed traffic may have shrunk. A changed chain is read
// back and edited, or rewritten when it is not what cur says; with
// verify the unchanged chains are read back too and rewritten when they
// differ.
func (m *Manager) diff(c *nftables.Conn, cur, want *model, verify bool, st *Stats) map[string]bool {
	narrowed := map[string]bool{}
	// Sets first: rules may refer to new ones.
	shrunk := map[string]bool{}
	for _, name := range sortedKeys(want.sets) {
		ws := want.sets[name]
		cs, ok := cur.sets[name]
		if !ok {
			s := &nftables.Set{Table: m.brT, Name: name, KeyType: nftables.TypeIPAddr}
			if ws.v6 {
				s.KeyType = nftables.TypeIP6Addr
			}
			if err := c.AddSet(s, nil); err != nil {
				m.log.Warn("firewall: add set", "set", name, "err", err)
			}
			els := elements(ws.elems)
			addChunked(c.SetAddElements, s, els)
			m.sets[name] = s
			st.Sets++
			st.Elements += len(els)
			continue
		}
		s := m.sets[name]
		have := cs.elems
		if verify {
			// The kernel's members, not the ones applied last: a member
			// added from outside would let its connections in.
			got, err := readElems(c, s)
			switch {
			case err != nil:
				m.log.Warn("firewall: read set back", "set", name, "err", err)
			case !maps.Equal(got, cs.elems):
				m.log.Warn("firewall: set changed from outside; repairing it", "set", name)
				have = got
			}
		}
		var adds, dels []nftables.SetElement
		for a := range ws.elems {
			if !have[a] {
				adds = append(adds, nftables.SetElement{Key: a.AsSlice()})
			}
		}
		for a := range have {
			if !ws.elems[a] {
				dels = append(dels, nftables.SetElement{Key: a.AsSlice()})
			}
		}
		addChunked(c.SetAddElements, s, adds)
		addChunked(c.SetDeleteElements, s, dels)
		if len(dels) > 0 {
			shrunk[name] = true
		}
		st.Elements += len(adds) + len(dels)
	}
	// New chains exist before any rule jumps to them.
	chains := map[string]*nftables.Chain{}
	for _, k := range sortedKeys(want.chains) {
		w := want.chains[k]
		ch := &nftables.Chain{Name: w.name, Table: m.table(w.family)}
		if w.hook != nil {
			ch.Hooknum, ch.Priority, ch.Type = w.hook, w.prio, nftables.ChainTypeFilter
		}
		chains[k] = ch
		if _, ok := cur.chains[k]; !ok {
			c.AddChain(ch)
		}
	}
	for _, k := range sortedKeys(want.chains) {
		w := want.chains[k]
		old, ok := cur.chains[k]
		drifted := false // the kernel's chain was not what this manager wrote
		switch {
		case !ok:
			writeChain(c, chains[k], w.family, w.rules, false, st)
		case reflect.DeepEqual(old.rules, w.rules):
			if !verify {
				continue
			}
			if _, same := m.readMatching(c, chains[k], w.family, w.rules); same {
				continue
			}
			writeChain(c, chains[k], w.family, w.rules, true, st)
			drifted = true
		case !m.editChain(c, chains[k], w.family, old.rules, w.rules, st):
			writeChain(c, chains[k], w.family, w.rules, true, st)
			drifted = true
		}
		st.Chains++
		// Connections a drifted chain let in may be ones the rules do
		// not allow: they are cut as after a narrowing.
		if id, ok := portOfChain(w.name); ok && w.name[0] != 'o' && (drifted || narrows(cur.ports[id], want.ports[id])) {
			narrowed[id] = true
		}
	}
	// Then the chains nobody jumps to any more: port chains after the
	// base chains that referred to them were rewritten above.
	for _, k := range sortedKeys(cur.chains) {
		if _, ok := want.chains[k]; ok {
			continue
		}
		old := cur.chains[k]
		ch := &nftables.Chain{Name: old.name, Table: m.table(old.family)}
		c.FlushChain(ch)
		c.DelChain(ch)
		st.Chains++
		if id, ok := portOfChain(old.name); ok {
			narrowed[id] = true
		}
	}
	for _, name := range sortedKeys(cur.sets) {
		if _, ok := want.sets[name]; ok {
			continue
		}
		if s, ok := m.sets[name]; ok {
			c.DelSet(s)
			delete(m.sets, name)
		}
		st.Sets++
	}
	// Ports whose remote groups lost members.
	for id, p := range want.ports {
		for _, r := range p.Rules {
			if r.RemoteGroup != "" && shrunk[setName(r.RemoteGroup, r.IPv6)] {
				narrowed[id] = true
			}
		}
	}
	return narrowed
}

// narrows reports whether a port's new rules may refuse a connection its
// old ones allowed (a new port narrows nothing).
func narrows(old, cur *Port) bool {
	if old == nil || cur == nil {
		return false
	}
	if old.Stateful != cur.Stateful || !reflect.DeepEqual(old.IPs, cur.IPs) {
		return true
	}
	for _, r := range old.Rules {
		if !slices.Contains(cur.Rules, r) {
			return true
		}
	}
	return false
}

// portOfChain is the port id of an o-/e-/i- chain.
func portOfChain(name string) (string, bool) {
	if len(name) > 2 && name[1] == '-' && (name[0] == 'o' || name[0] == 'e' || name[0] == 'i') {
		return name[2:], true
	}
	return "", false
}

// readElems reads the members of set s from the kernel.
func readElems(c *nftables.Conn, s *nftables.Set) (map[netip.Addr]bool, error) {
	if s == nil {
		return nil, errors.New("set not known to this manager")
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]bool, len(els))
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("set %s: element %x is not an address", s.Name, e.Key)
		}
		out[a] = true
	}
	return out, nil
}

func elements(set map[netip.Addr]bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(set))
	for a := range set {
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

// addChunked queues elements in messages small enough for netlink's
// 64 KiB attributes.
func addChunked(op func(*nftables.Set, []nftables.SetElement) error, s *nftables.Set, els []nftables.SetElement) {
	const chunk = 1000
	for len(els) > 0 {
		n := min(chunk, len(els))
		_ = op(s, els[:n]) // only fails for anonymous sets
		els = els[n:]
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Cleanup deletes both tables (host leaving, or nothing to filter); with
// none there it writes nothing.
func (m *Manager) Cleanup(ctx context.Context) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st Stats
	if err := ctx.Err(); err != nil {
		return st, err
	}
	c, err := m.conn()
	if err != nil {
		return st, permission(fmt.Errorf("firewall: netlink: %w", err))
	}
	ok, err := m.anyTable(c)
	if err != nil || !ok {
		m.cur = nil
		return st, err
	}
	st.Tables = m.delTables(c)
	if err := c.Flush(); err != nil {
		return st, permission(fmt.Errorf("firewall: delete tables: %w", err))
	}
	st.Tx = 1
	m.cur, m.idx, m.sets = nil, map[string]uint16{}, map[string]*nftables.Set{}
	return st, nil
}
