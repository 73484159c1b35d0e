package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestAgentDesiredFirewall(t *testing.T) {
	p80 := 80
	ports := []any{
		&statedb.Port{ID: "a", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:01", PortSecurityEnabled: true,
			FixedIPs: []statedb.FixedIP{{IP: "10.0.0.1"}}, SecurityGroups: []string{"web"},
			AllowedAddressPairs: []statedb.AddressPair{{IP: "10.0.0.200", MAC: "fa:16:3e:00:00:01"}}},
		&statedb.Port{ID: "b", NetworkID: "n", HostID: "other", MAC: "fa:16:3e:00:00:02", PortSecurityEnabled: true,
			FixedIPs: []statedb.FixedIP{{IP: "10.0.0.2"}}, SecurityGroups: []string{"db"}},
		&statedb.Port{ID: "c", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:03", FixedIPs: []statedb.FixedIP{{IP: "10.0.0.3"}}},
		&statedb.Port{ID: "r", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:05", PortSecurityEnabled: true,
			DeviceOwner: statedb.OwnerRouterInterface, FixedIPs: []statedb.FixedIP{{IP: "10.0.0.254"}}},
		&statedb.Port{ID: "d", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:04", PortSecurityEnabled: true,
			FixedIPs: []statedb.FixedIP{{IP: "10.0.0.4"}}, SecurityGroups: []string{"web", "loose"}},
	}
	sn := snapshotOf(t, map[string][]any{
		"networks": {&statedb.Network{ID: "n", VNI: 1001}},
		"ports":    ports,
		"secgroups": {&statedb.SecurityGroup{ID: "web", Stateful: true}, &statedb.SecurityGroup{ID: "db", Stateful: true},
			&statedb.SecurityGroup{ID: "loose", Stateful: false}},
		"secgroup_rules": {
			&statedb.SecurityGroupRule{ID: "r1", GroupID: "web", Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: &p80, PortMax: &p80},
			&statedb.SecurityGroupRule{ID: "r2", GroupID: "web", Direction: "ingress", EtherType: "IPv4", RemoteGroupID: "db"},
			&statedb.SecurityGroupRule{ID: "r3", GroupID: "web", Direction: "egress", EtherType: "IPv4", Protocol: "icmp"},
			&statedb.SecurityGroupRule{ID: "r4", GroupID: "db", Direction: "ingress", EtherType: "IPv4"},
		},
	})
	d, problems := desiredFirewall(sn, "me", func(id string) string { return "tap" + id })
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	if len(d.Ports) != 2 || d.Ports[0].ID != "a" || d.Ports[1].ID != "d" {
		t.Fatalf("ports = %+v; want a and d (c has no port security, r is a router's, b is remote)", d.Ports)
	}
	a := d.Ports[0]
	if !a.Stateful || d.Ports[1].Stateful {
		t.Errorf("stateful a=%v d=%v; want true, false (a stateless group makes a port stateless)", a.Stateful, d.Ports[1].Stateful)
	}
	if len(a.Rules) != 3 || a.Tap != "tapa" || a.Zone != ZoneOf(1001) || len(a.Pairs) != 1 {
		t.Errorf("port a = %+v", a)
	}
	for _, r := range a.Rules {
		if r.Proto == 1 && (r.PortMin != -1 || r.PortMax != -1) {
			t.Errorf("icmp rule = %+v; want any type and code (-1)", r)
		}
		if r.Proto == 6 && (r.PortMin != 80 || r.PortMax != 80) {
			t.Errorf("tcp rule = %+v", r)
		}
	}
	if got := d.Groups["db"]; len(got) != 1 || got[0] != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("members of db = %v; want the remote port's address", got)
	}
	if len(d.Networks) != 1 || d.Networks[0].VNI != 1001 {
		t.Errorf("networks = %+v", d.Networks)
	}
}

// TestAgentFirewallAddressGroups: a rule naming an address group is one
// rule per prefix of its ether type; an empty group allows nothing.
func TestAgentFirewallAddressGroups(t *testing.T) {
	p22 := 22
	sn := snapshotOf(t, map[string][]any{
		"networks": {&statedb.Network{ID: "n", VNI: 1001}},
		"ports": {&statedb.Port{ID: "a", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:01", PortSecurityEnabled: true,
			FixedIPs: []statedb.FixedIP{{IP: "10.0.0.1"}}, SecurityGroups: []string{"web"}}},
		"secgroups": {&statedb.SecurityGroup{ID: "web", Stateful: true}},
		"address_groups": {
			&statedb.AddressGroup{ID: "office", Addresses: []string{"192.0.2.0/24", "198.51.100.7/32", "2001:db8::/64"}},
			&statedb.AddressGroup{ID: "empty", Addresses: []string{}},
		},
		"secgroup_rules": {
			&statedb.SecurityGroupRule{ID: "r1", GroupID: "web", Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: &p22, PortMax: &p22, RemoteAddressGroupID: "office"},
			&statedb.SecurityGroupRule{ID: "r2", GroupID: "web", Direction: "ingress", EtherType: "IPv6", RemoteAddressGroupID: "office"},
			&statedb.SecurityGroupRule{ID: "r3", GroupID: "web", Direction: "ingress", EtherType: "IPv4", RemoteAddressGroupID: "empty"},
		},
	})
	d, problems := desiredFirewall(sn, "me", func(id string) string { return "tap" + id })
	if len(problems) != 0 || len(d.Ports) != 1 {
		t.Fatalf("ports %+v problems %v", d.Ports, problems)
	}
	got := map[string]FwRule{}
	for _, r := range d.Ports[0].Rules {
		got[r.RemoteIP.String()] = r
	}
	if len(got) != 3 || got["192.0.2.0/24"].Proto != 6 || got["192.0.2.0/24"].PortMin != 22 || got["198.51.100.7/32"].Proto != 6 ||
		!got["2001:db8::/64"].IPv6 || got["2001:db8::/64"].Proto != -1 {
		t.Fatalf("rules = %+v; want tcp/22 from the two IPv4 prefixes and any from the IPv6 one, nothing for the empty group", d.Ports[0].Rules)
	}
}

// BenchmarkDesiredFirewall: the filtering of a host's port whose group
// has 200 rules, computed as every state change does.
func BenchmarkDesiredFirewall(b *testing.B) {
	rules := []any{}
	for i := range 200 {
		p := 20000 + i
		rules = append(rules, &statedb.SecurityGroupRule{ID: fmt.Sprintf("r%d", i), GroupID: "g", Direction: "ingress",
			EtherType: "IPv4", Protocol: "tcp", PortMin: &p, PortMax: &p})
	}
	sn := snapshotOf(b, map[string][]any{
		"networks": {&statedb.Network{ID: "n", VNI: 1001}},
		"ports": {&statedb.Port{ID: "a", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:01", PortSecurityEnabled: true,
			FixedIPs: []statedb.FixedIP{{IP: "10.0.0.1"}}, SecurityGroups: []string{"g"}}},
		"secgroups":      {&statedb.SecurityGroup{ID: "g", Stateful: true}},
		"secgroup_rules": rules,
	})
	b.ResetTimer()
	for range b.N {
		if d, _ := desiredFirewall(sn, "me", func(id string) string { return "tap" + id }); len(d.Ports[0].Rules) != 200 {
			b.Fatalf("%d rules", len(d.Ports[0].Rules))
		}
	}
}

// recordingFirewall remembers the Verify flag of every Apply.
type recordingFirewall struct{ verify []bool }

func (f *recordingFirewall) Apply(_ context.Context, d FirewallDesired) (int, error) {
	f.verify = append(f.verify, d.Verify)
	return 0, nil
}

type tapsOnly struct{}

func (tapsOnly) Apply(context.Context, NetDesired) (int, error) { return 0, nil }
func (tapsOnly) TapName(id string) string                       { return "tap" + id }

// TestAgentFirewallVerifiesOnFullResync: a full resync applies the
// unchanged filtering with Verify (the kernel is read back and repaired);
// a sync for a change applies it without, and an unchanged one not at all.
func TestAgentFirewallVerifiesOnFullResync(t *testing.T) {
	sn := snapshotOf(t, map[string][]any{
		"networks": {&statedb.Network{ID: "n", VNI: 1001}},
		"ports": {&statedb.Port{ID: "a", NetworkID: "n", HostID: "me", MAC: "fa:16:3e:00:00:01", PortSecurityEnabled: true,
			FixedIPs: []statedb.FixedIP{{IP: "10.0.0.1"}}}},
	})
	fw := &recordingFirewall{}
	a := &Agent{cfg: Config{HostID: "me", Firewall: fw, Network: tapsOnly{}}, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	a.syncFirewall(ctx, sn, true)  // first: applied, verified
	a.syncFirewall(ctx, sn, false) // unchanged: not applied
	a.syncFirewall(ctx, sn, true)  // full resync: applied, verified
	a.syncFirewall(ctx, sn, false) // still unchanged: the flag is not remembered
	if want := []bool{true, true}; !slices.Equal(fw.verify, want) {
		t.Fatalf("applies with verify %v; want %v", fw.verify, want)
	}
	a.fwState.applied.Groups = map[string][]netip.Addr{"x": nil} // a change
	a.syncFirewall(ctx, sn, false)
	if want := []bool{true, true, false}; !slices.Equal(fw.verify, want) {
		t.Fatalf("applies with verify %v; want %v", fw.verify, want)
	}
}
