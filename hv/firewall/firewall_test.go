package firewall

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"
)

var anyV4 = Rule{Proto: ProtoAny}

func tcp(ingress bool, lo, hi int) Rule {
	return Rule{Ingress: ingress, Proto: ProtoTCP, PortMin: lo, PortMax: hi}
}

func ping(tb testing.TB, from *vm, to netip.Addr) bool {
	tb.Helper()
	return exec.Command("ip", "netns", "exec", from.ns.name, "ping", "-c1", "-W1", to.String()).Run() == nil
}

// TestRuleMatrix: protocols, ports, remote IP, remote group, ether type,
// stateful and stateless, idempotence.
func TestRuleMatrix(t *testing.T) {
	h := newHost(t)
	vm1, vm2, vm3, vm4 := h.addVM(t, 1), h.addVM(t, 2), h.addVM(t, 3), h.addVM(t, 4)
	for _, p := range []int{80, 81, 82, 22, 90} {
		tcpListen(t, vm2, p)
	}
	tcpListen(t, vm4, 90)
	groups := map[string][]netip.Addr{"g": {vm3.ip}}
	p2rules := []Rule{
		tcp(true, 80, 80),
		tcp(true, 81, 82),
		{Ingress: true, Proto: ProtoUDP, PortMin: 53, PortMax: 53, RemoteIP: netip.MustParsePrefix("10.0.0.1/32")},
		{Ingress: true, Proto: ProtoICMP, PortMin: 8, PortMax: -1},
		{Ingress: true, Proto: ProtoTCP, PortMin: 22, PortMax: 22, RemoteGroup: "g"},
		{Ingress: true, IPv6: true, Proto: ProtoTCP, PortMin: 90, PortMax: 90},
		anyV4,
	}
	ports := func() []Port {
		return []Port{
			h.port(vm1, true, anyV4),
			h.port(vm2, true, p2rules...),
			h.port(vm3, true, anyV4),
			h.port(vm4, false, tcp(true, 90, 90), anyV4),
		}
	}
	// Everything open first, until every VM's link carries traffic, so
	// the negative checks below cannot pass for the wrong reason.
	open := Rule{Ingress: true, Proto: ProtoAny}
	h.apply(t, nil, h.port(vm1, true, open, anyV4), h.port(vm2, true, open, anyV4), h.port(vm3, true, open, anyV4), h.port(vm4, true, open, anyV4))
	for _, v := range []*vm{vm1, vm3, vm4} {
		tcpConnect(t, v, vm2.ip, 80).Close()
	}
	st := h.apply(t, groups, ports()...)
	if st.Tx != 1 {
		t.Fatalf("apply stats %+v; want one transaction", st)
	}
	checks := []struct {
		name string
		ok   func() bool
		want bool
	}{
		{"tcp 80 allowed", func() bool { return tcpOK(t, vm1, vm2.ip, 80) }, true},
		{"tcp 82 in range", func() bool { return tcpOK(t, vm1, vm2.ip, 82) }, true},
		{"tcp 90 only for IPv6", func() bool { return tcpOK(t, vm1, vm2.ip, 90) }, false},
		{"udp 53 from remote ip", func() bool { return udpOK(t, vm1, vm2, 53) }, true},
		{"udp 53 from elsewhere", func() bool { return udpOK(t, vm3, vm2, 53) }, false},
		{"udp 54 no rule", func() bool { return udpOK(t, vm1, vm2, 54) }, false},
		{"icmp echo in", func() bool { return ping(t, vm1, vm2.ip) }, true},
		{"vm1 has no ingress rules", func() bool { return ping(t, vm2, vm1.ip) }, false},
		{"remote group member", func() bool { return tcpOK(t, vm3, vm2.ip, 22) }, true},
		{"remote group non-member", func() bool { return tcpOK(t, vm1, vm2.ip, 22) }, false},
		{"stateless ingress rule", func() bool { return tcpOK(t, vm1, vm4.ip, 90) }, true},
		// A stateless port gets no replies without an ingress rule for them.
		{"stateless without reply rule", func() bool { return tcpOK(t, vm4, vm2.ip, 80) }, false},
	}
	for _, c := range checks {
		if got := c.ok(); got != c.want {
			t.Errorf("%s: traffic passes = %v; want %v", c.name, got, c.want)
		}
	}

	if st := h.apply(t, groups, ports()...); st.Writes() != 0 || st.Tx != 0 {
		t.Errorf("unchanged apply wrote %+v; want nothing", st)
	}

	// vm1 joins the group: one set element, no chain.
	groups["g"] = append(groups["g"], vm1.ip)
	st = h.apply(t, groups, ports()...)
	if st.Elements != 1 || st.Chains != 0 || st.Sets != 0 || st.Tx != 1 {
		t.Errorf("membership change stats %+v; want one element in one transaction", st)
	}
	if !tcpOK(t, vm1, vm2.ip, 22) {
		t.Error("new group member cannot reach tcp 22")
	}
	// And leaves again: its open connection is cut.
	c := tcpConnect(t, vm1, vm2.ip, 22)
	defer c.Close()
	groups["g"] = groups["g"][:1]
	if st := h.apply(t, groups, ports()...); st.Elements != 1 || st.FlowsDeleted == 0 {
		t.Errorf("leaving the group: stats %+v; want one element and the flow cut", st)
	}
	if echo(c) {
		t.Error("connection of a member that left still works")
	}
}

// TestRemovedRuleCutsConnection: an open TCP connection the new rules no
// longer allow stops; one they still allow goes on.
func TestRemovedRuleCutsConnection(t *testing.T) {
	h := newHost(t)
	vm1, vm2 := h.addVM(t, 1), h.addVM(t, 2)
	tcpListen(t, vm2, 80)
	tcpListen(t, vm2, 443)
	h.apply(t, nil, h.port(vm1, true, anyV4), h.port(vm2, true, tcp(true, 80, 80), tcp(true, 443, 443), anyV4))
	c80 := tcpConnect(t, vm1, vm2.ip, 80)
	defer c80.Close()
	c443 := tcpConnect(t, vm1, vm2.ip, 443)
	defer c443.Close()
	st := h.apply(t, nil, h.port(vm1, true, anyV4), h.port(vm2, true, tcp(true, 443, 443), anyV4))
	if st.FlowsDeleted < 1 || st.Tx != 1 {
		t.Errorf("stats %+v; want the tcp 80 flow deleted", st)
	}
	if echo(c80) {
		t.Error("connection to the removed rule's port still works")
	}
	if !echo(c443) {
		t.Error("connection still allowed was cut")
	}
}

// TestPortSecurity: spoofed MAC, IP and ARP and DHCP server replies from a
// VM are dropped; allowed address pairs pass.
func TestPortSecurity(t *testing.T) {
	h := newHost(t)
	vm1, vm2 := h.addVM(t, 1), h.addVM(t, 2)
	p1 := h.port(vm1, true, anyV4)
	pair := netip.MustParseAddr("10.0.0.200")
	p1.Pairs = []Pair{{Prefix: netip.PrefixFrom(pair, 32)}}
	h.apply(t, nil, p1, h.port(vm2, true, Rule{Ingress: true, Proto: ProtoAny}, anyV4))

	otherMAC := net.HardwareAddr{0xfa, 0x16, 0x3e, 9, 9, 9}
	frames := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"own MAC and IP", udpFrame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, 5000, 6000, []byte("mark-own")), true},
		{"allowed address pair", udpFrame(vm1.mac, vm2.mac, pair, vm2.ip, 5000, 6000, []byte("mark-pair")), true},
		{"spoofed IP", udpFrame(vm1.mac, vm2.mac, netip.MustParseAddr("10.0.0.3"), vm2.ip, 5000, 6000, []byte("mark-ip")), false},
		{"spoofed MAC", udpFrame(otherMAC, vm2.mac, vm1.ip, vm2.ip, 5000, 6000, []byte("mark-mac")), false},
		{"DHCP server reply", udpFrame(vm1.mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vm1.ip, netip.MustParseAddr("255.255.255.255"), 67, 68, []byte("mark-dhcp")), false},
		{"DHCP-like reply on other ports", udpFrame(vm1.mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vm1.ip, netip.MustParseAddr("255.255.255.255"), 1067, 68, []byte("mark-nodhcp")), true},
		{"ARP for own address", arpFrame(vm1.mac, vm1.mac, vm1.ip, []byte("mark-arp-own")), true},
		{"ARP claiming another address", arpFrame(vm1.mac, vm1.mac, netip.MustParseAddr("10.0.0.3"), []byte("mark-arp-ip")), false},
		{"ARP with another MAC", arpFrame(vm1.mac, otherMAC, vm1.ip, []byte("mark-arp-mac")), false},
		{"ARP for a pair address", arpFrame(vm1.mac, vm1.mac, pair, []byte("mark-arp-pair")), true},
	}
	for _, f := range frames {
		marker := f.frame[len(f.frame)-8:]
		if f.name[:3] == "ARP" {
			marker = f.frame[len(f.frame)-len("mark-arp-xx"):]
		}
		if got := frameArrives(t, vm1, vm2, f.frame, marker); got != f.want {
			t.Errorf("%s: arrives = %v; want %v", f.name, got, f.want)
		}
	}
}

// TestCleanupLeavesNothing: ports leaving remove their chains and sets,
// Cleanup the tables.
func TestCleanupLeavesNothing(t *testing.T) {
	h := newHost(t)
	vm1, vm2 := h.addVM(t, 1), h.addVM(t, 2)
	groups := map[string][]netip.Addr{"g": {vm1.ip}}
	h.apply(t, groups, h.port(vm1, true, anyV4), h.port(vm2, true, Rule{Ingress: true, Proto: ProtoAny, RemoteGroup: "g"}))
	st := h.apply(t, groups, h.port(vm1, true, anyV4))
	if st.Chains < 3 || st.Sets != 1 {
		t.Errorf("port leaving: stats %+v; want its three chains and the set removed", st)
	}
	c, err := h.m.conn()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name == TableName && ch.Name[len(ch.Name)-2:] == vm2.tap {
			t.Errorf("chain %s of the removed port is left", ch.Name)
		}
	}
	if _, err := h.m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.m.anyTable(c); err != nil || ok {
		t.Errorf("tables after cleanup: %v %v", ok, err)
	}
}

// TestZonesKeepNetworksApart: two networks with the same addresses and the
// same connection 5-tuple are tracked apart, and cutting one leaves the
// other.
func TestZonesKeepNetworksApart(t *testing.T) {
	h := newHost(t)
	h.addBridge(t, "br1")
	a1, a2 := h.addVM(t, 1), h.addVM(t, 2)
	b1 := h.addVMOn(t, 3, "br1", a1.ip)
	b2 := h.addVMOn(t, 4, "br1", a2.ip)
	tcpListen(t, a2, 80)
	tcpListen(t, b2, 80)
	ports := func(bRules ...Rule) []Port {
		return []Port{h.port(a1, true, anyV4), h.port(a2, true, tcp(true, 80, 80), anyV4),
			h.port(b1, true, anyV4), h.port(b2, true, append(bRules, anyV4)...)}
	}
	h.apply(t, nil, ports(tcp(true, 80, 80))...)
	dial := func(v *vm, dst netip.Addr) net.Conn {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := tcpDial(t, v, dst, 80, 40000)
			if err == nil && echo(c) {
				return c
			}
			if c != nil {
				c.Close()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s -> %s:80 from port 40000: %v", v.ns.name, dst, err)
			}
			time.Sleep(50 * time.Millisecond) // the source port lingers after a failed attempt
		}
	}
	ca := dial(a1, a2.ip)
	defer ca.Close()
	cb := dial(b1, b2.ip)
	defer cb.Close()
	// One conntrack entry per network for the same 5-tuple.
	zones := map[uint16]bool{}
	for _, f := range h.flows(t) {
		o := f.TupleOrig
		if o.IP.SourceAddress == a1.ip && o.IP.DestinationAddress == a2.ip && o.Proto.SourcePort == 40000 && o.Proto.DestinationPort == 80 {
			zones[f.Zone] = true
		}
	}
	if len(zones) != 2 || !zones[7] || !zones[8] {
		t.Errorf("zones of the two identical connections = %v; want 7 and 8", zones)
	}
	st := h.apply(t, nil, ports()...)
	if st.FlowsDeleted != 1 {
		t.Errorf("stats %+v; want exactly network b's flow cut", st)
	}
	if echo(cb) {
		t.Error("network b's connection survived its rule's removal")
	}
	if !echo(ca) {
		t.Error("network a's identical connection was cut")
	}
}

// TestIPv6: IPv6 rules match IPv6 only and IPv4 rules IPv4 only; neighbour
// discovery works; a spoofed IPv6 source is dropped.
func TestIPv6(t *testing.T) {
	h := newHost(t)
	vm1, vm2 := h.addVM(t, 1), h.addVM(t, 2)
	v6 := func(v *vm, last byte) netip.Addr {
		a := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last})
		if out, err := exec.Command("ip", "-n", v.ns.name, "addr", "add", a.String()+"/64", "dev", "eth0", "nodad").CombinedOutput(); err != nil {
			t.Fatalf("add %s: %v: %s", a, err, out)
		}
		return a
	}
	a1, a2, spoof := v6(vm1, 1), v6(vm2, 2), v6(vm1, 99)
	listen := func(addr netip.Addr, port int) {
		var ln net.Listener
		if err := vm2.ns.do(t, func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, uint16(port)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); buf := make([]byte, 4); n, _ := c.Read(buf); _, _ = c.Write(buf[:n]) }()
			}
		}()
	}
	for _, p := range []int{90, 91} {
		listen(a2, p)
		listen(vm2.ip, p)
	}
	dial := func(src, dst netip.Addr, port int) bool {
		var c net.Conn
		err := vm1.ns.do(t, func() (err error) {
			d := net.Dialer{Timeout: blocked, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
			c, err = d.Dial("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
			return err
		})
		if err != nil {
			return false
		}
		defer c.Close()
		return echo(c)
	}
	anyV6 := Rule{IPv6: true, Proto: ProtoAny}
	p1, p2 := h.port(vm1, true, anyV4, anyV6), h.port(vm2, true,
		Rule{Ingress: true, IPv6: true, Proto: ProtoTCP, PortMin: 90, PortMax: 90}, tcp(true, 91, 91), anyV4, anyV6)
	p1.IPs, p2.IPs = append(p1.IPs, a1), append(p2.IPs, a2)
	h.apply(t, nil, p1, p2)
	deadline := time.Now().Add(5 * time.Second)
	for !dial(a1, a2, 90) { // neighbour discovery through the filter
		if time.Now().After(deadline) {
			t.Fatal("IPv6 tcp 90 never worked")
		}
	}
	for _, c := range []struct {
		name     string
		src, dst netip.Addr
		port     int
		want     bool
	}{
		{"IPv6 rule, IPv4 traffic", vm1.ip, vm2.ip, 90, false},
		{"IPv4 rule, IPv6 traffic", a1, a2, 91, false},
		{"IPv4 rule, IPv4 traffic", vm1.ip, vm2.ip, 91, true},
		{"spoofed IPv6 source", spoof, a2, 90, false},
	} {
		if got := dial(c.src, c.dst, c.port); got != c.want {
			t.Errorf("%s: passes = %v; want %v", c.name, got, c.want)
		}
	}
}

// TestThousandRules: ports with 1,000 rules each go in one transaction
// (the batch is MBs: the netlink send buffer must hold it), and applying
// the same again writes nothing.
func TestThousandRules(t *testing.T) {
	h := newHost(t)
	vm1, vm2 := h.addVM(t, 1), h.addVM(t, 2)
	rules := []Rule{anyV4}
	for i := range 1000 {
		rules = append(rules, Rule{Ingress: true, Proto: ProtoTCP, PortMin: 10000 + i, PortMax: 10000 + i,
			RemoteIP: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)})
	}
	ports := []Port{h.port(vm1, true, rules...), h.port(vm2, true, rules...)}
	if st := h.apply(t, nil, ports...); st.Tx != 1 {
		t.Fatalf("apply stats %+v; want one transaction", st)
	}
	if st := h.apply(t, nil, ports...); st.Writes() != 0 {
		t.Fatalf("second apply stats %+v; want no writes", st)
	}
}
