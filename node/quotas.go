package node

import (
	"context"
	"errors"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// quotasLeaderTick turns quota enforcement on in a cluster bootstrapped
// before quotas existed (new clusters start with it on). Entries applied
// before this one replay without checks, as they applied then.
func (n *Node) quotasLeaderTick(ctx context.Context) {
	sn := n.State()
	if _, ok := sn.Cluster(); !ok || sn.QuotasEnforced() {
		return
	}
	_, err := n.raft.Propose(ctx, statedb.CmdEnableQuotas, struct{}{})
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, statedb.ErrConflict):
		// A host still runs an older version: enforcement waits for it.
		n.log.Debug("quotas: enforcement waits for every host to be upgraded", "err", err)
	default:
		n.log.Warn("quotas: enable enforcement", "err", err)
	}
}
