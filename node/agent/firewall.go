package agent

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Firewall filters this host's own ports: port security and security
// group rules. Apply converges the host to the whole desired state (it
// diffs itself: an unchanged state costs no writes); an empty state
// removes everything it installed.
type Firewall interface {
	// Apply returns how many kernel objects it changed (or tried to, when
	// it fails).
	Apply(ctx context.Context, d FirewallDesired) (writes int, err error)
}

// FirewallDesired is the filtering of every local port with port security.
type FirewallDesired struct {
	Networks []FwNetwork             // networks with local ports, by VNI
	Ports    []FwPort                // by id
	Groups   map[string][]netip.Addr // member addresses of the remote groups the rules name
	// Verify is set on a full resync: read the kernel back and repair
	// what differs, even where the desired state did not change.
	Verify bool
}

// FwNetwork is a network whose connections are tracked in their own zone.
type FwNetwork struct {
	VNI  uint32
	Zone uint16
}

// FwPort is one filtered local port.
type FwPort struct {
	ID       string
	Tap      string
	VNI      uint32
	Zone     uint16
	MAC      net.HardwareAddr
	IPs      []netip.Addr
	Pairs    []FwPair
	Stateful bool
	Rules    []FwRule
}

// FwPair is an allowed address pair.
type FwPair struct {
	MAC    net.HardwareAddr
	Prefix netip.Prefix
}

// FwRule is one rule of a port's groups. Proto -1 is any. For protocols
// with ports PortMin..PortMax is the destination range (0 = any); for ICMP
// PortMin/PortMax are type and code (-1 = any).
type FwRule struct {
	Ingress     bool
	IPv6        bool
	Proto       int
	PortMin     int
	PortMax     int
	RemoteIP    netip.Prefix
	RemoteGroup string
}

// ZoneOf is the conntrack zone of a network: 1-65535 from its VNI.
func ZoneOf(vni uint32) uint16 { return uint16(vni%65535) + 1 }

// desiredFirewall computes the filtering of host's ports from the state:
// the rules of each port's groups, and the addresses of every member
// (fixed IPs and address pairs, on any host) of the groups they name as
// remote. Ports without port security and the network service's own
// ports (device owner "network:…") are not filtered. It is pure;
// problems lists what was left out and why.
func desiredFirewall(sn *statedb.Snapshot, host string, tap func(string) string) (FirewallDesired, []string) {
	d := FirewallDesired{Groups: map[string][]netip.Addr{}}
	var problems []string
	nets := map[uint32]bool{}
	remote := map[string]bool{}
	for _, p := range sn.PortsOnHost(host) {
		n, ok := sn.Network(p.NetworkID)
		if !ok {
			continue
		}
		if n.IsProvider() {
			if p.PortSecurityEnabled && !strings.HasPrefix(p.DeviceOwner, "network:") {
				problems = append(problems, fmt.Sprintf("port %s is on %s provider network %s: its source addresses are enforced, its security group rules are not", p.ID, n.NetworkType, n.ID))
			}
			continue
		}
		if !nets[n.VNI] {
			nets[n.VNI] = true
			d.Networks = append(d.Networks, FwNetwork{VNI: n.VNI, Zone: ZoneOf(n.VNI)})
		}
		// Ports of the network service itself (routers, DHCP) are
		// trusted, as in Neutron: they forward for others.
		if !p.PortSecurityEnabled || strings.HasPrefix(p.DeviceOwner, "network:") {
			continue
		}
		fp, err := fwPort(sn, p, n, tap)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		for _, r := range fp.Rules {
			if r.RemoteGroup != "" {
				remote[r.RemoteGroup] = true
			}
		}
		d.Ports = append(d.Ports, fp)
	}
	for g := range remote {
		addrs := []netip.Addr{}
		for _, p := range sn.PortsOfSecGroup(g) {
			for _, f := range p.FixedIPs {
				if a, err := netip.ParseAddr(f.IP); err == nil {
					addrs = append(addrs, a.Unmap())
				}
			}
			for _, ap := range p.AllowedAddressPairs {
				if a, err := netip.ParseAddr(ap.IP); err == nil {
					addrs = append(addrs, a.Unmap())
				}
			}
		}
		slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
		d.Groups[g] = slices.Compact(addrs)
	}
	sort.Slice(d.Networks, func(i, j int) bool { return d.Networks[i].VNI < d.Networks[j].VNI })
	sort.Slice(d.Ports, func(i, j int) bool { return d.Ports[i].ID < d.Ports[j].ID })
	slices.Sort(problems)
	return d, problems
}

// fwPort describes one secured local port.
func fwPort(sn *statedb.Snapshot, p *statedb.Port, n *statedb.Network, tap func(string) string) (FwPort, error) {
	mac, err := net.ParseMAC(p.MAC)
	if err != nil {
		return FwPort{}, fmt.Errorf("port %s: bad MAC %q", p.ID, p.MAC)
	}
	fp := FwPort{ID: p.ID, Tap: tap(p.ID), VNI: n.VNI, Zone: ZoneOf(n.VNI), MAC: mac, Stateful: true}
	for _, f := range p.FixedIPs {
		if a, err := netip.ParseAddr(f.IP); err == nil {
			fp.IPs = append(fp.IPs, a.Unmap())
		}
	}
	for _, ap := range p.AllowedAddressPairs {
		pfx, err := netip.ParsePrefix(ap.IP)
		if err != nil {
			a, aerr := netip.ParseAddr(ap.IP)
			if aerr != nil {
				return FwPort{}, fmt.Errorf("port %s: bad address pair %q", p.ID, ap.IP)
			}
			pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		pm := mac
		if ap.MAC != "" {
			if pm, err = net.ParseMAC(ap.MAC); err != nil {
				return FwPort{}, fmt.Errorf("port %s: bad address pair MAC %q", p.ID, ap.MAC)
			}
		}
		fp.Pairs = append(fp.Pairs, FwPair{MAC: pm, Prefix: pfx})
	}
	seen := map[FwRule]bool{}
	for _, gid := range p.SecurityGroups {
		g, ok := sn.SecGroup(gid)
		if !ok {
			continue
		}
		// As in Neutron, one stateless group makes the port stateless.
		fp.Stateful = fp.Stateful && g.Stateful
		for _, r := range sn.SecRulesOf(gid) {
			for _, fr := range fwRules(sn, r) { // firewall_addrgroups.go
				if !seen[fr] {
					seen[fr] = true
					fp.Rules = append(fp.Rules, fr)
				}
			}
		}
	}
	slices.SortFunc(fp.Rules, compareFwRules)
	return fp, nil
}

// compareFwRules orders a port's rules field by field: a stable order
// keeps an unchanged rule in place in the host's chains, so a rule added
// or removed is one rule written. Every rule is an allow, so the order
// does not change what passes.
func compareFwRules(a, b FwRule) int {
	bit := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(bit(a.Ingress), bit(b.Ingress)),
		cmp.Compare(bit(a.IPv6), bit(b.IPv6)),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.PortMin, b.PortMin),
		cmp.Compare(a.PortMax, b.PortMax),
		a.RemoteIP.Addr().Compare(b.RemoteIP.Addr()),
		cmp.Compare(a.RemoteIP.Bits(), b.RemoteIP.Bits()),
		strings.Compare(a.RemoteGroup, b.RemoteGroup),
	)
}

// fwRule translates a stored rule; ok is false for rules that cannot
// match (a protocol the state no longer accepts).
func fwRule(r *statedb.SecurityGroupRule) (FwRule, bool) {
	proto, ok := statedb.ProtocolNumber(r.Protocol)
	if !ok {
		return FwRule{}, false
	}
	fr := FwRule{Ingress: r.Direction == statedb.Ingress, IPv6: r.EtherType == statedb.IPv6, Proto: proto, RemoteGroup: r.RemoteGroupID}
	if r.RemoteIP != "" {
		pfx, err := netip.ParsePrefix(r.RemoteIP)
		if err != nil {
			return FwRule{}, false
		}
		fr.RemoteIP = pfx
	}
	icmp := proto == 1 || proto == 58
	val := func(p *int) int {
		switch {
		case p != nil:
			return *p
		case icmp:
			return -1
		}
		return 0
	}
	fr.PortMin, fr.PortMax = val(r.PortMin), val(r.PortMax)
	return fr, true
}

// fwState is what the firewall reconciler remembers between syncs.
type fwState struct {
	applied  *FirewallDesired
	lastErr  string
	problems string
}

// syncFirewall applies the desired filtering when it changed (always on
// a full resync). It runs after the networks (the taps exist) and before
// the instances (a VM starts filtered).
func (a *Agent) syncFirewall(ctx context.Context, sn *statedb.Snapshot, full bool) {
	if a.cfg.Firewall == nil || a.cfg.Network == nil {
		return
	}
	d, problems := desiredFirewall(sn, a.cfg.HostID, a.cfg.Network.TapName)
	a.mu.Lock()
	st := &a.fwState
	if p := strings.Join(problems, "; "); p != st.problems {
		st.problems = p
		if p != "" {
			a.log.Warn("some ports cannot be filtered", "count", len(problems), "first", problems[0])
		}
	}
	same := st.applied != nil && reflect.DeepEqual(*st.applied, d)
	a.mu.Unlock()
	if same && !full {
		return
	}
	d.Verify = full
	writes, err := a.cfg.Firewall.Apply(ctx, d)
	d.Verify = false // what was applied, compared with the next desired state
	a.mu.Lock()
	defer a.mu.Unlock()
	a.countWrites("firewall", writes, same, err)
	switch {
	case err == nil:
		st.applied, st.lastErr = &d, ""
	case ctx.Err() == nil && err.Error() != st.lastErr:
		st.lastErr = err.Error()
		a.log.Error("apply port filtering; will retry", "err", err)
	}
}
