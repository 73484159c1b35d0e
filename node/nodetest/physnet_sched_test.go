package nodetest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
)

// TestSchedulerPhysnets: two hosts, only host 0 maps physnet1 (its agent's
// --physnet). Servers with a port straight on a flat network over physnet1
// all go to host 0, even when the weigher would spread them; servers on a
// VXLAN network go to both; a server on a flat network over a physical
// network no host maps fails with Nova's NoValidHost.
func TestSchedulerPhysnets(t *testing.T) {
	fa := &FakeAgents{}
	opts := Options{Agent: func(i int) node.AgentOptions {
		o := fa.Options(i)
		if i == 0 {
			o.Physnets = map[string]string{"physnet1": "eth9"}
		}
		return o
	}}
	opts.Config = func(i int, cfg *node.Config) {
		cfg.HostSource = func(live node.HostSource) node.HostSource { return agBigHosts{live} }
	}
	c := NewCluster(t, 2, opts)
	e := &agEnv{t: t, c: c, fa: fa, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{}}
	for i := range 2 {
		e.idx[c.Node(i).ID()] = i
	}
	e.seed(t.Context())

	n := c.Node(0)
	p, _ := n.State().ProjectByName("admin")
	ext, ext2 := n.NewID(), n.NewID()
	for _, step := range []struct {
		typ     statedb.CmdType
		payload any
	}{
		{statedb.CmdCreateNetwork, statedb.Network{ID: ext, Name: "ext", ProjectID: p.ID, AdminStateUp: true, External: true,
			NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"}},
		{statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: n.NewID(), Name: "ext-sub", NetworkID: ext,
			ProjectID: p.ID, IPVersion: 4, CIDR: "203.0.113.0/24", GatewayIP: "203.0.113.1",
			AllocationPools: []statedb.IPRange{{Start: "203.0.113.100", End: "203.0.113.199"}}}}},
		{statedb.CmdCreateNetwork, statedb.Network{ID: ext2, Name: "ext2", ProjectID: p.ID, AdminStateUp: true, External: true,
			NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet2"}},
		{statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: n.NewID(), Name: "ext2-sub", NetworkID: ext2,
			ProjectID: p.ID, IPVersion: 4, CIDR: "198.51.100.0/24", GatewayIP: "198.51.100.1",
			AllocationPools: []statedb.IPRange{{Start: "198.51.100.100", End: "198.51.100.199"}}}}},
	} {
		if _, err := rest.Propose(adminContext(t.Context(), t, n), n, step.typ, step.payload); err != nil {
			t.Fatalf("setup %d: %v", step.typ, err)
		}
	}
	// Both hosts' agents have reported what they map.
	c.Eventually(20*time.Second, "both hosts' physnet reports", func() bool {
		sn := n.State()
		_, ok1 := sn.HostNetworks(c.Node(1).ID())
		return sn.HostHasPhysnet(c.Node(0).ID(), "physnet1") && ok1 && !sn.HostHasPhysnet(c.Node(1).ID(), "physnet1")
	})

	create := func(name, network string) string {
		t.Helper()
		st, body := e.do(1, "POST", "/servers", map[string]any{"server": map[string]any{
			"name": name, "imageRef": e.image, "flavorRef": "1", "networks": []any{map[string]any{"uuid": network}}}})
		srv, _ := body["server"].(map[string]any)
		if st != http.StatusAccepted || srv == nil || srv["id"] == nil {
			t.Fatalf("create %s = %d %v", name, st, body)
		}
		return fmt.Sprint(srv["id"])
	}
	var onExt, onVX []string
	for k := range 4 { // spread alone would put two on each host
		onExt = append(onExt, create(fmt.Sprint("ext-", k), ext))
	}
	for k := range 4 {
		onVX = append(onVX, create(fmt.Sprint("vx-", k), e.net))
	}
	placed := func(i *statedb.Instance, ok bool) bool { return ok && i.Host != "" }
	e.waitAll(append(append([]string{}, onExt...), onVX...), "placed", placed)
	for _, id := range onExt {
		if h := e.hostOf(id); h != 0 {
			t.Errorf("server %s with a port on the physnet1 flat network is on host %d; only host 0 maps physnet1", id, h)
		}
	}
	hosts := map[int]bool{}
	for _, id := range onVX {
		hosts[e.hostOf(id)] = true
	}
	if !hosts[1] {
		t.Errorf("no VXLAN server on host 1 (hosts %v): the spread weigher should use it", hosts)
	}

	none := create("nowhere", ext2)
	e.waitAll([]string{none}, "in ERROR", func(i *statedb.Instance, ok bool) bool { return ok && i.VMState == statedb.VMError })
	st, body := e.do(0, "GET", "/servers/"+none, nil)
	srv, _ := body["server"].(map[string]any)
	fault, _ := srv["fault"].(map[string]any)
	if st != http.StatusOK || srv["status"] != "ERROR" || fault == nil || !strings.HasPrefix(fmt.Sprint(fault["message"]), statedb.NoValidHost) ||
		!strings.Contains(fmt.Sprint(fault["message"]), "physnet2") || srv["OS-EXT-SRV-ATTR:host"] != nil && srv["OS-EXT-SRV-ATTR:host"] != "" {
		t.Errorf("server on an unmapped physical network = %d %v; want ERROR with a NoValidHost fault naming physnet2", st, srv)
	}
}
