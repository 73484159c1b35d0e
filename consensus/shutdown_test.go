package consensus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// shutdownBound is how long a test lets one Shutdown take before it
// reports a hang: well under Shutdown's own backstop (shutdownWait).
const shutdownBound = 10 * time.Second

// stopWithin shuts n down and fails the test with every goroutine's stack
// if Shutdown does not return within shutdownBound.
func stopWithin(t *testing.T, what string, n *Node) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: shutdown of %s: %v", what, n.cfg.NodeID, err)
		}
	case <-time.After(shutdownBound):
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: shutdown of %s did not return within %v (state %v); goroutines:\n%s",
			what, n.cfg.NodeID, shutdownBound, n.raft.State(), buf)
	}
}

// churn keeps proposing through every node and moving leadership until
// stop is closed.
func churn(ctx context.Context, c *testCluster, seed uint64, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				_, _ = n.Propose(cctx, statedb.CmdCreateProject, project(int(seed)*1000+i*100+j))
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(rng.IntN(60)) * time.Millisecond):
			}
			if l := c.leader(); l != nil {
				_ = l.TransferLeadership()
			}
		}
	}()
	return &wg
}

// TestShutdownReturnsUnderChurn: Shutdown returns promptly whatever Raft
// is doing: writes through every node, leadership moving, the followers'
// shortened-timeout hint firing as leaders' connections end, and nodes
// stopping in every order (leader first, followers first, all at once,
// during a transfer). A Shutdown that does not return fails the test with
// a goroutine dump instead of hanging it.
func TestShutdownReturnsUnderChurn(t *testing.T) {
	rounds := 24
	if testing.Short() {
		rounds = 4
	}
	for round := range rounds {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) { shutdownRound(t, uint64(round)) })
		if t.Failed() {
			return
		}
	}
}

func shutdownRound(t *testing.T, seed uint64) {
	c := newTestCluster(t)
	tm := Timers{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, LeaderLease: 50 * time.Millisecond}
	for _, id := range []string{"a", "b", "c"} {
		c.add(id, func(cfg *Config) { cfg.Timers = tm })
	}
	c.start()
	ctx := testCtx(t)
	stop := make(chan struct{})
	wg := churn(ctx, c, seed, stop)
	rng := rand.New(rand.NewPCG(seed, 2))
	time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
	what := ""
	switch seed % 4 {
	case 0:
		what = "leader first"
		order := []*Node{}
		if l := c.leader(); l != nil {
			order = append(order, l)
		}
		for _, n := range c.nodes {
			if len(order) == 0 || n != order[0] {
				order = append(order, n)
			}
		}
		for _, n := range order {
			stopWithin(t, what, n)
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		}
	case 1:
		what = "followers first"
		l := c.leader()
		for _, n := range c.nodes {
			if n != l {
				stopWithin(t, what, n)
				time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
			}
		}
		if l != nil {
			stopWithin(t, what, l)
		}
	case 2, 3:
		what = "all at once"
		if seed%4 == 3 {
			what = "all at once during a transfer"
			if l := c.leader(); l != nil {
				go func() { _ = l.TransferLeadership() }()
			}
		}
		var sw sync.WaitGroup
		for _, n := range c.nodes {
			sw.Add(1)
			go func() {
				defer sw.Done()
				stopWithin(t, what, n)
			}()
		}
		sw.Wait()
	}
	close(stop)
	wg.Wait()
}

// TestSoleVoterShutdownReturns: a one-node cluster stopped at any point
// of its first election (the shortened timers set, the election under
// way, the timers being restored) and restarted from its data stops
// promptly every time.
func TestSoleVoterShutdownReturns(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 8
	}
	c := newTestCluster(t)
	tm := Timers{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, LeaderLease: 20 * time.Millisecond}
	n := c.add("solo", func(cfg *Config) { cfg.Timers = tm })
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	dir := n.cfg.DataDir
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range rounds {
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		stopWithin(t, fmt.Sprintf("round %d", round), n)
		n = c.add("solo", func(cfg *Config) { cfg.Timers = tm; cfg.DataDir = dir })
	}
	waitFor(t, "the sole voter to lead", n.IsLeader)
	stopWithin(t, "last round", n)
}

// TestTransferLeadershipReturnsOnShutdown: a leadership transfer asked
// for just as the node stops returns. Raft queues the request for its main
// loop, which may stop without taking it; waiting on Raft's answer alone
// then blocks forever (a host leaving the cluster would hang).
func TestTransferLeadershipReturnsOnShutdown(t *testing.T) {
	c := newTestCluster(t)
	tm := Timers{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, LeaderLease: 20 * time.Millisecond}
	n := c.add("solo", func(cfg *Config) { cfg.Timers = tm })
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	dir := n.cfg.DataDir
	for round := range 40 {
		waitFor(t, "the sole voter to lead", n.IsLeader)
		done := make(chan error, 1)
		go func() { done <- n.TransferLeadership() }()
		stopWithin(t, fmt.Sprintf("round %d", round), n)
		// Any answer will do (Raft may answer a transfer cut short by the
		// stop with success); it must come.
		select {
		case <-done:
		case <-time.After(shutdownBound):
			t.Fatalf("round %d: TransferLeadership did not return within %v of Shutdown", round, shutdownBound)
		}
		n = c.add("solo", func(cfg *Config) { cfg.Timers = tm; cfg.DataDir = dir })
	}
}

// TestNoPipelinedReplication: the transport refuses Raft's replication
// pipeline (see noPipelining), so the leader replicates with one bounded
// AppendEntries call at a time and no replication goroutine can wedge.
func TestNoPipelinedReplication(t *testing.T) {
	n := newTestCluster(t).add("a", nil)
	if _, err := n.trans.AppendEntriesPipeline("b", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v; want raft.ErrPipelineReplicationNotSupported", err)
	}
}
