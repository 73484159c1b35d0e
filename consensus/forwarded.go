package consensus

import (
	"context"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// ApplyForwarded applies, on the leader, a command another member
// forwarded: it enters the log only if its origin may propose it
// (statedb.Registry.CheckForwarded: a host certificate carries host
// commands only; a user command needs its caller's token, and the caller's
// rights). A refusal is a *statedb.Error of KindForbidden.
func (n *Node) ApplyForwarded(ctx context.Context, data []byte, from statedb.Origin) (uint64, error) {
	if err := n.store.Registry().CheckForwarded(n.store.Snapshot(), data, from); err != nil {
		return 0, err
	}
	idx, err := n.ApplyLeader(ctx, data)
	if idx > 0 {
		// The forwarding member waits to apply idx before it answers,
		// a refused command's entry included.
		n.announcer.announce(idx)
	}
	return idx, err
}
