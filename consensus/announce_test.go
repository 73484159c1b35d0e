package consensus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// hostForwarder forwards as the internal API does: to the leader's
// ApplyForwarded, with the forwarding host as the origin.
type hostForwarder struct {
	c    *testCluster
	from string
}

func (f hostForwarder) Forward(ctx context.Context, leaderID string, data []byte) (uint64, error) {
	for _, n := range f.c.nodes {
		if n.cfg.NodeID == leaderID {
			return n.ApplyForwarded(ctx, data, statedb.Origin{Host: f.from})
		}
	}
	return 0, ErrNoLeader
}

// TestForwardedWritesAnnounceCommit: with a commit timer of an hour, a
// follower learns a commit index only from a later entry's replication.
// Every forwarded write must still reach the state of the member that
// forwarded it: the leader announces each one. Writes come one at a time
// and many at once from two followers, so some commit while an
// announcement is in flight.
func TestForwardedWritesAnnounceCommit(t *testing.T) {
	c := newTestCluster(t)
	for _, id := range []string{"a", "b", "c"} {
		c.add(id, func(cfg *Config) {
			// Timers slow enough that a loaded machine rarely elects
			// anew: a write cut by an election is not announced by
			// anyone (see below).
			cfg.Timers = Timers{Heartbeat: time.Second, Election: time.Second, LeaderLease: 500 * time.Millisecond, Commit: time.Hour}
			cfg.Forwarder = hostForwarder{c: c, from: id}
		})
	}
	leader := c.start()
	var followers []*Node
	for _, n := range c.nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	// A host's report about an instance the state does not hold is
	// refused in apply, after it entered the log: its member waits to
	// apply it all the same.
	// A write during which leadership moved is inconclusive: the new
	// leader's commit index reaches the follower with its next entry,
	// which, with this commit timer, only the next write brings.
	var inconclusive atomic.Int32
	write := func(f *Node, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		term := leader.raft.CurrentTerm()
		idx, err := f.Propose(ctx, statedb.CmdReportInstance, statedb.ReportInstanceCmd{HostID: f.cfg.NodeID, InstanceID: fmt.Sprint("i-", i)})
		if err == nil || idx > 0 {
			err = f.WaitIndex(ctx, idx)
		}
		switch {
		case err == nil:
			return nil
		case !leader.IsLeader() || leader.raft.CurrentTerm() != term:
			inconclusive.Add(1)
			return nil
		case idx == 0:
			return fmt.Errorf("write %d through %s: not in the log: %v", i, f.cfg.NodeID, err)
		}
		return fmt.Errorf("write %d through %s: index %d never applied there (commit index %d): %w", i, f.cfg.NodeID, idx, f.raft.CommitIndex(), err)
	}
	for i := range 20 {
		if err := write(followers[i%2], i); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var failed atomic.Value
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := write(followers[g%2], 100+g*100+i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	if n := inconclusive.Load(); n > 22 {
		t.Fatalf("%d of 220 writes cut by elections: too few checked", n)
	} else if n > 0 {
		t.Logf("%d of 220 writes cut by elections", n)
	}
}

// TestAnnouncerStandsAsideOnASlowDisk: when two log writes in a row
// would take longer than the commit timer, no barrier is appended.
func TestAnnouncerStandsAsideOnASlowDisk(t *testing.T) {
	lt := &logTimer{LogStore: slowLogs{LogStore: raft.NewInmemStore(), d: 3 * time.Millisecond}}
	var calls atomic.Int32
	a := &commitAnnouncer{barrier: func() error { calls.Add(1); return nil }, worth: func() bool { return lt.below(time.Millisecond) }}
	a.announce(1) // no write measured yet: announced
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() != 1 || a.running.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the first index was never announced")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 3 {
		if err := lt.StoreLog(&raft.Log{Index: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if lt.below(time.Millisecond) {
		t.Fatalf("average log write %v after 3 ms writes; want it counted slow", time.Duration(lt.avg.Load()))
	}
	a.announce(2)
	time.Sleep(20 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d barriers on a slow disk; want none after the first", n-1)
	}
}

// slowLogs is a log store whose writes take d.
type slowLogs struct {
	raft.LogStore
	d time.Duration
}

func (s slowLogs) StoreLog(l *raft.Log) error {
	time.Sleep(s.d)
	return s.LogStore.StoreLog(l)
}

// TestAnnouncerCoversWritesDuringABarrier: a write that commits while a
// barrier is in flight gets a barrier of its own (the one in flight may
// have been sent before it committed); an index already covered gets none.
func TestAnnouncerCoversWritesDuringABarrier(t *testing.T) {
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var calls atomic.Int32
	a := &commitAnnouncer{barrier: func() error {
		calls.Add(1)
		started <- struct{}{}
		<-release
		return nil
	}}
	a.announce(5)
	<-started // barrier for 5 in flight
	a.announce(7)
	a.announce(6)
	release <- struct{}{}
	<-started // another barrier, for 7
	if a.done.Load() != 5 {
		t.Fatalf("done = %d while the second barrier is in flight; want 5", a.done.Load())
	}
	release <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for a.running.Load() || a.done.Load() != 7 {
		if time.Now().After(deadline) {
			t.Fatalf("announcer never settled: running %v, done %d", a.running.Load(), a.done.Load())
		}
		time.Sleep(time.Millisecond)
	}
	a.announce(7) // covered: no barrier
	a.announce(3)
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d barriers; want 2 (one for 5, one for 7; none for covered indexes)", n)
	}
	a.announce(8)
	<-started
	release <- struct{}{}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d barriers after a new index; want 3", n)
	}
}

// TestAnnouncerStress: many writers announcing at once; the last index is
// always covered by a barrier started after it was announced, and
// barriers never overlap.
func TestAnnouncerStress(t *testing.T) {
	var inFlight, overlaps atomic.Int32
	var started atomic.Uint64 // the highest index announced before the latest barrier began
	var announced atomic.Uint64
	a := &commitAnnouncer{}
	a.barrier = func() error {
		if inFlight.Add(1) > 1 {
			overlaps.Add(1)
		}
		started.Store(announced.Load())
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		inFlight.Add(-1)
		return nil
	}
	var next atomic.Uint64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				i := next.Add(1)
				for {
					old := announced.Load()
					if i <= old || announced.CompareAndSwap(old, i) {
						break
					}
				}
				a.announce(i)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for a.running.Load() || a.done.Load() != 3200 {
		if time.Now().After(deadline) {
			t.Fatalf("announcer never covered the last index: done %d, running %v", a.done.Load(), a.running.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if started.Load() < 3200 {
		t.Fatalf("the last barrier began when only %d was announced; want one after 3200", started.Load())
	}
	if overlaps.Load() > 0 {
		t.Fatalf("%d barriers overlapped another", overlaps.Load())
	}
}
