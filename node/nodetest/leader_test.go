package nodetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/leader"
	"github.com/peerstack/peerstack/rest"
)

// stuckRoutine is a leader routine that blocks, like a proposal waiting
// on something that never answers, until released or its leadership ends.
// It records the context of each run by host.
type stuckRoutine struct {
	mu      sync.Mutex
	runs    map[int][]context.Context
	release chan struct{}
}

func (s *stuckRoutine) routine(i int) leader.Routine {
	return leader.Routine{Name: "stuck", Run: func(ctx context.Context, _ <-chan struct{}) error {
		s.mu.Lock()
		s.runs[i] = append(s.runs[i], ctx)
		s.mu.Unlock()
		select {
		case <-s.release:
			<-ctx.Done()
		case <-ctx.Done():
		}
		return nil
	}}
}

// live reports whether host i has a run whose leadership is still on.
func (s *stuckRoutine) live(i int) (started, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ctx := range s.runs[i] {
		started = true
		live = live || ctx.Err() == nil
	}
	return started, live
}

// TestLeaderRoutineStuck: while one leader routine is stuck, the others
// carry on (a server still gets placed, a new host still joins Raft);
// when leadership moves, the old leader's routines all end and the new
// leader starts its own.
func TestLeaderRoutineStuck(t *testing.T) {
	stuck := &stuckRoutine{runs: map[int][]context.Context{}, release: make(chan struct{})}
	defer close(stuck.release)
	c := NewCluster(t, 3, Options{Config: func(i int, cfg *node.Config) {
		cfg.LeaderRoutines = append(cfg.LeaderRoutines, stuck.routine(i))
	}})
	ctx := t.Context()
	l := c.Leader(10 * time.Second)
	c.Eventually(10*time.Second, "the stuck routine to run on the leader", func() bool {
		_, live := stuck.live(l)
		return live
	})

	// Scheduling carries on.
	ld := c.Node(l)
	p, _ := ld.State().ProjectByName("admin")
	tiny, _ := ld.State().Flavor("1")
	id := ld.NewID()
	_, err := rest.Propose(ctx, ld, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{
		{Instance: statedb.Instance{ID: id, Name: "while-stuck", ProjectID: p.ID, Flavor: *tiny}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.Eventually(10*time.Second, "the server placed while a leader routine is stuck", func() bool {
		i, ok := ld.State().Instance(id)
		return ok && i.Host != ""
	})

	// Membership carries on: a new host joins Raft.
	c.Join(ctx)
	c.WaitMembers(4, 20*time.Second)

	// Leadership moves: every routine of the old leader ends. (Elections
	// may have moved it already on a loaded machine: take the current one.)
	l = c.Leader(10 * time.Second)
	ld = c.Node(l)
	c.Eventually(10*time.Second, "the stuck routine to run on the leader", func() bool {
		_, live := stuck.live(l)
		return live
	})
	c.Eventually(30*time.Second, "the old leader's stuck routine to end", func() bool {
		if ld.Consensus().IsLeader() {
			// A transfer may time out on a loaded machine: ask again.
			if err := ld.Consensus().TransferLeadership(); err != nil {
				t.Logf("transfer leadership: %v", err)
			}
		}
		_, live := stuck.live(l)
		return !live && !ld.Consensus().IsLeader()
	})
	nl := c.Leader(10 * time.Second)
	c.Eventually(10*time.Second, "the new leader's routines to start", func() bool {
		_, live := stuck.live(nl)
		return live
	})
	// The new leader schedules too.
	id2 := ld.NewID()
	_, err = rest.Propose(ctx, c.Node(nl), statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{
		{Instance: statedb.Instance{ID: id2, Name: "after-move", ProjectID: p.ID, Flavor: *tiny}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.Eventually(10*time.Second, "the server placed by the new leader", func() bool {
		i, ok := c.Node(nl).State().Instance(id2)
		return ok && i.Host != ""
	})
}

// TestPartitionLeaderAway cuts the leader off from the two other voters:
// it loses leadership and all its leader routines end, the majority
// elects a leader that schedules, and after the heal the old leader
// rejoins and catches up.
func TestPartitionLeaderAway(t *testing.T) {
	stuck := &stuckRoutine{runs: map[int][]context.Context{}, release: make(chan struct{})}
	defer close(stuck.release)
	c := NewCluster(t, 3, Options{Config: func(i int, cfg *node.Config) {
		cfg.LeaderRoutines = append(cfg.LeaderRoutines, stuck.routine(i))
	}})
	ctx := t.Context()
	l := c.Leader(10 * time.Second)
	var rest2 []int
	for i := range 3 {
		if i != l {
			rest2 = append(rest2, i)
		}
	}
	c.Eventually(10*time.Second, "the leader's routines to run", func() bool {
		_, live := stuck.live(l)
		return live
	})

	c.Partition([]int{l}, rest2)
	old := c.Node(l)
	c.Eventually(20*time.Second, "the cut-off leader to step down and its routines to end", func() bool {
		_, live := stuck.live(l)
		return !old.Consensus().IsLeader() && !live
	})
	var nl int
	c.Eventually(20*time.Second, "a leader in the majority", func() bool {
		for _, i := range rest2 {
			if c.Node(i).Consensus().IsLeader() {
				nl = i
				return true
			}
		}
		return false
	})
	c.Eventually(20*time.Second, "the majority to see the old leader gone from gossip", func() bool {
		for _, m := range c.Node(nl).Members() {
			if m.ID == old.ID() {
				return m.GossipState != "alive"
			}
		}
		return false
	})

	// The majority schedules.
	n := c.Node(nl)
	p, _ := n.State().ProjectByName("admin")
	tiny, _ := n.State().Flavor("1")
	id := n.NewID()
	if _, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{
		{Instance: statedb.Instance{ID: id, Name: "in-majority", ProjectID: p.ID, Flavor: *tiny}}}}); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, "the server placed by the majority", func() bool {
		i, ok := n.State().Instance(id)
		return ok && i.Host != ""
	})
	if _, ok := old.State().Instance(id); ok {
		t.Fatal("the cut-off host applied a write of the majority")
	}

	c.Heal()
	c.WaitMembers(3, 30*time.Second)
	c.Eventually(20*time.Second, "the old leader to catch up", func() bool {
		i, ok := old.State().Instance(id)
		return ok && i.Host != ""
	})
}
