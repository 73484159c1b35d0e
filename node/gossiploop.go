package node

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/membership"
)

// gossipPeers are the gossip addresses of the other members: from the
// state once it is known, else from what node.json remembered.
func (n *Node) gossipPeers() []string {
	var peers []string
	for _, m := range n.State().Members() {
		if m.ID != n.id.NodeID && m.GossipAddr != "" {
			peers = append(peers, m.GossipAddr)
		}
	}
	if len(peers) == 0 {
		n.mu.Lock()
		peers = append(peers, n.id.Peers...)
		n.mu.Unlock()
	}
	sort.Strings(peers)
	return peers
}

// gossipLoop heals gossip: it joins members the state knows but gossip does
// not see alive (after a restart, or a partition that made the others
// declare this host dead), and keeps node.json's peer list current. It
// also logs members whose clocks cross the skew limit (ClockWatch), and
// keeps the gossip keys current (tendGossipKeys).
func (n *Node) gossipLoop(ctx context.Context) {
	interval := n.cfg.Timers.GossipHeal
	t := time.NewTicker(interval)
	defer t.Stop()
	watch := membership.NewClockWatch(n.log, n.id.NodeID, n.cfg.MaxClockSkew)
	keys := keyTending{rotator: &membership.Rotator{Keyring: n.gkeys, Logger: n.log.With("sub", "gossip-keys")}}
	defer keys.rotator.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		members := n.gossip.Members()
		watch.Observe(members)
		alive := map[string]bool{}
		for _, m := range members {
			if m.State == gossip.StateAlive {
				alive[m.Name] = true
			}
		}
		var missing []string
		for _, m := range n.State().Members() {
			if m.ID != n.id.NodeID && !alive[m.ID] && m.GossipAddr != "" {
				missing = append(missing, m.GossipAddr)
			}
		}
		if len(alive) <= 1 && len(missing) == 0 {
			missing = n.gossipPeers() // state not replayed yet: use node.json
		}
		joinFailed := false
		if len(missing) > 0 {
			jctx, cancel := context.WithTimeout(ctx, interval)
			if _, err := n.gossip.Join(jctx, missing); err != nil {
				n.log.Debug("gossip rejoin", "peers", missing, "err", err)
				joinFailed = true
			}
			cancel()
		}
		n.tendGossipKeys(ctx, &keys, joinFailed)
		n.savePeers()
	}
}

// keyRotationSince is the first release that takes gossip keys over the
// internal API: the leader rotates the key only when every member runs it
// (an older member would be left with the old key, cut off from gossip).
const keyRotationSince = "0.2.0"

// keyTending is the gossip loop's memory of the key rotation it runs and
// of its key fetches.
type keyTending struct {
	rotator *membership.Rotator
	pacer   membership.FetchPacer
	gated   bool // the leader logged that an older member holds rotation back
}

// tendGossipKeys keeps the gossip keys current. The leader rotates the key
// once the state revokes a member (membership.GossipKeyring.Converge, in a
// goroutine of its own, cancelled when this host stops leading); any
// other member fetches the keys from the others when it cannot rejoin
// gossip (it missed a rotation while down or cut off: every second) or
// its keys predate a revocation or a rotation left it two (every five
// seconds, while the leader's steps reach it anyway) — backing off to a
// minute while every fetch fails.
func (n *Node) tendGossipKeys(ctx context.Context, kt *keyTending, joinFailed bool) {
	sn := n.State()
	if _, revoked := sn.RevokedHost(n.id.NodeID); revoked {
		kt.rotator.Tend(ctx, false)
		return // this host was removed: it gets no new key
	}
	if n.raft.IsLeader() {
		if m, older := sn.MemberOlderThan(keyRotationSince); older {
			if !kt.gated {
				n.log.Warn("gossip key not rotated: a member runs an older release", "member", m.Name, "version", m.Version)
				kt.gated = true
			}
			return
		}
		kt.gated = false
		kt.rotator.Tend(ctx, true)
		return
	}
	kt.rotator.Tend(ctx, false)
	if !joinFailed && !n.gkeys.Stale() {
		return
	}
	if !kt.pacer.Due(time.Now(), joinFailed) {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := n.gkeys.Refresh(fctx)
	kt.pacer.Done(err)
	if err != nil {
		n.log.Debug("fetch gossip keys", "err", err)
	}
}

// savePeers records the current peers in node.json when they changed.
func (n *Node) savePeers() {
	var peers []string
	for _, m := range n.State().Members() {
		if m.ID != n.id.NodeID && m.GossipAddr != "" {
			peers = append(peers, m.GossipAddr)
		}
	}
	sort.Strings(peers)
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(peers) == 0 || slices.Equal(peers, n.id.Peers) || n.id.Left {
		return
	}
	n.id.Peers = peers
	if err := saveIdentity(n.cfg.DataDir, n.id); err != nil {
		n.log.Warn("save peers", "err", err)
	}
}
