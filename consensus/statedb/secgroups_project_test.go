package statedb

import "testing"

// TestProjectDeleteSecGroups: a deleted project's unused groups go with
// it (the default group included), groups its orphaned ports still use
// stay until their last port goes, and another project's groups stay.
func TestProjectDeleteSecGroups(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateProject, Project{ID: "p2", Name: "demo"})
	ns.must(CmdCreateNetwork, Network{ID: "n2", ProjectID: "p2", Shared: true})
	ns.must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: "s2", NetworkID: "n2", ProjectID: "p2", IPVersion: 4, CIDR: "10.0.0.0/24"}, GatewayAuto: true, PoolsAuto: true})
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p2", Limits: map[string]int64{QuotaSecurityGroups: 20}})
	for _, g := range []string{"web", "db", "idle"} {
		ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: g, Name: g, ProjectID: "p2", Stateful: true}})
	}
	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "db-from-web", GroupID: "db", Direction: Ingress, RemoteGroupID: "web"})
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "p1-web", Name: "web", ProjectID: "p1", Stateful: true}})
	// A server with a port in the default group, a bare port in db.
	vm := newInst("i1", "p2", tiny)
	vm.NICs = []NICRequest{{Create: &PortRequest{ID: "vm", NetworkID: "n2"}}}
	ns.must(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{vm}})
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "bare", NetworkID: "n2", ProjectID: "p2",
		PortSecurity: PortSecurity{SecurityGroups: []string{"db"}}}})
	def := DefaultSecGroupID("p2")
	exists := func(ids ...string) map[string]bool {
		sn := ns.s.Snapshot()
		out := map[string]bool{}
		for _, id := range ids {
			_, out[id] = sn.SecGroup(id)
		}
		return out
	}

	ns.must(CmdDeleteProject, DeleteCmd{ID: "p2"})
	got := exists("web", "idle", "db", def, "p1-web", DefaultSecGroupID("p1"))
	want := map[string]bool{"web": false, "idle": false, "db": true, def: true, "p1-web": true, DefaultSecGroupID("p1"): true}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("after project delete, group %s exists = %v, want %v", id, got[id], w)
		}
	}
	sn := ns.s.Snapshot()
	if _, ok := sn.SecRule("db-from-web"); ok {
		t.Error("db kept a rule naming the removed group web")
	}
	if n := len(sn.SecRulesOf("db")); n != 2 {
		t.Errorf("db has %d rules, want its 2 egress rules untouched", n)
	}
	if len(sn.SecRulesOf("web")) != 0 || len(sn.SecRulesOf("idle")) != 0 {
		t.Error("rules of removed groups left behind")
	}
	if _, ok := sn.QuotaSet("p2"); ok {
		t.Error("the deleted project's quota limits were kept")
	}

	ns.must(CmdDeletePort, DeleteCmd{ID: "bare"})
	if got := exists("db", def); got["db"] || !got[def] {
		t.Errorf("after db's last port: %v, want db gone, default kept", got)
	}
	// The server's delete removes its port: the default group goes with it.
	ns.must(CmdDeleteInstance, DeleteCmd{ID: "i1"}) // never placed: removed at once
	if got := exists(def); got[def] {
		t.Error("the default group outlived the deleted project's last port")
	}
	if n := len(ns.s.Snapshot().SecRules()); n != 6 {
		t.Errorf("%d rules left, want p1's 6 (default 4, web 2)", n)
	}
}
