package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/node/membership"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// refuseRevoked makes cfg refuse certificates of members the state has
// revoked (statedb.RevokedHost); before Raft runs (state unset) none is.
func refuseRevoked(cfg *tls.Config, state *atomic.Pointer[consensus.Node]) *tls.Config {
	return membership.RefuseRevoked(cfg, func(id string) bool {
		rn := state.Load()
		if rn == nil {
			return false
		}
		_, revoked := rn.State().RevokedHost(id)
		return revoked
	})
}

// RemoveHost removes member id from the cluster and revokes its
// certificates in one command (cluster.Backend): from the moment a host
// applies it, that host refuses the member's certificate. The leader then
// drops the member from Raft.
func (n *Node) RemoveHost(ctx context.Context, id string) error {
	if id == n.id.NodeID {
		return rest.BadRequest("a host cannot remove itself; use leave on it, or remove it through another host")
	}
	if _, err := n.raft.Propose(ctx, statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: id, Reason: "removed by an administrator"}); err != nil {
		return fmt.Errorf("remove host %s: %w", id, err)
	}
	return nil
}
