package agent

import (
	"fmt"
	"net"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// routedState: router r1 with interfaces on n1 (10.0.1.0/24) and n2
// (10.0.2.0/24) and a gateway on the flat external network ext
// (physnet1); vm1 on h1 (n1) with floating IP 203.0.113.100, vm3 on h2
// (n2); n3 has a port on h1 but no router.
func routedState(t *testing.T) *statedb.Snapshot {
	port := func(id, net, host, owner, mac, sub, ip string) *statedb.Port {
		return &statedb.Port{ID: id, NetworkID: net, HostID: host, DeviceID: "d-" + id, DeviceOwner: owner, MAC: mac,
			FixedIPs: []statedb.FixedIP{{SubnetID: sub, IP: ip}}}
	}
	ri := port("ri1", "n1", "", statedb.OwnerRouterInterface, "fa:16:3e:00:01:01", "s1", "10.0.1.1")
	ri.DeviceID = "r1"
	ri2 := port("ri2", "n2", "", statedb.OwnerRouterInterface, "fa:16:3e:00:02:01", "s2", "10.0.2.1")
	ri2.DeviceID = "r1"
	return snapshotOf(t, map[string][]any{
		"members": {&statedb.Member{ID: "h1", APIAddr: "192.0.2.1:8470", RaftAddr: "192.0.2.1:8471", GossipAddr: "192.0.2.1:8472"},
			&statedb.Member{ID: "h2", APIAddr: "192.0.2.2:8470"}},
		"networks": {&statedb.Network{ID: "n1", VNI: 1001, MTU: 1450}, &statedb.Network{ID: "n2", VNI: 1002, MTU: 1450},
			&statedb.Network{ID: "n3", VNI: 1003, MTU: 1450},
			&statedb.Network{ID: "ext", External: true, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"}},
		"subnets": {&statedb.Subnet{ID: "s1", NetworkID: "n1", CIDR: "10.0.1.0/24", IPVersion: 4},
			&statedb.Subnet{ID: "s2", NetworkID: "n2", CIDR: "10.0.2.0/24", IPVersion: 4},
			&statedb.Subnet{ID: "s3", NetworkID: "n3", CIDR: "10.0.3.0/24", IPVersion: 4}},
		"ports": {ri, ri2,
			port("vm1", "n1", "h1", statedb.OwnerCompute, "fa:16:3e:00:01:05", "s1", "10.0.1.5"),
			port("vm3", "n2", "h2", statedb.OwnerCompute, "fa:16:3e:00:02:05", "s2", "10.0.2.5"),
			port("vm9", "n3", "h1", statedb.OwnerCompute, "fa:16:3e:00:03:05", "s3", "10.0.3.5")},
		"routers": {&statedb.Router{ID: "r1", GatewayNetworkID: "ext", EnableSNAT: true,
			Routes: []statedb.HostRoute{{Destination: "192.168.0.0/16", NextHop: "10.0.1.9"}}}},
		"floatingips": {&statedb.FloatingIP{ID: "f1", FloatingNetworkID: "ext", Address: "203.0.113.100", PortID: "vm1",
			FixedIP: "10.0.1.5", RouterID: "r1"}},
	})
}

func TestDesiredRouting(t *testing.T) {
	sn := routedState(t)
	d, problems := desiredRouting(sn, "h1", map[string]string{"physnet1": "eth0"}, 8470)
	if len(problems) != 0 {
		t.Errorf("problems: %v", problems)
	}
	if len(d.Routers) != 1 {
		t.Fatalf("routers on h1 = %+v; want r1", d.Routers)
	}
	r := d.Routers[0]
	if len(r.Interfaces) != 2 || r.Interfaces[0].Address.String() != "10.0.1.1/24" || r.Interfaces[1].VNI != 1002 {
		t.Errorf("interfaces = %+v", r.Interfaces)
	}
	if nb := r.Interfaces[1].Neighbors; len(nb) != 1 || nb[0].IP.String() != "10.0.2.5" {
		t.Errorf("neighbours on n2 = %+v; want vm3 on h2", nb)
	}
	if r.Gateway == nil || r.Gateway.Iface != "eth0" || !r.Gateway.SNAT {
		t.Errorf("gateway = %+v", r.Gateway)
	}
	if len(r.FloatingIPs) != 1 || r.FloatingIPs[0].Addr.String() != "203.0.113.100" || len(r.Routes) != 1 {
		t.Errorf("floating IPs %+v, routes %+v", r.FloatingIPs, r.Routes)
	}
	if fmt.Sprint(d.AllowTCP) != "[8470]" || fmt.Sprint(d.Protected) != "[192.0.2.1/32 192.0.2.2/32]" || fmt.Sprint(d.Externals) != "[eth0]" {
		t.Errorf("guard: allow %v protected %v externals %v", d.AllowTCP, d.Protected, d.Externals)
	}

	// h2 runs r1 too (vm3 on n2) but serves no floating IP, and without
	// the physnet mapping gets no gateway.
	d2, problems := desiredRouting(sn, "h2", nil, 8470)
	if len(d2.Routers) != 1 || d2.Routers[0].Gateway != nil || len(d2.Routers[0].FloatingIPs) != 0 || len(problems) != 1 {
		t.Errorf("h2: %+v, problems %v; want r1 without gateway and one problem", d2.Routers, problems)
	}
	// A host with no ports behind r1 runs nothing.
	if d3, _ := desiredRouting(sn, "h3", nil, 0); len(d3.Routers) != 0 {
		t.Errorf("h3 runs %+v", d3.Routers)
	}
	// h2 must plumb n1 for east-west routing; n3 has no router.
	if got := routedNetworks(sn, "h2"); !got["n1"] || !got["n2"] || got["n3"] {
		t.Errorf("routed networks on h2 = %v", got)
	}
	nd, _ := desiredNetworks(sn, "h2", nil, func(string) net.IP { return net.IPv4(192, 0, 2, 2) }, func(id string) string { return "tap" + id })
	var vnis []uint32
	for _, s := range nd.Networks {
		vnis = append(vnis, s.VNI)
		if s.VNI == 1001 && (!s.Routed || len(s.Ports) != 0) {
			t.Errorf("n1 on h2 = %+v; want routed with no ports", s)
		}
	}
	if fmt.Sprint(vnis) != "[1001 1002]" {
		t.Errorf("plumbed on h2: %v", vnis)
	}
}
