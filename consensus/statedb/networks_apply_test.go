package statedb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// netStore is a store plus an index counter for network apply tests.
type netStore struct {
	t   *testing.T
	s   *Store
	idx uint64
}

func newNetStore(t *testing.T, mtu int) *netStore {
	ns := &netStore{t: t, s: NewStore()}
	ns.must(CmdBootstrap, BootstrapCmd{
		Config:     ClusterConfig{ClusterID: "c", Settings: Settings{MTU: mtu}},
		Member:     Member{ID: "h1", Name: "host1"},
		Project:    Project{ID: "p1", Name: "admin"},
		Admin:      User{ID: "u1", Name: "admin"},
		Roles:      []Role{{ID: "r1", Name: "admin"}},
		Assignment: Assignment{ProjectID: "p1", UserID: "u1", RoleID: "r1"},
		SigningKey: SigningKey{ID: "k1", Secret: []byte("k")},
	})
	return ns
}

func (ns *netStore) do(typ CmdType, payload any) error {
	ns.t.Helper()
	ns.idx++
	return apply(ns.t, ns.s, ns.idx, typ, fmt.Sprintf("req-%d", ns.idx), payload).Err
}

func (ns *netStore) must(typ CmdType, payload any) {
	ns.t.Helper()
	if err := ns.do(typ, payload); err != nil {
		ns.t.Fatalf("apply %d %+v: %v", typ, payload, err)
	}
}

func (ns *netStore) network(id string) *Network {
	ns.t.Helper()
	n, ok := ns.s.Snapshot().Network(id)
	if !ok {
		ns.t.Fatalf("network %s missing", id)
	}
	return n
}

func (ns *netStore) port(id string) *Port {
	ns.t.Helper()
	p, ok := ns.s.Snapshot().Port(id)
	if !ok {
		ns.t.Fatalf("port %s missing", id)
	}
	return p
}

func (ns *netStore) net(id string) {
	ns.must(CmdCreateNetwork, Network{ID: id, Name: id, ProjectID: "p1"})
}

func (ns *netStore) subnet(id, netID, cidr string) {
	ns.must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: id, NetworkID: netID, ProjectID: "p1", CIDR: cidr, EnableDHCP: true},
		GatewayAuto: true, PoolsAuto: true})
}

func (ns *netStore) newPort(id, netID string, wants ...FixedIPWant) error {
	return ns.do(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: id, NetworkID: netID, ProjectID: "p1", FixedIPs: wants}, AdminStateUp: true})
}

func ips(p *Port) []string {
	var out []string
	for _, f := range p.FixedIPs {
		out = append(out, f.IP)
	}
	return out
}

func TestNetworkVNIAndMTU(t *testing.T) {
	ns := newNetStore(t, 1400)
	for i := range 3 {
		ns.net(fmt.Sprintf("n%d", i))
	}
	for i, want := range []uint32{1000, 1001, 1002} {
		if got := ns.network(fmt.Sprintf("n%d", i)).VNI; got != want {
			t.Errorf("VNI(n%d) = %d; want %d", i, got, want)
		}
	}
	if n := ns.network("n0"); n.MTU != 1400 || n.Revision != 1 || n.Tags == nil {
		t.Errorf("network n0 = %+v; want MTU 1400 from settings, revision 1, tags []", n)
	}
	// Lowest free VNI is reused after a delete.
	ns.must(CmdDeleteNetwork, DeleteCmd{ID: "n1"})
	ns.net("n3")
	if got := ns.network("n3").VNI; got != 1001 {
		t.Errorf("VNI after delete = %d; want 1001", got)
	}
	// Requested VNIs.
	if err := ns.do(CmdCreateNetwork, Network{ID: "x", ProjectID: "p1", VNI: 1002}); !errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), "Unable to create the network. The VNI") {
		t.Errorf("create with VNI in use = %v; want conflict", err)
	}
	if err := ns.do(CmdCreateNetwork, Network{ID: "x", ProjectID: "p1", VNI: 1 << 24}); !errors.Is(err, ErrInvalid) {
		t.Errorf("create with VNI 2^24 = %v; want invalid", err)
	}
	ns.must(CmdCreateNetwork, Network{ID: "n5", ProjectID: "p1", VNI: 5, MTU: 9000})
	if n := ns.network("n5"); n.VNI != 5 || n.MTU != 9000 {
		t.Errorf("requested VNI/MTU = %d/%d; want 5/9000", n.VNI, n.MTU)
	}
	ns.net("n6")
	if got := ns.network("n6").VNI; got != 1003 {
		t.Errorf("VNI next = %d; want 1003 (requested ones below 1000 do not move the range)", got)
	}
	if err := ns.do(CmdCreateNetwork, Network{ID: "n0", ProjectID: "p1"}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate id = %v; want conflict", err)
	}
	if err := ns.do(CmdCreateNetwork, Network{ID: "m", ProjectID: "p1", MTU: 20}); !errors.Is(err, ErrInvalid) {
		t.Errorf("mtu 20 = %v; want invalid", err)
	}
	// Update: VNI move checked, revision bumped.
	vni := uint32(1000)
	if err := ns.do(CmdUpdateNetwork, UpdateNetworkCmd{ID: "n5", VNI: &vni}); !errors.Is(err, ErrConflict) {
		t.Errorf("update to a used VNI = %v; want conflict", err)
	}
	name := "renamed"
	ns.must(CmdUpdateNetwork, UpdateNetworkCmd{ID: "n5", Name: &name})
	if n := ns.network("n5"); n.Name != "renamed" || n.Revision != 2 || n.VNI != 5 {
		t.Errorf("after update = %+v", n)
	}
	// Default MTU without settings.
	ns2 := newNetStore(t, 0)
	ns2.net("a")
	if got := ns2.network("a").MTU; got != DefaultMTU {
		t.Errorf("MTU without settings = %d; want %d", got, DefaultMTU)
	}
}

func TestSubnetApply(t *testing.T) {
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.subnet("s1", "n1", "10.0.0.9/24")
	s, _ := ns.s.Snapshot().Subnet("s1")
	if s.CIDR != "10.0.0.0/24" || s.GatewayIP != "10.0.0.1" || s.IPVersion != 4 || len(s.AllocationPools) != 1 ||
		s.AllocationPools[0] != (IPRange{"10.0.0.2", "10.0.0.254"}) || s.DNSNameservers == nil || s.HostRoutes == nil {
		t.Fatalf("subnet = %+v", s)
	}
	if n := ns.network("n1"); n.Revision != 2 {
		t.Errorf("network revision after subnet create = %d; want 2", n.Revision)
	}
	tests := []struct {
		name string
		cmd  CreateSubnetCmd
		want error
	}{
		{"overlap", CreateSubnetCmd{Subnet: Subnet{ID: "x", NetworkID: "n1", CIDR: "10.0.0.128/25"}, GatewayAuto: true, PoolsAuto: true}, ErrInvalid},
		{"no network", CreateSubnetCmd{Subnet: Subnet{ID: "x", NetworkID: "nope", CIDR: "10.1.0.0/24"}}, ErrNotFound},
		{"duplicate id", CreateSubnetCmd{Subnet: Subnet{ID: "s1", NetworkID: "n1", CIDR: "10.1.0.0/24"}}, ErrConflict},
		{"bad cidr", CreateSubnetCmd{Subnet: Subnet{ID: "x", NetworkID: "n1", CIDR: "10.1.0.0/99"}}, ErrInvalid},
	}
	for _, tt := range tests {
		if err := ns.do(CmdCreateSubnet, tt.cmd); !errors.Is(err, tt.want) {
			t.Errorf("%s: create subnet = %v; want %v", tt.name, err, tt.want)
		}
	}
	// Overlapping CIDRs on different networks are fine.
	ns.net("n2")
	ns.subnet("s2", "n2", "10.0.0.0/24")
	// Update: pools and gateway are checked together.
	gw := "10.0.0.200"
	if err := ns.do(CmdUpdateSubnet, UpdateSubnetCmd{ID: "s1", GatewayIP: &gw}); !errors.Is(err, ErrConflict) {
		t.Errorf("update gateway into the pool = %v; want conflict", err)
	}
	pools := []IPRange{{"10.0.0.10", "10.0.0.19"}}
	ns.must(CmdUpdateSubnet, UpdateSubnetCmd{ID: "s1", GatewayIP: &gw, AllocationPools: &pools})
	s, _ = ns.s.Snapshot().Subnet("s1")
	if s.GatewayIP != gw || len(s.AllocationPools) != 1 || s.Revision != 2 {
		t.Errorf("updated subnet = %+v", s)
	}
	// Delete is refused while a port holds an address.
	if err := ns.newPort("p1", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := ns.do(CmdDeleteSubnet, DeleteCmd{ID: "s1"}); !errors.Is(err, ErrConflict) {
		t.Errorf("delete subnet in use = %v; want conflict", err)
	}
	ns.must(CmdDeletePort, DeleteCmd{ID: "p1"})
	ns.must(CmdDeleteSubnet, DeleteCmd{ID: "s1"})
	if n := ns.network("n1"); n.Revision != 3 {
		t.Errorf("network revision after subnet delete = %d; want 3", n.Revision)
	}
}

var macRE = regexp.MustCompile(`^fa:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$`)

func TestPortIPAM(t *testing.T) {
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.subnet("s1", "n1", "10.0.0.0/29") // hosts .1-.6, gateway .1, pool .2-.6
	for i := range 5 {
		if err := ns.newPort(fmt.Sprintf("p%d", i), "n1"); err != nil {
			t.Fatalf("port %d: %v", i, err)
		}
	}
	for i := range 5 {
		p := ns.port(fmt.Sprintf("p%d", i))
		want := fmt.Sprintf("10.0.0.%d", i+2)
		if got := ips(p); len(got) != 1 || got[0] != want || p.FixedIPs[0].SubnetID != "s1" {
			t.Errorf("port p%d IPs = %v; want [%s]", i, got, want)
		}
		if !macRE.MatchString(p.MAC) || p.Status != PortDown || !p.AdminStateUp {
			t.Errorf("port p%d = %+v; want a fa:16:3e MAC, DOWN, admin up", i, p)
		}
	}
	// Exhausted.
	err := ns.newPort("px", "n1")
	if !errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), "No more IP addresses available") {
		t.Fatalf("port on a full subnet = %v; want IpAddressGenerationFailure conflict", err)
	}
	if _, ok := ns.s.Snapshot().Port("px"); ok {
		t.Fatal("failed port create left a record")
	}
	// Deleting a port record releases its address; the lowest is reused.
	ns.must(CmdDeletePort, DeleteCmd{ID: "p1"})
	if err := ns.newPort("p5", "n1"); err != nil {
		t.Fatal(err)
	}
	if got := ips(ns.port("p5")); got[0] != "10.0.0.3" {
		t.Errorf("after release got %v; want 10.0.0.3", got)
	}
	// Requested addresses.
	ns.net("n2")
	ns.subnet("s2", "n2", "192.168.5.0/24")
	tests := []struct {
		name  string
		wants []FixedIPWant
		want  error
		ip    string
	}{
		{"ip only", []FixedIPWant{{IP: "192.168.5.77"}}, nil, "192.168.5.77"},
		{"subnet and ip", []FixedIPWant{{SubnetID: "s2", IP: "192.168.5.250"}}, nil, "192.168.5.250"},
		{"subnet only", []FixedIPWant{{SubnetID: "s2"}}, nil, "192.168.5.2"},
		{"in use", []FixedIPWant{{IP: "192.168.5.77"}}, ErrConflict, ""},
		{"gateway", []FixedIPWant{{IP: "192.168.5.1"}}, ErrConflict, ""},
		{"outside cidr", []FixedIPWant{{SubnetID: "s2", IP: "10.0.0.3"}}, ErrInvalid, ""},
		{"in no subnet", []FixedIPWant{{IP: "172.16.0.3"}}, ErrInvalid, ""},
		{"subnet of another network", []FixedIPWant{{SubnetID: "s1"}}, ErrInvalid, ""},
		{"missing subnet", []FixedIPWant{{SubnetID: "nope"}}, ErrNotFound, ""},
		{"empty entry", []FixedIPWant{{}}, ErrInvalid, ""},
		{"same ip twice", []FixedIPWant{{IP: "192.168.5.90"}, {IP: "192.168.5.90"}}, ErrConflict, ""},
		{"broadcast", []FixedIPWant{{IP: "192.168.5.255"}}, ErrInvalid, ""},
	}
	for i, tt := range tests {
		id := fmt.Sprintf("q%d", i)
		err := ns.newPort(id, "n2", tt.wants...)
		if tt.want != nil {
			if !errors.Is(err, tt.want) {
				t.Errorf("%s: create port %v = %v; want %v", tt.name, tt.wants, err, tt.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: create port %v = %v", tt.name, tt.wants, err)
			continue
		}
		if got := ips(ns.port(id)); len(got) != 1 || got[0] != tt.ip {
			t.Errorf("%s: IPs = %v; want [%s]", tt.name, got, tt.ip)
		}
	}
	// The gateway is allowed for a router interface.
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "r1", NetworkID: "n2", DeviceID: "router1",
		DeviceOwner: OwnerRouterInterface, FixedIPs: []FixedIPWant{{SubnetID: "s2", IP: "192.168.5.1"}}}})
	// No addresses at all.
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "bare", NetworkID: "n2", NoFixedIPs: true}})
	if p := ns.port("bare"); len(p.FixedIPs) != 0 || p.FixedIPs == nil {
		t.Errorf("NoFixedIPs port = %+v; want an empty list", p.FixedIPs)
	}
	// A network without subnets gives ports without addresses.
	ns.net("n3")
	if err := ns.newPort("nosub", "n3"); err != nil || len(ns.port("nosub").FixedIPs) != 0 {
		t.Errorf("port on a network without subnets = %v", err)
	}
	if err := ns.newPort("y", "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("port on a missing network = %v; want not found", err)
	}
}

func TestPortIPv6AndDualStack(t *testing.T) {
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.subnet("s4", "n1", "10.0.0.0/24")
	ns.subnet("s6", "n1", "2001:db8:1::/64")
	if err := ns.newPort("p1", "n1"); err != nil {
		t.Fatal(err)
	}
	if got := ips(ns.port("p1")); len(got) != 2 || got[0] != "10.0.0.2" || got[1] != "2001:db8:1::2" {
		t.Errorf("dual stack IPs = %v; want [10.0.0.2 2001:db8:1::2]", got)
	}
	if err := ns.newPort("p2", "n1", FixedIPWant{SubnetID: "s6", IP: "2001:db8:1::abcd"}); err != nil {
		t.Fatal(err)
	}
	if got := ips(ns.port("p2")); len(got) != 1 || got[0] != "2001:db8:1::abcd" {
		t.Errorf("requested v6 = %v", got)
	}
	if err := ns.newPort("p3", "n1", FixedIPWant{IP: "2001:db8:1::abcd"}); !errors.Is(err, ErrConflict) {
		t.Errorf("v6 in use = %v; want conflict", err)
	}
	if err := ns.newPort("p4", "n1", FixedIPWant{SubnetID: "s6"}); err != nil || ips(ns.port("p4"))[0] != "2001:db8:1::3" {
		t.Errorf("next v6 = %v %v; want 2001:db8:1::3", err, ns.s.Snapshot().Ports())
	}
}

func TestPortMAC(t *testing.T) {
	a, b := newNetStore(t, 0), newNetStore(t, 0)
	for _, ns := range []*netStore{a, b} {
		ns.net("n1")
		if err := ns.newPort("same-id", "n1"); err != nil {
			t.Fatal(err)
		}
	}
	if ma, mb := a.port("same-id").MAC, b.port("same-id").MAC; ma != mb || !macRE.MatchString(ma) {
		t.Fatalf("MACs of the same port id on two replicas = %s, %s; want equal fa:16:3e:…", ma, mb)
	}
	// A port that asked for the MAC another port id would derive pushes that
	// one to the next probe.
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.net("n2")
	derived := a.port("same-id").MAC
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "squatter", NetworkID: "n2", MAC: strings.ToUpper(derived)}})
	if got := ns.port("squatter").MAC; got != derived {
		t.Fatalf("requested MAC stored as %s; want %s", got, derived)
	}
	if err := ns.newPort("same-id", "n1"); err != nil {
		t.Fatal(err)
	}
	if got := ns.port("same-id").MAC; got == derived || !macRE.MatchString(got) {
		t.Errorf("MAC after collision = %s; want a different fa:16:3e MAC than %s", got, derived)
	}
	tests := []struct {
		mac  string
		want error
	}{
		{derived, ErrConflict}, // in use on n2
		{"01:00:5e:00:00:01", ErrInvalid},
		{"00:00:00:00:00:00", ErrInvalid},
		{"zz", ErrInvalid},
	}
	for i, tt := range tests {
		err := ns.do(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: fmt.Sprint("m", i), NetworkID: "n2", MAC: tt.mac}})
		if !errors.Is(err, tt.want) {
			t.Errorf("create port with MAC %q = %v; want %v", tt.mac, err, tt.want)
		}
	}
}

func TestNetworkDeleteInUse(t *testing.T) {
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.subnet("s1", "n1", "10.0.0.0/24")
	if err := ns.newPort("free", "n1"); err != nil {
		t.Fatal(err)
	}
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "vm", NetworkID: "n1", DeviceID: "i1", DeviceOwner: OwnerCompute}})
	err := ns.do(CmdDeleteNetwork, DeleteCmd{ID: "n1"})
	if !errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), "Unable to complete operation on network") {
		t.Fatalf("delete network in use = %v; want NetworkInUse conflict", err)
	}
	ns.must(CmdDeletePort, DeleteCmd{ID: "vm"})
	ns.must(CmdDeleteNetwork, DeleteCmd{ID: "n1"})
	sn := ns.s.Snapshot()
	if len(sn.Ports()) != 0 || len(sn.Subnets()) != 0 || len(sn.Networks()) != 0 {
		t.Errorf("after delete: %d ports, %d subnets, %d networks; want none", len(sn.Ports()), len(sn.Subnets()), len(sn.Networks()))
	}
	if err := ns.do(CmdDeleteNetwork, DeleteCmd{ID: "n1"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete missing = %v; want not found", err)
	}
}

func TestPortUpdateAndReport(t *testing.T) {
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.subnet("s1", "n1", "10.0.0.0/24")
	if err := ns.newPort("p1", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := ns.newPort("p2", "n1"); err != nil {
		t.Fatal(err)
	}
	// Keep .2, add .50; .3 (p2) is refused.
	want := []FixedIPWant{{IP: "10.0.0.2"}, {SubnetID: "s1", IP: "10.0.0.50"}}
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "p1", FixedIPs: &want})
	if got := ips(ns.port("p1")); len(got) != 2 || got[0] != "10.0.0.2" || got[1] != "10.0.0.50" {
		t.Errorf("updated IPs = %v", got)
	}
	steal := []FixedIPWant{{IP: "10.0.0.3"}}
	if err := ns.do(CmdUpdatePort, UpdatePortCmd{ID: "p1", FixedIPs: &steal}); !errors.Is(err, ErrConflict) {
		t.Errorf("update to another port's IP = %v; want conflict", err)
	}
	// Binding and agent reports.
	host := "h1"
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "p1", HostID: &host})
	ns.must(CmdReportPort, ReportPortCmd{PortID: "p1", HostID: "h2", Status: PortActive})
	if st := ns.port("p1").Status; st != PortDown {
		t.Errorf("status after a report from another host = %s; want DOWN", st)
	}
	rev := ns.port("p1").Revision
	ns.must(CmdReportPort, ReportPortCmd{PortID: "p1", HostID: "h1", Status: PortActive})
	if p := ns.port("p1"); p.Status != PortActive || p.Revision != rev+1 {
		t.Errorf("after report from its host = %s rev %d; want ACTIVE rev %d", p.Status, p.Revision, rev+1)
	}
	ns.must(CmdReportPort, ReportPortCmd{PortID: "p2", HostID: "h1", Status: PortActive}) // unbound: ignored
	if st := ns.port("p2").Status; st != PortDown {
		t.Errorf("unbound port status = %s; want DOWN", st)
	}
	ns.must(CmdReportPort, ReportPortCmd{PortID: "gone", HostID: "h1", Status: PortActive})
	if err := ns.do(CmdReportPort, ReportPortCmd{PortID: "p1", HostID: "h1", Status: "GREEN"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad status = %v; want invalid", err)
	}
	// Rebinding resets the status until the new host reports.
	other := "h2"
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "p1", HostID: &other})
	if st := ns.port("p1").Status; st != PortDown {
		t.Errorf("status after rebinding = %s; want DOWN", st)
	}
}

func TestPortHelpersForCompute(t *testing.T) {
	ns := newNetStore(t, 0)
	ns.net("n1")
	ns.subnet("s1", "n1", "10.0.0.0/24")
	// Server create allocates inside its own command.
	txn := &Txn{txn: ns.s.db.Txn(true), Index: 100}
	p, err := createPort(txn, t0, PortRequest{ID: "vp", NetworkID: "n1", ProjectID: "p1", DeviceID: "inst", DeviceOwner: OwnerCompute})
	if err != nil || ips(p)[0] != "10.0.0.2" {
		t.Fatalf("createPort = %+v, %v", p, err)
	}
	if err := bindPorts(txn, t0, "inst", "h1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := txn.read().Port("vp"); got.HostID != "h1" {
		t.Errorf("bindPorts: HostID = %q; want h1", got.HostID)
	}
	if err := deletePortsOfDevice(txn, "inst"); err != nil {
		t.Fatal(err)
	}
	if _, ok := txn.read().Port("vp"); ok {
		t.Error("deletePortsOfDevice left the port")
	}
	txn.txn.Commit()
	if err := ns.newPort("again", "n1"); err != nil || ips(ns.port("again"))[0] != "10.0.0.2" {
		t.Errorf("after device delete the address is free again: %v %v", err, ns.s.Snapshot().Ports())
	}
}

// TestNetworkApplyDeterministic replays one command log on two stores and
// compares their dumps byte for byte.
func TestNetworkApplyDeterministic(t *testing.T) {
	dump := func() []byte {
		ns := newNetStore(t, 0)
		for i := range 4 {
			ns.net(fmt.Sprintf("n%d", i))
			ns.subnet(fmt.Sprintf("s%d", i), fmt.Sprintf("n%d", i), "10.0.0.0/26")
		}
		for i := range 40 {
			_ = ns.newPort(fmt.Sprintf("p%d", i), fmt.Sprintf("n%d", i%4))
			if i%7 == 0 {
				_ = ns.do(CmdDeletePort, DeleteCmd{ID: fmt.Sprintf("p%d", i/2)})
			}
		}
		var buf bytes.Buffer
		if err := ns.s.Snapshot().Dump(json.NewEncoder(&buf)); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if a, b := dump(), dump(); !bytes.Equal(a, b) {
		t.Fatal("two replicas applying the same log differ")
	}
}
