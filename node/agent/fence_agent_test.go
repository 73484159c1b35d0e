package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

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
