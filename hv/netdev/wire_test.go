package netdev

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// frame builds an Ethernet frame; tags are 802.1Q/802.1ad tag protocol
// and VLAN id pairs put before the ethertype.
func frame(dst, src net.HardwareAddr, tags [][2]uint16, ethertype uint16, payload []byte) []byte {
	b := append(append([]byte{}, dst...), src...)
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t[0])
		b = binary.BigEndian.AppendUint16(b, t[1])
	}
	b = binary.BigEndian.AppendUint16(b, ethertype)
	return append(b, payload...)
}

// ipv4 is an IPv4 header (protocol 253, for experiments) and marker.
func ipv4(src, dst string, marker string) []byte {
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, 253
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(marker)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, marker...)
}

// udp4 is an IPv4 UDP datagram with opts (a multiple of 4 bytes) of IP
// options, and marker as its payload.
func udp4(src, dst string, sport, dport uint16, opts int, marker string) []byte {
	h := make([]byte, 20+opts+8)
	h[0], h[8], h[9] = byte(0x40|(5+opts/4)), 64, 17
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(marker)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	for i := 20; i < 20+opts; i++ {
		h[i] = 1 // no-op option
	}
	binary.BigEndian.PutUint16(h[20+opts:], sport)
	binary.BigEndian.PutUint16(h[22+opts:], dport)
	binary.BigEndian.PutUint16(h[24+opts:], uint16(8+len(marker)))
	return append(h, marker...)
}

// ipv6 is an IPv6 header with next header nh and payload.
func ipv6(src, dst string, nh byte, payload []byte) []byte {
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, nh, 255
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// arp is an ARP request from sha/spa for tpa, with marker after it.
func arp(sha net.HardwareAddr, spa, tpa, marker string) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	b = append(b, sha...)
	s, t := netip.MustParseAddr(spa).As4(), netip.MustParseAddr(tpa).As4()
	b = append(append(b, s[:]...), make([]byte, 6)...)
	return append(append(b, t[:]...), marker...)
}

// packetSocket opens a raw packet socket on ifname in ns.
func packetSocket(t *testing.T, ns *testNS, ifname string) (fd, idx int) {
	t.Helper()
	idx = ns.link(t, ifname).Attrs().Index
	err := (&nlh{ns: ns.h}).inNS(func() (err error) {
		all := unix.ETH_P_ALL<<8 | unix.ETH_P_ALL>>8
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, all); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(all), Ifindex: idx})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, idx
}

// markers reads what arrives on fd (packet socket or tap) for a while and
// returns the markers "probe-…" seen.
func markers(read func([]byte) (int, error), until time.Duration) map[string]bool {
	seen := map[string]bool{}
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(until); time.Now().Before(deadline); {
		n, err := read(buf)
		if err != nil || n <= 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if i := bytes.Index(buf[:n], []byte("probe-")); i >= 0 {
			seen[strings.Fields(string(buf[i:n]))[0]] = true
		}
	}
	return seen
}

// TestProviderWireRefuses: a guest on a flat network is an access port
// with its own addresses only: tagged frames go neither way, frames with
// another source MAC or IP (the gateway's) or ARP claiming another
// address never reach the LAN, an Unfiltered port (port security
// disabled) may send them; IPv6 multicast for the guest (solicited-node)
// reaches it; the macvlan keeps the host's stack quiet.
func TestProviderWireRefuses(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	f := newLAN(t)
	p, open := provPort(5, "198.51.100.70", false), provPort(6, "198.51.100.71", false)
	pair := net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 2, 2}
	p.Sources = append(p.Sources, Source{MAC: pair, Prefix: netip.MustParsePrefix("198.51.100.80/30")},
		Source{MAC: pair, Prefix: netip.MustParsePrefix("2001:db8::80/128")})
	open.Unfiltered, open.Sources = true, nil
	m := newManager(t, f.host)
	if _, err := m.Apply(ctx, Desired{Providers: []Provider{{ID: "flat", Uplink: "lan0", Ports: []Port{p, open}}}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	guest := openTap(t, f.host, p.Tap) // what the guest sends and gets
	guestOpen := openTap(t, f.host, open.Tap)
	lanFD, lanIdx := packetSocket(t, f.lan, "lan0")
	lanMAC := f.lan.link(t, "lan0").Attrs().HardwareAddr
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodes := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	ll, pairLL := linkLocal(p.MAC).String(), linkLocal(pair).String()

	send := []struct {
		tap   *os.File
		frame []byte
	}{
		{guest, frame(lanMAC, p.MAC, nil, unix.ETH_P_IP, ipv4("198.51.100.70", "198.51.100.1", "probe-ok"))},
		{guest, frame(lanMAC, pair, nil, unix.ETH_P_IP, ipv4("198.51.100.82", "198.51.100.1", "probe-pair"))},
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_ARP, arp(p.MAC, "198.51.100.70", "198.51.100.1", "probe-arp"))},
		{guest, frame(lanMAC, p.MAC, [][2]uint16{{unix.ETH_P_8021Q, 200}}, unix.ETH_P_IP, ipv4("198.51.100.70", "198.51.100.1", "probe-tagged"))},
		{guest, frame(lanMAC, p.MAC, [][2]uint16{{unix.ETH_P_8021AD, 300}, {unix.ETH_P_8021Q, 200}}, unix.ETH_P_IP, ipv4("198.51.100.70", "198.51.100.1", "probe-qinq"))},
		{guest, frame(lanMAC, p.MAC, nil, unix.ETH_P_IP, ipv4("198.51.100.1", "198.51.100.2", "probe-spoofip"))},
		{guest, frame(lanMAC, net.HardwareAddr{0xfa, 0x16, 0x3e, 9, 9, 9}, nil, unix.ETH_P_IP, ipv4("198.51.100.70", "198.51.100.1", "probe-spoofmac"))},
		{guest, frame(lanMAC, pair, nil, unix.ETH_P_IP, ipv4("198.51.100.70", "198.51.100.1", "probe-pairmac-ownip"))},
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_ARP, arp(p.MAC, "198.51.100.1", "198.51.100.2", "probe-spoofarp"))},
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_ARP, arp(pair, "198.51.100.70", "198.51.100.2", "probe-spoofsha"))},
		{guest, frame(lanMAC, p.MAC, nil, 0x88b5, []byte("probe-ethertype"))},
		{guestOpen, frame(lanMAC, open.MAC, nil, unix.ETH_P_IP, ipv4("198.51.100.1", "198.51.100.2", "probe-open-spoof"))},
		{guestOpen, frame(lanMAC, open.MAC, [][2]uint16{{unix.ETH_P_8021Q, 200}}, unix.ETH_P_IP, ipv4("198.51.100.71", "198.51.100.1", "probe-open-tagged"))},
		// Servers and routers a guest must not play, even from its own
		// addresses; link-local sources of its own MACs only.
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_IP, udp4("198.51.100.70", "255.255.255.255", 67, 68, 0, "probe-dhcpd"))},
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_IP, udp4("198.51.100.70", "255.255.255.255", 67, 68, 4, "probe-dhcpd-opts"))},
		{guest, frame(lanMAC, p.MAC, nil, unix.ETH_P_IP, udp4("198.51.100.70", "198.51.100.1", 68, 67, 0, "probe-renew"))},
		{guest, frame(lanMAC, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "fe80::1", 59, []byte("probe-ll")))},
		{guest, frame(lanMAC, pair, nil, unix.ETH_P_IPV6, ipv6(pairLL, "fe80::1", 59, []byte("probe-pair-ll")))},
		{guest, frame(lanMAC, p.MAC, nil, unix.ETH_P_IPV6, ipv6("fe80::1", "fe80::2", 59, []byte("probe-spoofll")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 58, []byte("\x86\x00\x00\x00probe-ra")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 58, []byte("\x89\x00\x00\x00probe-redirect")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 0, []byte("\x3a\x00\x05\x02\x00\x00\x01\x00\x86\x00\x00\x00probe-hbh-ra")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 58, []byte("\x87\x00\x00\x00probe-ns")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1:2", 17, []byte("\x02\x23\x02\x22\x00\x10\x00\x00probe-dhcp6d")))},
		{guestOpen, frame(allNodes, open.MAC, nil, unix.ETH_P_IPV6, ipv6("fe80::1", "ff02::1", 58, []byte("\x86\x00\x00\x00probe-open-ra")))},
		// A DHCP client listens on its port whatever the source port.
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_IP, udp4("198.51.100.70", "255.255.255.255", 1234, 68, 0, "probe-dhcpd-sport"))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1:2", 17, []byte("\x04\xd2\x02\x22\x00\x10\x00\x00probe-dhcp6d-sport")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1:2", 17, []byte("\x02\x22\x02\x23\x00\x10\x00\x00probe-dhcp6c")))},
		// An IPv4 header shorter than 20 bytes would put the "ports" in it.
		{guest, frame(bcast, p.MAC, nil, unix.ETH_P_IP, append([]byte{0x40}, udp4("198.51.100.70", "255.255.255.255", 67, 68, 0, "probe-ihl0")[1:]...))},
		// A first fragment carries the ports and the ICMPv6 type; a later
		// one carries neither and passes.
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1:2", 44, []byte("\x11\x00\x00\x01\x00\x00\x00\x07\x02\x23\x02\x22\x00\x10\x00\x00probe-frag-dhcp6d")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 44, []byte("\x3a\x00\x00\x00\x00\x00\x00\x08\x86\x00\x00\x00probe-frag-ra")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 0, []byte("\x2c\x00\x01\x04\x00\x00\x00\x00\x3a\x00\x00\x00\x00\x00\x00\x09\x86\x00\x00\x00probe-hbh-frag-ra")))},
		{guest, frame(allNodes, p.MAC, nil, unix.ETH_P_IPV6, ipv6(ll, "ff02::1", 44, []byte("\x3a\x00\x00\x10\x00\x00\x00\x0a\x86\x00\x00\x00probe-frag-later")))},
	}
	for _, s := range send {
		if _, err := s.tap.Write(s.frame); err != nil {
			t.Fatalf("guest write: %v", err)
		}
	}
	got := markers(func(b []byte) (int, error) { n, _, err := unix.Recvfrom(lanFD, b, 0); return n, err }, 2*time.Second)
	want := map[string]bool{"probe-ok": true, "probe-pair": true, "probe-arp": true, "probe-open-spoof": true,
		"probe-renew": true, "probe-ll": true, "probe-pair-ll": true, "probe-ns": true, "probe-open-ra": true,
		"probe-dhcp6c": true, "probe-frag-later": true}
	for _, k := range []string{"probe-ok", "probe-pair", "probe-arp", "probe-tagged", "probe-qinq", "probe-spoofip", "probe-spoofmac",
		"probe-pairmac-ownip", "probe-spoofarp", "probe-spoofsha", "probe-ethertype", "probe-open-spoof", "probe-open-tagged",
		"probe-dhcpd", "probe-dhcpd-opts", "probe-renew", "probe-ll", "probe-pair-ll", "probe-spoofll", "probe-ra", "probe-redirect",
		"probe-hbh-ra", "probe-ns", "probe-dhcp6d", "probe-open-ra", "probe-dhcpd-sport", "probe-dhcp6d-sport", "probe-dhcp6c",
		"probe-ihl0", "probe-frag-dhcp6d", "probe-frag-ra", "probe-hbh-frag-ra", "probe-frag-later"} {
		if got[k] != want[k] {
			t.Errorf("%s reached the LAN: %v; want %v", k, got[k], want[k])
		}
	}

	// From the LAN: a tagged frame for the guest's MAC never reaches it;
	// untagged and solicited-node multicast do.
	snm := net.HardwareAddr{0x33, 0x33, 0xff, p.MAC[3], p.MAC[4], p.MAC[5]}
	ip6 := make([]byte, 40)
	ip6[0], ip6[6], ip6[7] = 0x60, 59, 255
	for _, fr := range [][]byte{
		frame(p.MAC, lanMAC, nil, unix.ETH_P_IP, ipv4("198.51.100.1", "198.51.100.70", "probe-in")),
		frame(p.MAC, lanMAC, [][2]uint16{{unix.ETH_P_8021Q, 200}}, unix.ETH_P_IP, ipv4("198.51.100.1", "198.51.100.70", "probe-in-tagged")),
		frame(p.MAC, lanMAC, [][2]uint16{{unix.ETH_P_8021AD, 200}}, unix.ETH_P_IP, ipv4("198.51.100.1", "198.51.100.70", "probe-in-qinq")),
		frame(snm, lanMAC, nil, unix.ETH_P_IPV6, append(ip6, "probe-in-nd"...)),
	} {
		if err := unix.Sendto(lanFD, fr, 0, &unix.SockaddrLinklayer{Ifindex: lanIdx, Halen: 6}); err != nil {
			t.Fatalf("LAN send: %v", err)
		}
	}
	guest.SetReadDeadline(time.Now().Add(2 * time.Second))
	got = markers(guest.Read, 2*time.Second)
	for k, w := range map[string]bool{"probe-in": true, "probe-in-tagged": false, "probe-in-qinq": false, "probe-in-nd": true} {
		if got[k] != w {
			t.Errorf("%s reached the guest: %v; want %v", k, got[k], w)
		}
	}

	// The host's stack keeps off the macvlan.
	mv := MacvlanName(p.ID)
	for _, s := range [][2]string{{"ipv6/conf/" + mv + "/disable_ipv6", "1"}, {"ipv4/conf/" + mv + "/arp_ignore", "8"}, {"ipv4/conf/" + mv + "/rp_filter", "1"}} {
		var v []byte
		err := (&nlh{ns: f.host.h}).inNS(func() (err error) { v, err = os.ReadFile("/proc/sys/net/" + s[0]); return err })
		if err != nil || strings.TrimSpace(string(v)) != s[1] {
			t.Errorf("%s = %q, %v; want %s", s[0], v, err, s[1])
		}
	}
}

// TestProviderRewiresOlderWire: a port wired by an older release (one u32
// filter redirecting every frame, tagged ones included) is rewired by
// the next Apply, and the one after writes nothing.
func TestProviderRewiresOlderWire(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	f := newLAN(t)
	p := provPort(9, "198.51.100.95", false)
	d := Desired{Providers: []Provider{{ID: "flat", Uplink: "lan0", Ports: []Port{p}}}}
	m := newManager(t, f.host)
	if _, err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	mv := MacvlanName(p.ID)
	for _, w := range [][2]string{{p.Tap, mv}, {mv, p.Tap}} {
		l := f.host.link(t, w[0])
		prios := []uint16{prioIPv4, prioARP, prioIPv6, prioDrop}
		if w[0] == p.Tap {
			prios = append(prios, prioGuard)
		}
		for _, prio := range prios {
			at := netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS, Priority: prio}
			var all netlink.Filter = &netlink.U32{FilterAttrs: at}
			if prio == prioDrop || prio == prioGuard {
				all = &netlink.BpfFilter{FilterAttrs: at}
			}
			if err := f.host.nl.FilterDel(all); err != nil {
				t.Fatalf("clear priority %d of %s: %v", prio, w[0], err)
			}
		}
		old := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
			Priority: 1, Handle: 0x80000800, Protocol: unix.ETH_P_ALL},
			Sel:     &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Nkeys: 1, Keys: []netlink.TcU32Key{{}}},
			Actions: []netlink.Action{netlink.NewMirredAction(f.host.link(t, w[1]).Attrs().Index)}}
		if err := f.host.nl.FilterAdd(old); err != nil {
			t.Fatalf("older wire on %s: %v", w[0], err)
		}
	}
	if st, err := m.Apply(ctx, d); err != nil || st.Updated != 2 {
		t.Fatalf("Apply over an older wire = %+v, %v; want both sides rewired", st, err)
	}
	if st, err := m.Apply(ctx, d); err != nil || st.Ops != 0 {
		t.Errorf("next Apply = %+v, %v; want no write", st, err)
	}
	vm := newVM(t, f.host, p, 1500)
	staticAddr(t, vm, "198.51.100.95/24")
	if !ping(vm, net.ParseIP("198.51.100.1"), 5) {
		t.Errorf("the rewired VM does not reach the LAN")
	}
}
