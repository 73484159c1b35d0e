package nodetest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/firewall"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/rest"
)

// TestAgentFirewallInNamespace runs one host's agent with the real
// hv/netdev and hv/firewall in a network namespace of its own: a server's
// port gets its chains and its default group's member set, a new rule
// rewrites its ingress chain, and the tables go with the last port.
func TestAgentFirewallInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns := fmt.Sprintf("psfwag-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nft, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	// chains lists our chains in the namespace with their rule counts.
	chains := func() map[string]int {
		out := map[string]int{}
		cs, err := nft.ListChains()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Table.Name != firewall.TableName {
				continue
			}
			rules, err := nft.GetRules(c.Table, c)
			if err != nil {
				t.Fatal(err)
			}
			out[c.Name] = len(rules)
		}
		return out
	}

	hv := agenttest.NewHypervisor()
	opts := quiet()
	opts.Agent = func(int) node.AgentOptions {
		return node.AgentOptions{Hypervisor: hv, Images: agenttest.AnyImage{}, NetNS: "/run/netns/" + ns, ResyncInterval: time.Second}
	}
	c := NewCluster(t, 1, opts)
	e := &agEnv{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{c.Node(0).ID(): 0}}
	e.seed(t.Context())
	id, err := e.create(0, "fw-1")
	if err != nil {
		t.Fatal(err)
	}
	e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	port := c.Node(0).State().PortsOfDevice(id)[0]
	if len(port.SecurityGroups) != 1 {
		t.Fatalf("port groups = %v; want the default group", port.SecurityGroups)
	}
	in := "i-" + port.ID
	var before int
	c.Eventually(20*time.Second, "port chains", func() bool {
		cs := chains()
		before = cs[in]
		return cs["o-"+port.ID] > 0 && cs["e-"+port.ID] > 0 && before > 0
	})
	brT := &nftables.Table{Name: firewall.TableName, Family: nftables.TableFamilyBridge}
	set, err := nft.GetSetByName(brT, "g4-"+port.SecurityGroups[0])
	if err != nil {
		t.Fatalf("default group member set: %v", err)
	}
	if els, err := nft.GetSetElements(set); err != nil || len(els) != 1 {
		t.Errorf("members = %v, %v; want the port's address", els, err)
	}

	// Converged, full resyncs change nothing; a chain emptied behind the
	// agent's back is refilled by the next one and counted as a repair.
	waitResyncs := func(k int) {
		t.Helper()
		from := agentCounter(t, c, e.hc, 0, e.token, "full_resyncs_total")
		c.Eventually(20*time.Second, "full resyncs", func() bool { return agentCounter(t, c, e.hc, 0, e.token, "full_resyncs_total") >= from+k })
	}
	waitResyncs(2)
	writes := agentCounter(t, c, e.hc, 0, e.token, "host_writes_total")
	waitResyncs(2)
	if w, r := agentCounter(t, c, e.hc, 0, e.token, "host_writes_total"), agentCounter(t, c, e.hc, 0, e.token, "repairs_total"); w != writes || r != 0 {
		t.Fatalf("converged host: host writes %d → %d, repairs %d over two full resyncs; want no change", writes, w, r)
	}
	inChain := &nftables.Chain{Name: in, Table: brT}
	nft.FlushChain(inChain)
	if err := nft.Flush(); err != nil {
		t.Fatalf("flush chain %s: %v", in, err)
	}
	c.Eventually(20*time.Second, "emptied chain repaired", func() bool {
		return chains()[in] == before && agentCounter(t, c, e.hc, 0, e.token, "repairs_total") > 0
	})

	// A rule added to the group rewrites the port's ingress chain.
	n := c.Node(0)
	p80 := 80
	if _, err := rest.Propose(adminContext(t.Context(), t, n), n, statedb.CmdCreateSecGroupRule, statedb.SecurityGroupRule{ID: n.NewID(),
		GroupID: port.SecurityGroups[0], Direction: statedb.Ingress, Protocol: "tcp", PortMin: &p80, PortMax: &p80}); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, "ingress chain with the new rule", func() bool { return chains()[in] == before+1 })

	if st, body := e.do(0, "DELETE", "/servers/"+id, nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %v", st, body)
	}
	c.Eventually(20*time.Second, "tables removed", func() bool {
		ts, err := nft.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range ts {
			if strings.HasPrefix(tb.Name, firewall.TableName) {
				return false
			}
		}
		return true
	})
}
