package node

import (
	"context"
	"crypto/rand"
	"sort"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/identity"
	"github.com/peerstack/peerstack/rest"
)

// keyRotation is how often the leader rotates the token signing key.
const keyRotation = 24 * time.Hour

// leaderLoop runs leader-only work while this host leads: membership
// reconcile and signing key rotation. Gossip events only trigger an early
// reconcile; the ticker catches whatever they miss.
func (n *Node) leaderLoop(ctx context.Context) {
	var stop context.CancelFunc
	done := make(chan struct{})
	close(done)
	leadingNow := false
	lead := func(ok bool) {
		if ok == leadingNow {
			return
		}
		leadingNow = ok
		if stop != nil {
			stop()
			<-done
			stop = nil
		}
		if ok {
			lctx, cancel := context.WithCancel(ctx)
			stop = cancel
			done = make(chan struct{})
			go func() { defer close(done); n.leading(lctx) }()
		}
	}
	if n.raft.IsLeader() {
		lead(true)
	}
	for {
		select {
		case <-ctx.Done():
			lead(false)
			return
		case ok := <-n.raft.LeaderNotify():
			lead(ok)
		}
	}
}

func (n *Node) leading(ctx context.Context) {
	if err := n.raft.Barrier(ctx); err != nil {
		n.log.Warn("leader barrier", "err", err)
	}
	n.log.Info("leading the cluster", "node", n.id.NodeID)
	interval := time.Second
	if n.cfg.Fast {
		interval = 100 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	deadSince := map[string]time.Time{}
	for {
		n.reconcileMembers(ctx, deadSince)
		n.rotateKeys(ctx)
		n.computeLeaderTick(ctx)
		n.imagesLeaderTick(ctx)
		n.networksLeaderTick(ctx)
		n.volumesLeaderTick(ctx)
		n.quotasLeaderTick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.gossip.Events():
		}
	}
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
		if s.Voter && dead(s.ID) && s.ID != selfID && len(spare) > 0 && wanted[s.ID] {
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

func (n *Node) reconcileMembers(ctx context.Context, deadSince map[string]time.Time) {
	conf, err := n.raft.Configuration()
	if err != nil {
		return
	}
	states := map[string]gossip.State{}
	for _, m := range n.gossip.Members() {
		states[m.Name] = m.State
	}
	now := time.Now()
	healthy := func(id string) bool { return states[id] == gossip.StateAlive }
	for _, s := range conf {
		if healthy(s.ID) || s.ID == n.id.NodeID {
			delete(deadSince, s.ID)
		} else if _, ok := deadSince[s.ID]; !ok {
			deadSince[s.ID] = now
		}
	}
	dead := func(id string) bool {
		t, ok := deadSince[id]
		return ok && now.Sub(t) > n.cfg.DeadGrace
	}
	voters := n.cfg.Voters
	if c, ok := n.State().Cluster(); ok && c.Settings.Voters > 0 {
		voters = c.Settings.Voters
	}
	p := planMembership(n.id.NodeID, n.State().Members(), conf, healthy, dead, voters)
	do := func(what string, s consensus.Server, f func() error) {
		if err := f(); err != nil {
			n.log.Warn("membership change failed", "op", what, "node", s.ID, "err", err)
			return
		}
		n.log.Info("membership changed", "op", what, "node", s.ID, "addr", s.Address)
	}
	for _, s := range p.addVoters {
		do("add voter", s, func() error { return n.raft.AddVoter(s.ID, s.Address) })
	}
	for _, s := range p.addNonvoters {
		do("add nonvoter", s, func() error { return n.raft.AddNonvoter(s.ID, s.Address) })
	}
	for _, s := range p.promote {
		do("promote", s, func() error { return n.raft.AddVoter(s.ID, s.Address) })
	}
	for _, s := range p.demote {
		do("demote", s, func() error { return n.raft.DemoteVoter(s.ID) })
	}
	for _, s := range p.remove {
		do("remove", s, func() error { return n.raft.RemoveServer(s.ID) })
	}
}

// rotateKeys rotates the token signing key once the active one is old.
func (n *Node) rotateKeys(ctx context.Context) {
	sn := n.State()
	cfg, ok := sn.Cluster()
	if !ok {
		return
	}
	now := n.Now()
	for _, k := range sn.SigningKeys() {
		if k.RetireAt.IsZero() && now.Sub(k.CreatedAt) < keyRotation {
			return
		}
	}
	key, err := identity.NewKey(rand.Reader)
	if err != nil {
		return
	}
	life := cfg.Settings.TokenLifetime
	if life == 0 {
		life = time.Hour
	}
	_, err = rest.Propose(ctx, n, statedb.CmdRotateSigningKeys, statedb.RotateSigningKeysCmd{
		New: statedb.SigningKey{ID: key.ID, Secret: key.Secret, CreatedAt: now}, RetireOldAt: now.Add(life + 5*time.Minute),
	})
	if err != nil {
		n.log.Warn("rotate signing keys", "err", err)
		return
	}
	n.log.Info("rotated token signing key", "key", key.ID)
}
