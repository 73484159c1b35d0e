package node

import (
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/network"
)

// mountNetworks registers the networks API (Neutron v2.0 under /network).
// Networks have no leader routine: VNIs, MACs and addresses are allocated
// inside the FSM.
func (n *Node) mountNetworks(srv *rest.Server) { srv.Mount(network.Service(n)) }
