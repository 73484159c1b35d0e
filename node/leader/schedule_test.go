package leader

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// applier proposes by applying to the store directly.
type applier struct {
	p     *pinState
	mu    sync.Mutex
	count atomic.Int32
}

func (a *applier) Propose(_ context.Context, t statedb.CmdType, payload any) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.count.Add(1)
	a.p.idx++
	c, err := statedb.NewCommand(t, fmt.Sprintf("r%d", a.p.idx), time.Unix(int64(a.p.idx), 0).UTC(), payload)
	if err != nil {
		return 0, err
	}
	b, _ := c.Encode()
	return a.p.idx, a.p.s.Apply(a.p.idx, b).Err
}

// testGate is shut until opened and tells when a scheduler waits on it.
type testGate struct {
	waiting chan struct{} // gets a value each time Wait blocks
	open    chan struct{}
}

func (g *testGate) Wait(ctx context.Context) error {
	select {
	case <-g.open:
		return nil
	default:
	}
	select {
	case g.waiting <- struct{}{}:
	default:
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-g.open:
		return nil
	}
}

// TestSchedulerGate: a shut gate holds the scheduler before it plans;
// once open, pending servers are placed; the routine ends with its
// context.
func TestSchedulerGate(t *testing.T) {
	p := newPinState(t)
	p.server("free", "", "")
	prop := &applier{p: p}
	gate := &testGate{waiting: make(chan struct{}, 1), open: make(chan struct{})}
	s := Scheduler{Store: p.s, Hosts: gossipList(liveHosts("h1", "h2", "h3")), Proposer: prop, Gate: gate,
		Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Routine().Run(ctx, nil) }()

	<-gate.waiting
	if n := prop.count.Load(); n != 0 {
		t.Fatalf("%d plans proposed through a shut gate", n)
	}
	close(gate.open)
	eventually(t, "the server placed once the gate opens", func() bool {
		i, ok := p.s.Snapshot().Instance("free")
		return ok && i.Host != ""
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("scheduler routine ended with %v", err)
	}
}
