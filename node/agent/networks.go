package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Network plumbs this host's tenant networks. Apply converges the host to
// the whole desired state (it diffs itself, so an unchanged state costs no
// writes) and deletes what is no longer wanted.
type Network interface {
	// Apply returns how many changes it attempted on the host, also when
	// it fails part-way.
	Apply(ctx context.Context, d NetDesired) (writes int, err error)
	// TapName is the tap device of a port (what QEMU attaches to).
	TapName(portID string) string
}

// NetDesired is every tenant network this host must plumb.
type NetDesired struct {
	LocalVTEP net.IP
	Networks  []NetSegment  // by VNI
	Providers []NetProvider // by id
}

// NetPartialError is the error of a Network.Apply that plumbed everything
// but the provider networks and ports it names: the other ports are
// ready. Refused are the ports (of those) that cannot be plumbed as things
// stand, with the reason: their servers fail rather than wait.
type NetPartialError struct {
	Networks []string
	Ports    []string
	Refused  map[string]string
	Err      error
}

func (e *NetPartialError) Error() string { return e.Err.Error() }
func (e *NetPartialError) Unwrap() error { return e.Err }

// NetProvider is a flat or VLAN provider network with ports on this host:
// they reach the physical network through the host interface it is mapped
// to (--physnet), untagged or tagged with VLAN.
type NetProvider struct {
	ID    string
	Iface string
	VLAN  int // 0: flat
	MTU   int
	Ports []NetPort // local ports, by id
}

// NetSegment is one tenant network as this host must see it.
type NetSegment struct {
	ID      string
	VNI     uint32
	MTU     int
	Routed  bool        // plumbed for a router here even without local ports
	Ports   []NetPort   // local ports, by id
	Remotes []net.IP    // VTEPs of the other hosts with ports on it, sorted
	MACs    []RemoteMAC // each remote port's MAC → its host's VTEP, by MAC
}

// NetPort is one local port: its tap and its DHCP lease.
type NetPort struct {
	ID       string
	Tap      string
	MAC      net.HardwareAddr
	IP       net.IP // first IPv4 fixed address; nil when none
	Prefix   int
	Gateway  net.IP
	DNS      []net.IP
	Routes   []net.IPNet // the subnet's host routes, via RouteVia
	RouteVia []net.IP
	Hostname string // the server's host name
	DHCP     bool   // the subnet has enable_dhcp

	// Provider ports only (port security on the wire, see hv/netdev):
	// the sources the guest may send from (its fixed IPs with its MAC,
	// its allowed address pairs), or Unfiltered when port security is
	// disabled.
	Sources    []NetSource
	Unfiltered bool
}

// NetSource is an address a provider port's guest may send from; MAC nil
// is the port's own.
type NetSource struct {
	MAC    net.HardwareAddr
	Prefix netip.Prefix
}

// portSources are the sources of a provider port: its fixed IPs and its
// allowed address pairs (an address or a CIDR, with a MAC or the port's).
func portSources(p *statedb.Port, mac net.HardwareAddr) []NetSource {
	var out []NetSource
	for _, f := range p.FixedIPs {
		if a, err := netip.ParseAddr(f.IP); err == nil {
			out = append(out, NetSource{MAC: mac, Prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())})
		}
	}
	for _, ap := range p.AllowedAddressPairs {
		pfx, err := netip.ParsePrefix(ap.IP)
		if a, err2 := netip.ParseAddr(ap.IP); err2 == nil {
			pfx, err = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
		}
		if err != nil {
			continue
		}
		m := mac
		if am, err := net.ParseMAC(ap.MAC); err == nil && len(am) == 6 {
			m = am
		}
		out = append(out, NetSource{MAC: m, Prefix: pfx.Masked()})
	}
	return out
}

// RemoteMAC is a port on another host.
type RemoteMAC struct {
	MAC  net.HardwareAddr
	VTEP net.IP
}

// desiredNetworks computes what host must plumb from the ports bound to it,
// grouped by network: local ports, the VTEPs of the other hosts with ports
// on each network, and each remote port's MAC; for provider networks the
// host interface physnets maps their physical network to. vtep resolves a
// host's underlay address (nil: unknown, its ports are left out). It is
// pure; problems lists what was left out and why.
func desiredNetworks(sn *statedb.Snapshot, host string, physnets map[string]string, vtep func(string) net.IP, tap func(string) string) (NetDesired, []string) {
	d := NetDesired{LocalVTEP: vtep(host)}
	var problems []string
	byNet := map[string][]*statedb.Port{}
	for _, p := range sn.PortsOnHost(host) {
		byNet[p.NetworkID] = append(byNet[p.NetworkID], p)
	}
	routed := routedNetworks(sn, host)
	for id := range routed {
		if _, ok := byNet[id]; !ok {
			byNet[id] = nil
		}
	}
	noVTEP := false
	for netID, local := range byNet {
		n, ok := sn.Network(netID)
		if !ok {
			problems = append(problems, fmt.Sprintf("network %s of %d local ports not found", netID, len(local)))
			continue
		}
		if n.IsProvider() {
			pn, more := providerNetwork(sn, n, local, physnets, tap)
			problems = append(problems, more...)
			if len(pn.Ports) > 0 {
				d.Providers = append(d.Providers, pn)
			}
			continue
		}
		if d.LocalVTEP == nil {
			noVTEP = true
			continue
		}
		seg := NetSegment{ID: n.ID, VNI: n.VNI, MTU: n.MTU, Routed: routed[n.ID]}
		for _, p := range local {
			np, err := localPort(sn, p, tap)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			seg.Ports = append(seg.Ports, np)
		}
		if len(seg.Ports) == 0 && !seg.Routed {
			continue
		}
		slices.SortFunc(seg.Ports, func(a, b NetPort) int { return strings.Compare(a.ID, b.ID) })
		remotes := map[string]net.IP{}
		for _, p := range sn.PortsOf(n.ID) {
			if p.HostID == "" || p.HostID == host {
				continue
			}
			ip := vtep(p.HostID)
			if ip == nil {
				problems = append(problems, fmt.Sprintf("VTEP of host %s (port %s) unknown", p.HostID, p.ID))
				continue
			}
			remotes[ip.String()] = ip
			mac, err := net.ParseMAC(p.MAC)
			if err != nil {
				problems = append(problems, fmt.Sprintf("remote port %s: bad MAC %q", p.ID, p.MAC))
				continue
			}
			seg.MACs = append(seg.MACs, RemoteMAC{MAC: mac, VTEP: ip})
		}
		for _, ip := range remotes {
			seg.Remotes = append(seg.Remotes, ip)
		}
		slices.SortFunc(seg.Remotes, func(a, b net.IP) int { return strings.Compare(a.String(), b.String()) })
		slices.SortFunc(seg.MACs, func(a, b RemoteMAC) int { return strings.Compare(a.MAC.String(), b.MAC.String()) })
		d.Networks = append(d.Networks, seg)
	}
	if noVTEP {
		problems = append(problems, "this host's VTEP address is unknown: no VXLAN network is plumbed")
	}
	slices.SortFunc(d.Networks, func(a, b NetSegment) int {
		if a.VNI != b.VNI {
			return int(a.VNI) - int(b.VNI)
		}
		return strings.Compare(a.ID, b.ID)
	})
	slices.SortFunc(d.Providers, func(a, b NetProvider) int { return strings.Compare(a.ID, b.ID) })
	slices.Sort(problems)
	return d, problems
}

// providerNetwork describes a provider network's local ports, on the host
// interface its physical network is mapped to. The scheduler places ports
// only on hosts that map it; a host that does not (its mapping changed
// since) plumbs none and says so.
func providerNetwork(sn *statedb.Snapshot, n *statedb.Network, local []*statedb.Port, physnets map[string]string, tap func(string) string) (NetProvider, []string) {
	iface := physnets[n.PhysicalNetwork]
	if iface == "" {
		return NetProvider{}, []string{fmt.Sprintf("network %s is on physical network %q, which this host does not map (--physnet): its %d local ports are not plumbed",
			n.ID, n.PhysicalNetwork, len(local))}
	}
	pn := NetProvider{ID: n.ID, Iface: iface, MTU: n.MTU}
	if n.NetworkType == statedb.NetTypeVLAN {
		pn.VLAN = n.VLAN
	}
	var problems []string
	for _, p := range local {
		if strings.HasPrefix(p.DeviceOwner, "network:") {
			continue // the network service's own (router gateway, floating IP): no tap
		}
		np, err := localPort(sn, p, tap)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		np.Unfiltered = !p.PortSecurityEnabled
		if !np.Unfiltered {
			np.Sources = portSources(p, np.MAC)
		}
		pn.Ports = append(pn.Ports, np)
	}
	slices.SortFunc(pn.Ports, func(a, b NetPort) int { return strings.Compare(a.ID, b.ID) })
	return pn, problems
}

// localPort describes one port bound to this host.
func localPort(sn *statedb.Snapshot, p *statedb.Port, tap func(string) string) (NetPort, error) {
	mac, err := net.ParseMAC(p.MAC)
	if err != nil {
		return NetPort{}, fmt.Errorf("port %s: bad MAC %q", p.ID, p.MAC)
	}
	np := NetPort{ID: p.ID, Tap: tap(p.ID), MAC: mac}
	if inst, ok := sn.Instance(p.DeviceID); ok {
		np.Hostname = Hostname(inst.Name, inst.ID)
	}
	for _, f := range p.FixedIPs {
		addr, err := netip.ParseAddr(f.IP)
		if err != nil || !addr.Is4() {
			continue
		}
		s, ok := sn.Subnet(f.SubnetID)
		if !ok {
			continue
		}
		pfx, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			continue
		}
		np.IP, np.Prefix, np.DHCP = net.IP(addr.AsSlice()), pfx.Bits(), s.EnableDHCP
		if gw, err := netip.ParseAddr(s.GatewayIP); err == nil {
			np.Gateway = net.IP(gw.AsSlice())
		}
		for _, d := range s.DNSNameservers {
			if a, err := netip.ParseAddr(d); err == nil {
				np.DNS = append(np.DNS, net.IP(a.AsSlice()))
			}
		}
		for _, r := range s.HostRoutes {
			_, dst, err1 := net.ParseCIDR(r.Destination)
			via := net.ParseIP(r.NextHop)
			if err1 == nil && dst.IP.To4() != nil && via.To4() != nil {
				np.Routes, np.RouteVia = append(np.Routes, *dst), append(np.RouteVia, via.To4())
			}
		}
		break
	}
	return np, nil
}

// netState is what the network reconciler remembers between syncs.
type netState struct {
	applied   *NetDesired       // last state applied without error
	plumbed   map[string]bool   // local port ids of applied
	refused   map[string]string // local port ids that cannot be plumbed → why
	lastErr   string            // last error logged
	problems  string            // last problems logged
	announced bool              // the "networking unavailable" error was logged
}

// netReadiness tells the instance reconciler which ports have their taps.
type netReadiness struct {
	disabled bool              // no Network: VMs start without NICs
	err      error             // networking cannot work on this host (ErrNetworkUnavailable)
	plumbed  map[string]bool   // ports plumbed by the last successful apply
	refused  map[string]string // ports that cannot be plumbed → why
}

// syncNetworks applies the desired networks when they changed (always on
// a full resync) and reports newly plumbed ports ACTIVE.
func (a *Agent) syncNetworks(ctx context.Context, sn *statedb.Snapshot, full bool, seen uint64) netReadiness {
	if a.cfg.Network == nil {
		return netReadiness{disabled: true}
	}
	d, problems := desiredNetworks(sn, a.cfg.HostID, a.cfg.Physnets, a.cfg.VTEPs.VTEP, a.cfg.Network.TapName)
	a.mu.Lock()
	st := &a.netState
	if p := strings.Join(problems, "; "); p != st.problems {
		st.problems = p
		if p != "" {
			shown := problems[:min(len(problems), 5)]
			a.log.Warn("some ports cannot be plumbed", "count", len(problems), "first", strings.Join(shown, "; "))
		}
	}
	same := st.applied != nil && reflect.DeepEqual(*st.applied, d)
	a.mu.Unlock()

	if !same || full {
		writes, err := a.cfg.Network.Apply(ctx, d)
		var partial *NetPartialError
		a.mu.Lock()
		a.countWrites("network", writes, same, err)
		switch {
		case err == nil:
			st.applied, st.lastErr, st.plumbed, st.refused = &d, "", portsOf(d, nil, nil), nil
		case errors.As(err, &partial):
			// Retried at the next sync (nothing recorded as applied); the
			// other networks' ports are ready meanwhile.
			st.plumbed, st.refused = portsOf(d, partial.Networks, partial.Ports), partial.Refused
			if ctx.Err() == nil && err.Error() != st.lastErr {
				st.lastErr = err.Error()
				a.log.Error("apply provider networks; will retry", "networks", partial.Networks, "ports", partial.Ports, "err", err)
			}
		case errors.Is(err, ErrNetworkUnavailable):
			if !st.announced {
				st.announced = true
				a.log.Error("tenant networking is unavailable on this host; servers with ports will fail until it is fixed", "err", err)
			}
			a.mu.Unlock()
			return netReadiness{err: err}
		case ctx.Err() == nil && err.Error() != st.lastErr:
			st.lastErr = err.Error()
			a.log.Error("apply tenant networks; will retry", "err", err)
		}
		a.mu.Unlock()
	}

	a.mu.Lock()
	plumbed, refused := st.plumbed, st.refused
	a.mu.Unlock()
	for _, p := range sn.PortsOnHost(a.cfg.HostID) {
		if !plumbed[p.ID] || p.Status == statedb.PortActive {
			continue
		}
		rep := statedb.ReportPortCmd{PortID: p.ID, HostID: a.cfg.HostID, Status: statedb.PortActive}
		a.launch(ctx, seen, "report", []string{"port:" + p.ID}, func(ctx context.Context) error {
			return a.report(ctx, statedb.CmdReportPort, rep)
		})
	}
	return netReadiness{plumbed: plumbed, refused: refused}
}

// portsOf is the set of d's local ports, but those of the provider
// networks failed.
func portsOf(d NetDesired, failed, failedPorts []string) map[string]bool {
	out := map[string]bool{}
	for _, seg := range d.Networks {
		for _, p := range seg.Ports {
			out[p.ID] = true
		}
	}
	for _, pn := range d.Providers {
		if slices.Contains(failed, pn.ID) {
			continue
		}
		for _, p := range pn.Ports {
			if !slices.Contains(failedPorts, p.ID) {
				out[p.ID] = true
			}
		}
	}
	return out
}
