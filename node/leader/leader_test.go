package leader

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeRaft is leadership driven by the test.
type fakeRaft struct {
	notify   chan bool
	leader   atomic.Bool
	barriers atomic.Int32
	mu       sync.Mutex
	barrier  func(ctx context.Context) error // when set, runs as the barrier
}

func (f *fakeRaft) setBarrier(b func(ctx context.Context) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.barrier = b
}

func newFakeRaft() *fakeRaft { return &fakeRaft{notify: make(chan bool, 16)} }

func (f *fakeRaft) LeaderNotify() <-chan bool { return f.notify }
func (f *fakeRaft) IsLeader() bool            { return f.leader.Load() }
func (f *fakeRaft) Barrier(ctx context.Context) error {
	f.barriers.Add(1)
	f.mu.Lock()
	b := f.barrier
	f.mu.Unlock()
	if b != nil {
		return b(ctx)
	}
	return nil
}

func (f *fakeRaft) lead(ok bool) {
	f.leader.Store(ok)
	f.notify <- ok
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// probe counts the live instances of the routines it wraps.
type probe struct {
	running atomic.Int32
	starts  atomic.Int32
}

func (p *probe) wrap(r Routine) Routine {
	run := r.Run
	r.Run = func(ctx context.Context, hints <-chan struct{}) error {
		p.running.Add(1)
		p.starts.Add(1)
		defer p.running.Add(-1)
		return run(ctx, hints)
	}
	return r
}

// startLeader runs a Leader until the test ends and returns a function
// that stops it and reports whether Run returned.
func startLeader(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); New(cfg).Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// TestRoutinesIndependent: one routine blocks, another panics; the rest
// keep running, the panicking one is restarted; losing leadership
// cancels every routine, the blocked one included, and none keeps running.
func TestRoutinesIndependent(t *testing.T) {
	raft := newFakeRaft()
	p := &probe{}
	var ticks, panics atomic.Int32
	stuckCtx := make(chan context.Context, 4)
	release := make(chan struct{})
	routines := []Routine{
		p.wrap(Routine{Name: "stuck", Run: func(ctx context.Context, _ <-chan struct{}) error {
			stuckCtx <- ctx
			select { // a proposal that waits on something that never answers
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}),
		p.wrap(Every("ticker", time.Millisecond, func(context.Context) { ticks.Add(1) })),
		p.wrap(Routine{Name: "panicky", Run: func(ctx context.Context, _ <-chan struct{}) error {
			if panics.Add(1) <= 2 {
				panic("routine bug")
			}
			<-ctx.Done()
			return nil
		}}),
	}
	startLeader(t, Config{Raft: raft, Routines: routines, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})

	raft.lead(true)
	ctx := <-stuckCtx
	eventually(t, "the ticker to tick while another routine is stuck", func() bool { return ticks.Load() >= 20 })
	eventually(t, "the panicking routine to be restarted until it runs", func() bool { return panics.Load() >= 3 })
	if ctx.Err() != nil {
		t.Fatalf("stuck routine's context ended while leading: %v", ctx.Err())
	}
	if got := p.running.Load(); got != 3 {
		t.Fatalf("%d routines running while leading, want 3", got)
	}

	raft.lead(false)
	eventually(t, "every routine to stop on leadership loss", func() bool { return p.running.Load() == 0 })
	if ctx.Err() == nil {
		t.Fatal("the stuck routine's context is still live after leadership loss")
	}
	startsBefore := p.starts.Load()

	// A new term starts them all again, with fresh contexts.
	raft.lead(true)
	ctx2 := <-stuckCtx
	if ctx2.Err() != nil {
		t.Fatal("new term's context already ended")
	}
	eventually(t, "all routines to start in the new term", func() bool { return p.running.Load() == 3 })
	if p.starts.Load() <= startsBefore {
		t.Fatal("no routine restarted in the new term")
	}
}

// TestRunReturnsOnlyWhenRoutinesEnded: stopping the daemon while leading
// waits for every routine, including one slow to notice.
func TestRunReturnsOnlyWhenRoutinesEnded(t *testing.T) {
	raft := newFakeRaft()
	raft.leader.Store(true) // already leading when Run starts
	p := &probe{}
	var ended atomic.Bool
	routines := []Routine{
		p.wrap(Routine{Name: "slow", Run: func(ctx context.Context, _ <-chan struct{}) error {
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // cleanup after the cancel
			ended.Store(true)
			return nil
		}}),
		p.wrap(Every("ticker", time.Millisecond, func(context.Context) {})),
	}
	stop := startLeader(t, Config{Raft: raft, Routines: routines})
	eventually(t, "routines to start", func() bool { return p.running.Load() == 2 })
	stop()
	if !ended.Load() || p.running.Load() != 0 {
		t.Fatalf("Run returned with routines running (slow ended %v, running %d)", ended.Load(), p.running.Load())
	}
}

// TestBarrierFirst: no routine starts before the barrier passes; a failed
// barrier is retried; losing leadership while the barrier waits starts
// nothing.
func TestBarrierFirst(t *testing.T) {
	raft := newFakeRaft()
	var mu sync.Mutex
	fail := 2
	started := make(chan struct{}, 1)
	raft.setBarrier(func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			return errors.New("no quorum yet")
		}
		return nil
	})
	p := &probe{}
	routines := []Routine{p.wrap(Routine{Name: "r", Run: func(ctx context.Context, _ <-chan struct{}) error {
		if n := raft.barriers.Load(); n < 3 {
			t.Errorf("routine started after %d barrier calls, want the third (first success)", n)
		}
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil
	}})}
	startLeader(t, Config{Raft: raft, Routines: routines, MinBackoff: time.Millisecond})
	raft.lead(true)
	<-started
	raft.lead(false)
	eventually(t, "the routine to stop", func() bool { return p.running.Load() == 0 })

	// A barrier that never passes: leadership lost meanwhile starts nothing.
	block := make(chan struct{}) // never closed
	raft.setBarrier(func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-block:
			return nil
		}
	})
	before := p.starts.Load()
	calls := raft.barriers.Load()
	raft.lead(true)
	eventually(t, "the barrier to be waited on", func() bool { return raft.barriers.Load() > calls })
	raft.lead(false) // the barrier never passes; only the lost leadership ends it
	// The leader answers a later notification only once the lost term
	// (its barrier) ended, so by the time this term starts, the lost one
	// has shown whether it started anything.
	raft.setBarrier(nil)
	raft.lead(true)
	<-started
	if got := p.starts.Load(); got != before+1 {
		t.Fatalf("%d routine starts across a lost and a passed barrier, want 1", got-before)
	}
}

// TestHintNeverBlocks: hints coalesce; a routine busy elsewhere does not
// hold the sender.
func TestHintNeverBlocks(t *testing.T) {
	raft := newFakeRaft()
	got := make(chan struct{})
	l := New(Config{Raft: raft, Routines: []Routine{{Name: "busy", Run: func(ctx context.Context, hints <-chan struct{}) error {
		<-hints
		close(got)
		<-ctx.Done() // never reads hints again
		return nil
	}}}})
	l.Hint() // not leading: dropped, no block
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	raft.lead(true)
	eventually(t, "the routine to get a hint", func() bool {
		l.Hint()
		select {
		case <-got:
			return true
		default:
			return false
		}
	})
	for range 1000 {
		l.Hint()
	}
}
