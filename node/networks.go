package node

import (
	"context"

	"github.com/peerstack/peerstack/rest"
)

// mountNetworks registers the networks API.
func (n *Node) mountNetworks(srv *rest.Server) {}

// networksLeaderTick runs leader-only networks work once per leader tick.
func (n *Node) networksLeaderTick(ctx context.Context) {}
