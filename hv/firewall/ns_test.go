package firewall

// Helpers for tests that run as root: a "host" network namespace with a
// bridge, and one namespace per VM joined to it by a veth pair (the host
// end stands in for the VM's tap). Names carry the test's PID
// ("psfw-<pid>-<n>-<what>"); every namespace is deleted in t.Cleanup and
// all traffic stays inside them.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root")
	}
}

var nsSeq atomic.Int32

type testNS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func newNS(tb testing.TB, what string) *testNS {
	tb.Helper()
	name := fmt.Sprintf("psfw-%d-%d-%s", os.Getpid(), nsSeq.Add(1), what)
	errc := make(chan error, 1)
	var h netns.NsHandle
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the new namespace and exits
		var err error
		h, err = netns.NewNamed(name)
		errc <- err
	}()
	if err := <-errc; err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	tb.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		tb.Fatalf("netlink in %s: %v", name, err)
	}
	tb.Cleanup(nh.Close)
	ns := &testNS{name: name, h: h, nl: nh}
	ns.up(tb, "lo")
	return ns
}

func (ns *testNS) up(tb testing.TB, name string) {
	tb.Helper()
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: %s: %v", ns.name, name, err)
	}
	if err := ns.nl.LinkSetUp(l); err != nil {
		tb.Fatalf("%s: up %s: %v", ns.name, name, err)
	}
}

// do runs fn on a thread inside ns; sockets fn opens stay in ns.
func (ns *testNS) do(tb testing.TB, fn func() error) error {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.h); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// host is a bridge in its own namespace with a firewall Manager.
type host struct {
	ns     *testNS
	bridge string
	m      *Manager
	vms    []*vm
}

func newHost(tb testing.TB) *host {
	tb.Helper()
	needRoot(tb)
	h := &host{ns: newNS(tb, "host"), bridge: "br0"}
	if err := h.ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: h.bridge}}); err != nil {
		tb.Fatalf("bridge: %v", err)
	}
	h.ns.up(tb, h.bridge)
	m, err := New(Config{NetNS: int(h.ns.h)})
	if err != nil {
		tb.Fatalf("firewall.New: %v", err)
	}
	h.m = m
	tb.Cleanup(func() {
		if _, err := m.Cleanup(context.Background()); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return h
}

// vm is a namespace with eth0 on the host's bridge via veth "v<n>".
type vm struct {
	bridge string
	ns     *testNS
	tap    string // host end
	mac    net.HardwareAddr
	ip     netip.Addr
}

func (h *host) addVM(tb testing.TB, n int) *vm {
	tb.Helper()
	return h.addVMOn(tb, n, h.bridge, netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}))
}

// addBridge adds another network's bridge to the host.
func (h *host) addBridge(tb testing.TB, name string) {
	tb.Helper()
	if err := h.ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		tb.Fatalf("bridge: %v", err)
	}
	h.ns.up(tb, name)
}

// addVMOn adds VM n with address ip on bridge.
func (h *host) addVMOn(tb testing.TB, n int, bridge string, ip netip.Addr) *vm {
	tb.Helper()
	v := &vm{ns: newNS(tb, fmt.Sprintf("vm%d", n)), tap: fmt.Sprintf("v%d", n), bridge: bridge,
		mac: net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 0, byte(n)}, ip: ip}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.tap}, PeerName: "eth0", PeerNamespace: netlink.NsFd(v.ns.h), PeerHardwareAddr: v.mac}
	if err := h.ns.nl.LinkAdd(veth); err != nil {
		tb.Fatalf("veth %s: %v", v.tap, err)
	}
	br, _ := h.ns.nl.LinkByName(bridge)
	l, _ := h.ns.nl.LinkByName(v.tap)
	if err := h.ns.nl.LinkSetMaster(l, br); err != nil {
		tb.Fatalf("enslave %s: %v", v.tap, err)
	}
	h.ns.up(tb, v.tap)
	eth, err := v.ns.nl.LinkByName("eth0")
	if err != nil {
		tb.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(v.ip.String() + "/24")
	if err := v.ns.nl.AddrAdd(eth, addr); err != nil {
		tb.Fatal(err)
	}
	v.ns.up(tb, "eth0")
	h.vms = append(h.vms, v)
	return v
}

// port is the firewall port of a vm with rules.
func (h *host) port(v *vm, stateful bool, rules ...Rule) Port {
	zone := uint16(7)
	if v.bridge != h.bridge {
		zone = 8
	}
	return Port{ID: "p-" + v.tap, Tap: v.tap, Bridge: v.bridge, Zone: zone, MAC: v.mac, IPs: []netip.Addr{v.ip}, Stateful: stateful, Rules: rules}
}

func (h *host) apply(tb testing.TB, groups map[string][]netip.Addr, ports ...Port) Stats {
	tb.Helper()
	st, err := h.m.Apply(context.Background(), Desired{Networks: []Network{{Bridge: h.bridge, Zone: 7}, {Bridge: "br1", Zone: 8}}, Ports: ports, Groups: groups})
	if err != nil {
		tb.Fatalf("apply: %v", err)
	}
	return st
}

// blocked is how long a probe waits before calling traffic dropped.
const blocked = 700 * time.Millisecond

// tcpListen serves accepted connections (echoing) in ns on port.
func tcpListen(tb testing.TB, v *vm, port int) {
	tb.Helper()
	var ln net.Listener
	if err := v.ns.do(tb, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(v.ip, uint16(port)).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// tcpConnect opens a connection that must work, retrying until a deadline
// while the new links settle.
func tcpConnect(tb testing.TB, v *vm, dst netip.Addr, port int) net.Conn {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := tcpDial(tb, v, dst, port)
		if err == nil && echo(c) {
			return c
		}
		if c != nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("connect %s -> %s:%d: %v", v.ip, dst, port, err)
		}
	}
}

// tcpDial opens a connection from v to dst:port (from source port sport
// if given).
func tcpDial(tb testing.TB, v *vm, dst netip.Addr, port int, sport ...int) (net.Conn, error) {
	tb.Helper()
	var c net.Conn
	err := v.ns.do(tb, func() (err error) {
		d := net.Dialer{Timeout: blocked}
		if len(sport) > 0 {
			d.LocalAddr = &net.TCPAddr{IP: v.ip.AsSlice(), Port: sport[0]}
		}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	})
	return c, err
}

// tcpOK reports whether a connection from v to dst:port echoes.
func tcpOK(tb testing.TB, v *vm, dst netip.Addr, port int) bool {
	tb.Helper()
	c, err := tcpDial(tb, v, dst, port)
	if err != nil {
		return false
	}
	defer c.Close()
	return echo(c)
}

func echo(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(blocked))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	n, err := c.Read(buf)
	return err == nil && n == 4
}

// udpOK reports whether a datagram from v reaches dst:port (where a
// socket in dv listens).
func udpOK(tb testing.TB, v, dv *vm, port int) bool {
	tb.Helper()
	var ln net.PacketConn
	if err := dv.ns.do(tb, func() (err error) {
		ln, err = net.ListenPacket("udp4", netip.AddrPortFrom(dv.ip, uint16(port)).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	if err := v.ns.do(tb, func() (err error) {
		c, err = net.Dial("udp4", netip.AddrPortFrom(dv.ip, uint16(port)).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	_ = ln.SetReadDeadline(time.Now().Add(blocked))
	buf := make([]byte, 16)
	for i := 0; i < 3; i++ { // the first may wait for ARP
		_, _ = c.Write([]byte("hello"))
		if n, _, err := ln.ReadFrom(buf); err == nil && string(buf[:n]) == "hello" {
			return true
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
	}
	return false
}

// rawSocket is an AF_PACKET socket on eth0 of v.
func rawSocket(tb testing.TB, v *vm) int {
	tb.Helper()
	var fd int
	if err := v.ns.do(tb, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// frameArrives sends frame from src's eth0 and reports whether a frame
// containing marker shows up on dst's eth0.
func frameArrives(tb testing.TB, src, dst *vm, frame, marker []byte) bool {
	tb.Helper()
	sfd, rfd := rawSocket(tb, src), rawSocket(tb, dst)
	if _, err := unix.Write(sfd, frame); err != nil {
		tb.Fatalf("send frame: %v", err)
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(blocked)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(rfd, buf, 0)
		if err == nil && bytes.Contains(buf[:n], marker) {
			return true
		}
	}
	return false
}

// udpFrame is an Ethernet/IPv4/UDP frame with a payload.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport int, payload []byte) []byte {
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], uint16(sport))
	binary.BigEndian.PutUint16(udp[2:], uint16(dport))
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	f := append(append([]byte{}, dstMAC...), srcMAC...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IP)
	return append(append(append(f, ip...), udp...), payload...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// arpFrame is a broadcast ARP reply claiming ip is at mac, sent from
// ethSrc, with marker in the padding.
func arpFrame(ethSrc, mac net.HardwareAddr, ip netip.Addr, marker []byte) []byte {
	f := append(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ethSrc...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = append(f, 0, 1, 8, 0, 6, 4, 0, 2)
	f = append(f, mac...)
	a := ip.As4()
	f = append(f, a[:]...)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 0, 0, 255)
	return append(f, marker...)
}

// flows dumps the host's conntrack table.
func (h *host) flows(tb testing.TB) []conntrack.Flow {
	tb.Helper()
	c, err := conntrack.Dial(&mdnetlink.Config{NetNS: int(h.ns.h)})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	fs, err := c.Dump(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return fs
}
