package netdev

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func provPort(i int, ip string, dhcp bool) Port {
	id := strings.Repeat(string(rune('a'+i)), 8) + "-0000-4000-8000-000000000000"
	mac := net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 1, byte(i)}
	return Port{ID: id, Tap: TapName(id), MAC: mac, IP: net.ParseIP(ip).To4(), Prefix: 24, DHCP: dhcp,
		Sources: []Source{{MAC: mac, Prefix: netip.PrefixFrom(netip.MustParseAddr(ip), 32)}}}
}

func TestDiffProviders(t *testing.T) {
	flat := Provider{ID: "f", Uplink: "lan0", Ports: []Port{provPort(1, "198.51.100.50", true)}}
	vlan := Provider{ID: "v", Uplink: "lan0", VLAN: 100, Ports: []Port{provPort(2, "10.100.0.50", false)}}
	d := Desired{Providers: []Provider{vlan, flat}}
	ops := Diff(Actual{}, d, "ps")
	if got, want := opKinds(ops), []string{"add-tap", "add-macvlan", "wire", "wire", "set-up", "add-vlan", "add-tap", "add-macvlan", "wire", "wire", "set-up"}; !slices.Equal(got, want) {
		t.Fatalf("ops = %v; want %v", got, want)
	}
	if ops[1].Master != "lan0" || ops[7].Master != VLANName("lan0", 100) || ops[5].Master != "lan0" || ops[5].VLAN != 100 {
		t.Errorf("lower devices: %v / %v / %v", ops[1], ops[5], ops[7])
	}
	if ops[4].Link != MacvlanName(flat.Ports[0].ID) {
		t.Errorf("ops[4] = %v; want the macvlan set up after its wires", ops[4])
	}
	if b := batches(ops); len(b) != 3 || len(b[0]) != 5 || b[0][0].Group != "provider f/"+flat.Ports[0].ID ||
		len(b[1]) != 1 || b[1][0].Group != "provider v" || b[2][0].Group != "provider v/"+vlan.Ports[0].ID {
		t.Errorf("batches = %v; want the VLAN network's own and one per port", b)
	}

	// Converged: nothing to do. A leftover macvlan and VLAN of ours go; a
	// wire pointing elsewhere is redone; a changed MAC recreates the macvlan.
	var actual Actual
	for _, pn := range d.Providers {
		lower := pn.lower("ps")
		if pn.VLAN != 0 {
			actual.Links = append(actual.Links, Link{Name: lower, Kind: KindVLAN, Parent: "lan0", VLANID: pn.VLAN, Up: true})
		}
		for _, p := range pn.Ports {
			mv := macvlanName("ps", p.ID)
			actual.Links = append(actual.Links,
				Link{Name: p.Tap, Kind: KindTap, MTU: 1500, Up: true, Ingress: true, Wire: wireSig(tapRules(p), mv)},
				Link{Name: mv, Kind: KindMacvlan, Parent: lower, MAC: p.MAC, Bridged: true, Up: true, Ingress: true, Wire: wireSig(macvlanRules(), p.Tap)})
		}
	}
	if ops := Diff(actual, d, "ps"); len(ops) != 0 {
		t.Fatalf("converged diff = %v", ops)
	}
	crashed := slices.Clone(actual.Links)
	crashed = append(crashed, Link{Name: "pspmleftover", Kind: KindMacvlan, Parent: "lan0", Bridged: true},
		Link{Name: "pspv00000000", Kind: KindVLAN, Parent: "lan0", VLANID: 7})
	crashed[1].Wire = "" // the VLAN port's tap
	if got, want := opKinds(Diff(Actual{Links: crashed}, d, "ps")), []string{"del-link", "del-link", "wire"}; !slices.Equal(got, want) {
		t.Errorf("after a crash: %v; want %v", got, want)
	}
	moved := slices.Clone(d.Providers[1].Ports)
	moved[0].MAC = net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 9, 9}
	d2 := Desired{Providers: []Provider{d.Providers[0], {ID: "f", Uplink: "lan0", Ports: moved}}}
	if got, want := opKinds(Diff(actual, d2, "ps")), []string{"del-link", "add-macvlan", "wire", "wire", "set-up"}; !slices.Equal(got, want) {
		t.Errorf("MAC change: %v; want %v", got, want)
	}
	// The VLAN goes: its macvlans with it, before it.
	if got := Diff(actual, Desired{Providers: []Provider{flat}}, "ps"); len(got) != 3 || got[2].Link != VLANName("lan0", 100) {
		t.Errorf("VLAN network gone: %v; want its tap and macvlan, then the VLAN", got)
	}
	// A routed VLAN network keeps its sub-interface without ports.
	if got := opKinds(Diff(Actual{}, Desired{Providers: []Provider{{ID: "v", Uplink: "lan0", VLAN: 100, Routed: true}}}, "ps")); !slices.Equal(got, []string{"add-vlan"}) {
		t.Errorf("routed VLAN network: %v", got)
	}
}

// lanFixture: a host namespace whose "lan0" (the host's only NIC, with the
// host's own address) is a veth to a LAN namespace; the LAN has untagged
// 198.51.100.1, 10.100.0.1 on VLAN 100, and a third namespace holds
// 10.100.0.2 on VLAN 200 of the same wire.
type lanFixture struct {
	host, lan, lan200 *testNS
	vlan              bool // the kernel has 802.1Q devices
}

func newLAN(t *testing.T) lanFixture {
	t.Helper()
	f := lanFixture{host: newNS(t, "h"), lan: newNS(t, "lan"), lan200: newNS(t, "l200")}
	la := netlink.NewLinkAttrs()
	la.Name = "lan0"
	veth := netlink.NewVeth(la)
	veth.PeerName, veth.PeerNamespace = "lan0", netlink.NsFd(int(f.lan.h))
	if err := f.host.nl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	addr := func(ns *testNS, dev, a string) {
		t.Helper()
		ad, _ := netlink.ParseAddr(a)
		if err := ns.nl.AddrAdd(ns.link(t, dev), ad); err != nil {
			t.Fatalf("%s: address %s: %v", ns.name, a, err)
		}
		ns.up(t, dev)
	}
	addr(f.host, "lan0", "198.51.100.2/24")
	addr(f.lan, "lan0", "198.51.100.1/24")
	for _, v := range []struct {
		id   int
		name string
	}{{100, "v100"}, {200, "v200"}} {
		la := netlink.NewLinkAttrs()
		la.Name, la.ParentIndex = v.name, f.lan.link(t, "lan0").Attrs().Index
		err := f.lan.nl.LinkAdd(&netlink.Vlan{LinkAttrs: la, VlanId: v.id})
		if errors.Is(err, unix.EOPNOTSUPP) {
			return f
		}
		if err != nil {
			t.Fatalf("add vlan %d: %v", v.id, err)
		}
	}
	f.vlan = true
	if err := f.lan.nl.LinkSetNsFd(f.lan.link(t, "v200"), int(f.lan200.h)); err != nil {
		t.Fatalf("move v200: %v", err)
	}
	addr(f.lan, "v100", "10.100.0.1/24")
	addr(f.lan200, "v200", "10.100.0.2/24")
	return f
}

// staticAddr gives the VM's eth0 an address, as a guest configured by its
// config drive would.
func staticAddr(t *testing.T, vm *testNS, a string) {
	t.Helper()
	ad, _ := netlink.ParseAddr(a)
	if err := vm.nl.AddrAdd(vm.link(t, "eth0"), ad); err != nil {
		t.Fatalf("%s: address: %v", vm.name, err)
	}
}

// TestProviderFlat: a VM on a flat provider network gets its lease from
// this host and reaches the LAN through the host's only NIC, whose own
// address keeps working; an unchanged state writes nothing; leftovers of a
// crash are found by their prefix and removed; nothing of ours outlives
// the state.
func TestProviderFlat(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	f := newLAN(t)
	p1, p2 := provPort(1, "198.51.100.50", true), provPort(2, "198.51.100.51", false)
	p1.Gateway = net.ParseIP("198.51.100.1").To4()
	d := Desired{Providers: []Provider{{ID: "flat", Uplink: "lan0", Ports: []Port{p1, p2}}}}
	m := newManager(t, f.host)
	st, err := m.Apply(ctx, d)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if st.Created != 4 || st.DHCPStarted != 1 {
		t.Errorf("first Apply = %+v; want 4 links (2 taps, 2 macvlans) and 1 responder (port 2 has no DHCP)", st)
	}
	vm1, vm2 := newVM(t, f.host, p1, 1500), newVM(t, f.host, p2, 1500)
	lease := udhcpc(t, vm1)
	if lease["ip"] != "198.51.100.50" || lease["router"] != "198.51.100.1" || lease["mtu"] != "1500" || lease["serverid"] != "169.254.169.254" {
		t.Errorf("flat lease = %v", lease)
	}
	staticAddr(t, vm2, "198.51.100.51/24") // --no-dhcp: the guest's config drive sets it
	if !ping(vm1, net.ParseIP("198.51.100.1"), 5) {
		t.Errorf("the VM on the flat network does not reach the LAN")
	}
	if !ping(f.lan, net.ParseIP("198.51.100.50"), 3) || !ping(f.lan, net.ParseIP("198.51.100.51"), 3) {
		t.Errorf("the LAN does not reach the VMs on the flat network")
	}
	if !ping(vm1, net.ParseIP("198.51.100.51"), 3) {
		t.Errorf("two VMs of one host on the flat network do not reach each other")
	}
	if !ping(f.lan, net.ParseIP("198.51.100.2"), 3) {
		t.Errorf("the host's own address on its NIC no longer answers")
	}
	if st, err := m.Apply(ctx, d); err != nil || st.Ops != 0 {
		t.Errorf("second Apply = %+v, %v; want no write", st, err)
	}
	// The daemon restarts: a new Manager adopts the devices and wires.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = newManager(t, f.host)
	if st, err := m.Apply(ctx, d); err != nil || st.Ops != 0 || st.DHCPStarted != 1 {
		t.Errorf("Apply by a new Manager = %+v, %v; want no write and port 1's responder", st, err)
	}
	if !ping(f.lan, net.ParseIP("198.51.100.50"), 3) {
		t.Errorf("the LAN does not reach VM 1 after the restart")
	}

	// A crash left a macvlan of ours, and someone removed a wire: one
	// Apply removes the leftover and redoes the wire only.
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex = "pspmleftover", f.host.link(t, "lan0").Attrs().Index
	if err := f.host.nl.LinkAdd(&netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		t.Fatal(err)
	}
	fs, _ := f.host.nl.FilterList(f.host.link(t, MacvlanName(p2.ID)), netlink.HANDLE_MIN_INGRESS)
	for _, fl := range fs {
		if err := f.host.nl.FilterDel(fl); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := m.Apply(ctx, d); err != nil || st.Deleted != 1 || st.Updated != 1 || st.Created != 0 {
		t.Errorf("Apply after a crash = %+v, %v; want 1 deletion and 1 rewire", st, err)
	}
	if !ping(f.lan, net.ParseIP("198.51.100.51"), 5) {
		t.Errorf("the LAN does not reach VM 2 after the rewire")
	}

	// Port 2 goes: its tap and macvlan with it; then everything.
	d.Providers[0].Ports = d.Providers[0].Ports[:1]
	if st, err := m.Apply(ctx, d); err != nil || st.Deleted != 2 {
		t.Errorf("Apply without port 2 = %+v, %v; want 2 deletions", st, err)
	}
	want := []string{p1.Tap, MacvlanName(p1.ID)}
	if got := f.host.ourLinks(t); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("links = %v; want %v", got, want)
	}
	if _, err := m.Apply(ctx, Desired{}); err != nil {
		t.Fatalf("empty Apply: %v", err)
	}
	if got := f.host.ourLinks(t); len(got) != 0 {
		t.Errorf("links left = %v", got)
	}
	if !f.host.hasLink("lan0") || !ping(f.lan, net.ParseIP("198.51.100.2"), 3) {
		t.Errorf("the host's NIC or its address went with our devices")
	}
}

// TestProviderVLAN: a VM on VLAN 100 reaches VLAN 100 of the LAN and not
// VLAN 200; the sub-interface goes with the network. On a kernel without
// 802.1Q devices Apply fails saying so, leaves nothing of the VLAN network
// behind, and still plumbs the flat network next to it.
func TestProviderVLAN(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	f := newLAN(t)
	p, fp := provPort(3, "10.100.0.50", true), provPort(4, "198.51.100.60", false)
	d := Desired{Providers: []Provider{
		{ID: "vlan", Uplink: "lan0", VLAN: 100, Ports: []Port{p}},
		{ID: "flat", Uplink: "lan0", Ports: []Port{fp}},
	}}
	m := newManager(t, f.host)
	st, err := m.Apply(ctx, d)
	if !f.vlan {
		var pf *ProvidersFailed
		if !errors.As(err, &pf) || !slices.Equal(pf.IDs, []string{"vlan"}) || !strings.Contains(err.Error(), "802.1Q") {
			t.Errorf("Apply on a kernel without 802.1Q = %v; want the VLAN network failed, naming 802.1Q", err)
		}
		want := []string{fp.Tap, MacvlanName(fp.ID)}
		if got := f.host.ourLinks(t); !slices.Equal(sorted(got), sorted(want)) {
			t.Errorf("after the VLAN network failed: links %v; want the flat network's %v only", got, want)
		}
		vm := newVM(t, f.host, fp, 1500)
		staticAddr(t, vm, "198.51.100.60/24")
		if !ping(vm, net.ParseIP("198.51.100.1"), 5) {
			t.Errorf("the flat network's VM does not reach the LAN while the VLAN network fails")
		}
		// What this kernel can do is checked: the refusal and the flat
		// network next to it. The VLAN data path needs 802.1Q.
		t.Logf("kernel lacks 802.1Q: the VLAN data path was not run, only its refusal and the flat network next to it")
		return
	}
	if err != nil || st.Created != 5 {
		t.Fatalf("Apply = %+v, %v; want 5 links (VLAN, 2 taps, 2 macvlans)", st, err)
	}
	vm := newVM(t, f.host, p, 1500)
	if lease := udhcpc(t, vm); lease["ip"] != "10.100.0.50" {
		t.Errorf("VLAN lease = %v", lease)
	}
	if !ping(vm, net.ParseIP("10.100.0.1"), 5) {
		t.Errorf("the VM on VLAN 100 does not reach VLAN 100")
	}
	if ping(vm, net.ParseIP("10.100.0.2"), 2) {
		t.Errorf("the VM on VLAN 100 reaches a host on VLAN 200")
	}
	if st, err := m.Apply(ctx, d); err != nil || st.Ops != 0 {
		t.Errorf("second Apply = %+v, %v; want no write", st, err)
	}
	d.Providers = d.Providers[1:]
	if st, err := m.Apply(ctx, d); err != nil || st.Deleted != 3 {
		t.Errorf("Apply without the VLAN network = %+v, %v; want 3 deletions", st, err)
	}
	want := []string{fp.Tap, MacvlanName(fp.ID)}
	if got := f.host.ourLinks(t); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("links = %v; want %v", got, want)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func opKinds(ops []Op) []string {
	var s []string
	for _, o := range ops {
		s = append(s, o.Kind.String())
	}
	return s
}

// TestProviderPortFailsAlone: a port that cannot be plumbed (its MAC is
// the host NIC's) fails alone, named with a permanent cause; the other
// port of its network works; fixed, the next Apply plumbs it.
func TestProviderPortFailsAlone(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	f := newLAN(t)
	good, bad := provPort(7, "198.51.100.90", false), provPort(8, "198.51.100.91", false)
	bad.MAC = f.host.link(t, "lan0").Attrs().HardwareAddr
	d := Desired{Providers: []Provider{{ID: "flat", Uplink: "lan0", Ports: []Port{good, bad}}}}
	m := newManager(t, f.host)
	_, err := m.Apply(ctx, d)
	var pf *ProvidersFailed
	if !errors.As(err, &pf) || len(pf.IDs) != 0 || !slices.Equal(pf.Ports, []string{bad.ID}) || !pf.Permanent(bad.ID) || pf.Permanent(good.ID) {
		t.Fatalf("Apply = %v; want port %s failed alone, permanently", err, bad.ID)
	}
	want := []string{good.Tap, MacvlanName(good.ID)}
	if got := f.host.ourLinks(t); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("links = %v; want the good port's %v only", got, want)
	}
	vm := newVM(t, f.host, good, 1500)
	staticAddr(t, vm, "198.51.100.90/24")
	if !ping(vm, net.ParseIP("198.51.100.1"), 5) {
		t.Errorf("the good port's VM does not reach the LAN")
	}
	d.Providers[0].Ports[1].MAC = net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 1, 8}
	if _, err := m.Apply(ctx, d); err != nil {
		t.Errorf("Apply after the fix = %v", err)
	}
}

// TestProviderUplinkMissingIsTemporary: an uplink that is not there yet
// (a NIC or bond appearing late at boot) fails its port with a cause
// that is not permanent; once it appears, the next Apply plumbs the port.
func TestProviderUplinkMissingIsTemporary(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	f := newLAN(t)
	p := provPort(9, "198.51.100.92", false)
	d := Desired{Providers: []Provider{{ID: "late", Uplink: "late0", Ports: []Port{p}}}}
	m := newManager(t, f.host)
	_, err := m.Apply(ctx, d)
	var pf *ProvidersFailed
	if !errors.As(err, &pf) || !slices.Equal(pf.Ports, []string{p.ID}) || pf.Permanent(p.ID) || !errors.Is(err, unix.ENODEV) {
		t.Fatalf("Apply without the uplink = %v; want port %s failed, not permanently (ENODEV)", err, p.ID)
	}
	d.Providers[0].Uplink = "lan0"
	if _, err := m.Apply(ctx, d); err != nil {
		t.Errorf("Apply once the uplink is there = %v", err)
	}
}
