package node

import (
	"context"

	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/network"
)

// mountNetworks registers the networks API (Neutron v2.0 under /network).
func (n *Node) mountNetworks(srv *rest.Server) { srv.Mount(network.Service(n)) }

// networksLeaderTick runs leader-only networks work once per leader tick.
// VNIs, MACs and addresses are allocated inside the FSM, so there is none.
func (n *Node) networksLeaderTick(ctx context.Context) {}
