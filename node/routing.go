package node

import (
	"log/slog"
	"strings"

	"github.com/peerstack/peerstack/hv/router"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/hvagent"
)

// agentRouting returns the routing driver: the options' fake, hv/router
// with the real networking, or nil (no routing) with a fake network.
func (n *Node) agentRouting(log *slog.Logger, opts AgentOptions) agent.Routing {
	if opts.RoutingDriver != nil {
		return opts.RoutingDriver
	}
	if opts.NetworkDriver != nil {
		return nil
	}
	// Router namespaces are machine-wide names: several daemons on one
	// machine (tests, a cluster in a box) must not collect each other's.
	id := strings.ReplaceAll(n.id.NodeID, "-", "")
	if len(id) > 8 {
		id = id[:8]
	}
	m, err := router.New(router.Config{HostNS: opts.NetNS, NSPrefix: router.DefaultNSPrefix + id + "-", Logger: log})
	if err != nil {
		log.Error("routing disabled", "err", err)
		return nil
	}
	return hvagent.NewRouting(m, log)
}
