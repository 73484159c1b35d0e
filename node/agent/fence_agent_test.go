package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// slowRecover is a hypervisor whose Recover waits (up to 5 s) for the
// fence's first lease renewal and records whether it came.
type slowRecover struct {
	*agenttest.Hypervisor
	renewed  chan struct{}
	mu       sync.Mutex
	sawLease bool
	done     bool
}

func (h *slowRecover) Recover(ctx context.Context) ([]agent.VMStatus, error) {
	select {
	case <-h.renewed:
		h.mu.Lock()
		h.sawLease = true
		h.mu.Unlock()
	case <-time.After(5 * time.Second):
	}
	h.mu.Lock()
	h.done = true
	h.mu.Unlock()
	return h.Hypervisor.Recover(ctx)
}

// TestAgentRenewsLeaseBeforeRecover: a restarted agent renews its lease
// while it recovers its VMs, not after; the guard's deadline runs from
// the previous run's last renewal.
func TestAgentRenewsLeaseBeforeRecover(t *testing.T) {
	h := newHarness(t)
	renewed := make(chan struct{})
	var once sync.Once
	h.fence = agent.NewFence(agent.FenceConfig{
		Renew: func(context.Context) (uint64, error) {
			once.Do(func() { close(renewed) })
			return 1, nil
		},
		Applied:  func() uint64 { return 1 },
		Timeout:  func() time.Duration { return 10 * time.Second },
		Interval: 50 * time.Millisecond,
	})
	slow := &slowRecover{renewed: renewed}
	h.wrapHV = func(hv *agenttest.Hypervisor) agent.Hypervisor { slow.Hypervisor = hv; return slow }
	h.run()
	h.eventually("recover done", func() bool { slow.mu.Lock(); defer slow.mu.Unlock(); return slow.done })
	slow.mu.Lock()
	defer slow.mu.Unlock()
	if !slow.sawLease {
		t.Fatal("the agent recovered its VMs before it renewed its lease")
	}
}

// TestAgentHoldsHAServersWhileHostDown: while the state has this host
// down (the leader may be failing its servers over), its agent starts no
// HA server, even in contact and caught up; the "back" verdict lets it.
func TestAgentHoldsHAServersWhileHostDown(t *testing.T) {
	h := newHarness(t)
	h.imageRecord()
	h.fence = agent.NewFence(agent.FenceConfig{
		Renew:    func(context.Context) (uint64, error) { return 1, nil },
		Applied:  func() uint64 { return 1 },
		Timeout:  func() time.Duration { return 10 * time.Second },
		Interval: 20 * time.Millisecond,
	})
	h.apply(statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: hostA, Down: true, Fenced: true})
	h.run()
	h.eventually("fence caught up", h.fence.CaughtUp)
	h.server("i-1", hostA, noNICs, func(ic *statedb.InstanceCreate) {
		withNewBootVolume("root-1", true)(ic)
		ic.Root.New.Path = "nfs://192.0.2.9/export/root-1.qcow2"
	})
	if !h.st.Snapshot().HA(h.inst("i-1")) {
		t.Fatal("the server on an NFS boot volume is not HA")
	}
	syncs := h.ag.Stats().Syncs
	h.eventually("three syncs", func() bool { return h.ag.Stats().Syncs >= syncs+3 })
	if n := h.hv.Count("Start", "i-1"); n != 0 {
		t.Fatalf("HA server started %d times on a host the state has fenced", n)
	}
	h.apply(statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: hostA})
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
}
