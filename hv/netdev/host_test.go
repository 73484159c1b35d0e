package netdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	vtepA = net.IPv4(10, 250, 0, 1).To4()
	vtepB = net.IPv4(10, 250, 0, 2).To4()
)

// tenantPort is a port on 192.168.77.0/24, the CIDR both test networks use.
func tenantPort(id string, host byte) Port {
	return Port{ID: id, Tap: TapName(id), MAC: net.HardwareAddr{0x52, 0x54, 0, 0x77, 0, host},
		IP: net.IPv4(192, 168, 77, host).To4(), Prefix: 24, Gateway: net.IPv4(192, 168, 77, 1).To4(),
		DNS: []net.IP{net.IPv4(192, 168, 77, 2).To4()}, Hostname: "vm" + id[:3], DHCP: true}
}

// hostView is the desired state of one host: its own ports, and the other
// host's as remotes.
func hostView(local, remote net.IP, mine, theirs map[uint32][]Port) Desired {
	d := Desired{LocalVTEP: local, UnderlayDev: "ul0"}
	for _, vni := range []uint32{100, 200} {
		n := Network{ID: fmt.Sprint("net", vni), VNI: vni, MTU: 1450, Ports: mine[vni]}
		if len(theirs[vni]) > 0 {
			n.Remotes = []net.IP{remote}
		}
		for _, p := range theirs[vni] {
			n.MACs = append(n.MACs, RemoteMAC{MAC: p.MAC, VTEP: remote})
		}
		d.Networks = append(d.Networks, n)
	}
	return d
}

// TestTwoHosts: two hosts (namespaces joined by a veth underlay), two
// networks with the same CIDR (VNI 100 and 200), one port per network per
// host, each port's VM a namespace attached to the tap like QEMU.
func TestTwoHosts(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	ha, hb := newNS(t, "ha"), newNS(t, "hb")
	connect(t, ha, hb, "10.250.0.1/24", "10.250.0.2/24")
	ma, mb := newManager(t, ha), newManager(t, hb)

	a1, b1 := tenantPort("a1000000-0000-4000-8000-000000000001", 11), tenantPort("b1000000-0000-4000-8000-000000000001", 12)
	a2, b2 := tenantPort("a2000000-0000-4000-8000-000000000002", 21), tenantPort("b2000000-0000-4000-8000-000000000002", 22)
	onA := map[uint32][]Port{100: {a1}, 200: {a2}}
	onB := map[uint32][]Port{100: {b1}, 200: {b2}}
	dA, dB := hostView(vtepA, vtepB, onA, onB), hostView(vtepB, vtepA, onB, onA)

	apply := func(m *Manager, d Desired) Stats {
		t.Helper()
		st, err := m.Apply(ctx, d)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		return st
	}
	if st := apply(ma, dA); st.Created != 6 || st.FDBAdded != 4 || st.DHCPStarted != 2 {
		t.Errorf("first Apply on A = %+v; want 6 links, 4 FDB entries, 2 DHCP responders", st)
	}
	apply(mb, dB)

	t.Run("second apply does nothing", func(t *testing.T) {
		if st := apply(ma, dA); st != (Stats{}) {
			t.Errorf("second Apply = %+v; want zero", st)
		}
	})

	t.Run("devices", func(t *testing.T) {
		vx := ha.link(t, "psvx100").(*netlink.Vxlan)
		if vx.VxlanId != 100 || vx.Learning || vx.Port != VXLANPort || !vx.SrcAddr.Equal(vtepA) ||
			vx.MTU != 1450 || vx.MasterIndex != ha.link(t, "psbr100").Attrs().Index {
			t.Errorf("psvx100 = vni %d learning %v port %d local %v mtu %d master %d", vx.VxlanId, vx.Learning, vx.Port, vx.SrcAddr, vx.MTU, vx.MasterIndex)
		}
		tap := ha.link(t, a1.Tap).(*netlink.Tuntap)
		if tap.Mode != netlink.TUNTAP_MODE_TAP || tap.NonPersist || tap.MTU != 1450 ||
			tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tap.MasterIndex != vx.MasterIndex {
			t.Errorf("tap %s = %+v", a1.Tap, tap)
		}
		want := map[string]bool{"00:00:00:00:00:00 10.250.0.2": true, b1.MAC.String() + " 10.250.0.2": true}
		if got := ha.fdb(t, "psvx100"); !mapsEqual(got, want) {
			t.Errorf("fdb psvx100 on A = %v; want %v", got, want)
		}
	})

	vms := map[string]*testNS{}
	for _, x := range []struct {
		host *testNS
		p    Port
	}{{ha, a1}, {hb, b1}, {ha, a2}, {hb, b2}} {
		vms[x.p.ID] = newVM(t, x.host, x.p, 1450)
	}

	t.Run("dhcp", func(t *testing.T) {
		// While a1 gets its lease, b1 (same network, other host) sees the
		// flooded requests but no reply: replies only go into a1's tap.
		seen := sniff(t, vms[b1.ID], "eth0")
		for i, p := range []Port{a1, b1, a2, b2} {
			got := udhcpc(t, vms[p.ID])
			want := map[string]string{"ip": p.IP.String(), "mask": "24", "router": "192.168.77.1",
				"dns": "192.168.77.2", "hostname": p.Hostname, "mtu": "1450", "serverid": "192.168.77.1", "lease": "86400"}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("udhcpc for %s: %s = %q; want %q", p.Tap, k, got[k], v)
				}
			}
			if i == 0 {
				if to, from := seen(); to == 0 || from != 0 {
					t.Errorf("b1 saw %d requests and %d replies of a1's DHCP; want some requests and no reply", to, from)
				}
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("ping across vxlan", func(t *testing.T) {
		if !ping(vms[a1.ID], b1.IP, 3) {
			t.Errorf("VM a1 cannot ping b1 (%v) across VNI 100", b1.IP)
		}
		if !ping(vms[b2.ID], a2.IP, 3) {
			t.Errorf("VM b2 cannot ping a2 (%v) across VNI 200", a2.IP)
		}
	})

	t.Run("networks are isolated", func(t *testing.T) {
		for _, x := range []struct {
			from *testNS
			to   Port
		}{{vms[a2.ID], b1}, {vms[a2.ID], a1}, {vms[b1.ID], b2}} {
			if ping(x.from, x.to.IP, 1) {
				t.Errorf("a VM reaches %v on the other network", x.to.IP)
			}
		}
	})

	t.Run("port removed", func(t *testing.T) {
		onB[100] = nil
		dA, dB = hostView(vtepA, vtepB, onA, onB), hostView(vtepB, vtepA, onB, onA)
		st := apply(mb, dB)
		if st.Deleted != 3 || st.DHCPStopped != 1 {
			t.Errorf("Apply on B = %+v; want 3 links deleted, 1 responder stopped", st)
		}
		for _, l := range []string{b1.Tap, "psvx100", "psbr100"} {
			if hb.hasLink(l) {
				t.Errorf("%s still on B after its last port left", l)
			}
		}
		if !hb.hasLink("psvx200") || !hb.hasLink(b2.Tap) {
			t.Errorf("network 200 lost devices on B")
		}
		if st := apply(ma, dA); st.Ops != 2 || st.FDBDeleted != 2 {
			t.Errorf("Apply on A = %+v; want 2 FDB deletions", st)
		}
		if got := ha.fdb(t, "psvx100"); len(got) != 0 {
			t.Errorf("fdb psvx100 on A = %v; want empty", got)
		}
		if !ping(vms[b2.ID], a2.IP, 3) {
			t.Errorf("network 200 broken after network 100 left B")
		}
	})
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// TestGarbageCollection: devices of ours that desired no longer wants go,
// devices without our prefix stay; Close keeps devices and a new Manager
// adopts them with zero operations; Cleanup removes everything of ours.
func TestGarbageCollection(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	h := newNS(t, "gc")
	la := netlink.NewLinkAttrs()
	la.Name = "other0"
	if err := h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	noDHCP := port(2)
	noDHCP.DHCP = false
	d := Desired{LocalVTEP: vtepA, Networks: []Network{
		{VNI: 7, Ports: []Port{port(1), noDHCP}, Remotes: []net.IP{vtepB}},
		{VNI: 8, Ports: []Port{port(3)}, MACs: []RemoteMAC{{MAC: mac(9), VTEP: vtepB}}},
	}}
	m := newManager(t, h)
	if _, err := m.Apply(ctx, d); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := []string{"psbr7", "psbr8", port(1).Tap, port(2).Tap, port(3).Tap, "psvx7", "psvx8"}
	got := h.ourLinks(t)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("links = %v; want %v", got, want)
	}

	// Someone takes a port down and changes its MTU (the bridge follows to
	// the lowest port MTU): Apply repairs the three.
	tap := h.link(t, port(2).Tap)
	h.nl.LinkSetDown(tap)
	h.nl.LinkSetMTU(tap, 1400)
	if st, err := m.Apply(ctx, d); err != nil || st.Updated != 3 {
		t.Errorf("repair Apply = %+v, %v; want 3 updates", st, err)
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := m.Apply(ctx, d); err != ErrClosed {
		t.Errorf("Apply after Close = %v; want ErrClosed", err)
	}
	if n := len(h.ourLinks(t)); n != len(want) {
		t.Errorf("Close left %d links; want %d (it must not delete devices)", n, len(want))
	}
	m = newManager(t, h)
	if st, err := m.Apply(ctx, d); err != nil || st.Ops != 0 || st.DHCPStarted != 2 {
		t.Errorf("Apply by a new Manager = %+v, %v; want 0 ops and 2 responders (port 2 has no DHCP)", st, err)
	}

	// Network 7 goes (2 taps, vxlan, bridge), port 3 is replaced by port 4.
	d.Networks = d.Networks[1:]
	d.Networks[0].Ports[0] = port(4)
	st, err := m.Apply(ctx, d)
	if err != nil || st.Deleted != 5 || st.Created != 1 || st.DHCPStopped != 2 || st.DHCPStarted != 1 {
		t.Errorf("shrinking Apply = %+v, %v", st, err)
	}
	if got := h.ourLinks(t); len(got) != 3 {
		t.Errorf("links after shrink = %v; want psbr8 psvx8 and one tap", got)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := h.ourLinks(t); len(got) != 0 {
		t.Errorf("links after Cleanup = %v", got)
	}
	if !h.hasLink("other0") {
		t.Errorf("Cleanup deleted other0, which is not ours")
	}
}

// TestApplyRevertsOnFailure: when a step fails, what the Apply created so
// far (a whole first network, then a bridge) is undone.
func TestApplyRevertsOnFailure(t *testing.T) {
	needRoot(t)
	h := newNS(t, "revert")
	// Someone else's VXLAN device already uses VNI 5 on this VTEP and port.
	la := netlink.NewLinkAttrs()
	la.Name = "other5"
	if err := h.nl.LinkAdd(&netlink.Vxlan{LinkAttrs: la, VxlanId: 5, SrcAddr: vtepA, Port: VXLANPort}); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, h)
	d := Desired{LocalVTEP: vtepA, Networks: []Network{
		{VNI: 4, Ports: []Port{port(1)}},
		{VNI: 5, Ports: []Port{port(2)}},
	}}
	st, err := m.Apply(context.Background(), d)
	if err == nil {
		t.Fatalf("Apply with a conflicting VNI succeeded")
	}
	t.Logf("Apply: %v", err)
	if got := h.ourLinks(t); len(got) != 0 || st.Created != 4 || st.DHCPStarted != 0 {
		t.Errorf("failed Apply left %v behind; stats %+v; want 4 links created and undone, no DHCP", got, st)
	}
	d.UnderlayDev = "nosuchdev"
	if _, err := m.Apply(context.Background(), d); !errors.Is(err, ErrInvalid) {
		t.Errorf("Apply with a missing underlay device = %v; want ErrInvalid", err)
	}
}

// BenchmarkApplyOneChangeAt1000Ports: a network with 50 local ports (taps,
// DHCP responders) and 950 remote ones; every reconcile reads the host and
// applies one change.
func BenchmarkApplyOneChangeAt1000Ports(b *testing.B) {
	needRoot(b)
	ctx := context.Background()
	h := newNS(b, "bench")
	m := newManager(b, h)
	n := Network{ID: "big", VNI: 4242, MTU: 1450}
	for i := range 50 {
		n.Ports = append(n.Ports, port(i))
	}
	for i := 1; i <= 10; i++ {
		n.Remotes = append(n.Remotes, vtep(i))
	}
	for i := 50; i < 1000; i++ {
		n.MACs = append(n.MACs, RemoteMAC{MAC: mac(i), VTEP: vtep(1 + i%10)})
	}
	d := Desired{LocalVTEP: vtepA, Networks: []Network{n}}
	if _, err := m.Apply(ctx, d); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		change func(i int)
	}{
		{"remote-port-moves", func(i int) { n.MACs[i%950].VTEP = vtep(1 + (i+1)%10) }},
		{"local-port-replaced", func(i int) { n.Ports[i%50] = port(1000 + i) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ops := 0
			for i := 0; b.Loop(); i++ {
				bc.change(i)
				st, err := m.Apply(ctx, Desired{LocalVTEP: vtepA, Networks: []Network{n}})
				if err != nil {
					b.Fatal(err)
				}
				ops += st.Ops
			}
			b.ReportMetric(float64(ops)/float64(b.N), "netlink-ops/reconcile")
		})
	}
}

// TestQEMUAttachesToTap: QEMU's `-netdev tap,ifname=...,script=no` attaches
// to the tap Apply created (carrier comes up), and the tap outlives QEMU.
func TestQEMUAttachesToTap(t *testing.T) {
	needRoot(t)
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (scripts/deps.sh installs it): %v", err)
	}
	ctx := context.Background()
	h := newNS(t, "qemu")
	m := newManager(t, h)
	p := port(1)
	d := Desired{LocalVTEP: vtepA, Networks: []Network{{VNI: 3, Ports: []Port{p}}}}
	if _, err := m.Apply(ctx, d); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.name, qemu, "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-m", "32",
		"-netdev", "tap,id=n0,ifname="+p.Tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+p.MAC.String()+",romfile=")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	eventually(t, "QEMU to attach to "+p.Tap, func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("QEMU exited: %v\n%s", err, out)
		default:
		}
		return h.link(t, p.Tap).Attrs().RawFlags&unix.IFF_LOWER_UP != 0
	})
	cmd.Process.Kill()
	err = <-exited
	exited <- err
	if !h.hasLink(p.Tap) {
		t.Fatalf("tap %s gone with QEMU; want it persistent", p.Tap)
	}
	if st, err := m.Apply(ctx, d); err != nil || st.Ops != 0 {
		t.Errorf("Apply after QEMU = %+v, %v; want 0 ops", st, err)
	}
}

// TestWithoutCapNetAdmin: without CAP_NET_ADMIN, Apply fails with
// ErrPermission and a message naming the capability. The test re-runs
// itself through setpriv with CAP_NET_ADMIN dropped from the bounding set.
func TestWithoutCapNetAdmin(t *testing.T) {
	if path := os.Getenv("PSNETDEV_NOCAP_NETNS"); path != "" {
		m, err := New(Config{NetNS: path})
		if err == nil {
			_, err = m.Apply(context.Background(), Desired{LocalVTEP: vtepA, Networks: []Network{{VNI: 1, Ports: []Port{port(1)}}}})
			m.Close()
		}
		if !errors.Is(err, ErrPermission) {
			t.Fatalf("Apply without CAP_NET_ADMIN = %v; want ErrPermission", err)
		}
		fmt.Println(err)
		return
	}
	needRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv not found (util-linux): %v", err)
	}
	h := newNS(t, "nocap")
	cmd := exec.Command(setpriv, "--bounding-set=-net_admin", "--inh-caps=-net_admin",
		os.Args[0], "-test.run=^TestWithoutCapNetAdmin$", "-test.v")
	cmd.Env = append(os.Environ(), "PSNETDEV_NOCAP_NETNS="+h.path)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CAP_NET_ADMIN") {
		t.Errorf("child without CAP_NET_ADMIN: %v\n%s", err, out)
	}
	t.Logf("child: %s", out)
	if got := h.ourLinks(t); len(got) != 0 {
		t.Errorf("links created without CAP_NET_ADMIN: %v", got)
	}
}
