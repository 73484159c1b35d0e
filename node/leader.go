package node

import (
	"context"

	"github.com/peerstack/peerstack/node/leader"
)

// newLeader wires the leader-only routines (node/leader) to this host's
// Raft, gossip and state. Each runs in its own goroutine while this host
// leads.
func (n *Node) newLeader() *leader.Leader {
	t := n.cfg.Timers
	log := n.log.With("sub", "leader")
	prop := n.raft // leader routines propose through consensus
	routines := []leader.Routine{
		leader.Membership{SelfID: n.id.NodeID, Raft: n.raft, State: n.raft, Gossip: n.gossip, Voters: n.cfg.Voters,
			DeadGrace: n.cfg.DeadGrace, Interval: t.Leader, Logger: log}.Routine(),
		leader.Keys{State: n.raft, Proposer: prop, Now: n.Now, Interval: t.Leader, Logger: log}.Routine(),
		leader.Scheduler{Store: n.raft.Store(), Hosts: n.hosts, Proposer: prop, Gate: n.cfg.SchedulerGate,
			Interval: t.Leader, Logger: log}.Routine(),
		leader.Volumes{SelfID: n.id.NodeID, Store: n.raft.Store(), Hosts: n.hosts, Proposer: prop, Interval: t.Leader,
			Logger: log}.Routine(),
		n.imageRoutine(),
		leader.Quotas{State: n.raft, Proposer: prop, Interval: t.Leader, Logger: log}.Routine(),
		n.failoverRoutine(log),
	}
	routines = append(routines, n.cfg.LeaderRoutines...)
	return leader.New(leader.Config{Raft: n.raft, Routines: routines, Logger: log})
}

// runLeader follows Raft leadership until ctx ends, passing gossip events
// to the leader routines as hints.
func (n *Node) runLeader(ctx context.Context) {
	l := n.newLeader()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.gossip.Events():
				l.Hint()
			}
		}
	}()
	l.Run(ctx)
	<-done
}

// imageRoutine runs the image copier (which hosts hold which images) as a
// leader routine, once per leader period and on gossip hints.
func (n *Node) imageRoutine() leader.Routine {
	return leader.Every("images", n.cfg.Timers.Leader, func(ctx context.Context) { n.imageCopier().Tick(ctx) })
}
