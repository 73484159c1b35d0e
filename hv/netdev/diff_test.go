package netdev

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
)

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

func vtep(i int) net.IP { return net.IPv4(10, 250, 1, byte(i)).To4() }

var local = net.IPv4(10, 250, 0, 1).To4()

func port(i int) Port {
	id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", i)
	return Port{ID: id, Tap: TapName(id), MAC: mac(i), IP: net.IPv4(192, 168, 0, byte(i)), Prefix: 24, DHCP: true}
}

// converged returns the actual state that desired produces.
func converged(d Desired) Actual {
	a := Actual{FDB: map[string][]FDBEntry{}}
	for _, n := range plumbed(d) {
		br, vx, mtu := bridgeName("ps", n.VNI), vxlanName("ps", n.VNI), networkMTU(n)
		a.Links = append(a.Links,
			Link{Name: br, Kind: KindBridge, MTU: mtu, Up: true},
			Link{Name: vx, Kind: KindVXLAN, Master: br, MTU: mtu, Up: true, VNI: n.VNI, Local: d.LocalVTEP,
				Port: VXLANPort, Underlay: d.UnderlayDev})
		for _, p := range n.Ports {
			a.Links = append(a.Links, Link{Name: p.Tap, Kind: KindTap, Master: br, MTU: mtu, Up: true})
		}
		for _, r := range n.Remotes {
			if r.Equal(d.LocalVTEP) {
				continue
			}
			a.FDB[vx] = append(a.FDB[vx], FDBEntry{MAC: zeroMAC, Dst: r})
		}
		for _, r := range n.MACs {
			a.FDB[vx] = append(a.FDB[vx], FDBEntry{MAC: r.MAC, Dst: r.VTEP})
		}
	}
	return a
}

// bigNetwork has 10 local ports and 990 remote ones on 10 remote hosts.
func bigNetwork() Desired {
	n := Network{ID: "big", VNI: 4242, MTU: 1450}
	for i := range 10 {
		n.Ports = append(n.Ports, port(i))
	}
	for h := 1; h <= 10; h++ {
		n.Remotes = append(n.Remotes, vtep(h))
	}
	for i := 10; i < 1000; i++ {
		n.MACs = append(n.MACs, RemoteMAC{MAC: mac(i), VTEP: vtep(1 + i%10)})
	}
	return Desired{LocalVTEP: local, Networks: []Network{n}}
}

func kinds(ops []Op) []string {
	var s []string
	for _, o := range ops {
		s = append(s, o.String())
	}
	return s
}

func TestDiff(t *testing.T) {
	one := Desired{LocalVTEP: local, Networks: []Network{{ID: "n1", VNI: 100, MTU: 1450,
		Ports:   []Port{port(1)},
		Remotes: []net.IP{vtep(2), local},
		MACs:    []RemoteMAC{{MAC: mac(2), VTEP: vtep(2)}}}}}
	tap := port(1).Tap

	stale := converged(one)
	stale.Links = append(stale.Links, Link{Name: "pstapdeadbeef0", Kind: KindTap, Master: "psbr100", MTU: 1450, Up: true},
		Link{Name: "psbr7", Kind: KindBridge, MTU: 1500, Up: true},
		Link{Name: "psvx7", Kind: KindVXLAN, Master: "psbr7", VNI: 7, MTU: 1500, Up: true},
		Link{Name: "pstap123", Kind: KindTap, Master: "psbr7", MTU: 1500, Up: true})

	fdbChanged := converged(one)
	fdbChanged.FDB["psvx100"] = []FDBEntry{{MAC: zeroMAC, Dst: vtep(3)}, {MAC: mac(2), Dst: vtep(3)}, {MAC: mac(9), Dst: vtep(2)}}

	badVX := converged(one)
	badVX.Links[1].Learning = true
	badVX.Links[2].MTU = 1500

	twoDsts := converged(one)
	twoDsts.FDB["psvx100"] = append(twoDsts.FDB["psvx100"], FDBEntry{MAC: mac(2), Dst: vtep(5)})

	lastGone := Desired{LocalVTEP: local, Networks: []Network{{ID: "n1", VNI: 100, Remotes: []net.IP{vtep(2)}}}}

	tests := []struct {
		name    string
		actual  Actual
		desired Desired
		want    []string
	}{
		{"create from empty", Actual{}, one, []string{
			"add-bridge psbr100 mtu 1450",
			`add-vxlan psvx100 vni 100 local 10.250.0.1 dev "" master psbr100 mtu 1450`,
			"add-tap " + tap + " master psbr100 mtu 1450",
			"fdb-append psvx100 00:00:00:00:00:00 dst 10.250.1.2",
			"fdb-set psvx100 52:54:00:00:00:02 dst 10.250.1.2",
		}},
		{"no-op when equal", converged(one), one, nil},
		{"remove stale", stale, one, []string{
			"del-link pstap123", "del-link pstapdeadbeef0", "del-link psvx7", "del-link psbr7",
		}},
		{"fdb add and remove", fdbChanged, one, []string{
			"fdb-del psvx100 00:00:00:00:00:00 dst 10.250.1.3",
			"fdb-del psvx100 52:54:00:00:00:09 dst 10.250.1.2",
			"fdb-append psvx100 00:00:00:00:00:00 dst 10.250.1.2",
			"fdb-set psvx100 52:54:00:00:00:02 dst 10.250.1.2",
		}},
		{"duplicate destination", twoDsts, one, []string{"fdb-del psvx100 52:54:00:00:00:02 dst 10.250.1.5"}},
		{"incompatible vxlan recreated, mtu fixed", badVX, one, []string{
			"del-link psvx100",
			`add-vxlan psvx100 vni 100 local 10.250.0.1 dev "" master psbr100 mtu 1450`,
			"set-mtu " + tap + " mtu 1450",
			"fdb-append psvx100 00:00:00:00:00:00 dst 10.250.1.2",
			"fdb-set psvx100 52:54:00:00:00:02 dst 10.250.1.2",
		}},
		{"last port gone", converged(one), lastGone, []string{"del-link " + tap, "del-link psvx100", "del-link psbr100"}},
		{"nothing wanted", converged(one), Desired{LocalVTEP: local}, []string{"del-link " + tap, "del-link psvx100", "del-link psbr100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := kinds(Diff(tt.actual, tt.desired, "ps")); !slices.Equal(got, tt.want) {
				t.Errorf("Diff(%s) =\n%q\nwant\n%q", tt.name, got, tt.want)
			}
		})
	}
}

func TestDiffBridgeRecreatedReattachesPorts(t *testing.T) {
	d := Desired{LocalVTEP: local, Networks: []Network{{VNI: 5, Ports: []Port{port(1)}}}}
	a := converged(d)
	a.Links[0].Kind = KindOther // psbr5 is not a bridge
	got := kinds(Diff(a, d, "ps"))
	want := []string{"del-link psbr5", "add-bridge psbr5 mtu 1450",
		"set-master psvx5 master psbr5", "set-master " + port(1).Tap + " master psbr5"}
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %q; want %q", got, want)
	}
}

func TestDiffOneChangeAmong1000IsO1(t *testing.T) {
	d := bigNetwork()
	a := converged(d)
	n := &d.Networks[0]
	tests := []struct {
		name   string
		change func()
		want   int
	}{
		{"remote port moved", func() { n.MACs[500].VTEP = vtep(7) }, 1},
		{"remote port replaced", func() { n.MACs[501].MAC = mac(5001) }, 2},
		{"local port added", func() { n.Ports = append(n.Ports, port(2000)) }, 1},
		{"local port removed", func() { n.Ports = n.Ports[1:] }, 1},
		{"remote host gone", func() { n.Remotes = n.Remotes[1:] }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saved := d
			saved.Networks = []Network{{ID: n.ID, VNI: n.VNI, MTU: n.MTU, Ports: slices.Clone(n.Ports),
				Remotes: slices.Clone(n.Remotes), MACs: slices.Clone(n.MACs)}}
			defer func() { d = saved; n = &d.Networks[0] }()
			tt.change()
			if ops := Diff(a, d, "ps"); len(ops) != tt.want {
				t.Errorf("Diff after %s = %d ops %q; want %d", tt.name, len(ops), kinds(ops), tt.want)
			}
		})
	}
}

func TestDiffIgnoresOthersAndLocalVTEP(t *testing.T) {
	d := Desired{LocalVTEP: local, Networks: []Network{{VNI: 9, Ports: []Port{port(1)},
		Remotes: []net.IP{local}, MACs: []RemoteMAC{{MAC: mac(3), VTEP: local}}}}}
	a := converged(Desired{LocalVTEP: local, Networks: []Network{{VNI: 9, Ports: []Port{port(1)}}}})
	a.Links = append(a.Links, Link{Name: "eth0", Kind: KindOther}, Link{Name: "docker0", Kind: KindBridge})
	if ops := Diff(a, d, "ps"); len(ops) != 0 {
		t.Errorf("Diff = %q; want none", kinds(ops))
	}
}

func TestValidate(t *testing.T) {
	ok := bigNetwork()
	if _, _, err := validate(ok, "ps"); err != nil {
		t.Fatalf("validate(big) = %v", err)
	}
	if _, _, err := validate(Desired{}, "ps"); err != nil {
		t.Errorf("validate(empty) = %v; nothing to plumb needs no VTEP", err)
	}
	pp := Port{ID: "p1", Tap: "pstap1", MAC: mac(1)}
	bad := []Desired{
		{Networks: []Network{{VNI: 1}}},
		{Providers: []Provider{{ID: "n", Ports: []Port{pp}}}},
		{Providers: []Provider{{ID: "n", Uplink: "eth0", VLAN: 4095}}},
		{Providers: []Provider{{ID: "n", Uplink: "pspv1"}}},
		{Providers: []Provider{{ID: "n", Uplink: "eth0", Ports: []Port{pp}}, {ID: "m", Uplink: "eth0", VLAN: 5, Ports: []Port{pp}}}},
		{Providers: []Provider{{ID: "n", Uplink: "eth0", Ports: []Port{{ID: "p1", Tap: "pstap1", MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}}}}},
		{LocalVTEP: local, Networks: []Network{{VNI: 1, Ports: []Port{pp}}}, Providers: []Provider{{ID: "n", Uplink: "eth0", Ports: []Port{pp}}}},
		{LocalVTEP: local, Networks: []Network{{VNI: 0}}},
		{LocalVTEP: local, Networks: []Network{{VNI: 1}, {VNI: 1}}},
		{LocalVTEP: local, Networks: []Network{{VNI: 1, Ports: []Port{{Tap: "tap0", MAC: mac(1)}}}}},
		{LocalVTEP: local, Networks: []Network{{VNI: 1, Ports: []Port{{Tap: "pstap1", MAC: mac(1), DHCP: true}}}}},
	}
	for i, d := range bad {
		if _, _, err := validate(d, "ps"); err == nil {
			t.Errorf("validate(bad[%d]) = nil; want an error", i)
		}
	}
	// A provider network in conflict with one before it (the same uplink
	// and VLAN twice) is left out alone: the VXLAN network and the first
	// provider network stay.
	vx := Network{ID: "vx", VNI: 7, Ports: []Port{{ID: "p9", Tap: "pstap9", MAC: mac(9)}}}
	for _, vid := range []int{0, 5} {
		conflict := Desired{LocalVTEP: local, Networks: []Network{vx},
			Providers: []Provider{{ID: "a", Uplink: "eth0", VLAN: vid}, {ID: "b", Uplink: "eth0", VLAN: vid}}}
		got, bad, err := validate(conflict, "ps")
		if err != nil || len(got.Networks) != 1 || len(got.Providers) != 1 || got.Providers[0].ID != "a" ||
			bad == nil || !slices.Equal(bad.IDs, []string{"b"}) {
			t.Errorf("VLAN %d twice: validate = %+v, %v, %v; want network b refused alone", vid, got.Providers, bad, err)
		}
	}
	// Two segments whose VLAN devices hash to one name: the second is
	// refused (a birthday search finds such a pair of uplinks quickly).
	names := map[string]string{}
	for i := 0; ; i++ {
		up := fmt.Sprintf("u%d", i)
		name := vlanName("ps", up, 100)
		if first, ok := names[name]; ok {
			conflict := Desired{Providers: []Provider{{ID: "a", Uplink: first, VLAN: 100}, {ID: "b", Uplink: up, VLAN: 100}}}
			got, bad, err := validate(conflict, "ps")
			if err != nil || len(got.Providers) != 1 || bad == nil || !slices.Equal(bad.IDs, []string{"b"}) {
				t.Errorf("VLAN device %s of %s and %s: validate = %+v, %v, %v; want b refused", name, first, up, got.Providers, bad, err)
			}
			break
		}
		names[name] = up
	}
	if got := TapName("0123456789ab-cdef"); got != "pstap0123456789" {
		t.Errorf("TapName = %q; want pstap0123456789", got)
	}
}

func TestNewAndClose(t *testing.T) {
	if _, err := New(Config{Prefix: "toolong"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New(prefix toolong) = %v; want ErrInvalid", err)
	}
	m, err := New(Config{}) // current namespace; nothing is changed
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := m.Apply(t.Context(), Desired{LocalVTEP: local}); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close = %v; want ErrClosed", err)
	}
}

// BenchmarkDiffOneChangeAt1000Ports: one remote port of 1,000 moves host.
func BenchmarkDiffOneChangeAt1000Ports(b *testing.B) {
	d := bigNetwork()
	a := converged(d)
	macs := d.Networks[0].MACs
	ops := 0
	for i := 0; b.Loop(); i++ {
		r := &macs[i%len(macs)]
		was := r.VTEP
		r.VTEP = vtep(99)
		ops += len(Diff(a, d, "ps"))
		r.VTEP = was
	}
	b.ReportMetric(float64(ops)/float64(b.N), "ops/reconcile")
}
