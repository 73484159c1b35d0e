package node

import (
	"context"

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
	if _, err := n.raft.Propose(ctx, statedb.CmdEnableQuotas, struct{}{}); err != nil && ctx.Err() == nil {
		n.log.Warn("quotas: enable enforcement", "err", err)
	}
}
