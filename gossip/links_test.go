package gossip

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// cut is a link switch shared by both sides: one peer address is down
// while cut.
type cut struct {
	down atomic.Bool
	peer atomic.Value // string: the address cut off
}

func (c *cut) Up(addr string) bool {
	p, _ := c.peer.Load().(string)
	return !c.down.Load() || addr != p
}

// TestLinksPartition: with the link down both ways, each side sees the
// other fail and a join is refused; once it is up again they join.
func TestLinksPartition(t *testing.T) {
	la, lb := &cut{}, &cut{}
	ca, cb := testConfig(nodeName(0)), testConfig(nodeName(1))
	ca.Links, cb.Links = la, lb
	a, b := startNode(t, ca), startNode(t, cb)
	la.peer.Store(addr(b))
	lb.peer.Store(addr(a))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.Join(ctx, []string{addr(a)}); err != nil {
		t.Fatalf("join with the link up: %v", err)
	}
	waitFor(t, 10*time.Second, "both alive", func() bool { return a.NumAlive() == 2 && b.NumAlive() == 2 })

	la.down.Store(true)
	lb.down.Store(true)
	waitFor(t, 20*time.Second, "each side to see the other fail", func() bool {
		ma, _ := memberOf(a, nodeName(1))
		mb, _ := memberOf(b, nodeName(0))
		return ma.State != StateAlive && mb.State != StateAlive
	})
	if _, err := b.Join(ctx, []string{addr(a)}); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("join across a cut link: %v, want ErrNoPeers", err)
	}

	la.down.Store(false)
	lb.down.Store(false)
	if _, err := b.Join(ctx, []string{addr(a)}); err != nil {
		t.Fatalf("join after the heal: %v", err)
	}
	waitFor(t, 20*time.Second, "both alive again", func() bool { return a.NumAlive() == 2 && b.NumAlive() == 2 })
}
