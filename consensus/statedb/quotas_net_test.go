package statedb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestQuotaNetworkServices: routers, floating IPs, security groups and
// their rules are counted and refused over their limits like networks.
func TestQuotaNetworkServices(t *testing.T) {
	ns := routedStore(t) // r1 with a gateway; p1's default group not made yet
	over := func(what string, err error, resource string) {
		t.Helper()
		if !errors.Is(err, ErrOverQuota) || OverQuotaResource(err) != resource {
			t.Fatalf("%s: %v, want over quota for %s", what, err, resource)
		}
	}
	sn := ns.s.Snapshot()
	for r, want := range map[string]int64{QuotaRouters: 10, QuotaFloatingIPs: 50, QuotaSecurityGroups: 10, QuotaSecurityGroupRules: 100} {
		if got := sn.QuotaLimit("p1", r); got != want {
			t.Errorf("built-in %s = %d, want Neutron's %d", r, got, want)
		}
	}
	// The fixture's server port made the default group: it counts.
	if u := sn.QuotaUsages("p1", "", NetworkQuotas()); u[QuotaRouters] != 1 || u[QuotaFloatingIPs] != 0 || u[QuotaSecurityGroups] != 1 || u[QuotaSecurityGroupRules] != 4 {
		t.Fatalf("usage %v, want 1 router, 0 fips, 1 group, 4 rules", u)
	}

	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{
		QuotaRouters: 1, QuotaFloatingIPs: 1, QuotaSecurityGroups: 2, QuotaSecurityGroupRules: 7}})
	over("router", ns.do(CmdCreateRouter, CreateRouterCmd{Router: Router{ID: "r2", ProjectID: "p1"}}), QuotaRouters)
	ns.must(CmdCreateRouter, CreateRouterCmd{Router: Router{ID: "r-other", ProjectID: "p2"}}) // p2 has its own count

	ns.must(CmdCreateFloatingIP, CreateFloatingIPCmd{FloatingIP{ID: "f1", ProjectID: "p1", FloatingNetworkID: "ext", FloatingPortID: "fp1"}})
	over("floating ip", ns.do(CmdCreateFloatingIP, CreateFloatingIPCmd{FloatingIP{ID: "f2", ProjectID: "p1", FloatingNetworkID: "ext", FloatingPortID: "fp2"}}), QuotaFloatingIPs)
	if _, ok := ns.s.Snapshot().Port("fp2"); ok {
		t.Fatal("a refused floating IP left its port behind")
	}

	// A new group brings two egress rules: 4 + 2 ≤ 7, then 6 + 2 > 7.
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g1", Name: "web", ProjectID: "p1", Stateful: true}})
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaSecurityGroups: 3}})
	over("group whose rules do not fit", ns.do(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g2", Name: "db", ProjectID: "p1", Stateful: true}}), QuotaSecurityGroupRules)
	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r1", GroupID: "g1", Direction: Ingress, Protocol: "tcp", PortMin: intp(22)})
	over("rule", ns.do(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r2", GroupID: "g1", Direction: Ingress, Protocol: "tcp", PortMin: intp(80)}), QuotaSecurityGroupRules)
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaSecurityGroups: 2, QuotaSecurityGroupRules: Unlimited}})
	over("group", ns.do(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g2", Name: "db", ProjectID: "p1", Stateful: true}}), QuotaSecurityGroups)
	if _, ok := ns.s.Snapshot().SecGroup("g2"); ok {
		t.Fatal("a refused group was stored")
	}
	// Deleting frees the quota again.
	ns.must(CmdDeleteSecGroup, DeleteCmd{ID: "g1"})
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g2", Name: "db", ProjectID: "p1", Stateful: true}})
}

// TestQuotaDefaultSecGroupNeverRefused: a project whose group and rule
// limits are 0 still gets its default group — its first port create must
// work — and the group and its four rules are counted from then on.
func TestQuotaDefaultSecGroupNeverRefused(t *testing.T) {
	ns := newQuotaStore(t)
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaSecurityGroups: 0, QuotaSecurityGroupRules: 0}})
	ns.must(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "port1", NetworkID: "net", ProjectID: "p1"}})
	if p := ns.port("port1"); len(p.SecurityGroups) != 1 || p.SecurityGroups[0] != DefaultSecGroupID("p1") {
		t.Fatalf("first port groups %v, want the default group", p.SecurityGroups)
	}
	u := ns.s.Snapshot().QuotaUsages("p1", "", NetworkQuotas())
	if u[QuotaSecurityGroups] != 1 || u[QuotaSecurityGroupRules] != 4 {
		t.Fatalf("usage %v, want the default group and its 4 rules counted", u)
	}
	err := ns.do(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g1", Name: "web", ProjectID: "p1", Stateful: true}})
	if !errors.Is(err, ErrOverQuota) || OverQuotaResource(err) != QuotaSecurityGroups {
		t.Fatalf("a user's group over the limit: %v", err)
	}
	// A group create that makes the default group first (another
	// project, limits at 1 group) keeps the default and refuses the new.
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p3", Limits: map[string]int64{QuotaSecurityGroups: 1}})
	err = ns.do(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g3", Name: "web", ProjectID: "p3", Stateful: true}})
	if !errors.Is(err, ErrOverQuota) {
		t.Fatalf("p3's first group with limit 1 (the default takes it): %v", err)
	}
	if _, ok := ns.s.Snapshot().DefaultSecGroup("p3"); ok {
		t.Fatal("a refused command left the default group it made (no half-written state)")
	}
	ns.must(CmdEnsureDefaultSecGroup, EnsureDefaultSecGroupCmd{ProjectID: "p3"})
}

// TestQuotaNetworkInterleavings: three hosts propose router, floating IP,
// group and rule creates judged against their own stale views; in any
// log order the state never holds more than a limit, and a create is
// refused only when it really would go over.
func TestQuotaNetworkInterleavings(t *testing.T) {
	limits := map[string]int64{QuotaRouters: 3, QuotaFloatingIPs: 4, QuotaSecurityGroups: 4, QuotaSecurityGroupRules: 14}
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			ns := routedStore(t) // 1 router, the default group (1 group, 4 rules)
			ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: limits})
			type op struct {
				typ     CmdType
				payload any
				charges []charge
			}
			var queues [3][]op
			n := 0
			for h := range queues {
				for range 40 {
					n++
					id := fmt.Sprintf("h%d-%d", h, n)
					var o op
					switch rng.IntN(5) {
					case 0:
						o = op{CmdCreateRouter, CreateRouterCmd{Router: Router{ID: id, ProjectID: "p1"}}, []charge{{QuotaRouters, 1}}}
					case 1:
						o = op{CmdCreateFloatingIP, CreateFloatingIPCmd{FloatingIP{ID: id, ProjectID: "p1", FloatingNetworkID: "ext", FloatingPortID: id + "-port"}}, []charge{{QuotaFloatingIPs, 1}}}
					case 2:
						o = op{CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: id, Name: id, ProjectID: "p1", Stateful: true}}, []charge{{QuotaSecurityGroups, 1}, {QuotaSecurityGroupRules, 2}}}
					case 3:
						o = op{CmdCreateSecGroupRule, SecurityGroupRule{ID: id, GroupID: DefaultSecGroupID("p1"), Direction: Ingress,
							RemoteIP: fmt.Sprintf("10.%d.%d.0/24", n/256, n%256)}, []charge{{QuotaSecurityGroupRules, 1}}}
					default:
						o = op{typ: 0}
					}
					queues[h] = append(queues[h], o)
				}
			}
			accepted, refused := 0, 0
			for len(queues[0])+len(queues[1])+len(queues[2]) > 0 {
				h := rng.IntN(3)
				if len(queues[h]) == 0 {
					continue
				}
				o := queues[h][0]
				queues[h] = queues[h][1:]
				sn := ns.s.Snapshot()
				if o.typ == 0 {
					ns.deleteNetworkService(rng, sn)
					continue
				}
				fits := true
				for _, ch := range o.charges {
					if sn.QuotaUsage("p1", "", ch.resource)+ch.n > limits[ch.resource] {
						fits = false
					}
				}
				err := ns.do(o.typ, o.payload)
				switch {
				case fits && err != nil:
					t.Fatalf("create %d within quota refused: %v", o.typ, err)
				case !fits && !errors.Is(err, ErrOverQuota):
					t.Fatalf("create %d over quota: %v, want over quota", o.typ, err)
				case fits:
					accepted++
				default:
					refused++
				}
				after := ns.s.Snapshot()
				for r, l := range limits {
					if u := after.QuotaUsage("p1", "", r); u > l {
						t.Fatalf("%s usage %d over its limit %d", r, u, l)
					}
				}
			}
			if accepted == 0 || refused == 0 {
				t.Fatalf("accepted %d, refused %d: the run never reached a limit or never created", accepted, refused)
			}
		})
	}
}

// deleteNetworkService removes one of p1's routers (not the fixture's),
// floating IPs, non-default groups or rules, if any.
func (ns *netStore) deleteNetworkService(rng *rand.Rand, sn *Snapshot) {
	ns.t.Helper()
	switch rng.IntN(4) {
	case 0:
		for _, r := range sn.Routers() {
			if r.ID != "r1" {
				ns.must(CmdDeleteRouter, DeleteCmd{ID: r.ID})
				return
			}
		}
	case 1:
		if fs := sn.FloatingIPs(); len(fs) > 0 {
			ns.must(CmdDeleteFloatingIP, DeleteCmd{ID: fs[rng.IntN(len(fs))].ID})
		}
	case 2:
		for _, g := range sn.SecGroupsOfProject("p1") {
			if g.ID != DefaultSecGroupID("p1") {
				ns.must(CmdDeleteSecGroup, DeleteCmd{ID: g.ID})
				return
			}
		}
	default:
		for _, r := range sn.SecRulesOf(DefaultSecGroupID("p1")) {
			if r.RemoteIP != "" {
				ns.must(CmdDeleteSecGroupRule, DeleteCmd{ID: r.ID})
				return
			}
		}
	}
}

// TestQuotaMinCount: a server create over quota keeps the first
// instances that fit when at least MinCount do, else is refused whole.
func TestQuotaMinCount(t *testing.T) {
	ns := newQuotaStore(t)
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaInstances: 4, QuotaPorts: 3}})
	batch := func(prefix string, n, minCount int, withPorts bool) CreateInstancesCmd {
		cmd := CreateInstancesCmd{MinCount: minCount}
		for i := range n {
			ic := newInst(fmt.Sprintf("%s-%d", prefix, i+1), "p1", tiny)
			ic.Instance.Name = ic.Instance.ID
			if withPorts {
				ic.NICs = []NICRequest{{Create: &PortRequest{ID: ic.Instance.ID + "-port", NetworkID: "net"}}}
			}
			cmd.Instances = append(cmd.Instances, ic)
		}
		return cmd
	}
	count := func() int { return len(ns.s.Snapshot().InstancesOfProject("p1")) }
	// Ports bind first: 3 of 5 fit.
	ns.must(CmdCreateInstances, batch("a", 5, 2, true))
	if n := count(); n != 3 {
		t.Fatalf("%d instances after a port-capped create, want 3", n)
	}
	if _, ok := ns.s.Snapshot().Instance("a-4"); ok {
		t.Fatal("the instances kept are not the first ones")
	}
	// One instance left, min 2: refused whole, naming what was asked.
	err := ns.do(CmdCreateInstances, batch("b", 3, 2, false))
	if want := "Quota exceeded for instances: Requested 3, but already used 3 of 4 instances"; err == nil || err.Error() != want {
		t.Fatalf("min over quota: %v, want %q", err, want)
	}
	// Without MinCount it is all or nothing.
	if err := ns.do(CmdCreateInstances, batch("c", 2, 0, false)); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("no min count: %v, want over quota", err)
	}
	// Capped to one: the lone server loses its "-1".
	ns.must(CmdCreateInstances, batch("d", 3, 1, false))
	if i, ok := ns.s.Snapshot().Instance("d-1"); !ok || i.Name != "d" || count() != 4 {
		t.Fatalf("lone capped server %+v, %d instances; want named d, 4 in all", i, count())
	}
}
