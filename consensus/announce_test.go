package consensus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
			cfg.Timers.Commit = time.Hour
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
	write := func(f *Node, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		idx, err := f.Propose(ctx, statedb.CmdReportInstance, statedb.ReportInstanceCmd{HostID: f.cfg.NodeID, InstanceID: fmt.Sprint("i-", i)})
		if idx == 0 {
			return fmt.Errorf("write %d through %s: not in the log: %v", i, f.cfg.NodeID, err)
		}
		if err := f.WaitIndex(ctx, idx); err != nil {
			return fmt.Errorf("write %d through %s: index %d never applied there (commit index %d): %w", i, f.cfg.NodeID, idx, f.raft.CommitIndex(), err)
		}
		return nil
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
