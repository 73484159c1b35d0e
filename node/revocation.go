package node

import (
	"crypto/tls"
	"sync/atomic"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/node/membership"
)

// Revocation reaches open connections: every TLS connection this host has
// with another member (API server, host-to-host clients, Raft, console
// WebSockets over either) is tracked with its peer's member id, and when an
// applied entry revokes a member its connections are closed at once, not
// left to serve until they happen to end (membership.Cutter).

// trackConns returns the connection tracker of a host whose revocation
// list is read from the state Raft keeps (none revoked before Raft runs).
func trackConns(state *atomic.Pointer[consensus.Node]) *membership.Conns {
	return &membership.Conns{Revoked: func(id string) bool {
		rn := state.Load()
		if rn == nil {
			return false
		}
		_, revoked := rn.State().RevokedHost(id)
		return revoked
	}}
}

// withProtos is a copy of cfg offering the given application protocols.
func withProtos(cfg *tls.Config, protos ...string) *tls.Config {
	c := cfg.Clone()
	c.NextProtos = protos
	return c
}

// raftConfiguration is Raft's configuration as membership reads it.
func raftConfiguration(rn *consensus.Node) ([]membership.RaftServer, error) {
	conf, err := rn.Configuration()
	servers := make([]membership.RaftServer, 0, len(conf))
	for _, s := range conf {
		servers = append(servers, membership.RaftServer{ID: s.ID, Voter: s.Voter})
	}
	return servers, err
}
