package hvagent

import (
	"context"
	"errors"
	"fmt"

	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/node/agent"
)

// Network adapts hv/netdev to agent.Network.
type Network struct {
	m   *netdev.Manager
	err error // why there is no manager
}

// NewNetwork adapts m; with m nil, every Apply fails with
// agent.ErrNetworkUnavailable and err, the reason there is no manager.
func NewNetwork(m *netdev.Manager, err error) *Network { return &Network{m: m, err: err} }

// TapName is the tap device of a port.
func (d *Network) TapName(portID string) string {
	if d.m != nil {
		return d.m.TapName(portID)
	}
	return netdev.TapName(portID)
}

// Apply plumbs the desired networks and ports. Its count of changes is
// netdev's writes (undo included) and the DHCP responders it started or
// stopped.
func (d *Network) Apply(ctx context.Context, want agent.NetDesired) (int, error) {
	if d.m == nil {
		return 0, fmt.Errorf("%w: %v", agent.ErrNetworkUnavailable, d.err)
	}
	st, err := d.m.Apply(ctx, toNetdev(want))
	writes := st.Ops + st.DHCPStarted + st.DHCPStopped
	var pf *netdev.ProvidersFailed
	switch {
	case errors.Is(err, netdev.ErrPermission):
		return writes, fmt.Errorf("%w: %v", agent.ErrNetworkUnavailable, err)
	case errors.As(err, &pf) && err == error(pf):
		return writes, partialError(want, pf)
	}
	return writes, err
}

// partialError tells the agent which provider networks and ports failed,
// and which of their ports cannot be plumbed as things stand (a failed
// network's ports share its reason).
func partialError(want agent.NetDesired, pf *netdev.ProvidersFailed) error {
	e := &agent.NetPartialError{Networks: pf.IDs, Ports: pf.Ports, Refused: map[string]string{}, Err: pf}
	for _, pn := range want.Providers {
		for _, p := range pn.Ports {
			for _, id := range []string{pn.ID, p.ID} {
				if pf.Permanent(id) {
					e.Refused[p.ID] = pf.Cause(id).Error()
				}
			}
		}
	}
	return e
}

func toNetdev(d agent.NetDesired) netdev.Desired {
	out := netdev.Desired{LocalVTEP: d.LocalVTEP}
	for _, s := range d.Networks {
		nw := netdev.Network{ID: s.ID, VNI: s.VNI, MTU: s.MTU, Routed: s.Routed, Remotes: s.Remotes}
		for _, p := range s.Ports {
			nw.Ports = append(nw.Ports, toNetdevPort(p))
		}
		for _, m := range s.MACs {
			nw.MACs = append(nw.MACs, netdev.RemoteMAC{MAC: m.MAC, VTEP: m.VTEP})
		}
		out.Networks = append(out.Networks, nw)
	}
	for _, pn := range d.Providers {
		nw := netdev.Provider{ID: pn.ID, Uplink: pn.Iface, VLAN: pn.VLAN, MTU: pn.MTU}
		for _, p := range pn.Ports {
			nw.Ports = append(nw.Ports, toNetdevPort(p))
		}
		out.Providers = append(out.Providers, nw)
	}
	return out
}

func toNetdevPort(p agent.NetPort) netdev.Port {
	np := netdev.Port{ID: p.ID, Tap: p.Tap, MAC: p.MAC, IP: p.IP, Prefix: p.Prefix,
		Gateway: p.Gateway, DNS: p.DNS, Routes: p.Routes, RouteVia: p.RouteVia, Hostname: p.Hostname, DHCP: p.DHCP,
		Unfiltered: p.Unfiltered}
	for _, s := range p.Sources {
		np.Sources = append(np.Sources, netdev.Source{MAC: s.MAC, Prefix: s.Prefix})
	}
	return np
}
