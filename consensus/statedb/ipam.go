package statedb

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// IPAM: subnet validation and defaults, and address (IP and MAC) allocation. Everything
// here is a pure function of its arguments; the used addresses of a subnet
// are always derived from the ports table (usedIPs), so deleting a port
// record releases its addresses and no separate allocation table can leak.

// parseCIDR parses a subnet CIDR of the given IP version (0 = either) and
// returns it normalised (host bits cleared). IPv4 prefixes are /1../30 and
// IPv6 /1../126, so a subnet always has room for a gateway and a host.
func parseCIDR(s string, version int) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, Errorf(KindInvalid, "Invalid input for cidr. Reason: '%s' is not a valid IP subnet.", s)
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, Errorf(KindInvalid, "Invalid input for cidr. Reason: '%s' is not a valid IP subnet.", s)
	}
	v := ipVersion(p.Addr())
	if version != 0 && version != v {
		return netip.Prefix{}, Errorf(KindInvalid, "Invalid input for operation: Cidr %s does not match ip_version %d.", s, version)
	}
	max := 30
	if v == 6 {
		max = 126
	}
	if p.Bits() < 1 || p.Bits() > max {
		return netip.Prefix{}, Errorf(KindInvalid, "Invalid input for cidr. Reason: prefix length of '%s' must be 1-%d.", s, max)
	}
	return p.Masked(), nil
}

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// parseIP parses a single address of the subnet's family.
func parseIP(s string, p netip.Prefix) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, Errorf(KindInvalid, "Invalid input for operation: '%s' is not a valid IP address.", s)
	}
	if a.Is4() != p.Addr().Is4() {
		return netip.Addr{}, Errorf(KindInvalid, "Invalid input for operation: IP address %s is not of the subnet's IP version.", s)
	}
	return a, nil
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 7; j >= 0; j-- {
			if i*8+(7-j) >= bits {
				b[i] |= 1 << j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// hostRange is the range of usable host addresses: IPv4 without the
// network and broadcast addresses, IPv6 without the subnet-router anycast
// (network) address.
func hostRange(p netip.Prefix) (first, last netip.Addr) {
	first = p.Masked().Addr().Next()
	last = lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return first, last
}

// ipRange is an inclusive address range.
type ipRange struct{ start, end netip.Addr }

func (r ipRange) contains(a netip.Addr) bool {
	return r.start.Compare(a) <= 0 && a.Compare(r.end) <= 0
}

func (r ipRange) overlaps(o ipRange) bool {
	return r.start.Compare(o.end) <= 0 && o.start.Compare(r.end) <= 0
}

// defaultPools are all host addresses except the gateway.
func defaultPools(p netip.Prefix, gw netip.Addr) []IPRange {
	first, last := hostRange(p)
	var out []IPRange
	add := func(a, b netip.Addr) {
		if a.IsValid() && b.IsValid() && a.Compare(b) <= 0 {
			out = append(out, IPRange{Start: a.String(), End: b.String()})
		}
	}
	if !gw.IsValid() || !(ipRange{first, last}).contains(gw) {
		add(first, last)
		return out
	}
	if gw != first {
		add(first, gw.Prev())
	}
	if gw != last {
		add(gw.Next(), last)
	}
	return out
}

// prepareSubnet validates a subnet and fills in what was left to the
// server: the normalised CIDR and IP version, the gateway (first host when
// gwAuto), the allocation pools (all hosts but the gateway when poolsAuto),
// and empty lists instead of nil.
func prepareSubnet(s *Subnet, gwAuto, poolsAuto bool) error {
	p, err := parseCIDR(s.CIDR, s.IPVersion)
	if err != nil {
		return err
	}
	s.CIDR, s.IPVersion = p.String(), ipVersion(p.Addr())
	if s.IPVersion == 4 && (s.IPv6AddressMode != "" || s.IPv6RAMode != "") {
		return Errorf(KindInvalid, "Invalid input for operation: ipv6_address_mode and ipv6_ra_mode are only valid on IPv6 subnets.")
	}
	for _, m := range []string{s.IPv6AddressMode, s.IPv6RAMode} {
		switch m {
		case "", "dhcpv6-stateful", "dhcpv6-stateless":
		case "slaac":
			return Errorf(KindInvalid, "Invalid input for operation: SLAAC subnets are not supported; use static or dhcpv6-stateful allocation.")
		default:
			return Errorf(KindInvalid, "Invalid input for operation: '%s' is not a valid IPv6 mode.", m)
		}
	}
	first, last := hostRange(p)
	var gw netip.Addr
	if gwAuto {
		gw = first
		s.GatewayIP = gw.String()
	} else if s.GatewayIP != "" {
		if gw, err = parseIP(s.GatewayIP, p); err != nil {
			return err
		}
		if !(ipRange{first, last}).contains(gw) {
			return Errorf(KindInvalid, "Invalid input for operation: Gateway IP %s is not a usable address of subnet %s.", s.GatewayIP, s.CIDR)
		}
		s.GatewayIP = gw.String()
	}
	if poolsAuto {
		s.AllocationPools = defaultPools(p, gw)
	} else if err := checkPools(s, p, gw); err != nil {
		return err
	}
	if s.DNSNameservers == nil {
		s.DNSNameservers = []string{}
	}
	seen := map[netip.Addr]bool{}
	for i, d := range s.DNSNameservers {
		a, err := netip.ParseAddr(strings.TrimSpace(d))
		if err != nil || a.Zone() != "" {
			return Errorf(KindInvalid, "Invalid input for dns_nameservers. Reason: '%s' is not a valid nameserver.", d)
		}
		if seen[a] {
			return Errorf(KindInvalid, "Invalid input for dns_nameservers. Reason: Duplicate nameserver '%s'.", d)
		}
		seen[a] = true
		s.DNSNameservers[i] = a.String()
	}
	if s.HostRoutes == nil {
		s.HostRoutes = []HostRoute{}
	}
	for i, r := range s.HostRoutes {
		dst, err := netip.ParsePrefix(strings.TrimSpace(r.Destination))
		if err != nil || ipVersion(dst.Addr()) != s.IPVersion {
			return Errorf(KindInvalid, "Invalid input for host_routes. Reason: '%s' is not a valid destination of this subnet's IP version.", r.Destination)
		}
		hop, err := parseIP(r.NextHop, p)
		if err != nil {
			return Errorf(KindInvalid, "Invalid input for host_routes. Reason: '%s' is not a valid nexthop.", r.NextHop)
		}
		s.HostRoutes[i] = HostRoute{Destination: dst.Masked().String(), NextHop: hop.String()}
	}
	if s.Tags == nil {
		s.Tags = []string{}
	}
	return nil
}

// checkPools validates explicit allocation pools: well-formed, inside the
// subnet's host range, not overlapping each other and not containing the
// gateway. It normalises the addresses and sorts the pools.
func checkPools(s *Subnet, p netip.Prefix, gw netip.Addr) error {
	if s.AllocationPools == nil {
		s.AllocationPools = []IPRange{}
	}
	first, last := hostRange(p)
	hosts := ipRange{first, last}
	rs := make([]ipRange, 0, len(s.AllocationPools))
	for _, pool := range s.AllocationPools {
		a, err1 := parseIP(pool.Start, p)
		b, err2 := parseIP(pool.End, p)
		if err1 != nil || err2 != nil || a.Compare(b) > 0 {
			return Errorf(KindInvalid, "Invalid input for operation: The allocation pool %s-%s is not valid.", pool.Start, pool.End)
		}
		if !hosts.contains(a) || !hosts.contains(b) {
			return Errorf(KindInvalid, "Invalid input for operation: The allocation pool %s-%s spans beyond the subnet cidr %s.", pool.Start, pool.End, s.CIDR)
		}
		r := ipRange{a, b}
		for _, o := range rs {
			if r.overlaps(o) {
				return Errorf(KindInvalid, "Invalid input for operation: Found overlapping allocation pools: %s-%s and %s-%s.", o.start, o.end, a, b)
			}
		}
		if gw.IsValid() && r.contains(gw) {
			return Errorf(KindConflict, "Gateway ip %s conflicts with allocation pool %s-%s.", gw, a, b)
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(x, y ipRange) int { return x.start.Compare(y.start) })
	s.AllocationPools = s.AllocationPools[:0]
	for _, r := range rs {
		s.AllocationPools = append(s.AllocationPools, IPRange{Start: r.start.String(), End: r.end.String()})
	}
	return nil
}

// poolRanges parses a (validated) subnet's pools.
func poolRanges(s *Subnet) []ipRange {
	var out []ipRange
	for _, p := range s.AllocationPools {
		a, err1 := netip.ParseAddr(p.Start)
		b, err2 := netip.ParseAddr(p.End)
		if err1 == nil && err2 == nil {
			out = append(out, ipRange{a, b})
		}
	}
	slices.SortFunc(out, func(x, y ipRange) int { return x.start.Compare(y.start) })
	return out
}

// usedIPs are the addresses of a subnet held by ports of its network,
// except the port skip (an update re-allocating its own addresses). It
// scans the network's ports: O(ports on the network) per allocation, which
// keeps the ports table the only record of what is allocated.
func usedIPs(sn *Snapshot, s *Subnet, skip string) map[netip.Addr]bool {
	ports := sn.PortsOf(s.NetworkID)
	used := make(map[netip.Addr]bool, len(ports))
	for _, p := range ports {
		if p.ID == skip {
			continue
		}
		for _, f := range p.FixedIPs {
			if f.SubnetID != s.ID {
				continue
			}
			if a, err := netip.ParseAddr(f.IP); err == nil {
				used[a] = true
			}
		}
	}
	return used
}

// nextFreeIP is the lowest address of the subnet's pools that is neither
// used nor the gateway; false when the pools are exhausted.
func nextFreeIP(s *Subnet, used map[netip.Addr]bool) (netip.Addr, bool) {
	gw, _ := netip.ParseAddr(s.GatewayIP)
	for _, r := range poolRanges(s) {
		for a := r.start; a.IsValid() && a.Compare(r.end) <= 0; a = a.Next() {
			if !used[a] && a != gw {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// checkRequestedIP validates an address asked for on a subnet: a usable
// host address of its CIDR (400 otherwise), not in used and not the
// gateway unless gatewayOK (409 IpAddressAlreadyAllocated). It may lie
// outside the allocation pools, as in Neutron.
func checkRequestedIP(s *Subnet, ip string, used map[netip.Addr]bool, gatewayOK bool) (netip.Addr, error) {
	p, err := netip.ParsePrefix(s.CIDR)
	if err != nil {
		return netip.Addr{}, Errorf(KindInternal, "subnet %s has a bad cidr %q", s.ID, s.CIDR)
	}
	a, err := parseIP(ip, p)
	if err != nil {
		return netip.Addr{}, err
	}
	first, last := hostRange(p)
	if !(ipRange{first, last}).contains(a) {
		return netip.Addr{}, Errorf(KindInvalid, "Invalid input for operation: IP address %s is not a valid IP for the specified subnet.", ip)
	}
	if used[a] || (!gatewayOK && s.GatewayIP != "" && s.GatewayIP == a.String()) {
		return netip.Addr{}, Errorf(KindConflict, "IP address %s already allocated in subnet %s.", a, s.ID)
	}
	return a, nil
}

// subnetContains reports whether a subnet's CIDR holds the address.
func subnetContains(s *Subnet, a netip.Addr) bool {
	p, err := netip.ParsePrefix(s.CIDR)
	return err == nil && p.Contains(a)
}

// cidrsOverlap reports whether two CIDRs share an address.
func cidrsOverlap(a, b string) bool {
	pa, err1 := netip.ParsePrefix(a)
	pb, err2 := netip.ParsePrefix(b)
	return err1 == nil && err2 == nil && pa.Overlaps(pb)
}

// parseIPAny parses an address of either family.
func parseIPAny(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, Errorf(KindInvalid, "'%s' is not a valid IP address", s)
	}
	return a, nil
}

// portMAC validates a requested MAC (unique on the network) or derives one
// from the port id: fa:16:3e plus three bytes of sha256(id/attempt),
// probing until no port anywhere has it.
func portMAC(sn *Snapshot, networkID, portID, want string) (string, error) {
	if want != "" {
		hw, err := net.ParseMAC(want)
		if err != nil || len(hw) != 6 || hw[0]&1 == 1 || isZero(hw) {
			return "", Errorf(KindInvalid, "Invalid input for mac_address. Reason: '%s' is not a valid unicast MAC address.", want)
		}
		mac := hw.String()
		for _, o := range sn.PortsByMAC(mac) {
			if o.NetworkID == networkID && o.ID != portID {
				return "", Errorf(KindConflict, msgMACInUse, networkID, mac)
			}
		}
		return mac, nil
	}
	for attempt := 0; attempt < 64; attempt++ {
		h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", portID, attempt)))
		mac := fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", h[0], h[1], h[2])
		if len(sn.PortsByMAC(mac)) == 0 {
			return mac, nil
		}
	}
	return "", Errorf(KindConflict, msgMACExhausted, portID)
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// allocateIPs resolves requested fixed IPs on network n for port portID.
// An empty request gets one address from the oldest subnet of each IP
// version that has one free, IPv4 first. keep are the port's current
// addresses, which a request may name again without conflicting with
// itself. gatewayOK lets a router interface take the gateway address.
func allocateIPs(sn *Snapshot, n *Network, portID string, wants []FixedIPWant, keep []FixedIP, gatewayOK bool) ([]FixedIP, error) {
	subnets := sn.SubnetsOf(n.ID)
	slices.SortStableFunc(subnets, func(a, b *Subnet) int {
		if a.IPVersion != b.IPVersion {
			return a.IPVersion - b.IPVersion
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	byID := map[string]*Subnet{}
	for _, s := range subnets {
		byID[s.ID] = s
	}
	used := map[string]map[string]bool{} // subnet -> addresses taken by this request so far
	taken := func(s *Subnet) map[string]bool {
		if used[s.ID] == nil {
			used[s.ID] = map[string]bool{}
		}
		return used[s.ID]
	}
	var out []FixedIP
	if len(wants) == 0 {
		done := map[int]bool{}
		exhausted := false
		for _, s := range subnets {
			if done[s.IPVersion] {
				continue
			}
			u := usedIPs(sn, s, portID)
			if a, ok := nextFreeIP(s, u); ok {
				out = append(out, FixedIP{SubnetID: s.ID, IP: a.String()})
				done[s.IPVersion] = true
			} else {
				exhausted = true
			}
		}
		if exhausted && len(out) == 0 {
			return nil, Errorf(KindConflict, msgIPExhausted, n.ID)
		}
		return out, nil
	}
	for _, w := range wants {
		var s *Subnet
		switch {
		case w.SubnetID != "":
			s = byID[w.SubnetID]
			if s == nil {
				if _, exists := sn.Subnet(w.SubnetID); exists {
					return nil, Errorf(KindInvalid, "Invalid input for operation: Failed to create port on network %s, because fixed_ips included invalid subnet %s.", n.ID, w.SubnetID)
				}
				return nil, Errorf(KindNotFound, msgSubnetNotFound, w.SubnetID)
			}
		case w.IP != "":
			for _, cand := range subnets {
				if a, err := parseIPAny(w.IP); err == nil && subnetContains(cand, a) {
					s = cand
					break
				}
			}
			if s == nil {
				if _, err := parseIPAny(w.IP); err != nil {
					return nil, Errorf(KindInvalid, "Invalid input for operation: '%s' is not a valid IP address.", w.IP)
				}
				return nil, Errorf(KindInvalid, "Invalid input for operation: IP address %s is not in any subnet of network %s.", w.IP, n.ID)
			}
		default:
			return nil, Errorf(KindInvalid, "Invalid input for fixed_ips. Reason: each entry needs a subnet_id or an ip_address.")
		}
		u := usedIPs(sn, s, portID)
		for ip := range taken(s) {
			if a, err := parseIPAny(ip); err == nil {
				u[a] = true
			}
		}
		if w.IP == "" {
			a, ok := nextFreeIP(s, u)
			if !ok {
				return nil, Errorf(KindConflict, msgIPExhausted, n.ID)
			}
			out = append(out, FixedIP{SubnetID: s.ID, IP: a.String()})
			taken(s)[a.String()] = true
			continue
		}
		a, err := checkRequestedIP(s, w.IP, u, gatewayOK || keeps(keep, s.ID, w.IP))
		if err != nil {
			return nil, err
		}
		out = append(out, FixedIP{SubnetID: s.ID, IP: a.String()})
		taken(s)[a.String()] = true
	}
	return out, nil
}

func keeps(keep []FixedIP, subnetID, ip string) bool {
	for _, f := range keep {
		if f.SubnetID == subnetID && f.IP == ip {
			return true
		}
	}
	return false
}
