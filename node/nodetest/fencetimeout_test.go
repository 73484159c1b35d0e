package nodetest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// pidlessHV is a fake hypervisor that reports no pids, so the fence
// stops its VMs through the hypervisor (as it does a VM without a pid)
// and the test sees when a host fenced itself.
type pidlessHV struct{ *agenttest.Hypervisor }

func (h pidlessHV) Recover(ctx context.Context) ([]agent.VMStatus, error) {
	return noPIDs(h.Hypervisor.Recover(ctx))
}

func (h pidlessHV) List(ctx context.Context) ([]agent.VMStatus, error) {
	return noPIDs(h.Hypervisor.List(ctx))
}

func noPIDs(vs []agent.VMStatus, err error) ([]agent.VMStatus, error) {
	for i := range vs {
		vs[i].PID = 0
	}
	return vs, err
}

// newFenceEnv is newAgEnv's 3-host cluster on shared storage whose fake
// hypervisors report no pids (pidlessHV), with production Raft timers.
func newFenceEnv(t *testing.T) (*agEnv, *FakeAgents) {
	t.Helper()
	// Production Raft timers: the tight test ones hold elections every few
	// seconds on a loaded machine, and each new term waits for a silent
	// host from its own start.
	return newPidlessEnv(t, 3, func(int) consensus.Timers { return consensus.DefaultTimers() })
}

// newPidlessEnv is a cluster of hosts hosts on shared storage whose fake
// hypervisors report no pids (pidlessHV), fences renewing every 200 ms,
// and host i on Raft timers raft(i).
func newPidlessEnv(t *testing.T, hosts int, raft func(i int) consensus.Timers) (*agEnv, *FakeAgents) {
	t.Helper()
	fa := &FakeAgents{}
	opts := quiet()
	if os.Getenv("HF_DEBUG") != "" {
		opts = Options{}
	}
	opts.Agent = func(i int) node.AgentOptions {
		o := fa.Options(i)
		o.Hypervisor = pidlessHV{fa.Hypervisor(i)}
		return o
	}
	opts.Config = func(i int, cfg *node.Config) {
		cfg.HostSource = func(live node.HostSource) node.HostSource { return agBigHosts{live} }
		cfg.Storage = "nfs://nas.invalid/export"
		cfg.Agent.FenceInterval = 200 * time.Millisecond
		cfg.Timers.Raft = raft(i)
	}
	c := NewCluster(t, hosts, opts)
	e := &agEnv{t: t, c: c, fa: fa, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{}}
	for i := range hosts {
		e.idx[c.Node(i).ID()] = i
	}
	e.seed(t.Context())
	return e, fa
}

// patchSettings sends PATCH /cluster/v1/settings through node i as the
// admin and returns the status and body.
func (e *agEnv) patchSettings(i int, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest("PATCH", e.c.URL(i)+"/cluster/v1/settings", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestFenceTimeoutLoweredWhileHostCutOff: T_fence is 6 s and every host
// fences on it; a host running an HA server is cut off from the others
// and, at once, an admin lowers T_fence to the minimum. The cut-off host
// never hears of it and keeps its VM until 6 s of silence; the leader
// must wait for that (the timeout the host last reported), not for the
// new setting: at no moment do two hosts run the server.
func TestFenceTimeoutLoweredWhileHostCutOff(t *testing.T) {
	e, fa := newFenceEnv(t)
	const long = 6 * time.Second
	if st, body := e.patchSettings(0, fmt.Sprintf(`{"fence_timeout":%g}`, long.Seconds())); st != http.StatusOK {
		t.Fatalf("raise fence_timeout: %d %s", st, body)
	}
	e.c.Eventually(30*time.Second, "every host fencing on 6 s", func() bool {
		for _, n := range e.c.Running() {
			if n.FenceTimeout() != long {
				return false
			}
		}
		return true
	})
	leader := e.c.Leader(10 * time.Second)
	var ha string
	cut := -1
	for k := 0; cut < 0; k++ {
		if k > 20 {
			t.Fatal("could not place an HA server off the leader")
		}
		id := e.bfv(k%3, fmt.Sprintf("ha-%d", k), false)
		e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
		if h := e.hostOf(id); h != leader {
			ha, cut = id, h
		}
	}
	cutID := e.c.Node(cut).ID()
	var others []int
	for i := range 3 {
		if i != cut {
			others = append(others, i)
		}
	}
	e.c.Partition([]int{cut}, others)
	t.Cleanup(e.c.Heal)
	cutAt := time.Now()
	if st, body := e.patchSettings(leader, fmt.Sprintf(`{"fence_timeout":%g}`, hfTFence.Seconds())); st != http.StatusOK {
		t.Fatalf("lower fence_timeout while a host is cut off: %d %s", st, body)
	}
	var killedAt time.Duration
	e.c.Eventually(90*time.Second, "HA server running on another host", func() bool {
		onCut := slices.Contains(fa.Hypervisor(cut).Running(), ha)
		if !onCut && killedAt == 0 {
			killedAt = time.Since(cutAt)
		}
		for _, i := range others {
			if slices.Contains(fa.Hypervisor(i).Running(), ha) {
				if onCut {
					t.Fatalf("%v after the cut, the HA server runs on node %d and still on the cut-off node %d", time.Since(cutAt), i, cut)
				}
				t.Logf("cut-off host stopped the VM %v after the cut; the server ran on node %d %v after it", killedAt, i, time.Since(cutAt))
				return true
			}
		}
		return false
	})
	// The scenario held: the cut-off host fenced on the long timeout (it
	// never heard of the lowering), later than the leader would have
	// restarted the server on the new setting alone.
	short := hfTFence + statedb.FenceMargin(hfTFence)
	if killedAt <= short {
		t.Fatalf("the cut-off host stopped the VM %v after the cut; it should have fenced on %v, not before %v", killedAt, long, short)
	}
	if h, ok := e.c.Node(leader).State().HostHealth(cutID); !ok || !h.Fenced {
		t.Fatalf("cut-off host health = %+v; want fenced", h)
	}
}
