package agent_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// TestAgentProviderPort: a server port on a flat provider network is
// handed to the network driver on the mapped interface, reported ACTIVE
// once plumbed, and dropped from the desired state when it is deleted.
func TestAgentProviderPort(t *testing.T) {
	st := agenttest.NewState()
	apply := func(c statedb.CmdType, p any) {
		t.Helper()
		if err := st.Apply(c, p); err != nil {
			t.Fatalf("apply %d: %v", c, err)
		}
	}
	apply(statedb.CmdRegisterMember, statedb.Member{ID: hostA, Name: hostA, APIAddr: "192.0.2.9:8470"})
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "lan", ProjectID: "p", External: true, Shared: true,
		NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	apply(statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "ls", NetworkID: "lan", ProjectID: "p",
		CIDR: "203.0.113.0/24", EnableDHCP: false}, GatewayAuto: true, PoolsAuto: true})
	apply(statedb.CmdCreatePort, statedb.CreatePortCmd{PortRequest: statedb.PortRequest{ID: "vm", NetworkID: "lan", ProjectID: "p", DeviceID: "i1"}, HostID: hostA})

	nw := &agenttest.Network{}
	ag, err := agent.New(agent.Config{HostID: hostA, State: st, Proposer: &agenttest.Proposer{State: st}, Hypervisor: agenttest.NewHypervisor(),
		Network: nw, VTEPs: agenttest.NewVTEPs(map[string]string{}), Physnets: map[string]string{"physnet1": "lan0"},
		ResyncInterval: 200 * time.Millisecond, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	eventually("the port reported ACTIVE", func() bool {
		p, ok := st.Snapshot().Port("vm")
		return ok && p.Status == statedb.PortActive
	})
	d, _ := nw.Last()
	if len(d.Networks) != 0 || len(d.Providers) != 1 {
		t.Fatalf("desired = %+v; want one provider network and no VXLAN network", d)
	}
	pn := d.Providers[0]
	if pn.ID != "lan" || pn.Iface != "lan0" || pn.VLAN != 0 || len(pn.Ports) != 1 || pn.Ports[0].ID != "vm" ||
		pn.Ports[0].DHCP || pn.Ports[0].IP == nil || pn.Ports[0].Tap != nw.TapName("vm") {
		t.Errorf("provider as applied = %+v", pn)
	}

	apply(statedb.CmdDeletePort, statedb.DeleteCmd{ID: "vm"})
	eventually("the port gone from the desired state", func() bool {
		d, _ := nw.Last()
		return len(d.Providers) == 0
	})
}

// failingVLAN is a network driver on which every VLAN network fails.
type failingVLAN struct{ agenttest.Network }

func (f *failingVLAN) Apply(ctx context.Context, d agent.NetDesired) (int, error) {
	var failed []string
	for _, pn := range d.Providers {
		if pn.VLAN != 0 {
			failed = append(failed, pn.ID)
		}
	}
	writes, err := f.Network.Apply(ctx, d)
	if err != nil || len(failed) == 0 {
		return writes, err
	}
	return writes, &agent.NetPartialError{Networks: failed, Err: errors.New("no 802.1Q")}
}

// TestAgentProviderPartialFailure: a provider network the host cannot
// plumb keeps its own port from ACTIVE, not the ports of other networks.
func TestAgentProviderPartialFailure(t *testing.T) {
	st := agenttest.NewState()
	apply := func(c statedb.CmdType, p any) {
		t.Helper()
		if err := st.Apply(c, p); err != nil {
			t.Fatalf("apply %d: %v", c, err)
		}
	}
	apply(statedb.CmdRegisterMember, statedb.Member{ID: hostA, Name: hostA, APIAddr: "192.0.2.9:8470"})
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "flat", ProjectID: "p", NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "v100", ProjectID: "p", NetworkType: statedb.NetTypeVLAN, PhysicalNetwork: "physnet1", VLAN: 100})
	apply(statedb.CmdCreatePort, statedb.CreatePortCmd{PortRequest: statedb.PortRequest{ID: "pf", NetworkID: "flat", ProjectID: "p", DeviceID: "i1"}, HostID: hostA})
	apply(statedb.CmdCreatePort, statedb.CreatePortCmd{PortRequest: statedb.PortRequest{ID: "pv", NetworkID: "v100", ProjectID: "p", DeviceID: "i2"}, HostID: hostA})

	nw := &failingVLAN{}
	ag, err := agent.New(agent.Config{HostID: hostA, State: st, Proposer: &agenttest.Proposer{State: st}, Hypervisor: agenttest.NewHypervisor(),
		Network: nw, VTEPs: agenttest.NewVTEPs(map[string]string{}), Physnets: map[string]string{"physnet1": "lan0"},
		ResyncInterval: 100 * time.Millisecond, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	status := func(id string) string {
		p, _ := st.Snapshot().Port(id)
		return p.Status
	}
	for deadline := time.Now().Add(10 * time.Second); status("pf") != statedb.PortActive; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the flat network's port is %s; want ACTIVE while the VLAN network fails", status("pf"))
		}
	}
	// Several more syncs (retries of the VLAN network) pass.
	deadline := time.Now().Add(10 * time.Second)
	for n := nw.Applies(); nw.Applies() < n+3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the failed VLAN network is not retried")
		}
	}
	if s := status("pv"); s == statedb.PortActive {
		t.Errorf("the VLAN port is ACTIVE though its network failed")
	}
}

// refusingPort is a network driver that cannot plumb one port, for good.
type refusingPort struct {
	agenttest.Network
	port string
}

func (f *refusingPort) Apply(ctx context.Context, d agent.NetDesired) (int, error) {
	writes, err := f.Network.Apply(ctx, d)
	if err != nil {
		return writes, err
	}
	return writes, &agent.NetPartialError{Ports: []string{f.port}, Refused: map[string]string{f.port: "MAC address taken by the host"},
		Err: errors.New("provider ports " + f.port + ": MAC address taken by the host")}
}

// TestAgentProviderPortRefused: a port that cannot be plumbed as things
// stand fails its server (ERROR, the reason in its fault) instead of
// leaving it in BUILD; the other server on the same network starts.
func TestAgentProviderPortRefused(t *testing.T) {
	st := agenttest.NewState()
	apply := func(c statedb.CmdType, p any) {
		t.Helper()
		if err := st.Apply(c, p); err != nil {
			t.Fatalf("apply %d: %v", c, err)
		}
	}
	apply(statedb.CmdRegisterMember, statedb.Member{ID: hostA, Name: hostA, APIAddr: "192.0.2.9:8470"})
	apply(statedb.CmdSetHostNetworks, statedb.HostNetworks{ID: hostA, Physnets: map[string]string{"physnet1": "lan0"}})
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "flat", ProjectID: "proj", NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	apply(statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "fs", NetworkID: "flat", ProjectID: "proj",
		IPVersion: 4, CIDR: "203.0.113.0/24"}, GatewayAuto: true, PoolsAuto: true})
	for _, id := range []string{"ok", "bad"} {
		apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
			Instance: statedb.Instance{ID: id, Name: id, ProjectID: "proj", UserID: "u", ImageID: image,
				Flavor: statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1}},
			NICs: []statedb.NICRequest{{Create: &statedb.PortRequest{ID: "port-" + id, NetworkID: "flat"}}},
		}}})
		apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{{InstanceID: id, HostID: hostA}},
			HostCaps: map[string]statedb.HostCap{hostA: {VCPUs: 1000, RAMMB: 1 << 20, DiskGB: 10000}}})
	}
	nw := &refusingPort{port: "port-bad"}
	ag, err := agent.New(agent.Config{HostID: hostA, State: st, Proposer: &agenttest.Proposer{State: st}, Hypervisor: agenttest.NewHypervisor(),
		Network: nw, VTEPs: agenttest.NewVTEPs(map[string]string{}), Physnets: map[string]string{"physnet1": "lan0"},
		Volumes: agenttest.NewVolumes(), Images: agenttest.NewImages(map[string]string{image: "/images/img-1.qcow2"}),
		ResyncInterval: 100 * time.Millisecond, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	state := func(id string) *statedb.Instance { i, _ := st.Snapshot().Instance(id); return i }
	for deadline := time.Now().Add(10 * time.Second); state("bad").VMState != statedb.VMError || state("ok").VMState != statedb.VMActive; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("servers: ok %s, bad %s; want ACTIVE and ERROR", state("ok").VMState, state("bad").VMState)
		}
	}
	if f := state("bad").Fault; f == nil || !strings.Contains(f.Message, "port port-bad cannot be plumbed") || !strings.Contains(f.Message, "MAC address taken") {
		t.Errorf("fault of the failed server = %+v; want the port and the reason", f)
	}
}

// TestAgentProviderPortRefusedKeepsRunningServer: a server that ran
// before (its VM gone, as after a host restart, and a reboot asked) whose
// port is now refused is not turned into ERROR nor started: it waits for
// its port, as for a port not plumbed yet. Only servers being built fail
// on a refused port.
func TestAgentProviderPortRefusedKeepsRunningServer(t *testing.T) {
	st := agenttest.NewState()
	apply := func(c statedb.CmdType, p any) {
		t.Helper()
		if err := st.Apply(c, p); err != nil {
			t.Fatalf("apply %d: %v", c, err)
		}
	}
	apply(statedb.CmdRegisterMember, statedb.Member{ID: hostA, Name: hostA, APIAddr: "192.0.2.9:8470"})
	apply(statedb.CmdSetHostNetworks, statedb.HostNetworks{ID: hostA, Physnets: map[string]string{"physnet1": "lan0"}})
	apply(statedb.CmdCreateNetwork, statedb.Network{ID: "flat", ProjectID: "proj", NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	apply(statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "fs", NetworkID: "flat", ProjectID: "proj",
		IPVersion: 4, CIDR: "203.0.113.0/24"}, GatewayAuto: true, PoolsAuto: true})
	apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
		Instance: statedb.Instance{ID: "was", Name: "was", ProjectID: "proj", UserID: "u", ImageID: image,
			Flavor: statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1}},
		NICs: []statedb.NICRequest{{Create: &statedb.PortRequest{ID: "port-was", NetworkID: "flat"}}},
	}}})
	apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{{InstanceID: "was", HostID: hostA}},
		HostCaps: map[string]statedb.HostCap{hostA: {VCPUs: 1000, RAMMB: 1 << 20, DiskGB: 10000}}})
	apply(statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: "was", HostID: hostA,
		VMState: statedb.VMActive, PowerState: statedb.PowerRunning})
	// Its VM is gone (the host restarted) and a hard reboot starts it.
	apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "was", Action: statedb.ActionReboot, Hard: true})

	nw := &refusingPort{port: "port-was"}
	hv := agenttest.NewHypervisor()
	ag, err := agent.New(agent.Config{HostID: hostA, State: st, Proposer: &agenttest.Proposer{State: st}, Hypervisor: hv,
		Network: nw, VTEPs: agenttest.NewVTEPs(map[string]string{}), Physnets: map[string]string{"physnet1": "lan0"},
		Volumes: agenttest.NewVolumes(), Images: agenttest.NewImages(map[string]string{image: "/images/img-1.qcow2"}),
		ResyncInterval: 50 * time.Millisecond, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Several syncs, each refusing the port, pass.
	deadline := time.Now().Add(10 * time.Second)
	for ; nw.Applies() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("network applied %d times; want several syncs", nw.Applies())
		}
	}
	if i, _ := st.Snapshot().Instance("was"); i.VMState != statedb.VMActive || i.Fault != nil {
		t.Errorf("server after refused syncs = %s, fault %+v; want still ACTIVE without a fault", i.VMState, i.Fault)
	}
	if ops := hv.Ops("was"); len(ops) != 0 {
		t.Errorf("hypervisor ops = %v; want none while its port is refused", ops)
	}
}
