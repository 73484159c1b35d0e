package statedb

import (
	"errors"
	"strings"
	"testing"
)

// routedStore has an external flat network ext (203.0.113.0/24, pool
// .100-.199), tenant networks n1 (10.0.1.0/24) and n2 (10.0.2.0/24), a
// router r1 with a gateway on ext and an interface on s1, and a server
// port vm1 on n1 bound to h1.
func routedStore(t *testing.T) *netStore {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateNetwork, Network{ID: "ext", ProjectID: "p1", External: true, NetworkType: NetTypeFlat, PhysicalNetwork: "physnet1"})
	ns.must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: "es", NetworkID: "ext", ProjectID: "p1", CIDR: "203.0.113.0/24",
		GatewayIP: "203.0.113.1", AllocationPools: []IPRange{{Start: "203.0.113.100", End: "203.0.113.199"}}}})
	ns.net("n1")
	ns.subnet("s1", "n1", "10.0.1.0/24")
	ns.net("n2")
	ns.subnet("s2", "n2", "10.0.2.0/24")
	ns.must(CmdCreateRouter, CreateRouterCmd{Router: Router{ID: "r1", ProjectID: "p1", AdminStateUp: true},
		Gateway: &GatewayReq{NetworkID: "ext", PortID: "gw1"}})
	ns.must(CmdAddRouterInterface, RouterInterfaceCmd{RouterID: "r1", SubnetID: "s1", NewPortID: "ri1"})
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "vm1", NetworkID: "n1", ProjectID: "p1", DeviceID: "i1", DeviceOwner: OwnerCompute}, HostID: "h1"})
	return ns
}

func wantRouteErr(t *testing.T, what string, err error, kind error, prefix string) {
	t.Helper()
	if !errors.Is(err, kind) || !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("%s = %v; want %v starting %q", what, err, kind, prefix)
	}
}

func TestProviderNetworks(t *testing.T) {
	ns := routedStore(t)
	if n := ns.network("ext"); n.VNI != 0 || n.NetworkType != NetTypeFlat || n.PhysicalNetwork != "physnet1" {
		t.Errorf("flat network = %+v; want no VNI, flat on physnet1", n)
	}
	wantRouteErr(t, "second flat on physnet1", ns.do(CmdCreateNetwork, Network{ID: "x", ProjectID: "p1", NetworkType: NetTypeFlat, PhysicalNetwork: "physnet1"}),
		ErrConflict, "Unable to create the flat network")
	ns.must(CmdCreateNetwork, Network{ID: "v10", ProjectID: "p1", NetworkType: NetTypeVLAN, PhysicalNetwork: "physnet1", VLAN: 10})
	wantRouteErr(t, "VLAN 10 again", ns.do(CmdCreateNetwork, Network{ID: "y", ProjectID: "p1", NetworkType: NetTypeVLAN, PhysicalNetwork: "physnet1", VLAN: 10}),
		ErrConflict, "Unable to create the network. The VLAN 10")
	wantRouteErr(t, "VLAN 5000", ns.do(CmdCreateNetwork, Network{ID: "y", ProjectID: "p1", NetworkType: NetTypeVLAN, PhysicalNetwork: "physnet1", VLAN: 5000}),
		ErrInvalid, "Invalid input")
	wantRouteErr(t, "flat without physnet", ns.do(CmdCreateNetwork, Network{ID: "y", ProjectID: "p1", NetworkType: NetTypeFlat}),
		ErrInvalid, "Invalid input")
	wantRouteErr(t, "gre", ns.do(CmdCreateNetwork, Network{ID: "y", ProjectID: "p1", NetworkType: "gre"}), ErrInvalid, "Invalid input")
	ns.must(CmdCreateNetwork, Network{ID: "vx", ProjectID: "p1", NetworkType: NetTypeVXLAN})
	if n := ns.network("vx"); n.VNI == 0 || n.NetworkType != "" {
		t.Errorf("explicit vxlan network = %+v; want a VNI", n)
	}
}

func TestRouterGatewayAndInterfaces(t *testing.T) {
	ns := routedStore(t)
	sn := ns.s.Snapshot()
	r, _ := sn.Router("r1")
	if r.GatewayNetworkID != "ext" || !r.EnableSNAT || r.GatewayPortID != "gw1" {
		t.Fatalf("router = %+v; want gateway on ext with SNAT", r)
	}
	if gw := ns.port("gw1"); gw.DeviceOwner != OwnerRouterGateway || ips(gw)[0] != "203.0.113.100" {
		t.Errorf("gateway port = %+v; want first pool address", gw)
	}
	if ri := ns.port("ri1"); ri.DeviceOwner != OwnerRouterInterface || ips(ri)[0] != "10.0.1.1" || ri.Status != PortActive {
		t.Errorf("interface port = %+v; want the subnet gateway, ACTIVE", ri)
	}
	if rr, p, ok := sn.RouterOfSubnet("s1"); !ok || rr.ID != "r1" || p.ID != "ri1" {
		t.Errorf("RouterOfSubnet(s1) = %v %v %v", rr, p, ok)
	}

	ns.must(CmdCreateRouter, CreateRouterCmd{Router: Router{ID: "r2", ProjectID: "p1"}})
	wantRouteErr(t, "gateway on a tenant network", ns.do(CmdUpdateRouter, UpdateRouterCmd{ID: "r2", Gateway: &GatewayReq{NetworkID: "n2", PortID: "gw2"}}),
		ErrInvalid, "Bad router request: Network n2 is not an external network.")
	if _, ok := ns.s.Snapshot().Port("gw2"); ok {
		t.Error("a failed gateway set left its port behind")
	}
	wantRouteErr(t, "interface on a subnet routed by r1", ns.do(CmdAddRouterInterface, RouterInterfaceCmd{RouterID: "r2", SubnetID: "s1", NewPortID: "x"}),
		ErrConflict, "IP address 10.0.1.1 already allocated")
	wantRouteErr(t, "second interface of r1 on s1", ns.do(CmdAddRouterInterface, RouterInterfaceCmd{RouterID: "r1", SubnetID: "s1", NewPortID: "x"}),
		ErrInvalid, "Bad router request: Router already has a port on subnet s1.")
	wantRouteErr(t, "interface on the external subnet", ns.do(CmdAddRouterInterface, RouterInterfaceCmd{RouterID: "r2", SubnetID: "es", NewPortID: "x"}),
		ErrInvalid, "Bad router request")
	wantRouteErr(t, "remove a missing interface", ns.do(CmdRemoveRouterInterface, RouterInterfaceCmd{RouterID: "r1", SubnetID: "s2"}),
		ErrNotFound, "Router r1 has no interface on subnet s2")
	wantRouteErr(t, "delete r1 with interfaces", ns.do(CmdDeleteRouter, DeleteCmd{ID: "r1"}), ErrConflict, "Router r1 still has ports")
	wantRouteErr(t, "delete the interface port directly", ns.do(CmdDeletePort, DeleteCmd{ID: "ri1"}), ErrConflict, "Port ri1 cannot be deleted directly")

	// Extra routes need a connected next hop.
	wantRouteErr(t, "route via an unconnected hop", ns.do(CmdUpdateRouter, UpdateRouterCmd{ID: "r1", Routes: &[]HostRoute{{Destination: "192.168.0.0/16", NextHop: "10.0.2.5"}}}),
		ErrInvalid, "Invalid format for routes")
	ns.must(CmdUpdateRouter, UpdateRouterCmd{ID: "r1", Routes: &[]HostRoute{{Destination: "192.168.0.0/16", NextHop: "10.0.1.5"}}})
	wantRouteErr(t, "remove the interface a route needs", ns.do(CmdRemoveRouterInterface, RouterInterfaceCmd{RouterID: "r1", SubnetID: "s1"}),
		ErrConflict, "Router interface for subnet s1")
	ns.must(CmdUpdateRouter, UpdateRouterCmd{ID: "r1", Routes: &[]HostRoute{}})

	// Port interface: an unused port on s2 becomes the interface.
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "pp", NetworkID: "n2", ProjectID: "p1"}})
	ns.must(CmdAddRouterInterface, RouterInterfaceCmd{RouterID: "r1", PortID: "pp"})
	if p := ns.port("pp"); p.DeviceID != "r1" || p.DeviceOwner != OwnerRouterInterface {
		t.Errorf("port interface = %+v", p)
	}
	ns.must(CmdRemoveRouterInterface, RouterInterfaceCmd{RouterID: "r1", PortID: "pp"})
	ns.must(CmdRemoveRouterInterface, RouterInterfaceCmd{RouterID: "r1", SubnetID: "s1"})
	ns.must(CmdUpdateRouter, UpdateRouterCmd{ID: "r1", ClearGateway: true})
	if _, ok := ns.s.Snapshot().Port("gw1"); ok {
		t.Error("clearing the gateway kept its port")
	}
	ns.must(CmdDeleteRouter, DeleteCmd{ID: "r1"})
	ns.must(CmdDeleteNetwork, DeleteCmd{ID: "ext"}) // nothing holds it any more
}

func TestFloatingIPs(t *testing.T) {
	ns := routedStore(t)
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "vm2", NetworkID: "n2", ProjectID: "p1", DeviceID: "i2"}, HostID: "h1"})
	fip := func(id, port, addr string) error {
		return ns.do(CmdCreateFloatingIP, CreateFloatingIPCmd{FloatingIP{ID: id, ProjectID: "p1", FloatingNetworkID: "ext",
			FloatingPortID: id + "-port", PortID: port, Address: addr}})
	}
	wantRouteErr(t, "floating IP for a port without a router path", fip("f0", "vm2", ""), ErrNotFound,
		"External network ext is not reachable from subnet s2.")
	wantRouteErr(t, "floating IP outside the pool", fip("f0", "", "203.0.113.5"), ErrInvalid, "Invalid input for floating_ip_address")
	wantRouteErr(t, "floating IP on a tenant network", ns.do(CmdCreateFloatingIP, CreateFloatingIPCmd{FloatingIP{ID: "f0", FloatingNetworkID: "n1", FloatingPortID: "x"}}),
		ErrInvalid, "Bad floatingip request")
	if sn := ns.s.Snapshot(); len(sn.FloatingIPs()) != 0 || len(sn.PortsOf("ext")) != 1 {
		t.Fatalf("failed creates left %d floating IPs, %d ext ports", len(sn.FloatingIPs()), len(sn.PortsOf("ext")))
	}
	if err := fip("f1", "vm1", ""); err != nil {
		t.Fatal(err)
	}
	f, _ := ns.s.Snapshot().FloatingIP("f1")
	if f.Address != "203.0.113.101" || f.FixedIP != "10.0.1.2" || f.RouterID != "r1" || f.Status != StatusDown {
		t.Errorf("floating ip = %+v; want .101 → 10.0.1.2 via r1, DOWN", f)
	}
	wantRouteErr(t, "second floating IP for the same fixed IP", fip("f2", "vm1", "203.0.113.150"), ErrConflict, "Cannot associate floating IP 203.0.113.150")
	if err := fip("f2", "", "203.0.113.150"); err != nil {
		t.Fatal(err)
	}
	wantRouteErr(t, "the same address twice", fip("f3", "", "203.0.113.150"), ErrConflict, "IP address 203.0.113.150 already allocated")
	port := "vm1"
	wantRouteErr(t, "associate f2 with vm1's address", ns.do(CmdUpdateFloatingIP, UpdateFloatingIPCmd{ID: "f2", PortID: &port}), ErrConflict, "Cannot associate")

	// Status: only the agent of the port's host makes it ACTIVE.
	ns.must(CmdReportFloatingIP, ReportFloatingIPCmd{FloatingIPID: "f1", PortID: "vm1", HostID: "h2", Status: StatusActive})
	if f, _ := ns.s.Snapshot().FloatingIP("f1"); f.Status != StatusDown {
		t.Errorf("a report from another host changed the status to %s", f.Status)
	}
	ns.must(CmdReportFloatingIP, ReportFloatingIPCmd{FloatingIPID: "f1", PortID: "vm1", HostID: "h1", Status: StatusActive})
	if f, _ := ns.s.Snapshot().FloatingIP("f1"); f.Status != StatusActive || f.HostID != "h1" {
		t.Errorf("after the host's report: %+v", f)
	}

	// The port moves: the old host's withdrawal clears the status.
	h2 := "h2"
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "vm1", HostID: &h2})
	ns.must(CmdReportFloatingIP, ReportFloatingIPCmd{FloatingIPID: "f1", PortID: "vm1", HostID: "h2", Status: StatusDown})
	if f, _ := ns.s.Snapshot().FloatingIP("f1"); f.Status != StatusActive || f.HostID != "h1" {
		t.Errorf("a DOWN from the new host changed the record: %+v", f)
	}
	ns.must(CmdReportFloatingIP, ReportFloatingIPCmd{FloatingIPID: "f1", PortID: "vm1", HostID: "h1", Status: StatusDown})
	if f, _ := ns.s.Snapshot().FloatingIP("f1"); f.Status != StatusDown || f.HostID != "" {
		t.Errorf("after the old host withdrew: %+v", f)
	}

	wantRouteErr(t, "remove the interface a floating IP needs", ns.do(CmdRemoveRouterInterface, RouterInterfaceCmd{RouterID: "r1", SubnetID: "s1"}),
		ErrConflict, "Router interface for subnet s1 on router r1 cannot be deleted")
	wantRouteErr(t, "clear the gateway a floating IP needs", ns.do(CmdUpdateRouter, UpdateRouterCmd{ID: "r1", ClearGateway: true}),
		ErrConflict, "Gateway cannot be updated for router r1")
	wantRouteErr(t, "delete the floating IP port directly", ns.do(CmdDeletePort, DeleteCmd{ID: "f1-port"}), ErrConflict, "Port f1-port cannot be deleted directly")

	// Deleting the server's port disassociates.
	ns.must(CmdDeletePort, DeleteCmd{ID: "vm1"})
	if f, _ := ns.s.Snapshot().FloatingIP("f1"); f.PortID != "" || f.RouterID != "" || f.Status != StatusDown {
		t.Errorf("after port delete: %+v; want disassociated, DOWN", f)
	}
	ns.must(CmdDeleteFloatingIP, DeleteCmd{ID: "f1"})
	if _, ok := ns.s.Snapshot().Port("f1-port"); ok {
		t.Error("floating ip delete kept its port")
	}
}

func TestHostNetworks(t *testing.T) {
	ns := routedStore(t)
	ns.must(CmdSetHostNetworks, HostNetworks{ID: "h1", Physnets: map[string]string{"physnet1": "eth0"}})
	sn := ns.s.Snapshot()
	if !sn.HostHasPhysnet("h1", "physnet1") || sn.HostHasPhysnet("h1", "physnet2") || sn.HostHasPhysnet("h2", "physnet1") {
		t.Error("HostHasPhysnet disagrees with the reported mapping")
	}
	wantRouteErr(t, "unknown host", ns.do(CmdSetHostNetworks, HostNetworks{ID: "h9"}), ErrNotFound, "Host h9")
	wantRouteErr(t, "bad interface", ns.do(CmdSetHostNetworks, HostNetworks{ID: "h1", Physnets: map[string]string{"p": "a/b"}}), ErrInvalid, "invalid physical")
}
