package node

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/node/forward"
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

// ReadIndex confirms this host leads and returns its applied index
// (served to members on /internal/v1/read-index).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) { return n.raft.ReadIndex(ctx) }

// LinearizableRead returns once this host's state holds every write
// acknowledged anywhere before the call (forward.LinearizableRead).
func (n *Node) LinearizableRead(ctx context.Context) error {
	return forward.LinearizableRead(ctx, n.raft, n.fwd)
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

// ApplyForwarded applies a command a follower forwarded (forward.Admission).
func (n *Node) ApplyForwarded(ctx context.Context, data []byte, fromHost, token string) (uint64, error) {
	return (&forward.Admission{Raft: n.raft, Authenticate: n.Authenticate}).Apply(ctx, data, fromHost, token)
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
