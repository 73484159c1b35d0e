package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/peerstack/peerstack/hv/firewall"
	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/node/agent"
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
	return &fwAdapter{m: m}, func() {
		if ns != nil {
			ns.Close()
		}
	}
}

// fwAdapter adapts hv/firewall to agent.Firewall; no filtered port means
// no tables at all.
type fwAdapter struct{ m *firewall.Manager }

func (f *fwAdapter) Apply(ctx context.Context, d agent.FirewallDesired) error {
	if len(d.Ports) == 0 {
		return f.m.Cleanup(ctx)
	}
	if _, err := f.m.Apply(ctx, toFirewall(d)); err != nil {
		return fmt.Errorf("port filtering: %w", err)
	}
	return nil
}

func bridgeOf(vni uint32) string {
	return netdev.DefaultPrefix + "br" + strconv.FormatUint(uint64(vni), 10)
}

func toFirewall(d agent.FirewallDesired) firewall.Desired {
	out := firewall.Desired{Groups: d.Groups, Verify: d.Verify}
	for _, nw := range d.Networks {
		out.Networks = append(out.Networks, firewall.Network{Bridge: bridgeOf(nw.VNI), Zone: nw.Zone})
	}
	for _, p := range d.Ports {
		fp := firewall.Port{ID: p.ID, Tap: p.Tap, Bridge: bridgeOf(p.VNI), Zone: p.Zone, MAC: p.MAC, IPs: p.IPs, Stateful: p.Stateful}
		for _, pr := range p.Pairs {
			fp.Pairs = append(fp.Pairs, firewall.Pair{MAC: pr.MAC, Prefix: pr.Prefix})
		}
		for _, r := range p.Rules {
			fp.Rules = append(fp.Rules, firewall.Rule{Ingress: r.Ingress, IPv6: r.IPv6, Proto: r.Proto, PortMin: r.PortMin,
				PortMax: r.PortMax, RemoteIP: r.RemoteIP, RemoteGroup: r.RemoteGroup})
		}
		out.Ports = append(out.Ports, fp)
	}
	return out
}
