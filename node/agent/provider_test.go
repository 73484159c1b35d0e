package agent

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestAgentDesiredProviders: ports on flat and VLAN provider networks are
// plumbed on the interface their physical network is mapped to, with
// their DHCP lease when the subnet has DHCP; a host needs no VTEP for
// them; a port on an unmapped physical network and the network service's
// own ports get no tap.
func TestAgentDesiredProviders(t *testing.T) {
	sn := snapshotOf(t, map[string][]any{
		"networks": {
			&statedb.Network{ID: "flat", MTU: 1500, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"},
			&statedb.Network{ID: "v100", MTU: 1500, NetworkType: statedb.NetTypeVLAN, PhysicalNetwork: "physnet1", VLAN: 100},
			&statedb.Network{ID: "far", MTU: 1500, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet2"},
		},
		"subnets": {
			&statedb.Subnet{ID: "fs", NetworkID: "flat", IPVersion: 4, CIDR: "198.51.100.0/24", GatewayIP: "198.51.100.1", EnableDHCP: true},
			&statedb.Subnet{ID: "vs", NetworkID: "v100", IPVersion: 4, CIDR: "10.100.0.0/24", EnableDHCP: false},
		},
		"ports": {
			&statedb.Port{ID: "pf", NetworkID: "flat", MAC: "fa:16:3e:00:00:01", HostID: "a", DeviceOwner: statedb.OwnerCompute, PortSecurityEnabled: true,
				FixedIPs:            []statedb.FixedIP{{SubnetID: "fs", IP: "198.51.100.50"}},
				AllowedAddressPairs: []statedb.AddressPair{{IP: "198.51.100.64/28"}, {IP: "2001:db8::7", MAC: "fa:16:3e:00:00:aa"}}},
			&statedb.Port{ID: "pv", NetworkID: "v100", MAC: "fa:16:3e:00:00:02", HostID: "a", FixedIPs: []statedb.FixedIP{{SubnetID: "vs", IP: "10.100.0.50"}}},
			&statedb.Port{ID: "pfar", NetworkID: "far", MAC: "fa:16:3e:00:00:03", HostID: "a"},
			&statedb.Port{ID: "fip", NetworkID: "flat", MAC: "fa:16:3e:00:00:04", HostID: "a", DeviceOwner: statedb.OwnerFloatingIP,
				FixedIPs: []statedb.FixedIP{{SubnetID: "fs", IP: "198.51.100.99"}}},
			&statedb.Port{ID: "pb", NetworkID: "flat", MAC: "fa:16:3e:00:00:05", HostID: "b", FixedIPs: []statedb.FixedIP{{SubnetID: "fs", IP: "198.51.100.51"}}},
		},
	})
	tap := func(id string) string { return "tap-" + id }
	d, problems := desiredNetworks(sn, "a", map[string]string{"physnet1": "lan0"}, nilVTEP, tap)
	var got []string
	for _, pn := range d.Providers {
		var ports []string
		for _, p := range pn.Ports {
			ports = append(ports, fmt.Sprintf("%s(%s %s %s/%d gw=%s dhcp=%v open=%v%v)", p.ID, p.Tap, p.MAC, p.IP, p.Prefix, p.Gateway, p.DHCP, p.Unfiltered, p.Sources))
		}
		got = append(got, fmt.Sprintf("%s@%s.%d/%d [%s]", pn.ID, pn.Iface, pn.VLAN, pn.MTU, strings.Join(ports, " ")))
	}
	// Port security: pf may send from its fixed IP and its pairs, pv
	// (port security disabled) from anything.
	want := "flat@lan0.0/1500 [pf(tap-pf fa:16:3e:00:00:01 198.51.100.50/24 gw=198.51.100.1 dhcp=true open=false" +
		"[{fa:16:3e:00:00:01 198.51.100.50/32} {fa:16:3e:00:00:01 198.51.100.64/28} {fa:16:3e:00:00:aa 2001:db8::7/128}])] | " +
		"v100@lan0.100/1500 [pv(tap-pv fa:16:3e:00:00:02 10.100.0.50/24 gw=<nil> dhcp=false open=true[])]"
	if s := strings.Join(got, " | "); s != want {
		t.Errorf("providers =\n  %s\nwant\n  %s", s, want)
	}
	if len(d.Networks) != 0 || len(problems) != 1 || !strings.Contains(problems[0], `"physnet2"`) {
		t.Errorf("networks %v, problems %v; want none and one about physnet2", d.Networks, problems)
	}

	// A host that no longer maps physnet1 plumbs none of its ports.
	d, problems = desiredNetworks(sn, "a", nil, nilVTEP, tap)
	if len(d.Providers) != 0 || len(problems) != 3 {
		t.Errorf("unmapped: providers %v, problems %v; want none and three", d.Providers, problems)
	}

	// Security groups are not enforced on provider ports: the firewall
	// leaves them out and says so (it has no bridge to filter on).
	fw, fwProblems := desiredFirewall(sn, "a", tap)
	if len(fw.Ports) != 0 || len(fw.Networks) != 0 {
		t.Errorf("firewall of provider ports = %+v; want nothing", fw)
	}
	if len(fwProblems) != 1 || !strings.Contains(fwProblems[0], "rules are not") {
		t.Errorf("firewall problems = %v; want one saying pf's groups are not enforced", fwProblems)
	}
}

func nilVTEP(string) net.IP { return nil }
