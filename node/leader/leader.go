// Package leader runs the cluster's leader-only work: membership
// reconcile, key rotation, scheduling, volume tasks and whatever else the
// daemon hands it as a Routine. Each routine runs in its own goroutine with
// its own context, started once this host has become the Raft leader and
// passed a barrier, and cancelled and awaited when leadership is lost. A
// routine that fails or panics is logged and restarted with back-off
// without touching the others.
//
// It decides and proposes; it must not apply state itself (every change
// goes through a Proposer or Raft's membership calls), touch the host (no
// hv/*) or serve the API. It imports only consensus, gossip, the state
// types and the pure scheduler.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// Raft is what the leader needs from consensus to follow leadership.
type Raft interface {
	// LeaderNotify delivers true when this host becomes leader and false
	// when it stops being one.
	LeaderNotify() <-chan bool
	IsLeader() bool
	// Barrier returns once every entry committed before it is applied
	// locally, so a new leader acts on the whole state.
	Barrier(ctx context.Context) error
}

// Routine is one piece of leader-only work.
type Routine struct {
	Name string
	// Run does the work until ctx ends, then returns. Hints receives a
	// value (without blocking the sender, so some may be coalesced) when
	// something may have changed, such as a gossip event; a routine that
	// does not care may ignore it. Returning early, with or without an
	// error, or panicking gets the routine restarted after a back-off.
	Run func(ctx context.Context, hints <-chan struct{}) error
}

// Every is a routine that calls tick at once, then every interval and on
// each hint. A tick handles (logs) its own errors; the periodic full pass
// catches whatever a dropped hint missed.
func Every(name string, interval time.Duration, tick func(ctx context.Context)) Routine {
	return Routine{Name: name, Run: func(ctx context.Context, hints <-chan struct{}) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			tick(ctx)
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			case <-hints:
			}
		}
	}}
}

// Config configures a Leader.
type Config struct {
	Raft     Raft
	Routines []Routine
	Logger   *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before a failed routine
	// (or a failed barrier) is retried; the wait doubles on each failure
	// in a row. Zero: 100 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
}

// Leader follows Raft leadership and runs the routines while this host
// leads.
type Leader struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	hints []chan struct{} // of the routines of the current term
}

// New returns a Leader; Run starts following leadership.
func New(cfg Config) *Leader {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	return &Leader{cfg: cfg, log: cfg.Logger}
}

// Hint tells every running routine that something may have changed. It
// never blocks: a routine that has a hint pending already gets nothing
// more.
func (l *Leader) Hint() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hints {
		select {
		case h <- struct{}{}:
		default:
		}
	}
}

// term is one spell of leadership: its context and everything started
// under it.
type term struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the barrier and every routine ended
}

// Run follows leadership until ctx ends: on becoming leader it passes a
// barrier and starts every routine (establish); on losing leadership, and
// when ctx ends, it cancels them all and waits for them (revoke). Run
// returns only once no routine runs.
func (l *Leader) Run(ctx context.Context) {
	var cur *term
	if l.cfg.Raft.IsLeader() {
		cur = l.establish(ctx)
	}
	notify := l.cfg.Raft.LeaderNotify()
	for {
		select {
		case <-ctx.Done():
			l.revoke(cur)
			return
		case ok := <-notify:
			switch {
			case ok && cur == nil:
				cur = l.establish(ctx)
			case !ok && cur != nil:
				l.revoke(cur)
				cur = nil
			}
		}
	}
}

// establish starts a term: the barrier, then each routine, in the
// background, so that a lost leadership is noticed while the barrier
// still waits.
func (l *Leader) establish(ctx context.Context) *term {
	tctx, cancel := context.WithCancel(ctx)
	t := &term{cancel: cancel, done: make(chan struct{})}
	hints := make([]chan struct{}, len(l.cfg.Routines))
	for i := range hints {
		hints[i] = make(chan struct{}, 1)
	}
	go func() {
		defer close(t.done)
		if !l.barrier(tctx) {
			return
		}
		l.log.Info("leading the cluster: starting leader routines", "routines", len(l.cfg.Routines))
		l.mu.Lock()
		l.hints = hints
		l.mu.Unlock()
		var wg sync.WaitGroup
		for i, r := range l.cfg.Routines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.supervise(tctx, r, hints[i])
			}()
		}
		wg.Wait()
	}()
	return t
}

// revoke cancels a term and waits until its barrier and every routine
// have returned.
func (l *Leader) revoke(t *term) {
	if t == nil {
		return
	}
	t.cancel()
	<-t.done
	l.mu.Lock()
	l.hints = nil
	l.mu.Unlock()
	l.log.Info("no longer leading: leader routines stopped")
}

// barrier waits for the barrier, retrying with back-off, and reports
// whether it passed before ctx ended.
func (l *Leader) barrier(ctx context.Context) bool {
	wait := l.cfg.MinBackoff
	for {
		err := l.cfg.Raft.Barrier(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		l.log.Warn("leader barrier failed; retrying", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, l.cfg.MaxBackoff)
	}
}

// errReturned is a routine that returned while its context was live.
var errReturned = errors.New("returned before leadership ended")

// supervise runs r until ctx ends, restarting it after a failure with a
// back-off that grows while it keeps failing fast.
func (l *Leader) supervise(ctx context.Context, r Routine, hints <-chan struct{}) {
	wait := l.cfg.MinBackoff
	for {
		start := time.Now()
		err := runSafe(ctx, r, hints)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errReturned
		}
		if time.Since(start) > l.cfg.MaxBackoff {
			wait = l.cfg.MinBackoff // it had been healthy for a while
		}
		l.log.Error("leader routine failed; restarting", "routine", r.Name, "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(2*wait, l.cfg.MaxBackoff)
	}
}

// runSafe runs r once, turning a panic into an error.
func runSafe(ctx context.Context, r Routine, hints <-chan struct{}) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return r.Run(ctx, hints)
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
