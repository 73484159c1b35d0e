package node

import (
	"context"

	"github.com/peerstack/peerstack/rest"
)

// mountImages registers the images API.
func (n *Node) mountImages(srv *rest.Server) {}

// imagesLeaderTick runs leader-only images work once per leader tick.
func (n *Node) imagesLeaderTick(ctx context.Context) {}
