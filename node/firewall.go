package node

import (
	"log/slog"
	"os"

	"github.com/peerstack/peerstack/hv/firewall"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/hvagent"
)

// agentFirewall returns the port filter (nil: ports are not filtered) and
// how to close it. Ports are filtered only where hv/netdev plumbs them:
// the filter names netdev's bridges.
func (n *Node) agentFirewall(log *slog.Logger, opts AgentOptions) (agent.Firewall, func()) {
	if opts.NetworkDriver != nil || (opts.Network != "" && opts.Network != "netdev") {
		return nil, func() {}
	}
	cfg := firewall.Config{Logger: log}
	var ns *os.File
	if opts.NetNS != "" {
		f, err := os.Open(opts.NetNS)
		if err != nil {
			log.Error("ports will not be filtered: open network namespace", "netns", opts.NetNS, "err", err)
			return nil, func() {}
		}
		ns, cfg.NetNS = f, int(f.Fd())
	}
	m, err := firewall.New(cfg)
	if err != nil {
		log.Error("ports will not be filtered (port security and security groups are not enforced on this host)", "err", err)
		if ns != nil {
			ns.Close()
		}
		return nil, func() {}
	}
	return hvagent.NewFirewall(m), func() {
		if ns != nil {
			ns.Close()
		}
	}
}
