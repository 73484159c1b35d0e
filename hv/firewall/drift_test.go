package firewall

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// outside changes chain name of the bridge table the way another tool
// would: fn queues changes on its own connection, given the chain's rules
// as the kernel holds them.
func outside(t *testing.T, h *host, name string, fn func(c *nftables.Conn, ch *nftables.Chain, rules []*nftables.Rule)) {
	t.Helper()
	if err := h.ns.do(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		ch := &nftables.Chain{Name: name, Table: h.m.brT}
		rs, err := c.GetRules(h.m.brT, ch)
		if err != nil {
			return err
		}
		fn(c, ch, rs)
		return c.Flush()
	}); err != nil {
		t.Fatalf("change %s from outside: %v", name, err)
	}
}

// kernelMatches fails unless every chain of the model is in the kernel
// rule for rule, each with its tag.
func kernelMatches(t *testing.T, h *host, when string) {
	t.Helper()
	if err := h.ns.do(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		for _, k := range sortedKeys(h.m.cur.chains) {
			w := h.m.cur.chains[k]
			tb := h.m.table(w.family)
			rs, err := c.GetRules(tb, &nftables.Chain{Name: w.name, Table: tb})
			if err != nil {
				return err
			}
			var got [][]expr.Any
			for i, r := range rs {
				got = append(got, r.Exprs)
				if i < len(w.rules) && !bytes.Equal(r.UserData, tag(w.family, w.rules[i])) {
					t.Errorf("%s: chain %s rule %d: user data %q; want its tag", when, w.name, i, r.UserData)
				}
			}
			if !slices.Equal(fingerprints(got), fingerprints(w.rules)) {
				t.Errorf("%s: kernel chain %s\n%s\nwant\n%s", when, w.name, strings.Join(fingerprints(got), "\n"), strings.Join(fingerprints(w.rules), "\n"))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (h *host) resync(t *testing.T, ports ...Port) Stats {
	t.Helper()
	st, err := h.m.Apply(context.Background(), Desired{Networks: []Network{{Bridge: h.bridge, Zone: 7}, {Bridge: "br1", Zone: 8}}, Ports: ports, Verify: true})
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	return st
}

// TestOutsideSwapThenRemove: someone deletes one rule of a port's chain
// and adds another (the count stays); removing tcp/7000 then still
// removes tcp/7000 — not the rule that moved into its position — and the
// chain is the model again.
func TestOutsideSwapThenRemove(t *testing.T) {
	h := newHost(t)
	v := h.addVM(t, 1)
	h.apply(t, nil, h.port(v, true, anyV4, tcp(true, 7000, 7000), tcp(true, 7001, 7001), tcp(true, 7002, 7002)))
	outside(t, h, "i-p-v1", func(c *nftables.Conn, ch *nftables.Chain, rs []*nftables.Rule) {
		if err := c.DelRule(rs[0]); err != nil {
			t.Fatal(err)
		}
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
	})
	st := h.apply(t, nil, h.port(v, true, anyV4, tcp(true, 7001, 7001), tcp(true, 7002, 7002)))
	if st.Tx != 1 {
		t.Fatalf("stats %+v; want one transaction", st)
	}
	kernelMatches(t, h, "after removing tcp/7000")
	if st := h.resync(t, h.port(v, true, anyV4, tcp(true, 7001, 7001), tcp(true, 7002, 7002))); st.Tx != 0 || st.Writes() != 0 {
		t.Fatalf("resync after the repair: stats %+v; want no writes", st)
	}
}

// TestOutsideDropDeletionRepaired: the final drop of a port's chain
// deleted from outside comes back with the next full resync, and again
// with the next edit of that chain; an unchanged resync after each
// repair writes nothing.
func TestOutsideDropDeletionRepaired(t *testing.T) {
	h := newHost(t)
	v := h.addVM(t, 1)
	ports := []Port{h.port(v, true, anyV4, tcp(true, 7000, 7000))}
	h.apply(t, nil, ports...)
	dropLast := func(c *nftables.Conn, ch *nftables.Chain, rs []*nftables.Rule) {
		last := rs[len(rs)-1]
		if v, ok := last.Exprs[len(last.Exprs)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictDrop {
			t.Fatalf("last rule of %s is %v; want a drop", ch.Name, last.Exprs)
		}
		if err := c.DelRule(last); err != nil {
			t.Fatal(err)
		}
	}
	outside(t, h, "i-p-v1", dropLast)
	if st := h.apply(t, nil, ports...); st.Writes() != 0 {
		t.Fatalf("unchanged apply without verify: stats %+v; want no writes (it reads nothing)", st)
	}
	st := h.resync(t, ports...)
	if st.Tx != 1 || st.Chains != 1 {
		t.Fatalf("resync: stats %+v; want one chain rewritten in one transaction", st)
	}
	// Connections the drift let in are cut as after a narrowing.
	if st.PortsAffected != 1 {
		t.Fatalf("resync: stats %+v; want the drifted port's connections checked", st)
	}
	kernelMatches(t, h, "after the resync")
	if st := h.resync(t, ports...); st.Tx != 0 || st.Writes() != 0 {
		t.Fatalf("resync after the repair: stats %+v; want no writes", st)
	}

	outside(t, h, "i-p-v1", dropLast)
	ports = []Port{h.port(v, true, anyV4, tcp(true, 7000, 7000), tcp(true, 7005, 7005))}
	if st := h.apply(t, nil, ports...); st.Tx != 1 || st.Chains != 1 || st.PortsAffected != 1 {
		t.Fatalf("edit: stats %+v; want one chain changed in one transaction and its connections checked", st)
	}
	kernelMatches(t, h, "after the edit")
	if st := h.resync(t, ports...); st.Tx != 0 || st.Writes() != 0 {
		t.Fatalf("resync after the repair: stats %+v; want no writes", st)
	}
}

// TestUntaggedChainsRewrittenOnce: chains whose rules carry no tag (as an
// older release wrote them) are rewritten by the first full resync, and
// the next one writes nothing.
func TestUntaggedChainsRewrittenOnce(t *testing.T) {
	h := newHost(t)
	v := h.addVM(t, 1)
	ports := []Port{h.port(v, true, anyV4, tcp(true, 7000, 7000))}
	h.apply(t, nil, ports...)
	n := 0
	if err := h.ns.do(t, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		for _, k := range sortedKeys(h.m.cur.chains) {
			w := h.m.cur.chains[k]
			ch := &nftables.Chain{Name: w.name, Table: h.m.table(w.family)}
			c.FlushChain(ch)
			for _, r := range w.rules {
				c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r})
			}
			n++
		}
		return c.Flush()
	}); err != nil {
		t.Fatal(err)
	}
	st := h.resync(t, ports...)
	if st.Tx != 1 || st.Chains != n {
		t.Fatalf("first resync: stats %+v; want all %d chains rewritten in one transaction", st, n)
	}
	kernelMatches(t, h, "after the first resync")
	if st := h.resync(t, ports...); st.Tx != 0 || st.Writes() != 0 {
		t.Fatalf("second resync: stats %+v; want no writes", st)
	}
}

// TestOutsideSetDriftRepaired: a remote group's set changed from outside
// is put back by the next full resync (not by an apply that reads
// nothing): an address added lets its connections in until then, and
// they are cut at the repair; a member deleted is added back.
func TestOutsideSetDriftRepaired(t *testing.T) {
	h := newHost(t)
	vm1, vm2, vm3 := h.addVM(t, 1), h.addVM(t, 2), h.addVM(t, 3)
	tcpListen(t, vm2, 22)
	groups := map[string][]netip.Addr{"g": {vm1.ip}}
	ports := []Port{h.port(vm1, true, anyV4), h.port(vm2, true, Rule{Ingress: true, Proto: ProtoTCP, PortMin: 22, PortMax: 22, RemoteGroup: "g"}, anyV4),
		h.port(vm3, true, anyV4)}
	resync := func() Stats {
		t.Helper()
		st, err := h.m.Apply(context.Background(), Desired{Networks: []Network{{Bridge: h.bridge, Zone: 7}, {Bridge: "br1", Zone: 8}},
			Ports: ports, Groups: groups, Verify: true})
		if err != nil {
			t.Fatalf("resync: %v", err)
		}
		return st
	}
	h.apply(t, groups, ports...)
	if !tcpOK(t, vm1, vm2.ip, 22) || tcpOK(t, vm3, vm2.ip, 22) {
		t.Fatal("before the drift: want the member in and the other out")
	}
	set := func(add bool, a netip.Addr) {
		t.Helper()
		if err := h.ns.do(t, func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			s, err := c.GetSetByName(h.m.brT, setName("g", false))
			if err != nil {
				return err
			}
			op := c.SetDeleteElements
			if add {
				op = c.SetAddElements
			}
			if err := op(s, []nftables.SetElement{{Key: a.AsSlice()}}); err != nil {
				return err
			}
			return c.Flush()
		}); err != nil {
			t.Fatalf("change the set from outside: %v", err)
		}
	}

	set(true, vm3.ip)
	conn := tcpConnect(t, vm3, vm2.ip, 22) // let in by the drift
	defer conn.Close()
	if st := h.apply(t, groups, ports...); st.Writes() != 0 {
		t.Fatalf("apply without verify: stats %+v; want no writes (it reads nothing back)", st)
	}
	st := resync()
	if st.Elements != 1 || st.Tx != 1 || st.FlowsDeleted == 0 {
		t.Fatalf("resync after an outside add: stats %+v; want one element deleted in one transaction and the flow cut", st)
	}
	if echo(conn) {
		t.Error("a connection the drift let in survived the repair")
	}
	if tcpOK(t, vm3, vm2.ip, 22) || !tcpOK(t, vm1, vm2.ip, 22) {
		t.Error("after the repair: want the member in and the other out")
	}

	set(false, vm1.ip)
	if tcpOK(t, vm1, vm2.ip, 22) {
		t.Fatal("the member deleted from outside still gets in: the drift did not take")
	}
	if st := resync(); st.Elements != 1 || st.Tx != 1 {
		t.Fatalf("resync after an outside delete: stats %+v; want the member added back", st)
	}
	if !tcpOK(t, vm1, vm2.ip, 22) {
		t.Error("the member added back cannot get in")
	}
	if st := resync(); st.Tx != 0 || st.Writes() != 0 {
		t.Fatalf("resync after the repairs: stats %+v; want no writes", st)
	}
}

// TestMappedAddressInGroup: an IPv4-mapped IPv6 member of a remote group
// is its IPv4 address: it lands in the IPv4 set, the IPv6 set stays
// valid, and the host's filtering applies (a 4-byte key in the IPv6 set
// made every Apply fail).
func TestMappedAddressInGroup(t *testing.T) {
	h := newHost(t)
	vm1, vm2 := h.addVM(t, 1), h.addVM(t, 2)
	tcpListen(t, vm2, 22)
	mapped := netip.AddrFrom16(vm1.ip.As16())
	groups := map[string][]netip.Addr{"g": {mapped, netip.MustParseAddr("fd00::9")}}
	rules := []Rule{{Ingress: true, Proto: ProtoTCP, PortMin: 22, PortMax: 22, RemoteGroup: "g"},
		{Ingress: true, IPv6: true, Proto: ProtoTCP, PortMin: 22, PortMax: 22, RemoteGroup: "g"}, anyV4}
	h.apply(t, groups, h.port(vm1, true, anyV4), h.port(vm2, true, rules...))
	if !tcpOK(t, vm1, vm2.ip, 22) {
		t.Error("the member named by its IPv4-mapped address cannot get in")
	}
	v4, v6 := h.m.cur.sets[setName("g", false)], h.m.cur.sets[setName("g", true)]
	if v4 == nil || !v4.elems[vm1.ip] || v6 == nil || len(v6.elems) != 1 {
		t.Fatalf("sets = %+v / %+v; want the mapped member in the IPv4 set, fd00::9 alone in the IPv6 one", v4, v6)
	}
}
