package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

const (
	hostA = "host-a"
	hostB = "host-b"
	image = "img-1"
)

// harness is one agent on host A over a state driven by the test, with
// every dependency faked.
type harness struct {
	t      *testing.T
	st     *agenttest.State
	prop   *agenttest.Proposer
	hv     *agenttest.Hypervisor
	net    *agenttest.Network
	vols   *agenttest.Volumes
	imgs   *agenttest.Images
	vteps  *agenttest.VTEPs
	ag     *agent.Agent
	stop   func()
	hostID string // default hostA
	// wrapHV, if set, is the hypervisor the agent gets in place of hv
	// (to add optional interfaces to the fake).
	wrapHV func(*agenttest.Hypervisor) agent.Hypervisor
	// detachTimeout is the agent's DetachTimeout; default 1 s.
	detachTimeout time.Duration
	// parallel is the agent's Parallel; 0 takes its default.
	parallel int
	// fence is the agent's Fence (nil: none).
	fence *agent.Fence
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, st: agenttest.NewState(), hv: agenttest.NewHypervisor(), net: &agenttest.Network{},
		vols: agenttest.NewVolumes(), imgs: agenttest.NewImages(map[string]string{image: "/images/img-1.qcow2"}),
		vteps: agenttest.NewVTEPs(map[string]string{hostA: "192.0.2.1", hostB: "192.0.2.2"})}
	h.prop = &agenttest.Proposer{State: h.st}
	for _, m := range []string{hostA, hostB} {
		h.apply(statedb.CmdRegisterMember, statedb.Member{ID: m, Name: m})
	}
	h.apply(statedb.CmdCreateNetwork, statedb.Network{ID: "net-1", Name: "net-1", ProjectID: "proj"})
	h.apply(statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: "sub-1", NetworkID: "net-1", ProjectID: "proj",
		IPVersion: 4, CIDR: "10.1.0.0/24", EnableDHCP: true, DNSNameservers: []string{"10.1.0.2"}}, GatewayAuto: true, PoolsAuto: true})
	return h
}

func logger() *slog.Logger {
	if os.Getenv("PEERSTACK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// run starts the agent (again); it stops at the end of the test.
func (h *harness) run() {
	h.t.Helper()
	if h.hostID == "" {
		h.hostID = hostA
	}
	var hv agent.Hypervisor = h.hv
	if h.wrapHV != nil {
		hv = h.wrapHV(h.hv)
	}
	if h.detachTimeout == 0 {
		h.detachTimeout = time.Second
	}
	ag, err := agent.New(agent.Config{
		HostID: h.hostID, State: h.st, Proposer: h.prop, Hypervisor: hv, Network: h.net, VTEPs: h.vteps,
		Volumes: h.vols, Images: h.imgs, ResyncInterval: 200 * time.Millisecond, DetachTimeout: h.detachTimeout, Parallel: h.parallel, Logger: logger(),
		Fence: h.fence,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	h.ag = ag
	h.stop = func() { cancel(); <-done }
	h.t.Cleanup(func() {
		h.stop()
		// Every image the agent took it released (a pinned blob is never
		// evicted from a real host's cache).
		if n := h.imgs.Held(); n != 0 {
			h.t.Errorf("the agent holds %d images after it stopped; want every one released", n)
		}
	})
}

func (h *harness) apply(t statedb.CmdType, payload any) {
	h.t.Helper()
	if err := h.st.Apply(t, payload); err != nil {
		h.t.Fatalf("apply %d: %v", t, err)
	}
}

// server creates a 1-vCPU/128 MB server with one port on net-1 and places
// it on host.
func (h *harness) server(id, host string, mod ...func(*statedb.InstanceCreate)) {
	h.t.Helper()
	ic := statedb.InstanceCreate{
		Instance: statedb.Instance{ID: id, Name: "vm " + id, ProjectID: "proj", UserID: "u", ImageID: image,
			Flavor:  statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1},
			KeyName: "mykey", KeyData: "ssh-ed25519 AAAAC3 test", UserData: "IyEvYmluL3NoCmVjaG8gaGk="},
		NICs: []statedb.NICRequest{{Create: &statedb.PortRequest{ID: "port-" + id, NetworkID: "net-1"}}},
	}
	for _, m := range mod {
		m(&ic)
	}
	h.apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{ic}})
	h.apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{
		Placements: []statedb.PlacementRec{{InstanceID: id, HostID: host}},
		HostCaps:   map[string]statedb.HostCap{host: {VCPUs: 1000, RAMMB: 1 << 20, DiskGB: 10000}},
	})
}

func noNICs(ic *statedb.InstanceCreate) { ic.NICs = nil }

// eventually polls cond until it holds or 10 s pass.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) inst(id string) *statedb.Instance {
	i, _ := h.st.Snapshot().Instance(id)
	return i
}

// waitState waits for an instance's vm_state, power state and an empty
// task state.
func (h *harness) waitState(id, vm string, power int) *statedb.Instance {
	h.t.Helper()
	h.eventually(fmt.Sprintf("%s %s/%d", id, vm, power), func() bool {
		i := h.inst(id)
		return i != nil && i.VMState == vm && i.PowerState == power && i.TaskState == ""
	})
	return h.inst(id)
}

// settle waits until the agent has run two more full resyncs.
func (h *harness) settle() {
	h.t.Helper()
	n := h.ag.Stats().FullSyncs
	h.eventually("two full resyncs", func() bool { return h.ag.Stats().FullSyncs >= n+2 })
}
