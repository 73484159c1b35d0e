package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/rest"
)

// A restarted host has only its last snapshot until a leader tells it the
// commit index and it applies the log up to it. Serving the API before
// that would answer valid tokens with 401 (signing keys not applied yet)
// and reads hundreds of entries old. So the public API waits until this
// host has a leader and has applied everything committed; a request that
// arrives meanwhile is held up to readyWait, then answered 503 with
// Retry-After. Host-to-host calls (/internal/) are never held: the
// cluster needs them to bring this host up to date; neither is the
// cluster API (/cluster/: status, members), which is how an operator
// sees why a host is not catching up (no quorum). Once caught up the
// host stays ready: later lag is Raft's ordinary replication delay.

// readyWait is how long a request waits for this host to catch up.
const readyWait = 10 * time.Second

type readiness struct {
	once sync.Once
	ch   chan struct{}
}

func (r *readiness) init() { r.once.Do(func() { r.ch = make(chan struct{}) }) }

func (r *readiness) done() <-chan struct{} {
	r.init()
	return r.ch
}

func (r *readiness) set() {
	r.init()
	select {
	case <-r.ch:
	default:
		close(r.ch)
	}
}

// Ready reports whether the host has caught up with the cluster since it
// started.
func (n *Node) Ready() bool {
	select {
	case <-n.ready.done():
		return true
	default:
		return false
	}
}

// watchReady marks the host ready once it has a leader and has applied
// everything the leader had committed when asked. The local commit index
// alone will not do: after a restart it grows one replication batch at a
// time, so "applied up to it" can hold while the host is still thousands
// of entries behind.
func (n *Node) watchReady(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var target uint64 // the leader's commit index, once learnt
	for {
		st := n.raft.Status()
		id, _ := n.raft.Leader()
		if target == 0 && id != "" {
			if id == n.id.NodeID {
				target = st.CommitIndex
			} else if idx, err := n.leaderCommit(ctx, id); err == nil {
				target = idx
			} else {
				n.log.Debug("ask the leader for its commit index", "err", err)
			}
		}
		if target > 0 && st.AppliedIndex >= target {
			n.ready.set()
			n.log.Debug("caught up with the cluster; serving the API", "applied", st.AppliedIndex, "leader_commit", target)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leaderCommit asks the leader for its commit index over the internal
// API.
func (n *Node) leaderCommit(ctx context.Context, leaderID string) (uint64, error) {
	addr := n.apiAddrOf(leaderID)
	if addr == "" {
		return 0, fmt.Errorf("leader %s: no API address known", leaderID)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/internal/v1/commit", nil)
	if err != nil {
		return 0, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		CommitIndex uint64 `json:"commit_index"`
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

// commitService answers other hosts' question "what have you committed?"
// while this host leads (409 otherwise: ask the leader).
func (n *Node) commitService() rest.Service {
	return rest.Service{Prefix: "/internal/v1", Errors: rest.KeystoneErrors, Routes: []rest.Route{{
		Method: http.MethodGet, Path: "/commit", Auth: rest.Internal,
		Handler: func(*rest.Ctx) (any, error) {
			if !n.raft.IsLeader() {
				return nil, rest.Conflictf("host %s is not the leader", n.Name())
			}
			return map[string]uint64{"commit_index": n.raft.Status().CommitIndex}, nil
		},
	}}}
}

// readyGate holds public API requests until the host is ready.
func (n *Node) readyGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/internal/") || strings.HasPrefix(r.URL.Path, "/cluster/") || n.Ready() {
			next.ServeHTTP(w, r)
			return
		}
		t := time.NewTimer(readyWait)
		defer t.Stop()
		select {
		case <-n.ready.done():
			next.ServeHTTP(w, r)
			return
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		st := n.raft.Status()
		msg := fmt.Sprintf("Host %s is catching up with the cluster (applied %d of %d known committed entries): retry shortly or use another host.",
			n.Name(), st.AppliedIndex, st.CommitIndex)
		if id, _ := n.raft.Leader(); id == "" {
			msg = fmt.Sprintf("Host %s has no contact with a cluster leader (no quorum reachable): retry shortly or use another host.", n.Name())
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": http.StatusServiceUnavailable, "title": "Service Unavailable", "message": msg}})
	})
}
