package router

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Tests of what a change leaves when it fails part-way, of drift repair
// and of adoption after a restart.

// gwRouter is a router on eth0 with one interface on bridge br (none when
// br is "").
func gwRouter(id, br, mac string, fips ...FloatingIP) Router {
	r := Router{ID: id, Gateway: &Gateway{Iface: "eth0", SNAT: true}, FloatingIPs: fips}
	if br != "" {
		r.Interfaces = []Interface{{ID: id + "-if", Bridge: br, Address: netip.MustParsePrefix("10.9.0.1/24"), MAC: mustMAC(mac), MTU: 1450}}
	}
	return r
}

func fipOf(addr, fixed string) FloatingIP {
	return FloatingIP{netip.MustParseAddr(addr), netip.MustParseAddr(fixed)}
}

// routerNFT is an nftables connection in the namespace of router id on h.
func routerNFT(t *testing.T, h *host, id string) *nftables.Conn {
	t.Helper()
	ns, err := netns.GetFromName(h.mgr.NSName(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func fipMap(name string) *nftables.Set {
	return &nftables.Set{Table: &nftables.Table{Family: nftables.TableFamilyIPv4, Name: tblRouter}, Name: name,
		IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
}

// mapKeys are the keys of a map of router id's table.
func mapKeys(t *testing.T, h *host, id, name string) map[netip.Addr]bool {
	t.Helper()
	conn := routerNFT(t, h, id)
	els, err := conn.GetSetElements(fipMap(name))
	if err != nil {
		t.Fatalf("elements of %s: %v", name, err)
	}
	out := map[netip.Addr]bool{}
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		out[a] = true
	}
	return out
}

// dropMapElem deletes the element key of a map of router id's table by
// hand (drift).
func dropMapElem(t *testing.T, h *host, id, name string, key netip.Addr) {
	t.Helper()
	conn := routerNFT(t, h, id)
	if err := conn.SetDeleteElements(fipMap(name), []nftables.SetElement{{Key: key.AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatalf("delete %s from %s: %v", key, name, err)
	}
}

// proxied are the proxy ARP entries on h's eth0.
func proxied(t *testing.T, h *host) map[netip.Addr]bool {
	t.Helper()
	ps, err := h.ns.nl.NeighProxyList(h.ns.link(t, "eth0").Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]bool{}
	for _, p := range ps {
		a, _ := netip.AddrFromSlice(p.IP)
		out[a.Unmap()] = true
	}
	return out
}

// TestAnnouncementsSurviveAFailedChange: the incremental write adds a
// floating IP's proxy entry and then fails on another router; the full
// convergence that follows finds the entry in place and must still
// announce it.
func TestAnnouncementsSurviveAFailedChange(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	a.ns.bridge(t, "psbr300", 1450)
	a.ns.bridge(t, "psbr400", 1450)
	state := func(onX, onY []FloatingIP) Desired {
		return Desired{Externals: []string{"eth0"}, Routers: []Router{
			gwRouter("rx", "psbr300", "fa:16:3e:00:03:01", onX...), gwRouter("ry", "psbr400", "fa:16:3e:00:04:01", onY...)}}
	}
	fa, fc, fd := fipOf("203.0.113.170", "10.9.0.5"), fipOf("203.0.113.171", "10.9.0.5"), fipOf("203.0.113.172", "10.9.0.6")
	a.apply(t, state([]FloatingIP{fa}, nil))
	// ry's gateway veth down on the host: the route to D cannot be added,
	// after C's proxy entry was.
	if err := a.ns.nl.LinkSetDown(a.ns.link(t, extRootName("ry"))); err != nil {
		t.Fatal(err)
	}
	watch := w.watchARP(t)
	st := a.apply(t, state([]FloatingIP{fc}, []FloatingIP{fd}))
	if st.Incremental {
		t.Errorf("the change went through incrementally with a veth down: %+v", st)
	}
	if st.GARPs != 2 {
		t.Errorf("announced %d floating IPs; want 2 (C and D): %+v", st.GARPs, st)
	}
	watch.wait(t, fc.Addr, mustMAC("02:00:00:00:00:00"))
	if st := a.apply(t, state([]FloatingIP{fc}, []FloatingIP{fd})); st.Writes != 0 || st.GARPs != 0 {
		t.Errorf("apply after convergence: %+v; want nothing written or announced", st)
	}

	// The reviewer's case: a hand-deleted DNAT element fails the
	// incremental write's NAT transaction; the full convergence adds and
	// announces E.
	fe := fipOf("203.0.113.173", "10.9.0.5")
	dropMapElem(t, a, "rx", mapFIPIn, fc.Addr)
	if st := a.apply(t, state([]FloatingIP{fe}, []FloatingIP{fd})); st.Incremental || st.GARPs != 1 {
		t.Errorf("remove C, add E after drift: %+v; want the full path and E announced", st)
	}
	if got := mapKeys(t, a, "rx", mapFIPIn); len(got) != 1 || !got[fe.Addr] {
		t.Errorf("rx's DNAT map holds %v; want only E", got)
	}
}

// TestTwoFloatingIPsOnOneFixedAddress: both lead in (each has an address
// and an ARP answer here, so each has its DNAT); the way out is the lowest.
func TestTwoFloatingIPsOnOneFixedAddress(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	a.ns.bridge(t, "psbr300", 1450)
	x := w.vm(t, a, "psbr300", "fa:16:3e:00:03:05", "10.9.0.5/24", "10.9.0.1")
	hi, lo := fipOf("203.0.113.181", "10.9.0.5"), fipOf("203.0.113.180", "10.9.0.5")
	srv := w.lan.listen(t, "203.0.113.1:9300")
	l := x.listen(t, "10.9.0.5:9301")
	check := func(what string, in []FloatingIP, out netip.Addr) {
		t.Helper()
		for _, f := range in {
			if src, err := w.lan.peerOf(t, l, f.Addr.String()+":9301"); err != nil || src != "203.0.113.1" {
				t.Errorf("%s: the LAN reached x through %s from %q (%v)", what, f.Addr, src, err)
			}
		}
		if src, err := x.peerOf(t, srv, "203.0.113.1:9300"); err != nil || src != out.String() {
			t.Errorf("%s: x reached the LAN from %q (%v); want %s", what, src, err, out)
		}
	}
	d := Desired{Externals: []string{"eth0"}, Routers: []Router{gwRouter("rx", "psbr300", "fa:16:3e:00:03:01", hi, lo)}}
	a.apply(t, d)
	check("both", []FloatingIP{hi, lo}, lo.Addr)
	d.Routers[0].FloatingIPs = []FloatingIP{hi}
	if st := a.apply(t, d); !st.Incremental {
		t.Errorf("removing the lower one: %+v; want the incremental path", st)
	}
	check("the higher alone", []FloatingIP{hi}, hi.Addr)
	if st := a.apply(t, d); st.Writes != 0 {
		t.Errorf("the full convergence after it wrote %d times: %v", st.Writes, st.Changes)
	}
}

// bridgeHasMAC reports whether a rule of h's bridge table matches mac.
func bridgeHasMAC(t *testing.T, h *host, mac net.HardwareAddr) bool {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(int(h.ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: nftables.TableFamilyBridge, Name: tblBridge}
	rules, err := conn.GetRules(tb, &nftables.Chain{Name: "forward", Table: tb})
	if err != nil {
		t.Fatalf("bridge table: %v", err)
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Cmp); ok && bytes.Equal(c.Data, mac) {
				return true
			}
		}
	}
	return false
}

// TestRemovedRouterKeepsBridgeRulesUntilGone: while a router being
// removed still has its veth on an overlay's bridge (here: the Apply
// fails before the removals), the bridge table still keeps its gateway MAC
// off the overlay; once it is gone, so are its rules.
func TestRemovedRouterKeepsBridgeRulesUntilGone(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1, 100, 200)
	a := w.hosts[0]
	mk := func(id, br, vx, cidr string, mac net.HardwareAddr) Router {
		return Router{ID: id, Interfaces: []Interface{{ID: id + "-if", Bridge: br, Overlay: vx,
			Address: netip.MustParsePrefix(cidr), MAC: mac, MTU: 1450}}}
	}
	ra, rb := mk("ra", "psbr100", "psvx100", "10.0.1.1/24", gwMAC1), mk("rb", "psbr200", "psvx200", "10.0.2.1/24", gwMAC2)
	a.apply(t, Desired{Routers: []Router{ra, rb}})
	if !bridgeHasMAC(t, a, gwMAC2) {
		t.Fatal("no bridge rule for rb's gateway MAC")
	}
	broken := ra
	broken.Interfaces = append(broken.Interfaces, Interface{ID: "ra-if2", Bridge: "psbrnone", Address: netip.MustParsePrefix("10.0.3.1/24"), MAC: gwMAC1})
	if _, err := a.mgr.Apply(context.Background(), Desired{Routers: []Router{broken}, HostMAC: a.mac}); err == nil {
		t.Fatal("apply with a missing bridge succeeded")
	}
	rbRoot, _ := intNames("rb", "rb-if")
	if got := a.ns.linksWithPrefix(t, rbRoot); len(got) != 1 {
		t.Fatalf("rb's veth after the failed apply: %v; want it still there", got)
	}
	if !bridgeHasMAC(t, a, gwMAC2) {
		t.Error("the bridge table dropped rb's gateway MAC while rb's veth is still on the bridge")
	}
	a.apply(t, Desired{Routers: []Router{ra}})
	if got := a.ns.linksWithPrefix(t, rbRoot); len(got) != 0 {
		t.Errorf("rb's veth left: %v", got)
	}
	if bridgeHasMAC(t, a, gwMAC2) {
		t.Error("the bridge table kept rb's gateway MAC after rb was removed")
	}
	if !bridgeHasMAC(t, a, gwMAC1) {
		t.Error("the bridge table lost ra's gateway MAC")
	}
}

// TestNoARPAnswerWithoutNAT: a floating IP gets its ARP answer and route
// only after its DNAT: when the NAT transaction fails (and the full
// convergence fails too) nothing leads to the new floating IP.
func TestNoARPAnswerWithoutNAT(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	a.ns.bridge(t, "psbr300", 1450)
	a.ns.bridge(t, "psbr500", 1450)
	fa, fc := fipOf("203.0.113.190", "10.9.0.5"), fipOf("203.0.113.191", "10.9.0.5")
	r0 := Router{ID: "r0", Interfaces: []Interface{{ID: "r0-if", Bridge: "psbr500", Address: netip.MustParsePrefix("10.8.0.1/24"), MAC: mustMAC("fa:16:3e:00:05:01")}}}
	state := func(fips ...FloatingIP) Desired {
		return Desired{Externals: []string{"eth0"}, HostMAC: a.mac, Routers: []Router{r0, gwRouter("rx", "psbr300", "fa:16:3e:00:03:01", fips...)}}
	}
	a.apply(t, state(fa))
	// Drift that fails the incremental NAT transaction, and a bridge gone
	// that fails the full convergence before it reaches rx.
	dropMapElem(t, a, "rx", mapFIPIn, fa.Addr)
	if err := a.ns.nl.LinkDel(a.ns.link(t, "psbr500")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.mgr.Apply(context.Background(), state(fc)); err == nil {
		t.Fatal("apply with a missing bridge succeeded")
	}
	if p := proxied(t, a); p[fc.Addr] {
		t.Errorf("proxy ARP entry for %s without its DNAT (entries %v)", fc.Addr, p)
	}
	if mapKeys(t, a, "rx", mapFIPIn)[fc.Addr] {
		t.Fatalf("the failed NAT transaction wrote %s", fc.Addr)
	}
	a.ns.bridge(t, "psbr500", 1450)
	if st := a.apply(t, state(fc)); st.GARPs != 1 {
		t.Errorf("apply after the repair announced %d; want 1", st.GARPs)
	}
	if !proxied(t, a)[fc.Addr] || !mapKeys(t, a, "rx", mapFIPIn)[fc.Addr] {
		t.Errorf("after the repair %s lacks its proxy entry or its DNAT", fc.Addr)
	}
}

// TestARPSocketFollowsItsInterface: the kept gratuitous ARP socket of an
// interface recreated is replaced (not kept beside the new one), and one
// that fails to send is reopened and the announcement retried. (GARPs
// counts frames the kernel accepted on the socket of eth0's current
// index.)
func TestARPSocketFollowsItsInterface(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	d := Desired{Externals: []string{"eth0"}, Routers: []Router{gwRouter("rx", "", "", fipOf("203.0.113.200", "10.9.0.5"))}}
	if st := a.apply(t, d); st.GARPs != 1 {
		t.Fatalf("first apply announced %d; want 1", st.GARPs)
	}
	// eth0 recreated: it loses its proxy entries; the next apply restores
	// and announces them, through a socket on the new eth0.
	if err := a.ns.nl.LinkDel(a.ns.link(t, "eth0")); err != nil {
		t.Fatal(err)
	}
	wire(t, a.ns, "eth0", "02:00:00:00:00:00", 0, w.lan, "lan0b", "lanbr")
	a.ns.addr(t, "eth0", a.ip+"/24")
	if st := a.apply(t, d); st.GARPs != 1 {
		t.Errorf("apply after eth0 was recreated announced %d; want 1", st.GARPs)
	}
	idx := a.ns.link(t, "eth0").Attrs().Index
	if len(a.mgr.arpConns) != 1 || a.mgr.arpConns["eth0"].index != idx {
		t.Errorf("kept ARP sockets %v; want one, on eth0 (index %d)", a.mgr.arpConns, idx)
	}
	// A socket that fails: reopened, and the announcement sent.
	a.mgr.arpConns["eth0"].c.Close()
	fb := fipOf("203.0.113.201", "10.9.0.6")
	d.Routers[0].FloatingIPs = append(d.Routers[0].FloatingIPs, fb)
	if st := a.apply(t, d); st.GARPs != 1 {
		t.Errorf("apply with a broken ARP socket announced %d; want 1", st.GARPs)
	}
	if len(a.mgr.arpConns) != 1 || a.mgr.arpConns["eth0"].index != idx {
		t.Errorf("kept ARP sockets after the retry %v; want one, on eth0", a.mgr.arpConns)
	}
}

// TestDriftRepairAndAdoption: a router without interfaces changes its
// floating IPs incrementally; an unchanged apply restores a hand-deleted
// map element in one transaction; a fresh Manager (a restarted daemon)
// adopts what it finds without writing.
func TestDriftRepairAndAdoption(t *testing.T) {
	needRoot(t)
	w := newWorld(t, 1)
	a := w.hosts[0]
	fa, fb := fipOf("203.0.113.210", "10.9.0.5"), fipOf("203.0.113.211", "10.9.0.6")
	d := Desired{Externals: []string{"eth0"}, AllowTCP: []uint16{8774}, Routers: []Router{gwRouter("rx", "", "", fa)}}
	a.apply(t, d)
	d.Routers[0].FloatingIPs = []FloatingIP{fa, fb}
	if st := a.apply(t, d); !st.Incremental || st.GARPs != 1 {
		t.Errorf("adding a floating IP to a router without interfaces: %+v; want the incremental path", st)
	}
	dropMapElem(t, a, "rx", mapFIPIn, fa.Addr)
	st := a.apply(t, d)
	if st.Incremental || st.NFTTx != 1 || st.Writes != 1 {
		t.Errorf("unchanged apply after drift: %+v; want the full path and one nftables transaction, nothing else", st)
	}
	if got := mapKeys(t, a, "rx", mapFIPIn); !got[fa.Addr] || !got[fb.Addr] {
		t.Errorf("DNAT map after the repair: %v", got)
	}

	fresh, err := New(a.mgr.cfg)
	if err != nil {
		t.Fatal(err)
	}
	restarted := &host{ns: a.ns, ip: a.ip, mac: a.mac, mgr: fresh}
	if st := restarted.apply(t, d); st.Writes != 0 || st.GARPs != 0 {
		t.Errorf("a fresh Manager on a converged host: %+v; want no writes and no announcements", st)
	}
	if _, err := os.Stat("/run/netns/" + a.mgr.NSName("rx")); err != nil {
		t.Errorf("router namespace after adoption: %v", err)
	}
}
