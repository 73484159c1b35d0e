package node

import (
	"context"
	"crypto/tls"
	"sync/atomic"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/node/membership"
)

// Revocation reaches open connections: every TLS connection this host has
// with another member (API server, host-to-host clients, Raft, console
// WebSockets over either) is tracked with its peer's member id, and when an
// applied entry revokes a member its connections are closed at once, not
// left to serve until they happen to end.

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

// cutRevokedLoop closes the connections of revoked members whenever an
// applied entry adds to the revocation list (and once at start, for
// revocations applied while catching up).
func (n *Node) cutRevokedLoop(ctx context.Context) {
	seen := -1
	for {
		changed := n.raft.Store().Changed()
		if k := len(n.State().RevokedHosts()); k != seen {
			seen = k
			if cut := n.conns.CloseRevoked(); cut > 0 {
				n.log.Info("closed connections of revoked members", "connections", cut)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
