package readiness

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
)

// fakeRaft is a Raft whose leader and indexes the test sets.
type fakeRaft struct {
	mu      sync.Mutex
	leader  string
	self    bool
	applied uint64
	commit  uint64
}

func (f *fakeRaft) Leader() (string, string) { f.mu.Lock(); defer f.mu.Unlock(); return f.leader, "" }
func (f *fakeRaft) IsLeader() bool           { f.mu.Lock(); defer f.mu.Unlock(); return f.self }
func (f *fakeRaft) Status() consensus.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return consensus.Status{AppliedIndex: f.applied, CommitIndex: f.commit}
}

func (f *fakeRaft) setApplied(i uint64) { f.mu.Lock(); f.applied = i; f.mu.Unlock() }

func waitReady(t *testing.T, g *Gate) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("gate not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A follower is ready only once it applied the leader's commit index, not
// its own (smaller) one.
func TestGateWaitsForTheLeadersCommitIndex(t *testing.T) {
	leaderRaft := &fakeRaft{leader: "L", self: true, commit: 500, applied: 500}
	leader := &Gate{SelfID: "L", SelfName: "l", Raft: leaderRaft, Logger: slog.New(slog.DiscardHandler)}
	var asked atomic.Int32
	inner := commitHandler(t, leader)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		asked.Add(1)
	}))
	defer srv.Close()

	follower := &fakeRaft{leader: "L", commit: 10, applied: 10}
	g := &Gate{SelfID: "F", SelfName: "f", Raft: follower, Logger: slog.New(slog.DiscardHandler),
		AddrOf: func(id string) string { return strings.TrimPrefix(srv.URL, "https://") }, Client: srv.Client()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); g.Watch(ctx) }()

	held := httptest.NewRecorder()
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "served") })
	// Internal and cluster calls pass while not ready.
	for _, p := range []string{"/internal/v1/commit", "/cluster/v1/status"} {
		rec := httptest.NewRecorder()
		g.Wrap(next).ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Body.String() != "served" {
			t.Fatalf("%s while catching up: %q; want it served", p, rec.Body.String())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for asked.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the follower never asked the leader for its commit index")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if g.Ready() {
		t.Fatal("ready at applied 10 of the leader's 500")
	}
	// A public request is held until the host is ready, then served.
	served := make(chan struct{})
	go func() {
		defer close(served)
		g.Wrap(next).ServeHTTP(held, httptest.NewRequest("GET", "/compute/v2.1/servers", nil))
	}()
	follower.setApplied(500)
	waitReady(t, g)
	<-served
	if held.Body.String() != "served" {
		t.Fatalf("held request answered %d %q", held.Code, held.Body.String())
	}
	<-done
}

func TestCommitServiceRefusesOffTheLeader(t *testing.T) {
	g := &Gate{SelfName: "f", Raft: &fakeRaft{leader: "L", commit: 7}}
	srv := httptest.NewTLSServer(commitHandler(t, g))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/internal/v1/commit")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("commit index from a follower: status %d; want 409", resp.StatusCode)
	}
}

// commitHandler serves the gate's commit route without the API's
// authentication (the route's handler is what is under test).
func commitHandler(t *testing.T, g *Gate) http.Handler {
	t.Helper()
	h := g.CommitService().Routes[0].Handler
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/internal/v1/commit" {
			http.NotFound(w, r)
			return
		}
		v, err := h(nil)
		if err != nil {
			w.WriteHeader(http.StatusConflict)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	})
}

// A leader of the previous release has no commit route (404): the
// follower catches up to the commit index the leader sent it instead of
// holding its API until that leader is upgraded.
func TestGateWithALeaderOfThePreviousRelease(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	follower := &fakeRaft{leader: "L", commit: 40, applied: 10}
	g := &Gate{SelfID: "F", SelfName: "f", Raft: follower, Logger: slog.New(slog.DiscardHandler),
		AddrOf: func(string) string { return strings.TrimPrefix(srv.URL, "https://") }, Client: srv.Client()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); g.Watch(ctx) }()
	time.Sleep(50 * time.Millisecond) // several rounds of asking: still behind
	if g.Ready() {
		t.Fatal("ready at applied 10 of the commit index 40")
	}
	follower.setApplied(40)
	waitReady(t, g)
	<-done
}

// Any other failure to learn the leader's commit index keeps the gate
// closed.
func TestGateStaysClosedWhileTheLeaderFails(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	follower := &fakeRaft{leader: "L", commit: 40, applied: 40}
	var asked atomic.Int32
	g := &Gate{SelfID: "F", SelfName: "f", Raft: follower, Logger: slog.New(slog.DiscardHandler),
		AddrOf: func(string) string { asked.Add(1); return strings.TrimPrefix(srv.URL, "https://") }, Client: srv.Client()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Watch(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for asked.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the follower did not keep asking the leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if g.Ready() {
		t.Fatal("ready although the leader answered 500")
	}
}
