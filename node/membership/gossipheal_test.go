package membership_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/membership"
)

// healGossip is a gossip view the test sets; it records joins.
type healGossip struct {
	mu      sync.Mutex
	members []gossip.Member
	joins   [][]string
}

func (g *healGossip) Members() []gossip.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.members)
}

func (g *healGossip) Join(_ context.Context, peers []string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.joins = append(g.joins, slices.Clone(peers))
	return len(peers), nil
}

func (g *healGossip) joined() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.joins)
}

// peerBook is node.json's peer list in memory.
type peerBook struct {
	mu    sync.Mutex
	peers []string
	saves int
}

func (b *peerBook) Remembered() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.peers)
}

func (b *peerBook) Remember(peers []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peers, b.saves = peers, b.saves+1
	return nil
}

func (b *peerBook) get() ([]string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.peers), b.saves
}

func newHealer(r *raft, g *healGossip, book *peerBook) *membership.GossipHealer {
	keys := membership.NewGossipKeyring(&membership.GossipKeyring{SelfID: "m1", State: r.State},
		membership.GossipKeys{Keys: [][]byte{make([]byte, 32)}})
	return &membership.GossipHealer{SelfID: "m1", Interval: 20 * time.Millisecond, MaxClockSkew: time.Second,
		State: r.State, IsLeader: func() bool { return false }, Gossip: g, Keyring: keys, Peers: book,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// runUntil runs h until done holds (checked every 10 ms) or 10 s pass.
func runUntil(h *membership.GossipHealer, done func() bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { defer close(stopped); h.Run(ctx) }()
	for ctx.Err() == nil && !done() {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-stopped
}

// The healer joins the members the state knows but gossip does not see
// alive, and remembers the state's peers once.
func TestGossipHealerJoinsMissingMembers(t *testing.T) {
	r := twoMembers(t)
	for _, m := range []statedb.Member{{ID: "m3", Name: "third", GossipAddr: "10.0.0.3:7946"}, {ID: "m2", Name: "second", GossipAddr: "10.0.0.2:7946"}} {
		if err := r.st.Apply(statedb.CmdRegisterMember, m); err != nil {
			t.Fatal(err)
		}
	}
	g := &healGossip{members: []gossip.Member{{Name: "m1", State: gossip.StateAlive}, {Name: "m2", State: gossip.StateAlive},
		{Name: "m3", State: gossip.StateDead}}}
	book := &peerBook{peers: []string{"10.0.0.9:7946"}}
	h := newHealer(r, g, book)
	want := []string{"10.0.0.2:7946", "10.0.0.3:7946"}
	if got := h.KnownPeers(); !slices.Equal(got, want) {
		t.Fatalf("known peers %v; want the state's, sorted: %v", got, want)
	}
	runUntil(h, func() bool { return len(g.joined()) >= 2 })
	joins := g.joined()
	if len(joins) < 2 {
		t.Fatalf("%d joins in 10 s at 20 ms; want one per look", len(joins))
	}
	for _, j := range joins {
		if !slices.Equal(j, []string{"10.0.0.3:7946"}) {
			t.Fatalf("joined %v; want only the dead member m3", j)
		}
	}
	if peers, saves := book.get(); !slices.Equal(peers, want) || saves != 1 {
		t.Fatalf("remembered %v in %d saves; want %v once", peers, saves, want)
	}
}

// Before the state lists anyone, a host alone in gossip joins the peers
// it remembered.
func TestGossipHealerUsesRememberedPeersAlone(t *testing.T) {
	r := twoMembers(t)
	g := &healGossip{members: []gossip.Member{{Name: "m1", State: gossip.StateAlive}}}
	book := &peerBook{peers: []string{"10.0.0.9:7946", "10.0.0.8:7946"}}
	h := newHealer(r, g, book)
	runUntil(h, func() bool { return len(g.joined()) > 0 })
	joins := g.joined()
	if len(joins) == 0 || !slices.Equal(joins[0], []string{"10.0.0.8:7946", "10.0.0.9:7946"}) {
		t.Fatalf("joins %v; want the remembered peers, sorted", joins)
	}
	if _, saves := book.get(); saves != 0 {
		t.Fatalf("%d saves with no peer in the state; want none", saves)
	}
}
