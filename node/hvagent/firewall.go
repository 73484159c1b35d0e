package hvagent

import (
	"context"
	"fmt"
	"strconv"

	"github.com/peerstack/peerstack/hv/firewall"
	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/node/agent"
)

// Firewall adapts hv/firewall to agent.Firewall; no filtered port means
// no tables at all.
type Firewall struct{ m *firewall.Manager }

// NewFirewall adapts m.
func NewFirewall(m *firewall.Manager) *Firewall { return &Firewall{m: m} }

// Apply filters the desired ports, or removes the tables when there are
// none.
func (f *Firewall) Apply(ctx context.Context, d agent.FirewallDesired) (int, error) {
	if len(d.Ports) == 0 {
		st, err := f.m.Cleanup(ctx)
		return st.Writes(), err
	}
	st, err := f.m.Apply(ctx, toFirewall(d))
	if err != nil {
		return st.Writes(), fmt.Errorf("port filtering: %w", err)
	}
	return st.Writes(), nil
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
