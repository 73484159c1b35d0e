// Package readiness owns the catch-up gate of a restarted host: it
// learns the leader's commit index, marks the host ready once it has
// applied it, and holds the public API until then; it also answers the
// other hosts' "what have you committed?" while this host leads.
//
// A restarted host has only its last snapshot until a leader tells it the
// commit index and it applies the log up to it. Serving the API before
// that would answer valid tokens with 401 (signing keys not applied yet)
// and reads hundreds of entries old. So the public API waits until this
// host has a leader and has applied everything committed; a request that
// arrives meanwhile is held up to Wait, then answered 503 with
// Retry-After. Host-to-host calls (/internal/) are never held: the
// cluster needs them to bring this host up to date; neither is the
// cluster API (/cluster/: status, members), which is how an operator
// sees why a host is not catching up (no quorum). Once caught up the
// host stays ready: later lag is Raft's ordinary replication delay.
//
// It must not read or change the replicated state itself, and holds no
// reference to the daemon: it reads Raft through the Raft interface.
package readiness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/rest"
)

// Wait is how long a request waits for this host to catch up.
const Wait = 10 * time.Second

// Raft is what the gate reads from Raft.
type Raft interface {
	Leader() (id, addr string)
	IsLeader() bool
	Status() consensus.Status
}

// Gate is the catch-up gate. The zero value is not ready; Watch makes it
// ready.
type Gate struct {
	SelfID, SelfName string
	Raft             Raft
	// AddrOf is a host's API address ("" when unknown).
	AddrOf func(id string) string
	// Client is the mTLS client for host-to-host calls.
	Client *http.Client
	Logger *slog.Logger

	once sync.Once
	ch   chan struct{}
}

func (g *Gate) done() <-chan struct{} {
	g.once.Do(func() { g.ch = make(chan struct{}) })
	return g.ch
}

func (g *Gate) set() {
	g.done()
	select {
	case <-g.ch:
	default:
		close(g.ch)
	}
}

// Ready reports whether the host has caught up with the cluster since it
// started.
func (g *Gate) Ready() bool {
	select {
	case <-g.done():
		return true
	default:
		return false
	}
}

// Watch marks the host ready once it has a leader and has applied
// everything the leader had committed when asked. The local commit index
// alone will not do: after a restart it grows one replication batch at a
// time, so "applied up to it" can hold while the host is still thousands
// of entries behind. It returns when the host is ready or ctx ends.
func (g *Gate) Watch(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var target uint64 // the leader's commit index, once learnt
	for {
		st := g.Raft.Status()
		id, _ := g.Raft.Leader()
		if target == 0 && id != "" {
			if id == g.SelfID {
				target = st.CommitIndex
			} else if idx, err := g.leaderCommit(ctx, id); err == nil {
				target = idx
			} else if errors.Is(err, errNoCommitRoute) && st.CommitIndex > 0 {
				// A leader of an older release (a rolling upgrade) has no
				// commit route: the commit index it sent this host is
				// the best there is.
				target = st.CommitIndex
				g.Logger.Info("the leader runs an older release; catching up to the commit index it sent", "leader", id, "commit", target)
			} else {
				g.Logger.Debug("ask the leader for its commit index", "err", err)
			}
		}
		if target > 0 && st.AppliedIndex >= target {
			g.set()
			g.Logger.Debug("caught up with the cluster; serving the API", "applied", st.AppliedIndex, "leader_commit", target)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errNoCommitRoute is a leader's 404 to the commit route: it runs a
// release from before the route (0.1.0), during a rolling upgrade.
var errNoCommitRoute = errors.New("the leader has no commit route (an older release)")

// leaderCommit asks the leader for its commit index over the internal
// API.
func (g *Gate) leaderCommit(ctx context.Context, leaderID string) (uint64, error) {
	addr := g.AddrOf(leaderID)
	if addr == "" {
		return 0, fmt.Errorf("leader %s: no API address known", leaderID)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/internal/v1/commit", nil)
	if err != nil {
		return 0, err
	}
	resp, err := g.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		CommitIndex uint64 `json:"commit_index"`
	}
	if resp.StatusCode == http.StatusNotFound {
		return 0, fmt.Errorf("leader %s: %w", leaderID, errNoCommitRoute)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("leader %s: commit index: status %d", leaderID, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body); err != nil {
		return 0, fmt.Errorf("leader %s: commit index: %w", leaderID, err)
	}
	if body.CommitIndex == 0 {
		return 0, fmt.Errorf("leader %s: commit index 0", leaderID)
	}
	return body.CommitIndex, nil
}

// CommitService answers other hosts' question "what have you committed?"
// while this host leads (409 otherwise: ask the leader).
func (g *Gate) CommitService() rest.Service {
	return rest.Service{Prefix: "/internal/v1", Errors: rest.KeystoneErrors, Routes: []rest.Route{{
		Method: http.MethodGet, Path: "/commit", Auth: rest.Internal,
		Handler: func(*rest.Ctx) (any, error) {
			if !g.Raft.IsLeader() {
				return nil, rest.Conflictf("host %s is not the leader", g.SelfName)
			}
			return map[string]uint64{"commit_index": g.Raft.Status().CommitIndex}, nil
		},
	}}}
}

// Wrap holds public API requests until the host is ready.
func (g *Gate) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/internal/") || strings.HasPrefix(r.URL.Path, "/cluster/") || g.Ready() {
			next.ServeHTTP(w, r)
			return
		}
		t := time.NewTimer(Wait)
		defer t.Stop()
		select {
		case <-g.done():
			next.ServeHTTP(w, r)
			return
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		st := g.Raft.Status()
		msg := fmt.Sprintf("Host %s is catching up with the cluster (applied %d of %d known committed entries): retry shortly or use another host.",
			g.SelfName, st.AppliedIndex, st.CommitIndex)
		if id, _ := g.Raft.Leader(); id == "" {
			msg = fmt.Sprintf("Host %s has no contact with a cluster leader (no quorum reachable): retry shortly or use another host.", g.SelfName)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": http.StatusServiceUnavailable, "title": "Service Unavailable", "message": msg}})
	})
}

// WaitCaughtUp waits (up to 30 s) until this host has a leader and has
// applied everything it knows is committed, so a reconciler does not act
// on a state that is still replaying after a restart.
func WaitCaughtUp(ctx context.Context, r Raft, log *slog.Logger) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		id, _ := r.Leader()
		st := r.Status()
		if id != "" && st.CommitIndex > 0 && st.AppliedIndex >= st.CommitIndex {
			return
		}
		if time.Now().After(deadline) {
			log.Warn("state not caught up after 30s; starting the agent anyway", "applied", st.AppliedIndex, "commit", st.CommitIndex)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
