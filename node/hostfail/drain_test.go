package hostfail

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
)

// drainRaft is an empty state whose proposals fail or hang as told.
type drainRaft struct {
	store *statedb.Store
	mu    sync.Mutex
	fail  error
	hang  chan struct{} // when set, Propose waits for it or ctx
}

func (r *drainRaft) State() *statedb.Snapshot { return r.store.Snapshot() }

func (r *drainRaft) Propose(ctx context.Context, _ statedb.CmdType, _ any) (uint64, error) {
	r.mu.Lock()
	fail, hang := r.fail, r.hang
	r.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return 0, fail
}

func waitDrain(t *testing.T, d *Drainer, want string) DrainStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := d.Status()
		if st.Status == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("drain status %+v; want %s", st, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A drain runs in the background and always ends: a failed step fails
// it with the reason, a drain asked for while one runs is that one, and
// a daemon stopping during one fails it rather than leaving it draining.
func TestDrainRunsInBackgroundAndEnds(t *testing.T) {
	r := &drainRaft{store: statedb.NewStore(), fail: errors.New("no quorum")}
	d := &Drainer{HostID: "h1", HostName: "host1", Raft: r, Hypervisor: func() agent.Hypervisor { return nil }, Logger: slog.New(slog.DiscardHandler)}
	if st := d.Status(); st.Status != DrainNone {
		t.Fatalf("status before any drain = %+v; want none", st)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()

	// The first proposal waits until Start has answered: a drain that
	// fails at once may otherwise have failed before Start reads it.
	gate := make(chan struct{})
	r.mu.Lock()
	r.hang = gate
	r.mu.Unlock()
	if st, err := d.Start(context.Background()); err != nil || st.Status != DrainDraining {
		t.Fatalf("Start = %+v, %v; want draining", st, err)
	}
	r.mu.Lock()
	r.hang = nil
	r.mu.Unlock()
	close(gate)
	st := waitDrain(t, d, DrainFailed)
	if !strings.Contains(st.Message, "no quorum") || st.FinishedAt.IsZero() {
		t.Fatalf("failed drain = %+v; want the reason and an end time", st)
	}

	// Proposals hang: a second Start returns the drain under way; the
	// daemon stopping fails it.
	hang := make(chan struct{})
	r.mu.Lock()
	r.fail, r.hang = nil, hang
	r.mu.Unlock()
	first, err := d.Start(context.Background())
	if err != nil || first.Status != DrainDraining {
		t.Fatalf("Start = %+v, %v; want draining", first, err)
	}
	again, err := d.Start(context.Background())
	if err != nil || again.Status != DrainDraining || !again.StartedAt.Equal(first.StartedAt) {
		t.Fatalf("Start during a drain = %+v, %v; want the running one (%v)", again, err, first.StartedAt)
	}
	stop()
	<-done
	st = d.Status()
	if st.Status != DrainFailed || !strings.Contains(st.Message, "daemon stopped") {
		t.Fatalf("drain when the daemon stopped = %+v; want failed, saying so", st)
	}
}

// recordRaft applies what is proposed to a real store.
type recordRaft struct {
	store *statedb.Store
	mu    sync.Mutex
	idx   uint64
	types []statedb.CmdType
}

func (r *recordRaft) State() *statedb.Snapshot { return r.store.Snapshot() }

func (r *recordRaft) Propose(_ context.Context, t statedb.CmdType, payload any) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.idx++
	c, err := statedb.NewCommand(t, "", time.Unix(int64(r.idx), 0).UTC(), payload)
	if err != nil {
		return 0, err
	}
	b, _ := c.Encode()
	r.types = append(r.types, t)
	return r.idx, r.store.Apply(r.idx, b).Err
}

// A draining state left by a previous run of the daemon (it stopped
// mid-drain) is withdrawn: the host does not stay draining for good.
func TestDrainWithdrawsALeftoverDrainingState(t *testing.T) {
	r := &recordRaft{store: statedb.NewStore()}
	if _, err := r.Propose(context.Background(), statedb.CmdRegisterMember, statedb.Member{ID: "h1", Name: "host1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Propose(context.Background(), statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: "h1", Draining: true}); err != nil {
		t.Fatal(err)
	}
	d := &Drainer{HostID: "h1", HostName: "host1", Raft: r, Hypervisor: func() agent.Hypervisor { return nil }, Logger: slog.New(slog.DiscardHandler)}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := r.State().HostHealth("h1"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leftover draining state was not withdrawn")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	if st := d.Status(); st.Status != DrainNone {
		t.Fatalf("status = %+v; want none (no drain ran here)", st)
	}
}

// noQuorum is consensus without a quorum: a proposal waits until its
// context ends.
type noQuorum struct{ store *statedb.Store }

func (r *noQuorum) State() *statedb.Snapshot { return r.store.Snapshot() }
func (r *noQuorum) Propose(ctx context.Context, _ statedb.CmdType, _ any) (uint64, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// Without quorum a drain ends at its deadline (it does not act, unasked,
// whenever quorum returns); an admin may cancel one sooner; a drain asked
// for after the daemon stopped is refused rather than left draining.
func TestDrainEndsWithoutQuorum(t *testing.T) {
	d := &Drainer{HostID: "h1", HostName: "host1", Raft: &noQuorum{store: statedb.NewStore()},
		Hypervisor: func() agent.Hypervisor { return nil }, Logger: slog.New(slog.DiscardHandler), Timeout: 300 * time.Millisecond}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	waitDrain := func(want string) DrainStatus {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if st := d.Status(); st.Status == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("drain status %q, never %q", d.Status().Status, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := waitDrain(DrainFailed); !strings.Contains(st.Message, "did not end within") {
		t.Fatalf("failed drain says %q; want its deadline named", st.Message)
	}
	d.Timeout = time.Hour
	if _, err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitDrain(DrainDraining)
	for deadline := time.Now().Add(10 * time.Second); ; { // Run has taken it up
		d.mu.Lock()
		running := d.cancel != nil
		d.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the drain never got under way")
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Cancel()
	if st := waitDrain(DrainFailed); !strings.Contains(st.Message, "cancelled") {
		t.Fatalf("cancelled drain says %q", st.Message)
	}
	stop()
	<-done
	if _, err := d.Start(context.Background()); err == nil {
		t.Fatal("a drain started after the daemon stopped")
	}
}
