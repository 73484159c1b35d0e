package node

import (
	"context"

	"github.com/peerstack/peerstack/rest"
)

// mountCompute registers the compute API.
func (n *Node) mountCompute(srv *rest.Server) {}

// computeLeaderTick runs leader-only compute work once per leader tick.
func (n *Node) computeLeaderTick(ctx context.Context) {}
