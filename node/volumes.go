package node

import (
	"context"

	"github.com/peerstack/peerstack/rest"
)

// mountVolumes registers the volumes API.
func (n *Node) mountVolumes(srv *rest.Server) {}

// volumesLeaderTick runs leader-only volumes work once per leader tick.
func (n *Node) volumesLeaderTick(ctx context.Context) {}
