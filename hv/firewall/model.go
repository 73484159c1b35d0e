package firewall

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of both tables (bridge and inet family).
const TableName = "peerstack-sg"

// Packet mark bits this package owns on bridged traffic (it clears them on
// every frame entering a bridge, so none can come in from outside, e.g.
// through a VXLAN device): the sending port's index and the connection
// state copied from conntrack. Other bits are left alone.
const (
	markPortMask uint32 = 0x0000ffff
	markEst      uint32 = 0x00010000 // established or related
	markInv      uint32 = 0x00020000 // invalid
	markOurs            = markPortMask | markEst | markInv
)

// Protocol numbers the rules treat specially.
const (
	ProtoAny    = -1
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Rule allows one kind of traffic into (Ingress) or out of a port.
// Proto is an IP protocol number or ProtoAny. For protocols with ports
// PortMin..PortMax is the destination port range (0 = any); for ICMP and
// ICMPv6 PortMin is the type and PortMax the code (-1 = any). RemoteIP
// (if valid) or RemoteGroup (a key of Desired.Groups) restricts the peer;
// neither means anywhere.
type Rule struct {
	Ingress     bool
	IPv6        bool
	Proto       int
	PortMin     int
	PortMax     int
	RemoteIP    netip.Prefix
	RemoteGroup string
}

// Pair is an extra (MAC, prefix) a port may send from.
type Pair struct {
	MAC    net.HardwareAddr
	Prefix netip.Prefix
}

// Port is one local port with port security on.
type Port struct {
	ID       string
	Tap      string // the port's device on the bridge
	Bridge   string // the bridge of its network
	Zone     uint16 // conntrack zone of its network
	MAC      net.HardwareAddr
	IPs      []netip.Addr // fixed addresses
	Pairs    []Pair       // allowed address pairs
	Stateful bool
	Rules    []Rule
}

// Network is a bridge whose traffic is tracked in a zone of its own.
type Network struct {
	Bridge string
	Zone   uint16
}

// Desired is everything this host filters. Ports without port security
// are left out (nothing filters them). Groups holds the member addresses
// of every remote group the rules name.
type Desired struct {
	Networks []Network
	Ports    []Port
	Groups   map[string][]netip.Addr
	// Verify reads back every chain, not only the changed ones, and
	// rewrites those the kernel holds differently (changed from outside,
	// or written by a release without rule tags): the periodic full
	// resync. Costs one dump per chain; writes nothing when all match.
	Verify bool
}

// chainSpec is one chain as it should be: base chains carry a hook.
type chainSpec struct {
	family nftables.TableFamily
	name   string
	hook   *nftables.ChainHook
	prio   *nftables.ChainPriority
	rules  [][]expr.Any
}

// setSpec is one remote group set.
type setSpec struct {
	name  string
	v6    bool
	elems map[netip.Addr]bool
}

// model is the content of both tables.
type model struct {
	chains map[string]*chainSpec // by family-qualified key
	sets   map[string]*setSpec
	ports  map[string]*Port // by id, for connection cutting
}

func chainKey(f nftables.TableFamily, name string) string { return fmt.Sprintf("%d/%s", f, name) }

// setName is the set of a remote group's addresses of one IP version.
func setName(group string, v6 bool) string {
	if v6 {
		return "g6-" + group
	}
	return "g4-" + group
}

// build turns the desired state into tables; idx numbers the ports.
func build(d Desired, idx map[string]uint16) (*model, error) {
	m := &model{chains: map[string]*chainSpec{}, sets: map[string]*setSpec{}, ports: map[string]*Port{}}
	add := func(c *chainSpec) { m.chains[chainKey(c.family, c.name)] = c }
	br, inet := nftables.TableFamilyBridge, nftables.TableFamilyINet

	from := &chainSpec{family: br, name: "from", hook: nftables.ChainHookPrerouting, prio: nftables.ChainPriorityRef(-300),
		rules: [][]expr.Any{markAnd(^markOurs)}}
	to := &chainSpec{family: br, name: "to", hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityRef(0)}
	zone := &chainSpec{family: inet, name: "zone", hook: nftables.ChainHookPrerouting, prio: nftables.ChainPriorityRef(-300)}
	// Only traffic of our bridges gets the state bits: the host's own
	// traffic keeps its marks.
	ctmark := &chainSpec{family: inet, name: "ctmark", hook: nftables.ChainHookPrerouting, prio: nftables.ChainPriorityRef(-150)}
	nets := slices.Clone(d.Networks)
	sort.Slice(nets, func(i, j int) bool { return nets[i].Bridge < nets[j].Bridge })
	for _, n := range nets {
		zone.rules = append(zone.rules, cat(ifname(expr.MetaKeyIIFNAME, n.Bridge), zoneSet(n.Zone)))
		ctmark.rules = append(ctmark.rules,
			cat(ifname(expr.MetaKeyIIFNAME, n.Bridge), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), markOr(markEst)),
			cat(ifname(expr.MetaKeyIIFNAME, n.Bridge), ctState(expr.CtStateBitINVALID), markOr(markInv)))
	}
	var ingress [][]expr.Any
	ports := slices.Clone(d.Ports)
	sort.Slice(ports, func(i, j int) bool { return ports[i].ID < ports[j].ID })
	for i := range ports {
		p := &ports[i]
		if p.ID == "" || p.Tap == "" || len(p.MAC) != 6 {
			return nil, fmt.Errorf("firewall: port %q needs an id, a device and a MAC", p.ID)
		}
		n, ok := idx[p.ID]
		if !ok {
			return nil, fmt.Errorf("firewall: port %s has no index", p.ID)
		}
		m.ports[p.ID] = p
		o, e, in := "o-"+p.ID, "e-"+p.ID, "i-"+p.ID
		from.rules = append(from.rules, cat(ifname(expr.MetaKeyIIFNAME, p.Tap), jump(o)))
		// Every sender's egress check comes before any receiver's
		// ingress accept.
		to.rules = append(to.rules, cat(markIs(markPortMask, uint32(n)), jump(e)))
		ingress = append(ingress, cat(ifname(expr.MetaKeyOIFNAME, p.Tap), jump(in)))
		add(&chainSpec{family: br, name: o, rules: spoofRules(p, n)})
		add(&chainSpec{family: br, name: e, rules: sgRules(p, false, m, d.Groups)})
		add(&chainSpec{family: br, name: in, rules: sgRules(p, true, m, d.Groups)})
		if !p.Stateful {
			zone.rules = append(zone.rules, cat(ifname(expr.MetaKeyIIFNAME, p.Bridge), markIs(markPortMask, uint32(n)), []expr.Any{&expr.Notrack{}}))
			for _, a := range portAddrs(p) {
				zone.rules = append(zone.rules, cat(ifname(expr.MetaKeyIIFNAME, p.Bridge), inetAddr(a, false), []expr.Any{&expr.Notrack{}}))
			}
		}
	}
	to.rules = append(to.rules, ingress...)
	for _, c := range []*chainSpec{from, to, zone, ctmark} {
		add(c)
	}
	return m, nil
}

// portAddrs are the single addresses a port owns (fixed IPs and
// single-address pairs), which stateless ports are untracked for.
func portAddrs(p *Port) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range p.IPs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	for _, pr := range p.Pairs {
		out = append(out, pr.Prefix)
	}
	return out
}

// linkLocal is the EUI-64 link-local address of a MAC.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15] = mac[0]^2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// spoofRules: what a port may send at all (bridge prerouting).
func spoofRules(p *Port, n uint16) [][]expr.Any {
	rules := [][]expr.Any{markOr(uint32(n))}
	type src struct {
		mac net.HardwareAddr
		pfx netip.Prefix
	}
	var srcs []src
	for _, a := range p.IPs {
		srcs = append(srcs, src{p.MAC, netip.PrefixFrom(a, a.BitLen())})
	}
	for _, pr := range p.Pairs {
		mac := pr.MAC
		if len(mac) != 6 {
			mac = p.MAC
		}
		srcs = append(srcs, src{mac, pr.Prefix})
	}
	// ARP only from an owned (MAC, IPv4); probes from 0.0.0.0 too.
	arp := cat(etherType(unix.ETH_P_ARP), etherSrc(p.MAC), payload(expr.PayloadBaseLLHeader, 14+14, 4), cmpEq(make([]byte, 4)), accept())
	rules = append(rules, arp)
	for _, s := range srcs {
		if s.pfx.Addr().Is4() {
			rules = append(rules, cat(etherType(unix.ETH_P_ARP), etherSrc(s.mac), payload(expr.PayloadBaseLLHeader, 14+8, 6), cmpEq(s.mac),
				payload(expr.PayloadBaseLLHeader, 14+14, 4), prefixMatch(s.pfx), accept()))
		}
	}
	rules = append(rules, cat(etherType(unix.ETH_P_ARP), drop()))
	// No DHCP servers and no routers among VMs.
	rules = append(rules,
		cat(etherType(unix.ETH_P_IP), l4(ProtoUDP), thPort(0, 67), thPort(2, 68), drop()),
		cat(etherType(unix.ETH_P_IPV6), l4(ProtoUDP), thPort(0, 547), thPort(2, 546), drop()),
		cat(etherType(unix.ETH_P_IPV6), l4(ProtoICMPv6), icmpType(134), drop()),
	)
	// DHCP requests before the port has an address.
	rules = append(rules, cat(etherType(unix.ETH_P_IP), etherSrc(p.MAC), l4(ProtoUDP), thPort(0, 68), thPort(2, 67), accept()))
	// IPv6 link-local and the unspecified address of duplicate address detection.
	rules = append(rules, cat(etherType(unix.ETH_P_IPV6), etherSrc(p.MAC), netAddr(6, 8, netip.PrefixFrom(linkLocal(p.MAC), 128)), accept()))
	rules = append(rules, cat(etherType(unix.ETH_P_IPV6), etherSrc(p.MAC), netAddr(6, 8, netip.PrefixFrom(netip.IPv6Unspecified(), 128)), l4(ProtoICMPv6), accept()))
	for _, s := range srcs {
		if s.pfx.Addr().Is4() {
			rules = append(rules, cat(etherType(unix.ETH_P_IP), etherSrc(s.mac), netAddr(4, 12, s.pfx), accept()))
		} else {
			rules = append(rules, cat(etherType(unix.ETH_P_IPV6), etherSrc(s.mac), netAddr(6, 8, s.pfx), accept()))
		}
	}
	return append(rules, drop())
}

// sgRules: a port's egress (return when allowed) or ingress (accept)
// chain, bridge postrouting.
func sgRules(p *Port, ingress bool, m *model, groups map[string][]netip.Addr) [][]expr.Any {
	ok := func() []expr.Any {
		if ingress {
			return accept()
		}
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	}
	rules := [][]expr.Any{cat(etherType(unix.ETH_P_ARP), ok())}
	if p.Stateful {
		rules = append(rules, cat(markIs(markEst, markEst), ok()), cat(markIs(markInv, markInv), drop()))
	}
	// Neighbour discovery and DHCP are always allowed, as in Neutron.
	for _, t := range []int{130, 131, 132, 133, 135, 136, 143} {
		rules = append(rules, cat(etherType(unix.ETH_P_IPV6), l4(ProtoICMPv6), icmpType(t), ok()))
	}
	if ingress {
		rules = append(rules, cat(etherType(unix.ETH_P_IPV6), l4(ProtoICMPv6), icmpType(134), ok()))
	} else {
		rules = append(rules, cat(etherType(unix.ETH_P_IP), l4(ProtoUDP), thPort(0, 68), thPort(2, 67), ok()))
	}
	for _, r := range p.Rules {
		if r.Ingress != ingress {
			continue
		}
		ver, et := 4, uint16(unix.ETH_P_IP)
		if r.IPv6 {
			ver, et = 6, unix.ETH_P_IPV6
		}
		e := etherType(et)
		remoteOff := map[int]uint32{4: 16, 6: 24} // destination for egress
		if ingress {
			remoteOff = map[int]uint32{4: 12, 6: 8} // source for ingress
		}
		switch {
		case r.RemoteGroup != "":
			name := setName(r.RemoteGroup, r.IPv6)
			s, have := m.sets[name]
			if !have {
				s = &setSpec{name: name, v6: r.IPv6, elems: map[netip.Addr]bool{}}
				for _, a := range groups[r.RemoteGroup] {
					// An IPv4-mapped IPv6 address is the IPv4 address: it
					// belongs in the IPv4 set (as 4 bytes), never in the
					// IPv6 one, whose keys are 16.
					if u := a.Unmap(); u.IsValid() && u.Is6() == r.IPv6 {
						s.elems[u] = true
					}
				}
				m.sets[name] = s
			}
			l := uint32(4)
			if r.IPv6 {
				l = 16
			}
			e = cat(e, payload(expr.PayloadBaseNetworkHeader, remoteOff[ver], l), []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: name}})
		case r.RemoteIP.IsValid() && r.RemoteIP.Bits() > 0:
			e = cat(e, netAddr(ver, remoteOff[ver], r.RemoteIP))
		}
		if r.Proto != ProtoAny {
			e = cat(e, l4(r.Proto))
			switch {
			case r.Proto == ProtoICMP || r.Proto == ProtoICMPv6:
				if r.PortMin >= 0 {
					e = cat(e, icmpType(r.PortMin))
					if r.PortMax >= 0 {
						e = cat(e, payload(expr.PayloadBaseTransportHeader, 1, 1), cmpEq([]byte{byte(r.PortMax)}))
					}
				}
			case r.PortMin > 0 || r.PortMax > 0:
				lo, hi := r.PortMin, r.PortMax
				if hi < lo {
					hi = lo
				}
				if lo == hi {
					e = cat(e, thPort(2, lo))
				} else {
					e = cat(e, payload(expr.PayloadBaseTransportHeader, 2, 2),
						[]expr.Any{&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(lo), ToData: be16(hi)}})
				}
			}
		}
		rules = append(rules, cat(e, ok()))
	}
	return append(rules, drop())
}

// ---- expression helpers ----

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }
func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

func cmpEq(data []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: slices.Clone(data)}}
}

func be16(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

func payload(base expr.PayloadBase, off, l uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: l}}
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

func etherType(t uint16) []expr.Any {
	return cat(payload(expr.PayloadBaseLLHeader, 12, 2), cmpEq(binary.BigEndian.AppendUint16(nil, t)))
}

func etherSrc(mac net.HardwareAddr) []expr.Any {
	return cat(payload(expr.PayloadBaseLLHeader, 6, 6), cmpEq(mac))
}

func l4(proto int) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(proto)}}}
}

func thPort(off uint32, port int) []expr.Any {
	return cat(payload(expr.PayloadBaseTransportHeader, off, 2), cmpEq(be16(port)))
}

func icmpType(t int) []expr.Any {
	return cat(payload(expr.PayloadBaseTransportHeader, 0, 1), cmpEq([]byte{byte(t)}))
}

// prefixMatch compares register 1 (an address) with a prefix.
func prefixMatch(p netip.Prefix) []expr.Any {
	addr := p.Masked().Addr().AsSlice()
	if p.Bits() == p.Addr().BitLen() {
		return cmpEq(addr)
	}
	mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
	return []expr.Any{
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}

// netAddr matches an address field of the network header against a prefix.
func netAddr(ver int, off uint32, p netip.Prefix) []expr.Any {
	l := uint32(4)
	if ver == 6 {
		l = 16
	}
	return cat(payload(expr.PayloadBaseNetworkHeader, off, l), prefixMatch(p))
}

// inetAddr matches the destination address in the inet family (nfproto
// first, as the inet family carries both versions).
func inetAddr(p netip.Prefix, src bool) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if p.Addr().Is6() {
		proto, off, l = unix.NFPROTO_IPV6, 24, 16
		if src {
			off = 8
		}
	} else if src {
		off = 12
	}
	return cat([]expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}},
		payload(expr.PayloadBaseNetworkHeader, off, l), prefixMatch(p))
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func zoneSet(z uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(z)},
		&expr.Ct{Register: 1, Key: expr.CtKeyZONE, SourceRegister: true},
	}
}

// markIs matches mark & mask == val.
func markIs(mask, val uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(val)},
	}
}

// markOr sets bits of the mark; markAnd keeps only the bits of mask.
func markOr(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: binaryutil.NativeEndian.PutUint32(bits)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	}
}

func markAnd(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	}
}
