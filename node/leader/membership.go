package leader

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// RaftMembers is the Raft configuration and the leader's calls that
// change it (consensus.Node).
type RaftMembers interface {
	Configuration() ([]consensus.Server, error)
	AddVoter(id, addr string) error
	AddNonvoter(id, addr string) error
	DemoteVoter(id string) error
	RemoveServer(id string) error
}

// HostSource tells which hosts are alive and what they offer: gossip
// (*gossip.Gossip), or a stand-in that simulates hosts.
type HostSource interface {
	Members() []gossip.Member
}

// StateSource is the committed state (consensus.Node).
type StateSource interface {
	State() *statedb.Snapshot
}

// Membership keeps the Raft configuration in step with the member records
// and gossip health: new hosts join as voters up to the target (then as
// nonvoters), dead voters are replaced by healthy nonvoters, hosts whose
// record is gone leave Raft.
type Membership struct {
	SelfID string
	Raft   RaftMembers
	State  StateSource
	Gossip HostSource
	// Voters is the target number of voters unless the cluster settings
	// say otherwise.
	Voters int
	// DeadGrace is how long a member must be gone from gossip before its
	// vote is handed to another.
	DeadGrace time.Duration
	Interval  time.Duration
	Logger    *slog.Logger
}

// Routine is the membership reconcile as a leader routine; it also runs on
// every hint (gossip event).
func (m Membership) Routine() Routine {
	return Routine{Name: "membership", Run: func(ctx context.Context, hints <-chan struct{}) error {
		deadSince := map[string]time.Time{} // when each member was first seen gone, this term
		return Every("membership", m.Interval, func(ctx context.Context) { m.reconcile(ctx, deadSince) }).Run(ctx, hints)
	}}
}

// membershipPlan is the pure part of the reconcile: what to change in Raft.
type membershipPlan struct {
	addVoters, addNonvoters, promote, demote, remove []consensus.Server
}

// planMembership decides Raft changes from the member records, the Raft
// configuration and gossip health. healthy tells whether a host is alive in
// gossip; dead whether it has been gone longer than the grace period.
func planMembership(selfID string, members []*statedb.Member, conf []consensus.Server, healthy, dead func(id string) bool, voters int) membershipPlan {
	var p membershipPlan
	inConf := map[string]consensus.Server{}
	nVoters := 0
	for _, s := range conf {
		inConf[s.ID] = s
		if s.Voter && !dead(s.ID) {
			nVoters++
		}
	}
	wanted := map[string]bool{}
	ids := make([]*statedb.Member, len(members))
	copy(ids, members)
	sort.Slice(ids, func(i, j int) bool {
		return ids[i].JoinedAt.Before(ids[j].JoinedAt) || (ids[i].JoinedAt.Equal(ids[j].JoinedAt) && ids[i].ID < ids[j].ID)
	})
	for _, m := range ids {
		wanted[m.ID] = true
		if s, ok := inConf[m.ID]; ok && s.Address != m.RaftAddr && m.RaftAddr != "" && healthy(m.ID) && m.ID != selfID {
			// The host came back on another address: re-add it with the same suffrage.
			s.Address = m.RaftAddr
			if s.Voter {
				p.addVoters = append(p.addVoters, s)
			} else {
				p.addNonvoters = append(p.addNonvoters, s)
			}
			continue
		}
		if _, ok := inConf[m.ID]; ok || !healthy(m.ID) || m.RaftAddr == "" {
			continue
		}
		s := consensus.Server{ID: m.ID, Address: m.RaftAddr}
		if nVoters < voters {
			p.addVoters = append(p.addVoters, s)
			nVoters++
		} else {
			p.addNonvoters = append(p.addNonvoters, s)
		}
	}
	for _, s := range conf {
		if !wanted[s.ID] && s.ID != selfID {
			p.remove = append(p.remove, s)
		}
	}
	// Replace dead voters by healthy nonvoters; fill up to the target.
	var spare []consensus.Server
	for _, m := range ids {
		if s, ok := inConf[m.ID]; ok && !s.Voter && healthy(s.ID) {
			spare = append(spare, s)
		}
	}
	for _, s := range conf {
		if !s.Voter || !dead(s.ID) || s.ID == selfID || !wanted[s.ID] {
			continue
		}
		switch {
		case nVoters >= voters:
			// Live voters already make the target (a new host took the
			// free vote): the dead one only weighs on the quorum.
			p.demote = append(p.demote, s)
		case len(spare) > 0:
			p.promote = append(p.promote, spare[0])
			spare = spare[1:]
			p.demote = append(p.demote, s)
			nVoters++
		}
	}
	for nVoters < voters && len(spare) > 0 {
		p.promote = append(p.promote, spare[0])
		spare = spare[1:]
		nVoters++
	}
	return p
}

func (m Membership) reconcile(ctx context.Context, deadSince map[string]time.Time) {
	conf, err := m.Raft.Configuration()
	if err != nil {
		return
	}
	states := map[string]gossip.State{}
	for _, g := range m.Gossip.Members() {
		states[g.Name] = g.State
	}
	now := time.Now()
	healthy := func(id string) bool { return states[id] == gossip.StateAlive }
	for _, s := range conf {
		if healthy(s.ID) || s.ID == m.SelfID {
			delete(deadSince, s.ID)
		} else if _, ok := deadSince[s.ID]; !ok {
			deadSince[s.ID] = now
		}
	}
	dead := func(id string) bool {
		t, ok := deadSince[id]
		return ok && now.Sub(t) > m.DeadGrace
	}
	sn := m.State.State()
	voters := m.Voters
	if c, ok := sn.Cluster(); ok && c.Settings.Voters > 0 {
		voters = c.Settings.Voters
	}
	p := planMembership(m.SelfID, sn.Members(), conf, healthy, dead, voters)
	do := func(what string, s consensus.Server, f func() error) {
		if ctx.Err() != nil {
			return
		}
		if err := f(); err != nil {
			m.Logger.Warn("membership change failed", "op", what, "node", s.ID, "err", err)
			return
		}
		m.Logger.Info("membership changed", "op", what, "node", s.ID, "addr", s.Address)
	}
	for _, s := range p.addVoters {
		do("add voter", s, func() error { return m.Raft.AddVoter(s.ID, s.Address) })
	}
	for _, s := range p.addNonvoters {
		do("add nonvoter", s, func() error { return m.Raft.AddNonvoter(s.ID, s.Address) })
	}
	for _, s := range p.promote {
		do("promote", s, func() error { return m.Raft.AddVoter(s.ID, s.Address) })
	}
	for _, s := range p.demote {
		do("demote", s, func() error { return m.Raft.DemoteVoter(s.ID) })
	}
	for _, s := range p.remove {
		do("remove", s, func() error { return m.Raft.RemoveServer(s.ID) })
	}
}
