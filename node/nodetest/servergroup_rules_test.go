package nodetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
)

// newAgEnv2 is newAgEnv's environment on a two-host cluster.
func newAgEnv2(t *testing.T) *agEnv {
	t.Helper()
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	opts := quiet()
	opts.Agent = fa.Options
	opts.Config = func(_ int, cfg *node.Config) {
		cfg.HostSource = func(live node.HostSource) node.HostSource { return agBigHosts{live} }
	}
	c := NewCluster(t, 2, opts)
	e := &agEnv{t: t, c: c, fa: fa, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{}}
	for i := range 2 {
		e.idx[c.Node(i).ID()] = i
	}
	e.seed(t.Context())
	return e
}

// TestServerGroupMaxPerHostGophercloud: gophercloud's servergroups at 2.64
// creates an anti-affinity group with max_server_per_host and reads back
// Policy and Rules.MaxServerPerHost through either host; at 2.63 the same
// group shows the older Policies.
func TestServerGroupMaxPerHostGophercloud(t *testing.T) {
	e := newAgEnv2(t)
	ctx := t.Context()
	cc := cpGophercloud(ctx, t, e.c, e.c.Follower())
	cc.Microversion = "2.64"
	g, err := servergroups.Create(ctx, cc, servergroups.CreateOpts{Name: "gc-rules", Policy: statedb.PolicyAntiAffinity,
		Rules: &servergroups.Rules{MaxServerPerHost: 3}}).Extract()
	if err != nil {
		t.Fatalf("servergroups.Create at 2.64: %v", err)
	}
	if g.Policy == nil || *g.Policy != statedb.PolicyAntiAffinity || g.Rules == nil || g.Rules.MaxServerPerHost != 3 {
		t.Fatalf("created group = %+v (rules %+v); want anti-affinity with max_server_per_host 3", g, g.Rules)
	}
	for i := range 2 {
		ci := cpGophercloud(ctx, t, e.c, i)
		ci.Microversion = "2.64"
		got, err := servergroups.Get(ctx, ci, g.ID).Extract()
		if err != nil || got.Policy == nil || *got.Policy != statedb.PolicyAntiAffinity || got.Rules == nil || got.Rules.MaxServerPerHost != 3 {
			t.Fatalf("servergroups.Get through node %d = %+v, %v", i, got, err)
		}
		ci.Microversion = "2.63"
		old, err := servergroups.Get(ctx, ci, g.ID).Extract()
		if err != nil || fmt.Sprint(old.Policies) != "[anti-affinity]" || old.Policy != nil || old.Rules != nil {
			t.Fatalf("servergroups.Get at 2.63 through node %d = %+v, %v; want policies only", i, old, err)
		}
	}
	// Rules on another policy: Nova's 400, nothing written.
	_, err = servergroups.Create(ctx, cc, servergroups.CreateOpts{Name: "gc-bad", Policy: statedb.PolicyAffinity,
		Rules: &servergroups.Rules{MaxServerPerHost: 2}}).Extract()
	if err == nil || !strings.Contains(err.Error(), "Only anti-affinity policy supports rules.") {
		t.Fatalf("affinity group with rules: %v; want Nova's 400", err)
	}
	pages, err := servergroups.List(cc, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := servergroups.ExtractServerGroups(pages)
	if err != nil || len(all) != 1 || all[0].Rules == nil || all[0].Rules.MaxServerPerHost != 3 {
		t.Fatalf("servergroups.List at 2.64 = %+v, %v; want the one group with its rule", all, err)
	}
	if err := servergroups.Delete(ctx, cc, g.ID).ExtractErr(); err != nil {
		t.Fatalf("servergroups.Delete: %v", err)
	}
}

// TestServerGroupMaxPerHostCLI: the real openstack client creates an
// anti-affinity group with --rule max_server_per_host=2 on a two-host
// cluster; four servers in it land two per host, and a fifth, for which
// no host has room in the group, goes to ERROR with Nova's "No valid host
// was found".
func TestServerGroupMaxPerHostCLI(t *testing.T) {
	e := newAgEnv2(t)
	f := e.c.Follower()
	env := append(e.c.OpenStackEnv(t, f), "OS_COMPUTE_API_VERSION=2.64")
	var g map[string]any
	oscJSON(t, env, &g, "server", "group", "create", "--policy", "anti-affinity", "--rule", "max_server_per_host=2", "g")
	gid, _ := g["id"].(string)
	rules, _ := g["rules"].(map[string]any)
	if gid == "" || g["policy"] != "anti-affinity" || rules["max_server_per_host"] != 2.0 {
		t.Fatalf("server group create = %v; want anti-affinity with max_server_per_host 2", g)
	}
	if sg, ok := e.c.Node(f).State().ServerGroup(gid); !ok || sg.MaxServerPerHost != 2 {
		t.Fatalf("stored group = %+v; want max_server_per_host 2", sg)
	}
	perHost := map[int]int{}
	for i := range 4 {
		var srv map[string]any
		oscJSON(t, env, &srv, "server", "create", "--image", e.image, "--flavor", "1", "--network", e.net,
			"--hint", "group="+gid, "--wait", fmt.Sprint("s", i))
		id, _ := srv["id"].(string)
		if srv["status"] != "ACTIVE" {
			t.Fatalf("server s%d = %v; want ACTIVE", i, srv)
		}
		perHost[e.hostOf(id)]++
	}
	if perHost[0] != 2 || perHost[1] != 2 {
		t.Fatalf("four servers of the group per host = %v; want two on each", perHost)
	}
	var srv map[string]any
	oscJSON(t, env, &srv, "server", "create", "--image", e.image, "--flavor", "1", "--network", e.net, "--hint", "group="+gid, "s4")
	id, _ := srv["id"].(string)
	e.c.Eventually(30*time.Second, "the fifth server in ERROR", func() bool {
		i, ok := e.inst(id)
		return ok && i.VMState == statedb.VMError
	})
	var shown map[string]any
	oscJSON(t, env, &shown, "server", "show", id)
	if shown["status"] != "ERROR" || !strings.Contains(fmt.Sprint(shown["fault"]), "No valid host was found") {
		t.Fatalf("fifth server = status %v fault %v; want ERROR with No valid host was found", shown["status"], shown["fault"])
	}
	var members map[string]any
	oscJSON(t, env, &members, "server", "group", "show", gid)
	if ms, _ := members["members"].([]any); len(ms) != 5 || !strings.Contains(fmt.Sprint(ms), id) {
		t.Fatalf("group members = %v; want all five servers", members["members"])
	}
}
