package netdev

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Source is an address a provider port's guest may send from: its MAC and
// an IPv4 or IPv6 prefix (a fixed IP as a /32 or /128, or an allowed
// address pair).
type Source struct {
	MAC    net.HardwareAddr
	Prefix netip.Prefix
}

// The wire of a provider port is a set of tc u32 filters on the ingress of
// its tap (towards the macvlan) and of its macvlan (towards the tap), one
// priority per protocol, and below them a filter that drops everything
// else. Filters of a protocol never match an 802.1Q or 802.1ad tagged
// frame (tc compares a tagged frame's tag protocol), so a guest can neither
// send nor receive tagged frames: it is an access port, never a trunk. The
// drop makes sure nothing the wire refused (a tagged or spoofed frame, or
// another ethertype) goes on to the host's own stack.
//
// On the tap side, unless the port is Unfiltered (port security disabled),
// a frame passes only with the port's MAC or an allowed pair's MAC as its
// source and, for IPv4 and ARP, a sender address of that MAC's sources;
// the port's own MAC may also send DHCP requests from 0.0.0.0 and ARP
// probes, and IPv6 from :: and from the link-local (EUI-64) address of
// its MAC or of a pair's MAC. Above them a BPF guard drops what a guest
// must not send even from its own addresses (DHCP and DHCPv6 server
// replies, IPv6 router advertisements and redirects; see guardProg) and
// lets the rest go on.
const (
	prioGuard = 1
	prioIPv4  = 2
	prioARP   = 3
	prioIPv6  = 4
	prioDrop  = 9

	dropProgName  = "peerstack-drop"
	guardProgName = "peerstack-guard"
)

var wireProtos = []struct {
	prio  uint16
	proto uint16
}{{prioIPv4, unix.ETH_P_IP}, {prioARP, unix.ETH_P_ARP}, {prioIPv6, unix.ETH_P_IPV6}}

// wireRule is one u32 filter of a wire: frames of proto matching every key
// are redirected to the peer; or, with guard, the guard classifier.
type wireRule struct {
	prio  uint16
	proto uint16
	keys  []netlink.TcU32Key
	guard bool
}

var guardRule = wireRule{prio: prioGuard, proto: unix.ETH_P_ALL, guard: true}

func (r wireRule) String() string {
	if r.guard {
		return "guard"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%04x", r.prio, r.proto)
	for _, k := range r.keys {
		fmt.Fprintf(&b, " %08x/%08x@%d", k.Val&k.Mask, k.Mask, k.Off)
	}
	return b.String()
}

var matchAll = []netlink.TcU32Key{{}}

// macKeys match a MAC of 6 bytes at off (relative to the network header;
// the Ethernet source is at -8).
func macKeys(mac net.HardwareAddr, off int32) []netlink.TcU32Key {
	return []netlink.TcU32Key{
		{Val: binary.BigEndian.Uint32(mac[0:4]), Mask: 0xffffffff, Off: off},
		{Val: uint32(binary.BigEndian.Uint16(mac[4:6])) << 16, Mask: 0xffff0000, Off: off + 4},
	}
}

// prefixKeys match the address prefix p at off, 32 bits per key.
func prefixKeys(p netip.Prefix, off int32) []netlink.TcU32Key {
	a := p.Addr().AsSlice()
	var keys []netlink.TcU32Key
	for i, bits := 0, p.Bits(); i < len(a); i, bits = i+4, bits-32 {
		if bits <= 0 {
			break
		}
		mask := ^uint32(0)
		if bits < 32 {
			mask <<= 32 - bits
		}
		keys = append(keys, netlink.TcU32Key{Val: binary.BigEndian.Uint32(a[i:i+4]) & mask, Mask: mask, Off: off + int32(i)})
	}
	return keys
}

func concat(parts ...[]netlink.TcU32Key) []netlink.TcU32Key {
	return slices.Clip(slices.Concat(parts...))
}

// tapRules are the filters of a port's tap: what the guest may send.
func tapRules(p Port) []wireRule {
	if p.Unfiltered {
		var rs []wireRule
		for _, w := range wireProtos {
			rs = append(rs, wireRule{prio: w.prio, proto: w.proto, keys: matchAll})
		}
		return rs
	}
	const ethSrc, arpSHA, arpSPA, ip4Src, ip6Src = -8, 8, 14, 12, 8
	own := macKeys(p.MAC, ethSrc)
	any4 := netip.PrefixFrom(netip.IPv4Unspecified(), 32)
	rs := []wireRule{
		guardRule,
		// DHCP from 0.0.0.0: IPv4 without options, UDP, 68 → 67. A
		// request from 0.0.0.0 with IP options is refused: u32 offsets
		// that follow the header length need hash-table links; DHCP
		// clients send none.
		{prio: prioIPv4, proto: unix.ETH_P_IP, keys: concat(own, prefixKeys(any4, ip4Src),
			[]netlink.TcU32Key{{Val: 0x45000000, Mask: 0xff000000}, {Val: 0x00110000, Mask: 0x00ff0000, Off: 8},
				{Val: 68<<16 | 67, Mask: 0xffffffff, Off: 20}})},
		// ARP probes (sender 0.0.0.0).
		{prio: prioARP, proto: unix.ETH_P_ARP, keys: concat(own, macKeys(p.MAC, arpSHA), prefixKeys(any4, arpSPA))},
		{prio: prioIPv6, proto: unix.ETH_P_IPV6, keys: concat(own, prefixKeys(netip.PrefixFrom(netip.IPv6Unspecified(), 128), ip6Src))},
	}
	// Link-local sources: the EUI-64 address of each MAC the port may use.
	lls := []net.HardwareAddr{p.MAC}
	for _, s := range p.Sources {
		if len(s.MAC) == 6 && !slices.ContainsFunc(lls, func(m net.HardwareAddr) bool { return bytes.Equal(m, s.MAC) }) {
			lls = append(lls, s.MAC)
		}
	}
	for _, mac := range lls {
		rs = append(rs, wireRule{prio: prioIPv6, proto: unix.ETH_P_IPV6,
			keys: concat(macKeys(mac, ethSrc), prefixKeys(netip.PrefixFrom(linkLocal(mac), 128), ip6Src))})
	}
	for _, s := range p.Sources {
		mac := s.MAC
		if len(mac) != 6 {
			mac = p.MAC
		}
		src := macKeys(mac, ethSrc)
		if s.Prefix.Addr().Is4() {
			rs = append(rs,
				wireRule{prio: prioIPv4, proto: unix.ETH_P_IP, keys: concat(src, prefixKeys(s.Prefix.Masked(), ip4Src))},
				wireRule{prio: prioARP, proto: unix.ETH_P_ARP, keys: concat(src, macKeys(mac, arpSHA), prefixKeys(s.Prefix.Masked(), arpSPA))})
		} else {
			rs = append(rs, wireRule{prio: prioIPv6, proto: unix.ETH_P_IPV6, keys: concat(src, prefixKeys(s.Prefix.Masked(), ip6Src))})
		}
	}
	return rs
}

// linkLocal is the EUI-64 link-local address of mac (fe80::/64 with the
// MAC's universal/local bit flipped and ff:fe in the middle).
func linkLocal(mac net.HardwareAddr) netip.Addr {
	a := [16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 0x02, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]}
	return netip.AddrFrom16(a)
}

// macvlanRules are the filters of a port's macvlan: every untagged IPv4,
// ARP and IPv6 frame the physical network sends to the guest.
func macvlanRules() []wireRule {
	var rs []wireRule
	for _, w := range wireProtos {
		rs = append(rs, wireRule{prio: w.prio, proto: w.proto, keys: matchAll})
	}
	return rs
}

// wireSig is how a wire reads back: its rules and peer, then the drop.
func wireSig(rules []wireRule, peer string) string {
	s := make([]string, 0, len(rules)+1)
	for _, r := range rules {
		if r.guard {
			s = append(s, r.String())
			continue
		}
		s = append(s, r.String()+" > "+peer)
	}
	slices.Sort(s)
	return strings.Join(append(s, "drop"), "; ")
}

// filterSig is the part of a wire signature one filter read from the
// kernel stands for ("" for anything else, such as u32 hash tables).
func filterSig(f netlink.Filter, names map[int]string) string {
	switch f := f.(type) {
	case *netlink.BpfFilter:
		if f.Priority == prioDrop && f.DirectAction && f.Name == dropProgName {
			return "drop"
		}
		if f.Priority == prioGuard && f.DirectAction && f.Name == guardProgName {
			return guardRule.String()
		}
	case *netlink.U32:
		if f.Sel == nil || len(f.Actions) != 1 {
			return ""
		}
		mi, ok := f.Actions[0].(*netlink.MirredAction)
		if !ok || mi.MirredAction != netlink.TCA_EGRESS_REDIR {
			return ""
		}
		return wireRule{prio: f.Priority, proto: f.Protocol, keys: f.Sel.Keys}.String() + " > " + names[mi.Ifindex]
	}
	return ""
}

// readSig joins the signatures of a link's filters in wireSig's order.
func readSig(fs []netlink.Filter, names map[int]string) string {
	var s []string
	drop := false
	for _, f := range fs {
		switch sig := filterSig(f, names); sig {
		case "":
		case "drop":
			drop = true
		default:
			s = append(s, sig)
		}
	}
	if len(s) == 0 && !drop {
		return ""
	}
	slices.Sort(s)
	if drop {
		s = append(s, "drop")
	}
	return strings.Join(s, "; ")
}

// wire replaces the filters on the ingress of idx with rules redirecting
// to peer, above a drop of everything else.
func (n *nlh) wire(ctx context.Context, link string, idx, peer int, rules []wireRule, write func(string, func() error) error) error {
	fd, err := loadProg("peerstack_drop", dropProg())
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	drop := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
		Priority: prioDrop, Handle: 1, Protocol: unix.ETH_P_ALL}, Fd: fd, Name: dropProgName, DirectAction: true}
	if err := write("drop the rest on", func() error { return n.h.FilterReplace(drop) }); err != nil {
		return err
	}
	// Every priority above the drop, of either kind (an older release had
	// u32 filters where the guard is now).
	for _, prio := range []uint16{prioGuard, prioIPv4, prioARP, prioIPv6} {
		at := netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Priority: prio}
		for _, all := range []netlink.Filter{&netlink.U32{FilterAttrs: at}, &netlink.BpfFilter{FilterAttrs: at}} {
			if err := write("clear wire of", func() error { return n.h.FilterDel(all) }); err != nil &&
				!errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				return err
			}
		}
	}
	for _, r := range rules {
		if r.guard {
			if err := n.guard(idx, write); err != nil {
				return fmt.Errorf("%s: %w", link, err)
			}
			continue
		}
		f := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
			Priority: r.prio, Protocol: r.proto},
			Sel:     &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: slices.Clip(slices.Clone(r.keys))},
			Actions: []netlink.Action{netlink.NewMirredAction(peer)}}
		if err := write("redirect from", func() error { return n.h.FilterAdd(f) }); err != nil {
			return fmt.Errorf("%s: %v: %w", link, r, err)
		}
	}
	return nil
}

// guard puts the guard classifier on the ingress of idx.
func (n *nlh) guard(idx int, write func(string, func() error) error) error {
	fd, err := loadProg("peerstack_guard", guardProg())
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
		Priority: prioGuard, Handle: 1, Protocol: unix.ETH_P_ALL}, Fd: fd, Name: guardProgName, DirectAction: true}
	return write("guard", func() error { return n.h.FilterReplace(f) })
}

// quiet keeps the host's own stack off a device that only carries guests'
// frames: no IPv6, no ARP answers for the host's addresses, IPv4 input
// dropped by the reverse-path check (the device has no routes).
func (n *nlh) quiet(dev string) error {
	return n.inNS(func() error {
		for _, s := range [][2]string{
			{"ipv6/conf/" + dev + "/disable_ipv6", "1"},
			{"ipv4/conf/" + dev + "/arp_ignore", "8"},
			{"ipv4/conf/" + dev + "/rp_filter", "1"},
		} {
			if err := os.WriteFile("/proc/sys/net/"+s[0], []byte(s[1]), 0); err != nil {
				return fmt.Errorf("sysctl %s: %w", s[0], err)
			}
		}
		return nil
	})
}
