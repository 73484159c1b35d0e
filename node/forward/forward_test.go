package forward

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/rest"
)

// fakeRaft is the leader side over a real state store.
type fakeRaft struct {
	st      *agenttest.State
	leader  bool
	readIdx func() (uint64, error)
	waited  uint64
	applied []statedb.Origin
	refuse  error // what ApplyForwarded answers
}

func (f *fakeRaft) IsLeader() bool                            { return f.leader }
func (f *fakeRaft) State() *statedb.Snapshot                  { return f.st.Snapshot() }
func (f *fakeRaft) ReadIndex(context.Context) (uint64, error) { return f.readIdx() }
func (f *fakeRaft) WaitIndex(_ context.Context, idx uint64) error {
	f.waited = idx
	return nil
}
func (f *fakeRaft) ApplyForwarded(_ context.Context, _ []byte, from statedb.Origin) (uint64, error) {
	f.applied = append(f.applied, from)
	return 7, f.refuse
}

func newRaft(t *testing.T) *fakeRaft {
	t.Helper()
	st := agenttest.NewState()
	for _, m := range []statedb.Member{{ID: "h1", Name: "host1", Version: "0.2.0"}, {ID: "h2", Name: "host2", Version: "0.2.0"},
		{ID: "old", Name: "oldhost"}, {ID: "gone", Name: "gonehost", Version: "0.2.0"}} {
		if err := st.Apply(statedb.CmdRegisterMember, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "gone", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	return &fakeRaft{st: st, leader: true}
}

// The leader admits a forwarded command with its caller's authority when
// the token verifies, with none when it does not; refuses a revoked
// member's at once; tells an older release's host to upgrade instead of
// a 403 it would retry; and applies nothing when it does not lead.
func TestAdmission(t *testing.T) {
	r := newRaft(t)
	a := &Admission{Raft: r, Authenticate: func(_ context.Context, token string) (*rest.Credential, error) {
		if token != "good" {
			return nil, errors.New("bad token")
		}
		return &rest.Credential{UserID: "u1", ProjectID: "p1", Roles: []string{"member"}}, nil
	}}
	ctx := context.Background()
	if idx, err := a.Apply(ctx, nil, "h2", "good"); err != nil || idx != 7 {
		t.Fatalf("apply = %d, %v", idx, err)
	}
	if c := r.applied[0].Caller; r.applied[0].Host != "h2" || c == nil || c.UserID != "u1" || c.ProjectID != "p1" || !c.Writer || c.Admin {
		t.Fatalf("origin = %+v caller %+v; want host h2, caller u1 of p1, a writer", r.applied[0], c)
	}
	if _, err := a.Apply(ctx, nil, "h2", "forged"); err != nil || r.applied[1].Caller != nil {
		t.Fatalf("a token that does not verify: err %v, caller %+v; want applied as the host's own (no caller)", err, r.applied[1].Caller)
	}
	var se *statedb.Error
	if _, err := a.Apply(ctx, nil, "gone", ""); !errors.As(err, &se) || se.Kind != statedb.KindForbidden || len(r.applied) != 2 {
		t.Fatalf("a revoked member's command: err %v, %d applied; want forbidden, nothing applied", err, len(r.applied))
	}
	r.refuse = statedb.Errorf(statedb.KindForbidden, "needs a caller")
	if _, err := a.Apply(ctx, nil, "old", ""); !errors.As(err, &se) || se.Kind != statedb.KindConflict || !strings.Contains(se.Msg, "upgrade oldhost") {
		t.Fatalf("a refused command from a host of an older release: %v; want a conflict telling to upgrade oldhost", err)
	}
	if _, err := a.Apply(ctx, nil, "h2", ""); !errors.As(err, &se) || se.Kind != statedb.KindForbidden {
		t.Fatalf("a refused command from an upgraded host: %v; want the refusal as it is", err)
	}
	r.leader = false
	if _, err := a.Apply(ctx, nil, "h2", "good"); err == nil {
		t.Fatal("a follower applied a forwarded command")
	}
}

// leaderServer plays the leader's internal API.
func leaderServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	// The test server speaks plain HTTP: the client's https is rewritten.
	return &Client{SelfID: "h1", Leader: func() string { return "h2" }, HTTP: &http.Client{Transport: rewrite{srv.Client().Transport}},
		AddrOf: func(id string) string {
			if id == "h2" {
				return addr
			}
			return ""
		}}
}

type rewrite struct{ rt http.RoundTripper }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme = "http"
	return r.rt.RoundTrip(req)
}

// Forward carries the caller's token and answers the leader's index or
// its business error; a 403 is final; no leader, or this host named as
// it, is consensus.ErrNoLeader without a request.
func TestClientForward(t *testing.T) {
	var calls atomic.Int32
	c := leaderServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch {
		case r.URL.Path != "/internal/v1/apply" || r.Header.Get("Content-Type") != "application/json":
			http.Error(w, "bad request", http.StatusBadRequest)
		case r.Header.Get("X-Auth-Token") == "forged":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error": {"message": "Policy does not allow it."}}`))
		case r.Header.Get("X-Auth-Token") == "conflict":
			_ = json.NewEncoder(w).Encode(map[string]any{"index": 9, "err_kind": statedb.KindConflict, "err_msg": "in use"})
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"index": 8})
		}
	})
	withToken := func(tok string) context.Context {
		return rest.WithCredential(context.Background(), &rest.Credential{Token: tok})
	}
	if idx, err := c.Forward(withToken("ok"), "h2", []byte(`{}`)); err != nil || idx != 8 {
		t.Fatalf("forward = %d, %v; want 8", idx, err)
	}
	var se *statedb.Error
	if idx, err := c.Forward(withToken("conflict"), "h2", []byte(`{}`)); !errors.As(err, &se) || se.Kind != statedb.KindConflict || idx != 9 {
		t.Fatalf("forward = %d, %v; want the leader's conflict at 9", idx, err)
	}
	if _, err := c.Forward(withToken("forged"), "h2", []byte(`{}`)); !errors.As(err, &se) || se.Kind != statedb.KindForbidden || se.Msg != "Policy does not allow it." {
		t.Fatalf("forward = %v; want the leader's 403 message as forbidden", err)
	}
	n := calls.Load()
	for _, leader := range []string{"", "h1", "h9"} {
		if _, err := c.Forward(withToken("ok"), leader, []byte(`{}`)); !errors.Is(err, consensus.ErrNoLeader) {
			t.Fatalf("forward to %q = %v; want ErrNoLeader", leader, err)
		}
	}
	if calls.Load() != n {
		t.Fatal("a request was sent without a leader to send it to")
	}
}

// A linearizable read on a follower waits for the leader's read index;
// it asks again through transient failures and stops at once on a
// lasting refusal; on the leader it uses its own.
func TestLinearizableRead(t *testing.T) {
	var mode atomic.Value
	mode.Store("flaky")
	var calls atomic.Int32
	c := leaderServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case mode.Load() == "refuse":
			http.NotFound(w, r)
		case n <= 2:
			http.Error(w, "electing", http.StatusServiceUnavailable)
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"index": 41})
		}
	})
	r := newRaft(t)
	r.leader = false
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := LinearizableRead(ctx, r, c); err != nil || r.waited != 41 || calls.Load() != 3 {
		t.Fatalf("read = %v after %d asks, waited for %d; want the leader's index 41 on the third ask", err, calls.Load(), r.waited)
	}
	mode.Store("refuse")
	calls.Store(0)
	if err := LinearizableRead(ctx, r, c); !errors.Is(err, ErrReadIndexRefused) || calls.Load() != 1 {
		t.Fatalf("read = %v after %d asks; want ErrReadIndexRefused at once", err, calls.Load())
	}
	r.leader, r.readIdx = true, func() (uint64, error) { return 77, nil }
	if err := LinearizableRead(ctx, r, c); err != nil || r.waited != 77 || calls.Load() != 1 {
		t.Fatalf("read on the leader = %v, waited for %d, %d asks; want its own index 77 and no request", err, r.waited, calls.Load())
	}
}
