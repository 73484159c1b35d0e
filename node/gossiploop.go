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
// also logs members whose clocks cross the skew limit (ClockWatch).
func (n *Node) gossipLoop(ctx context.Context) {
	interval := n.cfg.Timers.GossipHeal
	t := time.NewTicker(interval)
	defer t.Stop()
	watch := membership.NewClockWatch(n.log, n.id.NodeID, n.cfg.MaxClockSkew)
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
		if len(missing) > 0 {
			jctx, cancel := context.WithTimeout(ctx, interval)
			if _, err := n.gossip.Join(jctx, missing); err != nil {
				n.log.Debug("gossip rejoin", "peers", missing, "err", err)
			}
			cancel()
		}
		n.savePeers()
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
