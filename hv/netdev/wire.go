package netdev

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"unsafe"

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
// probes, and IPv6 from link-local addresses and from ::.
const (
	prioIPv4 = 1
	prioARP  = 2
	prioIPv6 = 3
	prioDrop = 9

	dropProgName = "peerstack-drop"
)

var wireProtos = []struct {
	prio  uint16
	proto uint16
}{{prioIPv4, unix.ETH_P_IP}, {prioARP, unix.ETH_P_ARP}, {prioIPv6, unix.ETH_P_IPV6}}

// wireRule is one u32 filter of a wire: frames of proto matching every key
// are redirected to the peer.
type wireRule struct {
	prio  uint16
	proto uint16
	keys  []netlink.TcU32Key
}

func (r wireRule) String() string {
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
			rs = append(rs, wireRule{w.prio, w.proto, matchAll})
		}
		return rs
	}
	const ethSrc, arpSHA, arpSPA, ip4Src, ip6Src = -8, 8, 14, 12, 8
	own := macKeys(p.MAC, ethSrc)
	any4 := netip.PrefixFrom(netip.IPv4Unspecified(), 32)
	rs := []wireRule{
		// DHCP from 0.0.0.0: IPv4 without options, UDP, 68 → 67.
		{prioIPv4, unix.ETH_P_IP, concat(own, prefixKeys(any4, ip4Src),
			[]netlink.TcU32Key{{Val: 0x45000000, Mask: 0xff000000}, {Val: 0x00110000, Mask: 0x00ff0000, Off: 8},
				{Val: 68<<16 | 67, Mask: 0xffffffff, Off: 20}})},
		// ARP probes (sender 0.0.0.0).
		{prioARP, unix.ETH_P_ARP, concat(own, macKeys(p.MAC, arpSHA), prefixKeys(any4, arpSPA))},
		{prioIPv6, unix.ETH_P_IPV6, concat(own, prefixKeys(netip.MustParsePrefix("fe80::/10"), ip6Src))},
		{prioIPv6, unix.ETH_P_IPV6, concat(own, prefixKeys(netip.PrefixFrom(netip.IPv6Unspecified(), 128), ip6Src))},
	}
	for _, s := range p.Sources {
		mac := s.MAC
		if len(mac) != 6 {
			mac = p.MAC
		}
		src := macKeys(mac, ethSrc)
		if s.Prefix.Addr().Is4() {
			rs = append(rs,
				wireRule{prioIPv4, unix.ETH_P_IP, concat(src, prefixKeys(s.Prefix.Masked(), ip4Src))},
				wireRule{prioARP, unix.ETH_P_ARP, concat(src, macKeys(mac, arpSHA), prefixKeys(s.Prefix.Masked(), arpSPA))})
		} else {
			rs = append(rs, wireRule{prioIPv6, unix.ETH_P_IPV6, concat(src, prefixKeys(s.Prefix.Masked(), ip6Src))})
		}
	}
	return rs
}

// macvlanRules are the filters of a port's macvlan: every untagged IPv4,
// ARP and IPv6 frame the physical network sends to the guest.
func macvlanRules() []wireRule {
	var rs []wireRule
	for _, w := range wireProtos {
		rs = append(rs, wireRule{w.prio, w.proto, matchAll})
	}
	return rs
}

// wireSig is how a wire reads back: its rules and peer, then the drop.
func wireSig(rules []wireRule, peer string) string {
	s := make([]string, 0, len(rules)+1)
	for _, r := range rules {
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
	case *netlink.U32:
		if f.Sel == nil || len(f.Actions) != 1 {
			return ""
		}
		mi, ok := f.Actions[0].(*netlink.MirredAction)
		if !ok || mi.MirredAction != netlink.TCA_EGRESS_REDIR {
			return ""
		}
		return wireRule{f.Priority, f.Protocol, f.Sel.Keys}.String() + " > " + names[mi.Ifindex]
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

// loadDrop loads a BPF classifier that drops every frame (direct action,
// TC_ACT_SHOT): this kernel may lack the gact action.
func loadDrop() (int, error) {
	insns := []uint64{
		0x00000000000000b7 | 2<<32, // r0 = 2 (TC_ACT_SHOT)
		0x0000000000000095,         // exit
	}
	license := []byte("GPL\x00")
	attr := struct {
		ProgType, InsnCnt  uint32
		Insns, License     uint64
		LogLevel, LogSize  uint32
		LogBuf             uint64
		KernVersion, Flags uint32
		Name               [16]byte
	}{ProgType: uint32(netlink.BPF_PROG_TYPE_SCHED_CLS), InsnCnt: uint32(len(insns)),
		Insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), License: uint64(uintptr(unsafe.Pointer(&license[0])))}
	copy(attr.Name[:], "peerstack_drop")
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, fmt.Errorf("load the drop classifier: %w", errno)
	}
	return int(fd), nil
}

// wire replaces the filters on the ingress of idx with rules redirecting
// to peer, above a drop of everything else.
func (n *nlh) wire(ctx context.Context, link string, idx, peer int, rules []wireRule, write func(string, func() error) error) error {
	fd, err := loadDrop()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	drop := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
		Priority: prioDrop, Handle: 1, Protocol: unix.ETH_P_ALL}, Fd: fd, Name: dropProgName, DirectAction: true}
	if err := write("drop the rest on", func() error { return n.h.FilterReplace(drop) }); err != nil {
		return err
	}
	for _, w := range wireProtos {
		all := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Priority: w.prio}}
		if err := write("clear wire of", func() error { return n.h.FilterDel(all) }); err != nil &&
			!errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return err
		}
	}
	for _, r := range rules {
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
