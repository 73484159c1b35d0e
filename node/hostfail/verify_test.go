package hostfail

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/rest"
)

// voters models a Raft configuration as the leader L sees it: L's term
// and Raft state, and each other voter's current term and whether L
// reaches it. ConfirmLeader is Raft's commitment rule: a voter that has
// moved to a newer term refuses L's entry, and L needs a quorum of voters.
type voters struct {
	mu        sync.Mutex
	term      uint64
	others    map[string]voter
	verifies  int
	renewed   []string
	committed uint64
}

type voter struct {
	term      uint64
	reachable bool
}

func (v *voters) Leader() (string, string) { return "L", "" }

// IsLeader is L's Raft state: it still reads "leader" until its Raft
// lease runs out, whatever happened beyond the partition.
func (v *voters) IsLeader() bool { return true }

func (v *voters) ConfirmLeader(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.verifies++
	acks := 1
	for _, o := range v.others {
		if o.reachable && o.term <= v.term {
			acks++
		}
	}
	if acks <= (len(v.others)+1)/2 {
		return fmt.Errorf("%d of %d voters follow term %d", acks, len(v.others)+1, v.term)
	}
	return nil
}

func (v *voters) StepAside()               {}
func (v *voters) Status() consensus.Status { return consensus.Status{CommitIndex: v.committed} }

// A leader cut off from the other voters, which have elected a new
// leader in a newer term, while one host still reaches it: the host's
// renewal must not be acknowledged (the new leader counts the host's
// silence from its election, before this renewal was sent). Raft's state
// alone would have acknowledged it.
func TestDeposedLeaderRefusesRenewal(t *testing.T) {
	v := &voters{term: 4, committed: 9, others: map[string]voter{
		"F1": {term: 4, reachable: true}, "F2": {term: 4, reachable: true}}}
	heard := 0
	l := &Lease{SelfID: "L", SelfName: "leader", Raft: v,
		Heard: func(string, time.Duration, time.Duration) { heard++ }}
	if _, err := l.serve(renewal(10 * time.Second)); err != nil || heard != 1 {
		t.Fatalf("renewal while leading = %v (heard %d); want it acknowledged", err, heard)
	}

	// The partition: F1 and F2 no longer hear L, time out and elect F1 in
	// term 5. L still reads itself as leader.
	v.mu.Lock()
	v.others = map[string]voter{"F1": {term: 5}, "F2": {term: 5}}
	v.mu.Unlock()
	if !l.Raft.IsLeader() {
		t.Fatal("the model lost L's Raft state")
	}
	_, err := l.serve(renewal(10 * time.Second))
	var he *rest.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("renewal at a deposed leader = %v; want 503", err)
	}
	if heard != 1 {
		t.Fatalf("the deposed leader recorded the renewal (heard %d)", heard)
	}
	// The same when F2 is still reachable but has voted in term 5: it
	// refuses L's heartbeat.
	v.mu.Lock()
	v.others["F2"] = voter{term: 5, reachable: true}
	v.mu.Unlock()
	if _, err := l.serve(renewal(10 * time.Second)); err == nil || heard != 1 {
		t.Fatalf("renewal with the reachable voter in a newer term = %v (heard %d); want it refused", err, heard)
	}
	// The leader's own renewal alike.
	if _, err := l.Renew(context.Background(), FenceReport{Timeout: 10 * time.Second, Sent: 5}); err == nil || heard != 1 {
		t.Fatalf("the deposed leader's own renewal = %v (heard %d); want it refused", err, heard)
	}
	// One voter back on L's term and reachable: a quorum (L, F2).
	v.mu.Lock()
	v.others["F2"] = voter{term: 4, reachable: true}
	v.mu.Unlock()
	if _, err := l.Renew(context.Background(), FenceReport{Timeout: 10 * time.Second, Sent: 6}); err != nil || heard != 2 {
		t.Fatalf("own renewal with a quorum = %v (heard %d)", err, heard)
	}
}

// Concurrent confirmations share rounds, and a caller never gets the
// result of a round that began before it called: that round's heartbeats
// may predate its renewal.
func TestLeaderCheckJoinsOnlyARoundNotStarted(t *testing.T) {
	const callers = 50
	var c leaderCheck
	var seq, arrived, rounds atomic.Int64
	allArrived := make(chan struct{})
	verify := func(context.Context) error {
		start := seq.Add(1)
		if rounds.Add(1) == 1 {
			<-allArrived // the first round runs while every caller arrives
		}
		return roundErr{start: start}
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := seq.Add(1)
			if arrived.Add(1) == callers {
				close(allArrived)
			}
			var re roundErr
			if err := c.confirm(context.Background(), verify); !errors.As(err, &re) {
				errs <- fmt.Errorf("confirm = %v", err)
			} else if re.start < at {
				errs <- fmt.Errorf("a caller arriving at %d got the round started at %d", at, re.start)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := rounds.Load(); n >= callers {
		t.Errorf("%d callers ran %d rounds; want them shared", callers, n)
	}
	t.Logf("%d concurrent confirmations, %d rounds", callers, rounds.Load())

	// The rounds' goroutine may still be winding down after its last
	// round answered: a caller arriving then joins a round that goroutine
	// runs with the verify it was started with (in the daemon it is
	// always the same function; here the next steps pass others).
	idle := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			c.mu.Lock()
			running := c.running
			c.mu.Unlock()
			if !running {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the rounds' goroutine still runs 5 s after its last round")
			}
			time.Sleep(time.Millisecond)
		}
	}
	idle()

	// Nothing runs now: the next caller starts a round of its own, and a
	// caller whose context ends stops waiting while the round goes on.
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.confirm(ctx, func(context.Context) error { <-release; return nil })
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled confirm = %v", err)
	}
	close(release)
	idle()
	if err := c.confirm(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

type roundErr struct{ start int64 }

func (e roundErr) Error() string { return fmt.Sprintf("round started at %d", e.start) }

// BenchmarkLeaseConfirm: renewals confirmed concurrently (as hundreds of
// hosts renew) against a quorum round that takes 1 ms: rounds run per
// renewal, and the wait per renewal.
func BenchmarkLeaseConfirm(b *testing.B) {
	var c leaderCheck
	var rounds atomic.Int64
	verify := func(context.Context) error {
		rounds.Add(1)
		time.Sleep(time.Millisecond) // a round trip to the followers
		return nil
	}
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.confirm(context.Background(), verify); err != nil {
				b.Error(err)
			}
		}
	})
	b.ReportMetric(float64(rounds.Load())/float64(b.N), "rounds/renewal")
}

// fakeClock advances only when slept on.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Sleep(d time.Duration) { f.advance(d) }

func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// Rounds start at least minRoundGap apart, also when the second is asked
// for after an idle moment shorter than the gap.
func TestLeaderCheckSpacesRoundsAfterIdle(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	c := leaderCheck{clock: clk}
	var starts []time.Time
	verify := func(context.Context) error {
		starts = append(starts, clk.Now()) // rounds run one at a time
		return nil
	}
	for _, idle := range []time.Duration{0, time.Millisecond, minRoundGap / 2, minRoundGap, 3 * minRoundGap} {
		clk.advance(idle)
		if err := c.confirm(context.Background(), verify); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < minRoundGap {
			t.Errorf("round %d started %v after round %d; want at least %v", i, gap, i-1, minRoundGap)
		}
	}
}

// stuckRaft leads but never gets a confirmation answered (its disk
// stalls), counting its steps aside.
type stuckRaft struct {
	voters
	aside atomic.Int32
}

func (s *stuckRaft) ConfirmLeader(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s *stuckRaft) StepAside() { s.aside.Add(1) }

// A leader whose confirmation is not answered within the stall limit
// steps aside: its heartbeats would otherwise keep the others from
// electing a leader that can confirm, and every host would fence.
func TestLeaseStepsAsideWhenConfirmationStalls(t *testing.T) {
	r := &stuckRaft{}
	l := &Lease{SelfID: "L", SelfName: "leader", Raft: r, StallLimit: 50 * time.Millisecond,
		Heard: func(string, time.Duration, time.Duration) { t.Error("a stalled confirmation acknowledged a renewal") }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := l.Renew(ctx, FenceReport{Timeout: 10 * time.Second, Sent: 1}); err == nil {
		t.Fatal("the leader's own renewal was acknowledged without a confirmation")
	}
	if n := r.aside.Load(); n != 1 {
		t.Fatalf("stepped aside %d times during a confirmation stalled for 1 s; want once", n)
	}
}
