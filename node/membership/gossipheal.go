package membership

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// HealedGossip is what healing needs of the running gossip.
type HealedGossip interface {
	Members() []gossip.Member
	Join(ctx context.Context, peers []string) (int, error)
}

// PeerBook is where this host remembers the other members' gossip
// addresses across restarts (node.json).
type PeerBook interface {
	// Remembered is the list last saved.
	Remembered() []string
	// Remember saves peers (a host that left keeps what it had).
	Remember(peers []string) error
}

// GossipHealer heals gossip: it joins members the state knows but gossip
// does not see alive (after a restart, or a partition that made the
// others declare this host dead), and keeps the remembered peer list
// current. It also logs members whose clocks cross the skew limit
// (ClockWatch), and keeps the gossip keys current (tendKeys).
type GossipHealer struct {
	SelfID string
	// Interval is how often it looks (and how long a join may take).
	Interval time.Duration
	// MaxClockSkew is the limit ClockWatch logs crossings of.
	MaxClockSkew time.Duration
	// State is the local state.
	State func() *statedb.Snapshot
	// IsLeader reports whether this host leads Raft.
	IsLeader func() bool
	Gossip   HealedGossip
	Keyring  *GossipKeyring
	Peers    PeerBook
	Logger   *slog.Logger
}

// KnownPeers are the gossip addresses of the other members: from the
// state once it is known, else the remembered ones.
func (h *GossipHealer) KnownPeers() []string {
	var peers []string
	for _, m := range h.State().Members() {
		if m.ID != h.SelfID && m.GossipAddr != "" {
			peers = append(peers, m.GossipAddr)
		}
	}
	if len(peers) == 0 {
		peers = append(peers, h.Peers.Remembered()...)
	}
	sort.Strings(peers)
	return peers
}

// Run heals every Interval until ctx ends.
func (h *GossipHealer) Run(ctx context.Context) {
	interval := h.Interval
	t := time.NewTicker(interval)
	defer t.Stop()
	watch := NewClockWatch(h.Logger, h.SelfID, h.MaxClockSkew)
	keys := keyTending{rotator: &Rotator{Keyring: h.Keyring, Logger: h.Logger.With("sub", "gossip-keys")}}
	defer keys.rotator.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		members := h.Gossip.Members()
		watch.Observe(members)
		alive := map[string]bool{}
		for _, m := range members {
			if m.State == gossip.StateAlive {
				alive[m.Name] = true
			}
		}
		var missing []string
		for _, m := range h.State().Members() {
			if m.ID != h.SelfID && !alive[m.ID] && m.GossipAddr != "" {
				missing = append(missing, m.GossipAddr)
			}
		}
		if len(alive) <= 1 && len(missing) == 0 {
			missing = h.KnownPeers() // state not replayed yet: use node.json
		}
		joinFailed := false
		if len(missing) > 0 {
			jctx, cancel := context.WithTimeout(ctx, interval)
			if _, err := h.Gossip.Join(jctx, missing); err != nil {
				h.Logger.Debug("gossip rejoin", "peers", missing, "err", err)
				joinFailed = true
			}
			cancel()
		}
		h.tendKeys(ctx, &keys, joinFailed)
		h.savePeers()
	}
}

// keyRotationSince is the first release that takes gossip keys over the
// internal API: the leader rotates the key only when every member runs it
// (an older member would be left with the old key, cut off from gossip).
const keyRotationSince = "0.2.0"

// keyTending is the healer's memory of the key rotation it runs and of
// its key fetches.
type keyTending struct {
	rotator *Rotator
	pacer   FetchPacer
	gated   bool // the leader logged that an older member holds rotation back
}

// tendKeys keeps the gossip keys current. The leader rotates the key
// once the state revokes a member (GossipKeyring.Converge, in a goroutine
// of its own, cancelled when this host stops leading); any other member
// fetches the keys from the others when it cannot rejoin gossip (it
// missed a rotation while down or cut off: every second) or its keys
// predate a revocation or a rotation left it two (every five seconds,
// while the leader's steps reach it anyway) — backing off to a minute
// while every fetch fails.
func (h *GossipHealer) tendKeys(ctx context.Context, kt *keyTending, joinFailed bool) {
	sn := h.State()
	if _, revoked := sn.RevokedHost(h.SelfID); revoked {
		kt.rotator.Tend(ctx, false)
		return // this host was removed: it gets no new key
	}
	if h.IsLeader() {
		if m, older := sn.MemberOlderThan(keyRotationSince); older {
			if !kt.gated {
				h.Logger.Warn("gossip key not rotated: a member runs an older release", "member", m.Name, "version", m.Version)
				kt.gated = true
			}
			return
		}
		kt.gated = false
		kt.rotator.Tend(ctx, true)
		return
	}
	kt.rotator.Tend(ctx, false)
	if !joinFailed && !h.Keyring.Stale() {
		return
	}
	if !kt.pacer.Due(time.Now(), joinFailed) {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := h.Keyring.Refresh(fctx)
	kt.pacer.Done(err)
	if err != nil {
		h.Logger.Debug("fetch gossip keys", "err", err)
	}
}

// savePeers remembers the current peers when they changed.
func (h *GossipHealer) savePeers() {
	var peers []string
	for _, m := range h.State().Members() {
		if m.ID != h.SelfID && m.GossipAddr != "" {
			peers = append(peers, m.GossipAddr)
		}
	}
	sort.Strings(peers)
	if len(peers) == 0 || slices.Equal(peers, h.Peers.Remembered()) {
		return
	}
	if err := h.Peers.Remember(peers); err != nil {
		h.Logger.Warn("save peers", "err", err)
	}
}
