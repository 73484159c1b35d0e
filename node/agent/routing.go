package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Routing runs this host's share of the tenant routers: the anycast
// gateways, NAT and floating IPs of its own ports (hv/router in the node).
// Apply converges to the whole desired state; an unchanged state costs no
// write.
type Routing interface {
	// Apply returns how many changes it attempted on the host, also when
	// it fails.
	Apply(ctx context.Context, d RoutingDesired) (writes int, err error)
}

// RoutingDesired is every router this host runs.
type RoutingDesired struct {
	Routers   []RouterDesired
	HostMAC   net.HardwareAddr // source MAC of frames routed onto overlays
	AllowTCP  []uint16         // host ports tenants may reach (the API)
	Protected []netip.Prefix   // the cluster's hosts and storage server
	// ProtectedNames are storage servers given by name: the driver
	// resolves them and protects their addresses too.
	ProtectedNames []string
	Externals      []string // this host's physical network interfaces, sorted
}

// RouterDesired is one router as this host runs it.
type RouterDesired struct {
	ID          string
	Interfaces  []RouterIface
	Gateway     *RouterGateway
	Routes      []RouterRoute
	FloatingIPs []RouterFIP
	fipIDs      []string // floating IP ids, for status reports
	fipPorts    []string
}

// RouterIface is an anycast gateway on a VXLAN network.
type RouterIface struct {
	PortID    string
	VNI       uint32
	MTU       int
	Address   netip.Prefix
	MAC       net.HardwareAddr
	Neighbors []RouterNeighbor // ports on other hosts
}

// RouterNeighbor is a remote port's address and MAC.
type RouterNeighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// RouterGateway is the host interface of the router's external network.
type RouterGateway struct {
	Iface string
	SNAT  bool
}

// RouterRoute is an extra route.
type RouterRoute struct {
	Dst netip.Prefix
	Via netip.Addr
}

// RouterFIP is a floating IP of a local port.
type RouterFIP struct {
	Addr, Fixed netip.Addr
}

// HostMAC derives this host's own MAC for routed frames: locally
// administered, from the host id.
func HostMAC(hostID string) net.HardwareAddr {
	h := sha256.Sum256([]byte("peerstack-router/" + hostID))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

// localNetworks are the networks this host has server ports on.
func localNetworks(sn *statedb.Snapshot, host string) map[string]bool {
	out := map[string]bool{}
	for _, p := range sn.PortsOnHost(host) {
		if p.DeviceOwner != statedb.OwnerRouterInterface && p.DeviceOwner != statedb.OwnerRouterGateway {
			out[p.NetworkID] = true
		}
	}
	return out
}

// routedNetworks are the VXLAN networks this host must plumb for routing
// even without ports of its own: every network of a router that has an
// interface on a network with local ports (east-west is routed on the
// sending host, so the sender needs the destination segment).
func routedNetworks(sn *statedb.Snapshot, host string) map[string]bool {
	local := localNetworks(sn, host)
	out := map[string]bool{}
	for _, r := range sn.Routers() {
		ifs := sn.RouterInterfaces(r.ID)
		if !slices.ContainsFunc(ifs, func(p *statedb.Port) bool { return local[p.NetworkID] }) {
			continue
		}
		for _, p := range ifs {
			if n, ok := sn.Network(p.NetworkID); ok && !n.IsProvider() {
				out[n.ID] = true
			}
		}
	}
	return out
}

// desiredRouting computes what this host routes: the routers with an
// interface on a network it has ports on, their gateways when this host
// maps the external network's physical network, and the floating IPs of
// its own ports. It is pure; problems lists what was left out and why.
func desiredRouting(sn *statedb.Snapshot, host string, physnets map[string]string, apiPort uint16) (RoutingDesired, []string) {
	d := RoutingDesired{HostMAC: HostMAC(host)}
	if apiPort != 0 {
		d.AllowTCP = []uint16{apiPort}
	}
	d.Protected, d.ProtectedNames = protectedPrefixes(sn)
	for _, iface := range physnets {
		if !slices.Contains(d.Externals, iface) {
			d.Externals = append(d.Externals, iface)
		}
	}
	slices.Sort(d.Externals)
	var problems []string
	local := localNetworks(sn, host)
	for _, r := range sn.Routers() {
		ifs := sn.RouterInterfaces(r.ID)
		if !slices.ContainsFunc(ifs, func(p *statedb.Port) bool { return local[p.NetworkID] }) {
			continue
		}
		rd := RouterDesired{ID: r.ID}
		for _, p := range ifs {
			ri, err := routerIface(sn, host, p)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			rd.Interfaces = append(rd.Interfaces, ri)
		}
		slices.SortFunc(rd.Interfaces, func(a, b RouterIface) int { return strings.Compare(a.PortID, b.PortID) })
		if r.GatewayNetworkID != "" {
			n, ok := sn.Network(r.GatewayNetworkID)
			switch {
			case !ok:
			case n.NetworkType != statedb.NetTypeFlat:
				// Source NAT goes out under the host's own address on the
				// gateway interface; a VLAN of the host's NIC that the host
				// has no address on cannot carry it (docs/routing.md).
				problems = append(problems, fmt.Sprintf("router %s: external network %s is a %s network; a router's gateway needs a flat external network on an interface this host has an address on", r.ID, n.ID, n.NetworkType))
			case physnets[n.PhysicalNetwork] == "":
				problems = append(problems, fmt.Sprintf("router %s: this host maps no interface to physical network %q", r.ID, n.PhysicalNetwork))
			default:
				rd.Gateway = &RouterGateway{Iface: physnets[n.PhysicalNetwork], SNAT: r.EnableSNAT}
			}
		}
		for _, rt := range r.Routes {
			dst, err1 := netip.ParsePrefix(rt.Destination)
			via, err2 := netip.ParseAddr(rt.NextHop)
			if err1 == nil && err2 == nil && dst.Addr().Is4() {
				rd.Routes = append(rd.Routes, RouterRoute{Dst: dst.Masked(), Via: via})
			}
		}
		if rd.Gateway != nil {
			fips := sn.FloatingIPsOfRouter(r.ID)
			slices.SortFunc(fips, func(a, b *statedb.FloatingIP) int { return strings.Compare(a.Address, b.Address) })
			for _, f := range fips {
				p, ok := sn.Port(f.PortID)
				if !ok || p.HostID != host {
					continue
				}
				addr, err1 := netip.ParseAddr(f.Address)
				fixed, err2 := netip.ParseAddr(f.FixedIP)
				if err1 != nil || err2 != nil {
					problems = append(problems, fmt.Sprintf("floating ip %s: bad addresses", f.ID))
					continue
				}
				rd.FloatingIPs = append(rd.FloatingIPs, RouterFIP{Addr: addr, Fixed: fixed})
				rd.fipIDs, rd.fipPorts = append(rd.fipIDs, f.ID), append(rd.fipPorts, f.PortID)
			}
		}
		d.Routers = append(d.Routers, rd)
	}
	slices.SortFunc(d.Routers, func(a, b RouterDesired) int { return strings.Compare(a.ID, b.ID) })
	slices.Sort(problems)
	return d, problems
}

// routerIface describes one interface port of a router on this host.
func routerIface(sn *statedb.Snapshot, host string, p *statedb.Port) (RouterIface, error) {
	n, ok := sn.Network(p.NetworkID)
	if !ok || n.IsProvider() {
		return RouterIface{}, fmt.Errorf("router interface %s: network %s missing or not a VXLAN network", p.ID, p.NetworkID)
	}
	mac, err := net.ParseMAC(p.MAC)
	if err != nil {
		return RouterIface{}, fmt.Errorf("router interface %s: bad MAC %q", p.ID, p.MAC)
	}
	for _, f := range p.FixedIPs {
		s, ok := sn.Subnet(f.SubnetID)
		a, err := netip.ParseAddr(f.IP)
		if !ok || err != nil || !a.Is4() {
			continue
		}
		pfx, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			continue
		}
		ri := RouterIface{PortID: p.ID, VNI: n.VNI, MTU: n.MTU, Address: netip.PrefixFrom(a, pfx.Bits()), MAC: mac}
		for _, o := range sn.PortsOf(n.ID) {
			if o.HostID == "" || o.HostID == host || o.ID == p.ID {
				continue
			}
			om, err := net.ParseMAC(o.MAC)
			if err != nil {
				continue
			}
			for _, of := range o.FixedIPs {
				if oa, err := netip.ParseAddr(of.IP); err == nil && oa.Is4() && pfx.Contains(oa) {
					ri.Neighbors = append(ri.Neighbors, RouterNeighbor{IP: oa, MAC: om})
				}
			}
		}
		slices.SortFunc(ri.Neighbors, func(a, b RouterNeighbor) int { return a.IP.Compare(b.IP) })
		return ri, nil
	}
	return RouterIface{}, fmt.Errorf("router interface %s has no IPv4 address", p.ID)
}

// protectedPrefixes are the addresses tenants must not reach except on
// the API port: every member's API, Raft and gossip host, and the storage
// servers (names are returned apart, for the driver to resolve).
func protectedPrefixes(sn *statedb.Snapshot) ([]netip.Prefix, []string) {
	seen := map[netip.Prefix]bool{}
	var names []string
	add := func(hostport string) {
		h := hostport
		if x, _, err := net.SplitHostPort(hostport); err == nil {
			h = x
		}
		if a, err := netip.ParseAddr(h); err == nil && a.Is4() {
			seen[netip.PrefixFrom(a, 32)] = true
		} else if err != nil && h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	for _, m := range sn.Members() {
		add(m.APIAddr)
		add(m.RaftAddr)
		add(m.GossipAddr)
	}
	if cfg, ok := sn.Cluster(); ok {
		for _, s := range append([]string{cfg.Settings.Storage}, cfg.Settings.FormerStorage...) {
			if u, err := url.Parse(s); err == nil && u.Host != "" {
				add(u.Host)
			}
		}
	}
	out := make([]netip.Prefix, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	slices.Sort(names)
	return out, names
}

// apiPort is the port of this host's API address.
func apiPort(sn *statedb.Snapshot, host string) uint16 {
	m, ok := sn.Member(host)
	if !ok {
		return 0
	}
	_, p, err := net.SplitHostPort(m.APIAddr)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

// routingState is what the routing reconciler remembers between syncs.
type routingState struct {
	waiting  map[string]time.Time // floating IP → when this host first wanted it while another held it
	applied  *RoutingDesired
	lastErr  string
	problems string
	reported bool // physnets reported since start
}

// syncRouting applies the desired routing when it changed (always on a
// full resync), reports this host's physical networks once, and reports
// the floating IPs it now serves ACTIVE.
func (a *Agent) syncRouting(ctx context.Context, sn *statedb.Snapshot, full bool, seen uint64) {
	a.mu.Lock()
	st := &a.routeState
	report := !st.reported
	a.mu.Unlock()
	if h, ok := sn.HostNetworks(a.cfg.HostID); report || !ok || !reflect.DeepEqual(h.Physnets, nonNil(a.cfg.Physnets)) {
		cmd := statedb.HostNetworks{ID: a.cfg.HostID, Physnets: nonNil(a.cfg.Physnets)}
		a.launch(ctx, seen, "report", []string{"physnets"}, func(ctx context.Context) error {
			err := a.report(ctx, statedb.CmdSetHostNetworks, cmd)
			if err == nil {
				a.mu.Lock()
				a.routeState.reported = true
				a.mu.Unlock()
			}
			return err
		})
	}
	if a.cfg.Routing == nil {
		return
	}
	d, problems := desiredRouting(sn, a.cfg.HostID, a.cfg.Physnets, apiPort(sn, a.cfg.HostID))
	d.Protected = withVTEPs(d.Protected, sn, a.cfg.VTEPs)
	a.handover(sn, &d)
	a.mu.Lock()
	if p := strings.Join(problems, "; "); p != st.problems {
		st.problems = p
		if p != "" {
			a.log.Warn("some routing cannot be done on this host", "count", len(problems), "first", problems[0])
		}
	}
	same := st.applied != nil && reflect.DeepEqual(*st.applied, d)
	a.mu.Unlock()
	if !same || full {
		writes, err := a.cfg.Routing.Apply(ctx, d)
		a.mu.Lock()
		a.countWrites("routing", writes, same, err)
		switch {
		case err == nil:
			st.applied, st.lastErr = &d, ""
		case ctx.Err() == nil && err.Error() != st.lastErr:
			st.lastErr = err.Error()
			a.log.Error("apply routing; will retry", "err", err)
		}
		a.mu.Unlock()
		if err != nil {
			return
		}
	}
	a.reportWithdrawn(ctx, sn, d, seen)
	for _, r := range d.Routers {
		for i, id := range r.fipIDs {
			f, ok := sn.FloatingIP(id)
			if !ok || (f.Status == statedb.StatusActive && f.HostID == a.cfg.HostID) {
				continue
			}
			rep := statedb.ReportFloatingIPCmd{FloatingIPID: id, PortID: r.fipPorts[i], HostID: a.cfg.HostID, Status: statedb.StatusActive}
			a.launch(ctx, seen, "report", []string{"fip:" + id}, func(ctx context.Context) error {
				return a.report(ctx, statedb.CmdReportFloatingIP, rep)
			})
		}
	}
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// withVTEPs adds every member's VTEP (VXLAN endpoint) to the protected
// prefixes: tenants must not reach the overlay's UDP port.
func withVTEPs(ps []netip.Prefix, sn *statedb.Snapshot, v VTEPs) []netip.Prefix {
	if v == nil {
		return ps
	}
	out := slices.Clone(ps)
	for _, m := range sn.Members() {
		ip := v.VTEP(m.ID)
		a, ok := netip.AddrFromSlice(ip.To4())
		if ip == nil || !ok {
			continue
		}
		if p := netip.PrefixFrom(a, 32); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// handover holds back the floating IPs another host still reports ACTIVE:
// the old host withdraws first (and reports DOWN), then this host applies
// and announces them; after FIPHandover this host takes them anyway.
func (a *Agent) handover(sn *statedb.Snapshot, d *RoutingDesired) {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &a.routeState
	if st.waiting == nil {
		st.waiting = map[string]time.Time{}
	}
	still := map[string]bool{}
	for ri := range d.Routers {
		r := &d.Routers[ri]
		var fips []RouterFIP
		var ids, ports []string
		for i, id := range r.fipIDs {
			f, ok := sn.FloatingIP(id)
			if ok && f.Status == statedb.StatusActive && f.HostID != "" && f.HostID != a.cfg.HostID {
				still[id] = true
				since, seen := st.waiting[id]
				if !seen {
					st.waiting[id] = now
					since = now
				}
				if now.Sub(since) < a.cfg.FIPHandover {
					continue
				}
			}
			fips, ids, ports = append(fips, r.FloatingIPs[i]), append(ids, id), append(ports, r.fipPorts[i])
		}
		r.FloatingIPs, r.fipIDs, r.fipPorts = fips, ids, ports
	}
	for id := range st.waiting {
		if !still[id] {
			delete(st.waiting, id)
		}
	}
}

// reportWithdrawn reports DOWN the floating IPs recorded ACTIVE on this
// host that it no longer serves (after a successful apply), so the new
// host may take them.
func (a *Agent) reportWithdrawn(ctx context.Context, sn *statedb.Snapshot, d RoutingDesired, seen uint64) {
	serving := map[string]bool{}
	for _, r := range d.Routers {
		for _, id := range r.fipIDs {
			serving[id] = true
		}
	}
	for _, f := range sn.FloatingIPs() {
		if f.HostID != a.cfg.HostID || f.Status != statedb.StatusActive || serving[f.ID] {
			continue
		}
		rep := statedb.ReportFloatingIPCmd{FloatingIPID: f.ID, PortID: f.PortID, HostID: a.cfg.HostID, Status: statedb.StatusDown}
		a.launch(ctx, seen, "report", []string{"fip:" + f.ID}, func(ctx context.Context) error {
			return a.report(ctx, statedb.CmdReportFloatingIP, rep)
		})
	}
}
