package router

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
)

var (
	gwMAC1 = mustMAC("fa:16:3e:00:01:01")
	gwMAC2 = mustMAC("fa:16:3e:00:02:01")
	vm1MAC = "fa:16:3e:00:01:05"
	vm2MAC = "fa:16:3e:00:01:06"
	vm3MAC = "fa:16:3e:00:02:05"
)

// r1 routes net 100 (10.0.1.0/24) and net 200 (10.0.2.0/24); its
// neighbours are the VMs of the tests.
func r1(gw *Gateway, fips ...FloatingIP) Router {
	return Router{ID: "r1-0000-1111", Gateway: gw, FloatingIPs: fips, Interfaces: []Interface{
		{ID: "ri1", Bridge: "psbr100", Overlay: "psvx100", Address: netip.MustParsePrefix("10.0.1.1/24"), MAC: gwMAC1, MTU: 1450,
			Neighbors: []Neighbor{{netip.MustParseAddr("10.0.1.5"), mustMAC(vm1MAC)}, {netip.MustParseAddr("10.0.1.6"), mustMAC(vm2MAC)}}},
		{ID: "ri2", Bridge: "psbr200", Overlay: "psvx200", Address: netip.MustParsePrefix("10.0.2.1/24"), MAC: gwMAC2, MTU: 1450,
			Neighbors: []Neighbor{{netip.MustParseAddr("10.0.2.5"), mustMAC(vm3MAC)}}},
	}}
}

// TestAnycastGatewayEastWest: every host answers for the gateway itself,
// the gateway's ARP never crosses the overlay, and traffic between the
// router's subnets is routed on the sending host.
func TestAnycastGatewayEastWest(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 2, 100, 200)
	a, b := w.hosts[0], w.hosts[1]
	vm1 := w.vm(t, a, "psbr100", vm1MAC, "10.0.1.5/24", "10.0.1.1")
	vm3 := w.vm(t, b, "psbr200", vm3MAC, "10.0.2.5/24", "10.0.2.1")
	d := Desired{Routers: []Router{r1(nil)}}
	if st := a.apply(t, d); st.Writes == 0 {
		t.Fatal("first apply wrote nothing")
	}
	b.apply(t, d)
	if st := a.apply(t, d); st.Writes != 0 {
		t.Errorf("second apply with no change wrote %d times: %v", st.Writes, st.Changes)
	}
	if !vm1.pings(t, "10.0.1.1", 10*time.Second) {
		t.Fatal("vm1 cannot ping its gateway")
	}
	if !vm1.pings(t, "10.0.2.5", 10*time.Second) {
		t.Fatal("vm1 on host A cannot reach vm3 on host B in the other subnet")
	}
	if !vm3.pings(t, "10.0.1.5", 10*time.Second) {
		t.Fatal("vm3 cannot reach vm1")
	}
	neighs, err := vm1.nl.NeighList(vm1.link(t, "eth0").Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.String() == "10.0.1.1" && n.HardwareAddr.String() != gwMAC1.String() {
			t.Errorf("vm1 resolved its gateway to %s; want the anycast MAC %s", n.HardwareAddr, gwMAC1)
		}
	}
	// Host B's gateway MAC must never have been learnt behind B's tunnel
	// on host A: frames it routed carry B's own MAC.
	fdb, err := a.ns.nl.NeighList(a.ns.link(t, "psvx200").Attrs().Index, 7 /* AF_BRIDGE */)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fdb {
		if n.HardwareAddr.String() == gwMAC2.String() || n.HardwareAddr.String() == gwMAC1.String() {
			t.Errorf("host A learnt a gateway MAC %s behind the overlay", n.HardwareAddr)
		}
	}

	// Routers are IPv4 only: no interface of theirs holds an IPv6 address
	// (which would send from the gateway MAC before the bridge table is in
	// place).
	if out, err := exec.Command("ip", "-n", a.mgr.NSName("r1-0000-1111"), "-6", "-o", "addr", "show").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("router namespace has IPv6 addresses (%v):\n%s", err, out)
	}

	// Without its local router, vm1 gets no gateway: host B's copy does
	// not answer across the overlay.
	a.apply(t, Desired{})
	if _, err := vm1.run(t, "ip", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if out, err := vm1.run(t, "ping", "-c2", "-W1", "10.0.1.1"); err == nil {
		t.Fatalf("vm1 reached a gateway with no router on its host:\n%s", out)
	}
}

// TestFloatingIPSNATAndMove: egress without a floating IP leaves with the
// host's address; a floating IP is 1:1 NAT answered by ARP from exactly the
// host that runs it; moving it announces it from the new host.
func TestFloatingIPSNATAndMove(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 2, 100, 200)
	a, b := w.hosts[0], w.hosts[1]
	vm1 := w.vm(t, a, "psbr100", vm1MAC, "10.0.1.5/24", "10.0.1.1")
	vm2 := w.vm(t, b, "psbr100", vm2MAC, "10.0.1.6/24", "10.0.1.1")
	fip := netip.MustParseAddr("203.0.113.100")
	gw := &Gateway{Iface: "eth0", SNAT: true}
	guard := func(d Desired) Desired {
		d.AllowTCP = []uint16{8774}
		d.Protected = []netip.Prefix{netip.MustParsePrefix("203.0.113.11/32"), netip.MustParsePrefix("203.0.113.12/32")}
		d.Externals = []string{"eth0"}
		return d
	}
	a.apply(t, guard(Desired{Routers: []Router{r1(gw)}}))
	b.apply(t, guard(Desired{Routers: []Router{r1(gw, FloatingIP{fip, netip.MustParseAddr("10.0.1.6")})}}))
	if st := b.apply(t, guard(Desired{Routers: []Router{r1(gw, FloatingIP{fip, netip.MustParseAddr("10.0.1.6")})}})); st.Writes != 0 || st.GARPs != 0 {
		t.Errorf("second apply on B: %+v; want no writes, no announcements", st)
	}

	srv := w.lan.listen(t, "203.0.113.1:9000")
	if src, err := vm1.peerOf(t, srv, "203.0.113.1:9000"); err != nil || src != a.ip {
		t.Errorf("vm1 (no floating IP) reached the LAN from %q (%v); want host A's %s", src, err, a.ip)
	}
	if src, err := vm2.peerOf(t, srv, "203.0.113.1:9000"); err != nil || src != fip.String() {
		t.Errorf("vm2 reached the LAN from %q (%v); want its floating IP", src, err)
	}
	l2 := vm2.listen(t, "10.0.1.6:9001")
	if src, err := w.lan.peerOf(t, l2, fip.String()+":9001"); err != nil || src != "203.0.113.1" {
		t.Errorf("the LAN reached vm2 through its floating IP from %q (%v)", src, err)
	}
	if got := w.arpReplies(t, fip, 2*time.Second); len(got) != 1 || !got["02:00:00:00:00:01"] {
		t.Errorf("ARP answers for the floating IP came from %v; want host B's eth0 only", got)
	}

	// The guard: tenants reach the hosts only on the API port.
	api := a.ns.listen(t, "203.0.113.11:8774")
	if _, err := vm1.peerOf(t, api, "203.0.113.11:8774"); err != nil {
		t.Errorf("vm1 cannot reach its host's API port: %v", err)
	}
	for _, target := range []struct {
		h    *host
		addr string
	}{{a, "203.0.113.11:7000"}, {b, "203.0.113.12:7946"}} {
		target.h.ns.listen(t, target.addr)
		if c, err := vm1.dial(target.addr, 2*time.Second); err == nil {
			c.Close()
			t.Errorf("vm1 opened a connection to the cluster plane at %s", target.addr)
		}
	}

	// An operator's hole: packets marked before the guard pass it.
	openHole(t, a.ns, "203.0.113.12/32")
	if c, err := vm1.dial("203.0.113.12:7946", 5*time.Second); err != nil {
		t.Errorf("vm1 cannot pass a marked hole in the guard: %v", err)
	} else {
		c.Close()
	}

	// Move: vm2 migrates to A; B withdraws, A takes the floating IP and
	// announces it.
	if err := vm2.nl.LinkDel(vm2.link(t, "eth0")); err != nil {
		t.Fatal(err)
	}
	vm2 = w.vm(t, a, "psbr100", vm2MAC, "10.0.1.6/24", "10.0.1.1")
	l2 = vm2.listen(t, "10.0.1.6:9001")
	watch := w.watchARP(t)
	b.apply(t, guard(Desired{Routers: []Router{r1(gw)}}))
	st := a.apply(t, guard(Desired{Routers: []Router{r1(gw, FloatingIP{fip, netip.MustParseAddr("10.0.1.6")})}}))
	if st.GARPs != 1 {
		t.Errorf("apply on the new host announced %d addresses; want 1", st.GARPs)
	}
	watch.wait(t, fip, mustMAC("02:00:00:00:00:00"))
	if got := w.arpReplies(t, fip, 2*time.Second); len(got) != 1 || !got["02:00:00:00:00:00"] {
		t.Errorf("after the move ARP answers came from %v; want host A's eth0 only", got)
	}
	if src, err := w.lan.peerOf(t, l2, fip.String()+":9001"); err != nil || src != "203.0.113.1" {
		t.Errorf("after the move the LAN reached vm2 from %q (%v)", src, err)
	}
}

// TestSNATToClusterOnSeparateUnderlay: the hosts' cluster addresses are
// on an underlay apart from the external network. A VM without a floating
// IP reaches another host's API there under its own host's underlay
// address (so the answer finds its way back), and still not the other
// host's gossip port.
func TestSNATToClusterOnSeparateUnderlay(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 2, 100, 200)
	a, b := w.hosts[0], w.hosts[1]
	ul := newTNS(t, "ul")
	ul.bridge(t, "ulbr", 0)
	for i, h := range w.hosts {
		wire(t, h.ns, "ul0", "", 0, ul, fmt.Sprintf("ulh%d", i), "ulbr")
		h.ns.addr(t, "ul0", fmt.Sprintf("10.0.0.%d/24", 11+i))
	}
	vm1 := w.vm(t, a, "psbr100", vm1MAC, "10.0.1.5/24", "10.0.1.1")
	gw := &Gateway{Iface: "eth0", SNAT: true}
	d := Desired{Routers: []Router{r1(gw)}, AllowTCP: []uint16{8774}, Externals: []string{"eth0"},
		Protected: []netip.Prefix{netip.MustParsePrefix("10.0.0.11/32"), netip.MustParsePrefix("10.0.0.12/32")}}
	a.apply(t, d)
	b.apply(t, d)
	if st := a.apply(t, d); st.Writes != 0 {
		t.Errorf("second apply on A: %d writes; want none", st.Writes)
	}

	api := b.ns.listen(t, "10.0.0.12:8774")
	if src, err := vm1.peerOf(t, api, "10.0.0.12:8774"); err != nil || src != "10.0.0.11" {
		t.Errorf("vm1 reached host B's API on the underlay from %q (%v); want host A's underlay address", src, err)
	}
	b.ns.listen(t, "10.0.0.12:7946")
	if c, err := vm1.dial("10.0.0.12:7946", 2*time.Second); err == nil {
		c.Close()
		t.Error("vm1 opened a connection to host B's gossip port on the underlay")
	}
	// An address on the underlay that is not the cluster's (a management
	// box, say) is not reached as the host: only the cluster's addresses
	// get the masquerade there.
	b.ns.addr(t, "ul0", "10.0.0.50/24")
	b.ns.listen(t, "10.0.0.50:8774")
	if c, err := vm1.dial("10.0.0.50:8774", 2*time.Second); err == nil {
		c.Close()
		t.Error("vm1 opened a connection to a non-cluster address on the underlay (masqueraded as host A)")
	}
}

// TestOverlappingCIDRs: two routers on one host with the same tenant CIDR
// and the same VM address both reach the LAN.
func TestOverlappingCIDRs(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	a.ns.bridge(t, "psbr300", 1450)
	a.ns.bridge(t, "psbr400", 1450)
	x := w.vm(t, a, "psbr300", "fa:16:3e:00:03:05", "10.9.0.5/24", "10.9.0.1")
	y := w.vm(t, a, "psbr400", "fa:16:3e:00:04:05", "10.9.0.5/24", "10.9.0.1")
	gw := &Gateway{Iface: "eth0", SNAT: true}
	mk := func(id, br, mac string) Router {
		return Router{ID: id, Gateway: gw, Interfaces: []Interface{{ID: id + "-if", Bridge: br,
			Address: netip.MustParsePrefix("10.9.0.1/24"), MAC: mustMAC(mac), MTU: 1450}}}
	}
	a.apply(t, Desired{Routers: []Router{mk("rx", "psbr300", "fa:16:3e:00:03:01"), mk("ry", "psbr400", "fa:16:3e:00:04:01")}})
	srv := w.lan.listen(t, "203.0.113.1:9100")
	// Both connections open at once: the same 5-tuple inside, two routers.
	cx, err := x.dial("203.0.113.1:9100", 10*time.Second)
	if err != nil {
		t.Fatalf("router x: %v", err)
	}
	defer cx.Close()
	cy, err := y.dial("203.0.113.1:9100", 10*time.Second)
	if err != nil {
		t.Fatalf("router y: %v", err)
	}
	defer cy.Close()
	for range 2 {
		srv.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
		s, err := srv.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s.RemoteAddr().String(), a.ip+":") {
			t.Errorf("connection from %s; want host A's address", s.RemoteAddr())
		}
		s.Close()
	}
	for _, v := range []*tns{x, y} {
		if !v.pings(t, "203.0.113.1", 10*time.Second) {
			t.Errorf("%s cannot ping the LAN", v.name)
		}
	}
}

// TestCleanupAfterCrash: leftovers of an interrupted change are removed by
// the next Apply, and Cleanup leaves nothing with the prefix.
func TestCleanupAfterCrash(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1, 100, 200)
	a := w.hosts[0]
	fip := FloatingIP{netip.MustParseAddr("203.0.113.101"), netip.MustParseAddr("10.0.1.5")}
	d := Desired{Routers: []Router{r1(&Gateway{Iface: "eth0", SNAT: true}, fip)}, Externals: []string{"eth0"}}
	a.apply(t, d)
	// A crash mid-change: a half veth pair in the host, a stray router
	// namespace, a stale route of ours.
	if err := a.ns.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "psrqdeadbeef00"}, PeerName: "psrqdeadbeef01"}); err != nil {
		t.Fatal(err)
	}
	stray := a.mgr.NSName("gone-router")
	w2 := &writer{st: &Stats{}}
	h, err := ensureNamedNS(w2, stray)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if st := a.apply(t, d); st.Writes == 0 {
		t.Error("apply after the crash changed nothing")
	}
	if got := a.ns.linksWithPrefix(t, "psrqdeadbeef"); len(got) != 0 {
		t.Errorf("stale links left: %v", got)
	}
	if _, err := os.Stat("/run/netns/" + stray); err == nil {
		t.Errorf("stray namespace %s left", stray)
	}
	if st := a.apply(t, d); st.Writes != 0 {
		t.Errorf("apply after convergence wrote %d times", st.Writes)
	}

	if err := a.mgr.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := a.ns.linksWithPrefix(t, "psr"); len(got) != 0 {
		t.Errorf("links left after cleanup: %v", got)
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), a.mgr.cfg.NSPrefix) {
			t.Errorf("namespace left after cleanup: %s", e.Name())
		}
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(a.ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "peerstack-r") {
			t.Errorf("table %s left after cleanup", tb.Name)
		}
	}
	proxies, err := a.ns.nl.NeighProxyList(a.ns.link(t, "eth0").Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(proxies) != 0 {
		t.Errorf("proxy ARP entries left: %v", proxies)
	}
	routes, err := a.ns.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 0 {
		t.Errorf("routes left: %v", routes)
	}
}

// openHole adds an operator table to ns that marks forwarded tenant
// packets to dst with OpenMark before the guard runs.
func openHole(t *testing.T, ns *tns, dst string) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	tb := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "site-holes"})
	prio := nftables.ChainPriorityRef(-10)
	ch := conn.AddChain(&nftables.Chain{Name: "fwd", Table: tb, Hooknum: nftables.ChainHookForward, Priority: prio, Type: nftables.ChainTypeFilter})
	conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: rule(matchIf(true, extRootPrefix+"*"), matchIPv4(),
		matchAddr(false, netip.MustParsePrefix(dst)), one(
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(OpenMark)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}))})
	if err := conn.Flush(); err != nil {
		t.Fatalf("operator table: %v", err)
	}
}

// TestFloatingIPChangeIsIncremental: a change of floating IPs alone writes
// only those (an address, a route and a proxy entry each, one nftables
// transaction per router touched); what it leaves is what the full
// convergence wants (applying the same state again writes nothing); the
// NAT works after it, also when a floating IP moves between two routers of
// one host in one change.
func TestFloatingIPChangeIsIncremental(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	a.ns.bridge(t, "psbr300", 1450)
	a.ns.bridge(t, "psbr400", 1450)
	x := w.vm(t, a, "psbr300", "fa:16:3e:00:03:05", "10.9.0.5/24", "10.9.0.1")
	y := w.vm(t, a, "psbr400", "fa:16:3e:00:04:05", "10.9.0.5/24", "10.9.0.1")
	gw := &Gateway{Iface: "eth0", SNAT: true}
	mk := func(id, br, mac string, fips ...FloatingIP) Router {
		return Router{ID: id, Gateway: gw, FloatingIPs: fips, Interfaces: []Interface{{ID: id + "-if", Bridge: br,
			Address: netip.MustParsePrefix("10.9.0.1/24"), MAC: mustMAC(mac), MTU: 1450}}}
	}
	fip := netip.MustParseAddr("203.0.113.150")
	other := FloatingIP{netip.MustParseAddr("203.0.113.151"), netip.MustParseAddr("10.9.0.77")}
	state := func(onX, onY []FloatingIP) Desired {
		return Desired{Externals: []string{"eth0"}, Routers: []Router{
			mk("rx", "psbr300", "fa:16:3e:00:03:01", onX...), mk("ry", "psbr400", "fa:16:3e:00:04:01", onY...)}}
	}
	srv := w.lan.listen(t, "203.0.113.1:9200")
	a.apply(t, state([]FloatingIP{other}, nil))
	steps := []struct {
		what       string
		onX, onY   []FloatingIP
		to         *tns // the VM the floating IP leads to (nil: none)
		txs, garps int
	}{
		{"add to x", []FloatingIP{other, {fip, netip.MustParseAddr("10.9.0.5")}}, nil, x, 1, 1},
		{"move to y", []FloatingIP{other}, []FloatingIP{{fip, netip.MustParseAddr("10.9.0.5")}}, y, 2, 1},
		{"remove", []FloatingIP{other}, nil, nil, 1, 0},
	}
	for _, s := range steps {
		d := state(s.onX, s.onY)
		st := a.apply(t, d)
		if !st.Incremental || st.NFTTx != s.txs || st.GARPs != s.garps || st.Writes > 3*2+s.txs+1 {
			t.Errorf("%s: %+v; want the incremental path, %d nftables transactions, %d announcements and only the floating IP's writes", s.what, st, s.txs, s.garps)
		}
		if st := a.apply(t, d); st.Incremental || st.Writes != 0 {
			t.Errorf("%s: the full convergence after it: %+v; want the full path, no writes", s.what, st)
		}
		if s.to == nil {
			if c, err := w.lan.dial(fip.String()+":9201", time.Second); err == nil {
				c.Close()
				t.Errorf("%s: the LAN still reaches the removed floating IP", s.what)
			}
			if src, err := x.peerOf(t, srv, "203.0.113.1:9200"); err != nil || src != a.ip {
				t.Errorf("%s: x reached the LAN from %q (%v); want the host's address", s.what, src, err)
			}
			continue
		}
		l := s.to.listen(t, "10.9.0.5:9201")
		if src, err := w.lan.peerOf(t, l, fip.String()+":9201"); err != nil || src != "203.0.113.1" {
			t.Errorf("%s: the LAN reached %s through the floating IP from %q (%v)", s.what, s.to.name, src, err)
		}
		l.Close()
		if src, err := s.to.peerOf(t, srv, "203.0.113.1:9200"); err != nil || src != fip.String() {
			t.Errorf("%s: %s reached the LAN from %q (%v); want the floating IP", s.what, s.to.name, src, err)
		}
	}
}
