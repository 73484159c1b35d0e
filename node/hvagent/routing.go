package hvagent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/hv/router"
	"github.com/peerstack/peerstack/node/agent"
)

// Routing adapts hv/router to agent.Routing.
type Routing struct {
	m   *router.Manager
	log *slog.Logger
}

// NewRouting adapts m.
func NewRouting(m *router.Manager, log *slog.Logger) Routing { return Routing{m: m, log: log} }

// Apply converges the routers, resolving the names of the servers that
// tenants are kept off.
func (r Routing) Apply(ctx context.Context, d agent.RoutingDesired) (int, error) {
	want := toRouter(d)
	for _, name := range d.ProtectedNames {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(lctx, "ip4", name)
		cancel()
		if err != nil {
			r.log.Warn("storage server not resolved; tenants are not kept off it", "name", name, "err", err)
			continue
		}
		for _, a := range addrs {
			want.Protected = append(want.Protected, netip.PrefixFrom(a.Unmap(), 32))
		}
	}
	slices.SortFunc(want.Protected, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	want.Protected = slices.Compact(want.Protected) // resolvers answer in any order
	st, err := r.m.Apply(ctx, want)
	if st.Writes > 0 {
		r.log.Debug("routing applied", "writes", st.Writes, "announced", st.GARPs, "changes", st.Changes)
	}
	if err != nil {
		return st.Writes, fmt.Errorf("routing: %w", err)
	}
	return st.Writes, nil
}

func toRouter(d agent.RoutingDesired) router.Desired {
	// Protected is a copy: Apply adds resolved names to it, and d is the
	// agent's record of what it applied.
	out := router.Desired{HostMAC: d.HostMAC, AllowTCP: d.AllowTCP, Protected: slices.Clone(d.Protected), Externals: d.Externals}
	for _, r := range d.Routers {
		rr := router.Router{ID: r.ID}
		for _, i := range r.Interfaces {
			ri := router.Interface{ID: i.PortID, Bridge: fmt.Sprintf("%sbr%d", netdev.DefaultPrefix, i.VNI),
				Overlay: fmt.Sprintf("%svx%d", netdev.DefaultPrefix, i.VNI), Address: i.Address, MAC: i.MAC, MTU: i.MTU}
			for _, nb := range i.Neighbors {
				ri.Neighbors = append(ri.Neighbors, router.Neighbor{IP: nb.IP, MAC: nb.MAC})
			}
			rr.Interfaces = append(rr.Interfaces, ri)
		}
		if r.Gateway != nil {
			rr.Gateway = &router.Gateway{Iface: r.Gateway.Iface, SNAT: r.Gateway.SNAT}
		}
		for _, rt := range r.Routes {
			rr.Routes = append(rr.Routes, router.Route{Dst: rt.Dst, Via: rt.Via})
		}
		for _, f := range r.FloatingIPs {
			rr.FloatingIPs = append(rr.FloatingIPs, router.FloatingIP{Addr: f.Addr, Fixed: f.Fixed})
		}
		out.Routers = append(out.Routers, rr)
	}
	return out
}
