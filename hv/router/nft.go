package router

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Tables. Each table's structure (chains, rules and maps) is rebuilt as a
// whole, in one atomic transaction, when it changes; a chain "stamp" holds
// one rule whose user data is the hash of that structure, so an unchanged
// table costs no write. The contents of its maps (the floating IPs) are
// not part of the structure: they are synced element by element, in one
// transaction, so adding one floating IP to a router running a thousand
// writes one element to each map and nothing else.
const (
	tblRouter = "peerstack-r"    // in a router namespace (ip): NAT
	tblHost   = "peerstack-r"    // in the host namespace (inet): guard, masquerade
	tblBridge = "peerstack-r-br" // in the host namespace (bridge): anycast gateway
	stampName = "stamp"
)

// nftRule is a rule as a list of expressions.
type nftRule []expr.Any

// nftChain is a base chain and its rules.
type nftChain struct {
	name     string
	hook     *nftables.ChainHook
	prio     *nftables.ChainPriority
	typ      nftables.ChainType
	rules    []nftRule
	hashSeed any // what the rules were built from (hashed)
}

// nftMap is a named IPv4 → IPv4 map of a table and its elements. Rules
// refer to it by name (lookupMap).
type nftMap struct {
	name  string
	elems map[[4]byte][4]byte
}

// mapSize bounds a map's elements (a host's floating IPs of one router).
// A set with a size gets the kernel's plain hash backend, whose element
// removal costs no wait for an RCU grace period as the resizable one's
// does.
const mapSize = 65536

// nftSockBuf is the netlink socket buffer of an nftables connection: a
// table rebuilt with hundreds of rules is one batch of hundreds of
// messages, each acknowledged, which overflows the default buffers
// ("message too long", "no buffer space available").
const nftSockBuf = 8 << 20

// nftConn opens an nftables connection in the namespace fd.
func nftConn(fd int) (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(fd), nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nftSockBuf),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, nftSockBuf))
		}); err != nil {
			return err
		}
		return serr
	}))
}

// syncTable makes table name of family hold exactly chains and maps: when
// its stamp matches only map elements that differ are written; otherwise
// the table is deleted and rebuilt. Either way one transaction at most.
// No chains deletes the table. It returns the number of transactions
// written (0 or 1).
func syncTable(conn *nftables.Conn, family nftables.TableFamily, name string, chains []nftChain, maps []nftMap) (int, error) {
	seed := make([]any, 0, len(chains)+len(maps))
	for _, c := range chains {
		seed = append(seed, []any{c.name, c.hashSeed})
	}
	for _, m := range maps {
		seed = append(seed, []any{"map", m.name})
	}
	raw, _ := json.Marshal(seed)
	sum := sha256.Sum256(raw)
	want := sum[:16]

	tables, err := conn.ListTablesOfFamily(family)
	if err != nil {
		return 0, fmt.Errorf("list nftables tables: %w", err)
	}
	var have *nftables.Table
	for _, t := range tables {
		if t.Name == name {
			have = t
		}
	}
	if have != nil && len(chains) > 0 {
		rules, err := conn.GetRules(have, &nftables.Chain{Name: stampName, Table: have})
		if err == nil && len(rules) == 1 && bytes.Equal(rules[0].UserData, want) {
			n, err := syncMaps(conn, have, maps)
			if err == nil {
				return n, nil
			}
			// A map that cannot be read or written: rebuild the table.
		}
	}
	if have == nil && len(chains) == 0 {
		return 0, nil
	}
	if have != nil {
		conn.DelTable(have)
	}
	if len(chains) > 0 {
		t := conn.AddTable(&nftables.Table{Family: family, Name: name})
		st := conn.AddChain(&nftables.Chain{Name: stampName, Table: t})
		conn.AddRule(&nftables.Rule{Table: t, Chain: st, UserData: want,
			Exprs: []expr.Any{&expr.Counter{}}})
		ids := map[string]uint32{}
		for _, m := range maps {
			s := &nftables.Set{Table: t, Name: m.name, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr, Size: mapSize}
			if err := conn.AddSet(s, mapElems(m.elems)); err != nil {
				return 0, fmt.Errorf("nftables map %s: %w", m.name, err)
			}
			ids[m.name] = s.ID
		}
		for _, c := range chains {
			policy := nftables.ChainPolicyAccept
			ch := conn.AddChain(&nftables.Chain{Name: c.name, Table: t, Hooknum: c.hook, Priority: c.prio, Type: c.typ, Policy: &policy})
			for _, r := range c.rules {
				for _, e := range r {
					if l, ok := e.(*expr.Lookup); ok {
						l.SetID = ids[l.SetName]
					}
				}
				conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return 0, fmt.Errorf("write nftables table %s: %w", name, err)
	}
	return 1, nil
}

// syncMaps writes the elements of the table's maps that differ from maps,
// in one transaction (0 or 1 returned).
func syncMaps(conn *nftables.Conn, t *nftables.Table, maps []nftMap) (int, error) {
	dirty := false
	for _, m := range maps {
		s, err := conn.GetSetByName(t, m.name)
		if err != nil {
			return 0, fmt.Errorf("nftables map %s: %w", m.name, err)
		}
		have, err := conn.GetSetElements(s)
		if err != nil {
			return 0, fmt.Errorf("elements of nftables map %s: %w", m.name, err)
		}
		present := map[[4]byte]bool{}
		var del []nftables.SetElement
		for _, e := range have {
			if len(e.Key) != 4 {
				del = append(del, e)
				continue
			}
			k := [4]byte(e.Key)
			if v, ok := m.elems[k]; ok && bytes.Equal(e.Val, v[:]) {
				present[k] = true
				continue
			}
			del = append(del, nftables.SetElement{Key: e.Key})
		}
		add := map[[4]byte][4]byte{}
		for k, v := range m.elems {
			if !present[k] {
				add[k] = v
			}
		}
		if len(del) > 0 {
			if err := conn.SetDeleteElements(s, del); err != nil {
				return 0, fmt.Errorf("nftables map %s: %w", m.name, err)
			}
			dirty = true
		}
		if len(add) > 0 {
			if err := conn.SetAddElements(s, mapElems(add)); err != nil {
				return 0, fmt.Errorf("nftables map %s: %w", m.name, err)
			}
			dirty = true
		}
	}
	if !dirty {
		return 0, nil
	}
	if err := conn.Flush(); err != nil {
		return 0, fmt.Errorf("write nftables map elements of %s: %w", t.Name, err)
	}
	return 1, nil
}

func mapElems(m map[[4]byte][4]byte) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(m))
	for k, v := range m {
		out = append(out, nftables.SetElement{Key: bytes.Clone(k[:]), Val: bytes.Clone(v[:])})
	}
	return out
}

// ---- expression helpers ----

func ifnameBytes(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// matchIf matches the input (in) or output interface name; a name ending
// in "*" matches the prefix.
func matchIf(in bool, name string) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	data := ifnameBytes(name)
	if n := len(name); n > 0 && name[n-1] == '*' {
		data = []byte(name[:n-1])
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

func matchIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// matchAddr matches the IPv4 source (src) or destination against a prefix.
func matchAddr(src bool, p netip.Prefix) []expr.Any {
	off := uint32(16)
	if src {
		off = 12
	}
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	a := p.Masked().Addr().As4()
	if p.Bits() < 32 {
		mask := net.CIDRMask(p.Bits(), 32)
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
}

func matchTCPDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func matchEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// OpenMark is the packet mark bit an operator sets (in a chain of their
// own that runs before priority 0) to let tenant traffic through the
// guard on purpose.
const OpenMark = 0x00100000

func matchMark(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func rule(parts ...[]expr.Any) nftRule {
	var r nftRule
	for _, p := range parts {
		r = append(r, p...)
	}
	return r
}

func one(e ...expr.Any) []expr.Any { return e }

// nat translates the source (snat) or destination to addr.
func nat(snat bool, addr netip.Addr) []expr.Any {
	typ := expr.NATTypeDestNAT
	if snat {
		typ = expr.NATTypeSourceNAT
	}
	a := addr.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

// ---- the tables ----

// Maps of the router table: floating IP → fixed address (DNAT) and fixed
// address → floating IP (SNAT).
const (
	mapFIPIn  = "fip-in"
	mapFIPOut = "fip-out"
)

// lookupMap replaces register 1 with its value in the named map (the
// rule does not match when the map has no such key).
func lookupMap(name string) expr.Any {
	return &expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: name}
}

// natReg translates the source (snat) or destination to the address in
// register 1.
func natReg(snat bool) expr.Any {
	typ := expr.NATTypeDestNAT
	if snat {
		typ = expr.NATTypeSourceNAT
	}
	return &expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}
}

// routerChains is the NAT of one router namespace: floating IPs 1:1 (by
// map), then SNAT of everything else leaving through the gateway to the
// transit address (the host masquerades it to its own external address).
func routerChains(r Router, transit netip.Addr) ([]nftChain, []nftMap) {
	if r.Gateway == nil {
		return nil, nil
	}
	// Every floating IP leads in to its fixed address (it has an address,
	// a route and an ARP answer here, so it must have its DNAT too). The
	// way out can name one floating IP per fixed address: the lowest, so
	// the choice does not depend on the order of FloatingIPs. (The API
	// refuses a second floating IP on a fixed address, as Neutron does.)
	in, out := map[[4]byte][4]byte{}, map[[4]byte][4]byte{}
	for _, f := range r.FloatingIPs {
		a, x := f.Addr.As4(), f.Fixed.As4()
		in[a] = x
		if o, dup := out[x]; !dup || netip.AddrFrom4(a).Less(netip.AddrFrom4(o)) {
			out[x] = a
		}
	}
	daddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	pre := []nftRule{rule(one(daddr, lookupMap(mapFIPIn), natReg(false)))}
	post := []nftRule{rule(matchIf(false, extInNS), one(saddr, lookupMap(mapFIPOut), natReg(true)))}
	if r.Gateway.SNAT {
		post = append(post, rule(matchIf(false, extInNS), nat(true, transit)))
	}
	seed := []any{"fip maps", r.Gateway.SNAT, transit}
	return []nftChain{
		{name: "pre", hook: nftables.ChainHookPrerouting, prio: nftables.ChainPriorityNATDest, typ: nftables.ChainTypeNAT, rules: pre, hashSeed: seed},
		{name: "post", hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityNATSource, typ: nftables.ChainTypeNAT, rules: post, hashSeed: seed},
	}, []nftMap{{mapFIPIn, in}, {mapFIPOut, out}}
}

// hostChains guard the host from its tenants and masquerade the routers'
// transit addresses out of the external interfaces, and towards the
// protected prefixes (the cluster's hosts) wherever the host routes those.
// Traffic entering from a router namespace may reach the host itself only
// on the allowed TCP ports (and as replies), and may not reach the
// protected prefixes (the cluster's hosts and storage) except on those
// ports.
// providerVLANPrefix names hv/netdev's 802.1Q sub-interfaces of provider
// networks under its default prefix (Desired.ProviderVLANPrefix when set).
const providerVLANPrefix = "pspv"

func hostChains(d Desired, externals []string) []nftChain {
	if len(d.Routers) == 0 {
		return nil
	}
	var input, fwd, post []nftRule
	input = append(input, rule(matchMark(OpenMark), one(verdict(expr.VerdictAccept))))
	fwd = append(fwd, rule(matchMark(OpenMark), one(verdict(expr.VerdictAccept))))
	input = append(input, rule(matchIf(true, extRootPrefix+"*"), matchEstablished(), one(verdict(expr.VerdictAccept))))
	for _, p := range d.AllowTCP {
		input = append(input, rule(matchIf(true, extRootPrefix+"*"), matchTCPDport(p), one(verdict(expr.VerdictAccept))))
	}
	input = append(input, rule(matchIf(true, extRootPrefix+"*"), one(verdict(expr.VerdictDrop))))
	// A provider network's 802.1Q sub-interface carries a tenant VLAN
	// to its VMs' macvlans: nothing on it is for the host.
	vlans := d.ProviderVLANPrefix
	if vlans == "" {
		vlans = providerVLANPrefix
	}
	input = append(input, rule(matchIf(true, vlans+"*"), one(verdict(expr.VerdictDrop))))
	for _, pfx := range d.Protected {
		if !pfx.Addr().Is4() {
			continue
		}
		for _, p := range d.AllowTCP {
			fwd = append(fwd, rule(matchIf(true, extRootPrefix+"*"), matchIPv4(), matchAddr(false, pfx), matchTCPDport(p), one(verdict(expr.VerdictAccept))))
		}
		fwd = append(fwd, rule(matchIf(true, extRootPrefix+"*"), matchIPv4(), matchAddr(false, pfx), one(verdict(expr.VerdictDrop))))
	}
	for _, ext := range externals {
		post = append(post, rule(matchIf(false, ext), matchIPv4(), matchAddr(true, transitNet), one(&expr.Masq{})))
	}
	// Where the cluster's addresses sit on an underlay of their own, a VM
	// reaching another member's API (the forward rules above allow only
	// those ports) leaves by it: masquerade that too, so the answer comes
	// back to this host. Only traffic routed out of a router namespace
	// (iifname), never bridged traffic, and only towards the protected
	// prefixes: tenants must not reach other networks as the host.
	for _, pfx := range d.Protected {
		if pfx.Addr().Is4() {
			post = append(post, rule(matchIf(true, extRootPrefix+"*"), matchIPv4(), matchAddr(true, transitNet), matchAddr(false, pfx), one(&expr.Masq{})))
		}
	}
	seed := []any{d.AllowTCP, d.Protected, externals, "masquerade: externals, and protected via " + extRootPrefix}
	return []nftChain{
		{name: "input", hook: nftables.ChainHookInput, prio: nftables.ChainPriorityFilter, typ: nftables.ChainTypeFilter, rules: input, hashSeed: seed},
		{name: "forward", hook: nftables.ChainHookForward, prio: nftables.ChainPriorityFilter, typ: nftables.ChainTypeFilter, rules: fwd, hashSeed: seed},
		{name: "post", hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityNATSource, typ: nftables.ChainTypeNAT, rules: post, hashSeed: seed},
	}
}

// bridgeChains keep each anycast gateway off the overlays: ARP for the
// gateway address and ARP from the gateway MAC never enter or leave a VXLAN
// port, and frames the gateway routed onto an overlay leave with this
// host's own MAC as source, so no other host learns the gateway MAC behind
// the tunnel.
func bridgeChains(d Desired) []nftChain {
	var fwd []nftRule
	type gw struct {
		Overlay string
		MAC     string
		IP      netip.Addr
	}
	var seed []gw
	seen := map[gw]bool{}
	for _, r := range d.Routers {
		for _, i := range r.Interfaces {
			g := gw{i.Overlay, i.MAC.String(), i.Address.Addr()}
			if i.Overlay == "" || seen[g] {
				continue
			}
			seen[g] = true
			seed = append(seed, g)
		}
	}
	if len(seed) == 0 {
		return nil
	}
	arpType := one(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_ARP)})
	for _, g := range seed {
		mac, _ := net.ParseMAC(g.MAC)
		srcMAC := one(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mac})
		ip := g.IP.As4()
		arpTarget := one(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip[:]})
		for _, in := range []bool{true, false} {
			fwd = append(fwd,
				rule(matchIf(in, g.Overlay), arpType, arpTarget, one(verdict(expr.VerdictDrop))),
				rule(matchIf(in, g.Overlay), srcMAC, arpType, one(verdict(expr.VerdictDrop))))
		}
		fwd = append(fwd, rule(matchIf(true, g.Overlay), srcMAC, one(verdict(expr.VerdictDrop))))
		fwd = append(fwd, rule(matchIf(false, g.Overlay), srcMAC, one(
			&expr.Immediate{Register: 1, Data: d.HostMAC},
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6})))
	}
	hostMAC := d.HostMAC.String()
	return []nftChain{{name: "forward", hook: nftables.ChainHookForward, prio: nftables.ChainPriorityFilter,
		typ: nftables.ChainTypeFilter, rules: fwd, hashSeed: []any{seed, hostMAC}}}
}

// transitNet holds the routers' transit addresses (one per router on a
// host, NATed to the host's external address).
var transitNet = netip.MustParsePrefix("169.254.64.0/18")

// transitAddrs gives each router a transit address: a hash of its id into
// transitNet, probing past collisions in id order, so a router keeps its
// address while others come and go (unless they collide).
func transitAddrs(ids []string) map[string]netip.Addr {
	out := map[string]netip.Addr{}
	used := map[netip.Addr]bool{}
	base := binary.BigEndian.Uint32(transitNet.Addr().AsSlice())
	size := uint32(1) << (32 - transitNet.Bits())
	for _, id := range ids {
		h := sha256.Sum256([]byte(id))
		n := binary.BigEndian.Uint32(h[:4]) % (size - 2)
		for {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], base+1+n)
			a := netip.AddrFrom4(b)
			if !used[a] {
				used[a], out[id] = true, a
				break
			}
			n = (n + 1) % (size - 2)
		}
	}
	return out
}
