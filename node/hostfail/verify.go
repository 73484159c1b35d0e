package hostfail

import (
	"context"
	"sync"
	"time"
)

// A leader acknowledges a lease renewal only after it has confirmed, with
// a quorum, that it still leads — Raft's state alone will not do. A
// leader cut off from the other voters still reads itself as leader until
// its Raft lease runs out (longer when its process stalls), and a new
// leader may have been elected meanwhile. The new leader counts a host's
// silence from its own election, so a renewal the host sent after that
// election and the old leader acknowledged would carry the host's fence
// deadline past the moment the new leader restarts its servers elsewhere.
//
// The confirmation is an entry (a Raft barrier) appended after the
// renewal arrived, hence after it was sent, and committed in this
// leader's term. Commitment means a quorum of voters stored it, and a
// voter that had voted in a newer term would have refused it. Any newer
// leader needs the vote of one of them, so it is elected after the host
// sent the renewal and counts the host's silence from later than the
// host does. (Raft's VerifyLeader would not do: it counts non-voters'
// heartbeat answers toward the quorum; consensus.Node.ConfirmLeader.)
//
// Hundreds of hosts renew every second, so concurrent renewals share
// rounds: a renewal joins the next round that has not started yet, never
// one already under way (that one may have begun before it arrived); and
// rounds start at most every minRoundGap, so a steady stream of renewals
// costs at most 1/minRoundGap rounds a second, not one per round trip.

// verifyRoundTimeout bounds one round: a leader without a quorum steps
// down within its Raft lease, which ends a round sooner.
const verifyRoundTimeout = 10 * time.Second

// minRoundGap is the least time between the starts of two rounds.
const minRoundGap = 10 * time.Millisecond

// leaderCheck coalesces leadership confirmations; its zero value is ready.
type leaderCheck struct {
	mu        sync.Mutex
	running   bool         // a goroutine runs rounds (or waits to start the next)
	next      *verifyRound // the round new callers join; nil: none asked for
	lastStart time.Time    // when the last round started

	clock roundClock // nil: the real one
}

// roundClock is the time a leaderCheck spaces its rounds by.
type roundClock interface {
	Now() time.Time
	Sleep(time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time        { return time.Now() }
func (realClock) Sleep(d time.Duration) { time.Sleep(d) }

type verifyRound struct {
	done chan struct{}
	err  error
}

// confirm returns once a round of verify that started after the call
// ended, with its result, or when ctx ends.
func (c *leaderCheck) confirm(ctx context.Context, verify func(context.Context) error) error {
	c.mu.Lock()
	if c.next == nil {
		c.next = &verifyRound{done: make(chan struct{})}
	}
	r := c.next
	if !c.running {
		c.running = true
		go c.run(verify)
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run starts the round callers joined, no sooner than minRoundGap after
// the previous round started (however long ago that was), and goes on
// while callers join the next one.
func (c *leaderCheck) run(verify func(context.Context) error) {
	clk := c.clock
	if clk == nil {
		clk = realClock{}
	}
	for {
		c.mu.Lock()
		wait := c.lastStart.Add(minRoundGap).Sub(clk.Now())
		c.mu.Unlock()
		// Callers keep joining the next round until it starts.
		if wait > 0 {
			clk.Sleep(wait)
		}
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.lastStart = clk.Now()
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), verifyRoundTimeout)
		r.err = verify(ctx)
		cancel()
		close(r.done)
		c.mu.Lock()
		if c.next == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}
