package statedb

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func intp(v int) *int { return &v }

// wantErr fails unless err is a state error of kind k whose message
// starts with prefix.
func wantErr(t *testing.T, err error, k Kind, prefix string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Kind != k || !strings.HasPrefix(e.Msg, prefix) {
		t.Fatalf("err = %v; want %s %q…", err, k, prefix)
	}
}

func TestSecGroupDefaultsAndRules(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g1", Name: "web", ProjectID: "p1", Stateful: true}})
	sn := ns.s.Snapshot()
	def, ok := sn.DefaultSecGroup("p1")
	if !ok || def.Name != "default" {
		t.Fatalf("default group = %v %v; want created with the first group", def, ok)
	}
	if got := len(sn.SecRulesOf(def.ID)); got != 4 {
		t.Errorf("default group has %d rules; want 4 (egress v4/v6, ingress from members v4/v6)", got)
	}
	var ingressSelf int
	for _, r := range sn.SecRulesOf(def.ID) {
		if r.Direction == Ingress && r.RemoteGroupID == def.ID {
			ingressSelf++
		}
	}
	if ingressSelf != 2 {
		t.Errorf("default group ingress-from-self rules = %d; want 2", ingressSelf)
	}
	rules := sn.SecRulesOf("g1")
	if len(rules) != 2 || rules[0].Direction != Egress || rules[1].Direction != Egress {
		t.Fatalf("new group rules = %+v; want two egress rules", rules)
	}
	// Ensuring again changes nothing.
	before := ns.s.Snapshot().SecRules()
	ns.must(CmdEnsureDefaultSecGroup, EnsureDefaultSecGroupCmd{ProjectID: "p1"})
	if after := ns.s.Snapshot().SecRules(); len(after) != len(before) {
		t.Errorf("ensure default twice: %d rules, then %d", len(before), len(after))
	}

	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r1", GroupID: "g1", Direction: Ingress, Protocol: "TCP", PortMin: intp(80), PortMax: intp(81), RemoteIP: "10.1.2.3/16"})
	r, _ := ns.s.Snapshot().SecRule("r1")
	if r.Protocol != "tcp" || r.RemoteIP != "10.1.0.0/16" || r.EtherType != IPv4 || r.ProjectID != "p1" {
		t.Errorf("rule = %+v; want normalised tcp 10.1.0.0/16 IPv4 of p1", r)
	}
	// "6" is tcp: the same rule again is a 409 naming the first.
	wantErr(t, ns.do(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r2", GroupID: "g1", Direction: Ingress, Protocol: "6", PortMin: intp(80), PortMax: intp(81), RemoteIP: "10.1.0.0/16"}),
		KindConflict, "Security group rule already exists. Rule id is r1.")

	bad := []struct {
		r    SecurityGroupRule
		kind Kind
		msg  string
	}{
		{SecurityGroupRule{Direction: Ingress, Protocol: "bogus"}, KindInvalid, "Security group rule protocol bogus not supported"},
		{SecurityGroupRule{Direction: Ingress, Protocol: "256"}, KindInvalid, "Security group rule protocol 256 not supported"},
		{SecurityGroupRule{Direction: "sideways"}, KindInvalid, "Invalid input for direction"},
		{SecurityGroupRule{Direction: Ingress, EtherType: "IPv5"}, KindInvalid, "Invalid input for ethertype"},
		{SecurityGroupRule{Direction: Ingress, Protocol: "tcp", PortMin: intp(90), PortMax: intp(80)}, KindInvalid, MsgSecRulePortRange},
		{SecurityGroupRule{Direction: Ingress, Protocol: "udp", PortMin: intp(0), PortMax: intp(80)}, KindInvalid, "Invalid value for port 0"},
		{SecurityGroupRule{Direction: Ingress, Protocol: "udp", PortMin: intp(1), PortMax: intp(70000)}, KindInvalid, "Invalid value for port 70000"},
		{SecurityGroupRule{Direction: Ingress, Protocol: "icmp", PortMin: intp(300)}, KindInvalid, "Invalid value for ICMP type"},
		{SecurityGroupRule{Direction: Ingress, Protocol: "icmp", PortMax: intp(3)}, KindInvalid, "ICMP code (port-range-max) 3"},
		{SecurityGroupRule{Direction: Ingress, PortMin: intp(22)}, KindInvalid, MsgSecRulePortsNoProt},
		{SecurityGroupRule{Direction: Ingress, RemoteIP: "::/0"}, KindInvalid, "Conflicting value ethertype IPv4 for CIDR ::/0"},
		{SecurityGroupRule{Direction: Ingress, RemoteIP: "10.0.0.0/8", RemoteGroupID: "g1"}, KindInvalid, MsgSecRuleRemoteBoth},
		{SecurityGroupRule{Direction: Ingress, RemoteIP: "nonsense"}, KindInvalid, "Invalid input for remote_ip_prefix"},
		{SecurityGroupRule{Direction: Ingress, RemoteGroupID: "missing"}, KindNotFound, "Security group missing does not exist"},
	}
	for i, b := range bad {
		b.r.ID, b.r.GroupID = "bad", "g1"
		err := ns.do(CmdCreateSecGroupRule, b.r)
		t.Run(b.msg, func(t *testing.T) { wantErr(t, err, b.kind, b.msg) })
		if _, ok := ns.s.Snapshot().SecRule("bad"); ok {
			t.Fatalf("case %d: a refused rule was stored", i)
		}
	}

	// A remote group of another project does not exist for this one.
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "other", Name: "x", ProjectID: "p2", Stateful: true}})
	wantErr(t, ns.do(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r3", GroupID: "g1", Direction: Ingress, RemoteGroupID: "other"}),
		KindNotFound, "Security group other does not exist")
}

func TestSecGroupDeleteAndPorts(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateNetwork, Network{ID: "n1", ProjectID: "p1"})
	ns.must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: "s1", NetworkID: "n1", ProjectID: "p1", IPVersion: 4, CIDR: "10.0.0.0/24"}, GatewayAuto: true, PoolsAuto: true})
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "port1", ProjectID: "p1", NetworkID: "n1"}})
	p := ns.port("port1")
	def := DefaultSecGroupID("p1")
	if !p.PortSecurityEnabled || !slices.Equal(p.SecurityGroups, []string{def}) {
		t.Fatalf("new port security = %v %v; want enabled, default group", p.PortSecurityEnabled, p.SecurityGroups)
	}
	wantErr(t, ns.do(CmdDeleteSecGroup, DeleteCmd{ID: def}), KindConflict, MsgSecGroupDefault)

	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g1", Name: "web", ProjectID: "p1", Stateful: true}})
	groups := []string{"g1"}
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "port1", UpdatePortSecurity: UpdatePortSecurity{SecurityGroups: &groups}})
	wantErr(t, ns.do(CmdDeleteSecGroup, DeleteCmd{ID: "g1"}), KindConflict, "Security Group g1 in use.")

	// Port security cannot go while groups are there; both at once works.
	off := false
	wantErr(t, ns.do(CmdUpdatePort, UpdatePortCmd{ID: "port1", UpdatePortSecurity: UpdatePortSecurity{Enabled: &off}}), KindConflict, "Port has security group associated")
	none := []string{}
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "port1", UpdatePortSecurity: UpdatePortSecurity{Enabled: &off, SecurityGroups: &none}})
	if p := ns.port("port1"); p.PortSecurityEnabled || len(p.SecurityGroups) != 0 {
		t.Fatalf("port = %+v; want security off, no groups", p)
	}
	pairs := []AddressPair{{IP: "10.0.0.200"}}
	wantErr(t, ns.do(CmdUpdatePort, UpdatePortCmd{ID: "port1", UpdatePortSecurity: UpdatePortSecurity{AddressPairs: &pairs}}), KindConflict, MsgAddressPairsNoSec)
	on := true
	ns.must(CmdUpdatePort, UpdatePortCmd{ID: "port1", UpdatePortSecurity: UpdatePortSecurity{Enabled: &on, AddressPairs: &pairs}})
	if p := ns.port("port1"); len(p.AllowedAddressPairs) != 1 || p.AllowedAddressPairs[0].MAC != p.MAC {
		t.Fatalf("pairs = %+v; want one with the port's MAC", p.AllowedAddressPairs)
	}
	ns.must(CmdDeleteSecGroup, DeleteCmd{ID: "g1"})
	if _, ok := ns.s.Snapshot().SecGroup("g1"); ok || len(ns.s.Snapshot().SecRulesOf("g1")) != 0 {
		t.Fatal("deleted group or its rules remain")
	}

	// Another project's group cannot be put on the port.
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g2", Name: "x", ProjectID: "p2", Stateful: true}})
	foreign := []string{"g2"}
	wantErr(t, ns.do(CmdUpdatePort, UpdatePortCmd{ID: "port1", UpdatePortSecurity: UpdatePortSecurity{SecurityGroups: &foreign}}), KindNotFound, "Security group g2 does not exist")

	// A group referred to by another group's rule is in use too.
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g3", Name: "db", ProjectID: "p1", Stateful: true}})
	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r1", GroupID: def, Direction: Ingress, RemoteGroupID: "g3", Protocol: "tcp", PortMin: intp(5432)})
	wantErr(t, ns.do(CmdDeleteSecGroup, DeleteCmd{ID: "g3"}), KindConflict, "Security Group g3 in use.")
	ns.must(CmdDeleteSecGroupRule, DeleteCmd{ID: "r1"})
	ns.must(CmdDeleteSecGroup, DeleteCmd{ID: "g3"})

	// No groups on request: none, and none for router ports.
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "port2", ProjectID: "p1", NetworkID: "n1", PortSecurity: PortSecurity{NoGroups: true}}})
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "port3", ProjectID: "p1", NetworkID: "n1", DeviceOwner: OwnerRouterInterface}})
	for _, id := range []string{"port2", "port3"} {
		if p := ns.port(id); len(p.SecurityGroups) != 0 || !p.PortSecurityEnabled {
			t.Errorf("%s: groups %v enabled %v; want none, enabled", id, p.SecurityGroups, p.PortSecurityEnabled)
		}
	}
	wantErr(t, ns.do(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "port4", ProjectID: "p1", NetworkID: "n1", PortSecurity: PortSecurity{Disabled: true, SecurityGroups: []string{def}}}}),
		KindInvalid, "Port security must be enabled")
	if _, ok := ns.s.Snapshot().Port("port4"); ok {
		t.Fatal("refused port stored")
	}
}

// TestNetworkPortSecurityDefault: a network's port security is the
// default of its new ports; a port may still ask for its own, and
// changing the network leaves existing ports alone.
func TestNetworkPortSecurityDefault(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateNetwork, Network{ID: "n1", ProjectID: "p1", PortSecurityDisabled: true})
	if ns.network("n1").PortSecurityDisabled {
		t.Fatal("network create took port security from its payload: a host of an older release would not")
	}
	ns.must(CmdSetNetPortSecurity, SetNetworkPortSecurityCmd{ID: "n1", Enabled: false})
	ns.must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: "s1", NetworkID: "n1", ProjectID: "p1", IPVersion: 4, CIDR: "10.0.0.0/24"}, GatewayAuto: true, PoolsAuto: true})
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "off", ProjectID: "p1", NetworkID: "n1"}})
	if p := ns.port("off"); p.PortSecurityEnabled || len(p.SecurityGroups) != 0 {
		t.Fatalf("port on a network without port security: %v %v, want off with no groups", p.PortSecurityEnabled, p.SecurityGroups)
	}
	if _, ok := ns.s.Snapshot().DefaultSecGroup("p1"); ok {
		t.Error("a port without port security made the default group")
	}
	wantErr(t, ns.do(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "g", ProjectID: "p1", NetworkID: "n1",
		PortSecurity: PortSecurity{SecurityGroups: []string{DefaultSecGroupID("p1")}}}}), KindInvalid, "Port security must be enabled")
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "on", ProjectID: "p1", NetworkID: "n1", PortSecurity: PortSecurity{Enabled: true}}})
	if p := ns.port("on"); !p.PortSecurityEnabled || len(p.SecurityGroups) != 1 {
		t.Fatalf("port asking for port security: %v %v, want on in the default group", p.PortSecurityEnabled, p.SecurityGroups)
	}
	ns.must(CmdSetNetPortSecurity, SetNetworkPortSecurityCmd{ID: "n1", Enabled: true})
	if ns.network("n1").PortSecurityDisabled {
		t.Fatal("network update did not enable port security")
	}
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "later", ProjectID: "p1", NetworkID: "n1"}})
	if !ns.port("later").PortSecurityEnabled || ns.port("off").PortSecurityEnabled {
		t.Fatal("after enabling on the network: new ports on, existing ports unchanged expected")
	}
}
