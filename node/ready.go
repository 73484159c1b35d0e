package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
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
// every entry it knows to be committed.
func (n *Node) watchReady(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		id, _ := n.raft.Leader()
		st := n.raft.Status()
		if id != "" && st.CommitIndex > 0 && st.AppliedIndex >= st.CommitIndex {
			n.ready.set()
			n.log.Debug("caught up with the cluster; serving the API", "applied", st.AppliedIndex)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
