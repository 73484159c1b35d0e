package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
	restidentity "github.com/peerstack/peerstack/rest/identity"
)

// mountServices registers every API service.
func (n *Node) mountServices(srv *rest.Server) {
	srv.Mount(cluster.Service(n))
	srv.Mount(cluster.SettingsService(n))
	srv.Mount(n.ready.CommitService())
	srv.Mount(n.gkeys.Service())
	srv.Mount(restidentity.Service(n))
	n.mountCompute(srv)
	n.mountImages(srv)
	n.mountNetworks(srv)
	n.mountVolumes(srv)
	srv.Mount(n.lease.Service())
	srv.Mount(n.drain.Service(n))
	srv.Handle("/healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	}))
	srv.HandleAdmin("/metrics", n.metricsHandler(), n)
}

// forwarder sends writes to the leader over the internal mTLS API.
type forwarder struct{ n *Node }

func (f forwarder) Forward(ctx context.Context, leaderID string, data []byte) (uint64, error) {
	var token string
	if cred := rest.CredentialFrom(ctx); cred != nil {
		// The leader re-checks a user command against its caller's token.
		token = cred.Token
	}
	addr, code, body, err := f.post(ctx, leaderID, "/internal/v1/apply", data, token, 1<<20)
	if err != nil {
		return 0, fmt.Errorf("forward: %w", err)
	}
	if code == http.StatusForbidden {
		// Final: retrying cannot make the command admissible.
		return 0, statedb.Errorf(statedb.KindForbidden, "%s", forbiddenMessage(body))
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("forward to leader %s: status %d", addr, code)
	}
	return cluster.DecodeApplyResult(body)
}

// post sends data to path on the internal API of member id, with the
// caller's token when given, and returns the member's address, the
// status and at most limit bytes of the answer.
func (f forwarder) post(ctx context.Context, id, path string, data []byte, token string, limit int64) (string, int, []byte, error) {
	addr := ""
	if id != "" && id != f.n.id.NodeID {
		addr = f.n.apiAddrOf(id)
	}
	if addr == "" {
		return "", 0, nil, fmt.Errorf("leader %q: %w", id, consensus.ErrNoLeader)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, bytes.NewReader(data))
	if err != nil {
		return addr, 0, nil, err
	}
	if data != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := f.n.client.Do(req)
	if err != nil {
		return addr, 0, nil, fmt.Errorf("%s at %s: %w", path, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return addr, 0, nil, fmt.Errorf("%s at %s: %w", path, addr, err)
	}
	return addr, resp.StatusCode, body, nil
}

// ReadIndex confirms this host leads and returns its applied index
// (served to members on /internal/v1/read-index).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) { return n.raft.ReadIndex(ctx) }

// LinearizableRead returns once this host's state holds every write
// acknowledged anywhere before the call: the leader's read index
// (asked over the internal API from a follower), then waiting until this
// host has applied it.
// During an election, or with a stale view of the leader, it asks again
// (with back-off) until ctx ends.
func (n *Node) LinearizableRead(ctx context.Context) error {
	backoff := 10 * time.Millisecond
	for {
		var idx uint64
		var err error
		if n.raft.IsLeader() {
			idx, err = n.raft.ReadIndex(ctx)
		} else {
			idx, err = forwarder{n}.readIndex(ctx)
		}
		if err == nil {
			if err := n.raft.WaitIndex(ctx, idx); err != nil {
				return fmt.Errorf("catch up to the read index %d: %w", idx, err)
			}
			return nil
		}
		if errors.Is(err, errReadIndexRefused) {
			return err // asking again will not help
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader confirmed a read index: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// errReadIndexRefused is a leader's lasting refusal of a read index.
var errReadIndexRefused = errors.New("the leader refuses read indexes to this host")

// readIndex asks the leader for its read index.
func (f forwarder) readIndex(ctx context.Context) (uint64, error) {
	leaderID, _ := f.n.raft.Leader()
	addr, code, body, err := f.post(ctx, leaderID, "/internal/v1/read-index", nil, "", 1<<16)
	switch {
	case err != nil:
		return 0, fmt.Errorf("read index: %w", err)
	case code >= 400 && code < 500:
		// An older release without the route (404), a revoked member
		// (403): lasting answers.
		return 0, fmt.Errorf("read index from leader %s: status %d: %w", addr, code, errReadIndexRefused)
	case code != http.StatusOK:
		return 0, fmt.Errorf("read index from leader %s: status %d", addr, code)
	}
	var r cluster.ReadIndexResult
	if err := json.Unmarshal(body, &r); err != nil || r.Index == 0 {
		return 0, fmt.Errorf("read index from leader %s: bad answer %q", addr, body)
	}
	return r.Index, nil
}

// apiAddrOf finds a host's API address from the state, then gossip.
func (n *Node) apiAddrOf(id string) string {
	if m, ok := n.State().Member(id); ok && m.APIAddr != "" {
		return m.APIAddr
	}
	for _, m := range n.gossip.Members() {
		if m.Name == id {
			return m.Meta.APIAddr
		}
	}
	return ""
}

// ApplyForwarded applies a command forwarded by a follower (leader only):
// fromHost is the member its certificate names; token, when the command
// was proposed for an API caller, is that caller's token, verified here so
// the command's authority comes from the caller, not the certificate.
func (n *Node) ApplyForwarded(ctx context.Context, data []byte, fromHost, token string) (uint64, error) {
	if !n.raft.IsLeader() {
		return 0, errors.New("not the leader")
	}
	if _, revoked := n.State().RevokedHost(fromHost); revoked {
		// A connection made before the revocation applied.
		return 0, statedb.Errorf(statedb.KindForbidden, "The certificate of member %s is revoked.", fromHost)
	}
	from := statedb.Origin{Host: fromHost}
	if token != "" {
		// A token that does not verify proves no caller: a user command
		// is then refused, a host command stands on its own.
		if cred, err := n.Authenticate(ctx, token); err == nil {
			from.Caller = callerOfCred(cred)
		}
	}
	idx, err := n.raft.ApplyForwarded(ctx, data, from)
	var se *statedb.Error
	if token == "" && errors.As(err, &se) && se.Kind == statedb.KindForbidden {
		if m, ok := n.State().Member(fromHost); ok && m.Version == "" {
			// A host of a release before callers' tokens were forwarded
			// (it reports no version): it cannot carry a caller's
			// authority, so its users' writes are refused — as a conflict
			// its release turns into a 409 naming the way out, rather than
			// a 403 it would retry as a lost leader until the client gives
			// up.
			return idx, statedb.Errorf(statedb.KindConflict,
				"Host %s runs an older release than the leader and cannot forward writes to it: upgrade %s, or send writes to an upgraded host.", m.Name, m.Name)
		}
	}
	return idx, err
}

// Members lists the cluster's hosts with Raft role and gossip state.
func (n *Node) Members() []cluster.Member {
	servers, _ := raftConfiguration(n.raft)
	leaderID, _ := n.raft.Leader()
	return membership.MemberList(n.State().Members(), servers, leaderID, n.gossip.Members())
}

// Status summarises Raft from this host's point of view.
func (n *Node) Status() cluster.Status {
	st := n.raft.Status()
	leaderID, _ := n.raft.Leader()
	s := cluster.Status{ClusterID: n.id.ClusterID, Term: st.Term, AppliedIndex: st.AppliedIndex, CommitIndex: st.CommitIndex,
		RaftState: st.State, Self: cluster.NodeRef{ID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr},
		Members: len(n.State().Members())}
	if leaderID != "" {
		s.Leader.ID = leaderID
		if m, ok := n.State().Member(leaderID); ok {
			s.Leader.Name, s.Leader.APIAddr = m.Name, m.APIAddr
		}
	}
	return s
}

// Leave removes this host from the cluster gracefully (membership.Leaver):
// leadership moves away, the member record goes and its certificate is
// revoked (one entry, membership.HostRemoval), the leader drops it from
// Raft, gossip says goodbye and the daemon stops (Left is closed).
func (n *Node) Leave(ctx context.Context) error {
	var clientTLS *tls.Config
	if tr, ok := n.client.Transport.(*http.Transport); ok {
		clientTLS = tr.TLSClientConfig
	}
	servers := func() ([]membership.RaftServer, error) { return raftConfiguration(n.raft) }
	remove := &membership.HostRemoval{HostID: n.id.NodeID, Raft: n.raft, Servers: servers, ClientTLS: clientTLS, Logger: n.log}
	l := &membership.Leaver{HostID: n.id.NodeID, Raft: n.raft, CheckEmpty: n.drain.CheckLeaveEmpty, Remove: remove.Remove,
		MarkLeft: func() error {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.id.Left = true
			return saveIdentity(n.cfg.DataDir, n.id)
		},
		InRaft: func() (bool, error) {
			conf, err := servers()
			in := false
			for _, s := range conf {
				in = in || s.ID == n.id.NodeID
			}
			return in, err
		},
		Goodbye: func() {
			m := n.meta.Meta()
			m.Leaving = true
			_ = n.gossip.UpdateMeta(context.Background(), m)
			_ = n.gossip.Leave(2 * time.Second)
			n.log.Info("left the cluster", "node", n.id.NodeID)
			close(n.left)
		}}
	return l.Leave(ctx)
}
