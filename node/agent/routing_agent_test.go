package agent_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// fakeRouting records what the agent asks hv/router for.
type fakeRouting struct {
	mu      sync.Mutex
	last    agent.RoutingDesired
	applies int
}

func (f *fakeRouting) Apply(_ context.Context, d agent.RoutingDesired) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last, f.applies = d, f.applies+1
	return 0, nil
}

func (f *fakeRouting) fips() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.last.Routers {
		n += len(r.FloatingIPs)
	}
	return n
}

// TestAgentRouting: the agent records its physical networks, runs the
// router of its port with the floating IP, reports the floating IP
// ACTIVE, and drops it when the port moves to another host.
func TestAgentRouting(t *testing.T) {
	st := agenttest.NewState()
	apply := func(c statedb.CmdType, p any) {
		t.Helper()
		if err := st.Apply(c, p); err != nil {
			t.Fatalf("apply %d: %v", c, err)
		}
	}
	for _, m := range []string{hostA, hostB} {
		apply(statedb.CmdRegisterMember, statedb.Member{ID: m, Name: m, APIAddr: "192.0.2.9:8470"})
	}
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "ext", ProjectID: "p", External: true, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	apply(statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "es", NetworkID: "ext", ProjectID: "p", CIDR: "203.0.113.0/24"},
		GatewayAuto: true, PoolsAuto: true})
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "n1", ProjectID: "p"})
	apply(statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "s1", NetworkID: "n1", ProjectID: "p", CIDR: "10.0.1.0/24", EnableDHCP: true},
		GatewayAuto: true, PoolsAuto: true})
	apply(statedb.CmdCreateRouter, statedb.CreateRouterCmd{Router: statedb.Router{ID: "r1", ProjectID: "p"}, Gateway: &statedb.GatewayReq{NetworkID: "ext", PortID: "gwp"}})
	apply(statedb.CmdAddRouterInterface, statedb.RouterInterfaceCmd{RouterID: "r1", SubnetID: "s1", NewPortID: "rip"})
	apply(statedb.CmdCreatePort, statedb.CreatePortCmd{PortRequest: statedb.PortRequest{ID: "vm", NetworkID: "n1", ProjectID: "p", DeviceID: "i1"}, HostID: hostA})
	apply(statedb.CmdCreateFloatingIP, statedb.CreateFloatingIPCmd{FloatingIP: statedb.FloatingIP{ID: "f1", ProjectID: "p", FloatingNetworkID: "ext", FloatingPortID: "fp", PortID: "vm"}})

	start := func(host string, handover time.Duration) (*fakeRouting, func()) {
		rt := &fakeRouting{}
		ag, err := agent.New(agent.Config{HostID: host, State: st, Proposer: &agenttest.Proposer{State: st}, Hypervisor: agenttest.NewHypervisor(),
			Network: &agenttest.Network{}, VTEPs: agenttest.NewVTEPs(map[string]string{hostA: "192.0.2.1", hostB: "192.0.2.2"}),
			Routing: rt, Physnets: map[string]string{"physnet1": "eth0"}, FIPHandover: handover,
			ResyncInterval: 200 * time.Millisecond, Logger: logger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = ag.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return rt, stop
	}
	rt, stopA := start(hostA, time.Hour)
	rtB, stopB := start(hostB, time.Hour)

	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	eventually("the physnet mapping in the state", func() bool { return st.Snapshot().HostHasPhysnet(hostA, "physnet1") })
	eventually("the floating IP applied", func() bool { return rt.fips() == 1 })
	eventually("the floating IP reported ACTIVE", func() bool {
		f, ok := st.Snapshot().FloatingIP("f1")
		return ok && f.Status == statedb.StatusActive && f.HostID == hostA
	})
	rt.mu.Lock()
	r := rt.last.Routers[0]
	rt.mu.Unlock()
	rt.mu.Lock()
	protected := fmt.Sprint(rt.last.Protected)
	rt.mu.Unlock()
	if protected != "[192.0.2.1/32 192.0.2.2/32 192.0.2.9/32]" {
		t.Errorf("protected = %s; want the members' addresses and VTEPs", protected)
	}
	if r.Gateway == nil || r.Gateway.Iface != "eth0" || len(r.Interfaces) != 1 || r.Interfaces[0].Address.String() != "10.0.1.1/24" {
		t.Errorf("router as applied = %+v", r)
	}

	// The port moves to host B: host A withdraws the floating IP and
	// reports it DOWN, only then host B takes it (B would wait an hour
	// otherwise).
	b := hostB
	apply(statedb.CmdUpdatePort, statedb.UpdatePortCmd{ID: "vm", HostID: &b})
	eventually("the floating IP withdrawn from host A", func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		return len(rt.last.Routers) == 0
	})
	eventually("the floating IP ACTIVE on host B", func() bool {
		f, ok := st.Snapshot().FloatingIP("f1")
		return ok && f.Status == statedb.StatusActive && f.HostID == hostB && rtB.fips() == 1
	})

	// Host B dies with the floating IP; the port moves back to A, which
	// takes it after its handover wait without B's word.
	stopB()
	stopA()
	rtA2, _ := start(hostA, 300*time.Millisecond)
	a := hostA
	apply(statedb.CmdUpdatePort, statedb.UpdatePortCmd{ID: "vm", HostID: &a})
	eventually("host A taking the floating IP from a dead host", func() bool {
		f, ok := st.Snapshot().FloatingIP("f1")
		return ok && f.Status == statedb.StatusActive && f.HostID == hostA && rtA2.fips() == 1
	})
}
