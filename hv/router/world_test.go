package router

// A small world for tests that run as root, built only inside network
// namespaces the test creates ("psrt<pid>-<n>-<what>", deleted in
// t.Cleanup): a LAN namespace with a bridge and a server at 203.0.113.1,
// host namespaces with "eth0" on the LAN (203.0.113.1x, also their VTEP)
// and per tenant network a bridge "psbr<vni>" with a VXLAN device
// "psvx<vni>" flooding to the other hosts, and VM namespaces with one
// "eth0" on a host bridge.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
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

type tns struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func newTNS(tb testing.TB, what string) *tns {
	tb.Helper()
	name := fmt.Sprintf("psrt%d-%d-%s", os.Getpid(), nsSeq.Add(1), what)
	errc := make(chan error, 1)
	var h netns.NsHandle
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace switch
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
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		tb.Fatalf("netlink in %s: %v", name, err)
	}
	tb.Cleanup(nl.Close)
	ns := &tns{name: name, h: h, nl: nl}
	ns.up(tb, "lo")
	return ns
}

func (ns *tns) link(tb testing.TB, name string) netlink.Link {
	tb.Helper()
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: link %s: %v", ns.name, name, err)
	}
	return l
}

func (ns *tns) up(tb testing.TB, name string) {
	tb.Helper()
	if err := ns.nl.LinkSetUp(ns.link(tb, name)); err != nil {
		tb.Fatalf("%s: up %s: %v", ns.name, name, err)
	}
}

func (ns *tns) addr(tb testing.TB, dev, cidr string) {
	tb.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		tb.Fatal(err)
	}
	if err := ns.nl.AddrAdd(ns.link(tb, dev), a); err != nil {
		tb.Fatalf("%s: addr %s on %s: %v", ns.name, cidr, dev, err)
	}
}

func (ns *tns) bridge(tb testing.TB, name string, mtu int) {
	tb.Helper()
	if err := ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}); err != nil {
		tb.Fatalf("%s: bridge %s: %v", ns.name, name, err)
	}
	ns.up(tb, name)
}

// wire connects dev in a to peer in b (enslaved to bridge in b if set).
func wire(tb testing.TB, a *tns, dev string, mac string, mtu int, b *tns, peer, bridge string) {
	tb.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev, MTU: mtu}, PeerName: peer, PeerNamespace: netlink.NsFd(int(b.h))}
	if mac != "" {
		hw, _ := net.ParseMAC(mac)
		v.HardwareAddr = hw
	}
	if err := a.nl.LinkAdd(v); err != nil {
		tb.Fatalf("veth %s/%s: %v", dev, peer, err)
	}
	if mtu > 0 {
		if err := b.nl.LinkSetMTU(b.link(tb, peer), mtu); err != nil {
			tb.Fatal(err)
		}
	}
	a.up(tb, dev)
	if bridge != "" {
		if err := b.nl.LinkSetMaster(b.link(tb, peer), b.link(tb, bridge)); err != nil {
			tb.Fatal(err)
		}
	}
	b.up(tb, peer)
}

func (ns *tns) run(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// pings reports whether dst answers a ping within the deadline.
func (ns *tns) pings(tb testing.TB, dst string, within time.Duration) bool {
	tb.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, err := ns.run(tb, "ping", "-c1", "-W1", dst); err == nil {
			return true
		}
	}
	return false
}

// listen opens a TCP listener inside ns and returns it.
func (ns *tns) listen(tb testing.TB, addr string) net.Listener {
	tb.Helper()
	var l net.Listener
	err := inNS(ns.h, func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		tb.Fatalf("%s: listen %s: %v", ns.name, addr, err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// dial connects from inside ns and returns the connection.
func (ns *tns) dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns.h, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// peerOf connects from ns to addr (retrying until the deadline: a loaded
// machine may lose the first handshakes) and returns the source address
// the listener l saw.
func (ns *tns) peerOf(tb testing.TB, l net.Listener, addr string) (string, error) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		c, err := ns.dial(addr, 2*time.Second)
		if err != nil {
			last = err
			continue
		}
		l.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
		s, err := l.Accept()
		c.Close()
		if err != nil {
			last = err
			continue
		}
		h, _, _ := net.SplitHostPort(s.RemoteAddr().String())
		s.Close()
		return h, nil
	}
	return "", last
}

// world is a LAN and hosts.
type world struct {
	lan   *tns
	hosts []*host
}

type host struct {
	ns  *tns
	ip  string // on the LAN, also the VTEP
	mac net.HardwareAddr
	mgr *Manager
}

func newWorld(t testing.TB, nHosts int, vnis ...int) *world {
	t.Helper()
	w := &world{lan: newTNS(t, "lan")}
	w.lan.bridge(t, "lanbr", 0)
	w.lan.addr(t, "lanbr", "203.0.113.1/24")
	for i := range nHosts {
		h := &host{ns: newTNS(t, fmt.Sprintf("h%d", i)), ip: fmt.Sprintf("203.0.113.%d", 11+i)}
		h.mac, _ = net.ParseMAC(fmt.Sprintf("02:00:00:00:01:%02x", i))
		wire(t, h.ns, "eth0", fmt.Sprintf("02:00:00:00:00:%02x", i), 0, w.lan, fmt.Sprintf("lan%d", i), "lanbr")
		h.ns.addr(t, "eth0", h.ip+"/24")
		gw := &netlink.Route{LinkIndex: h.ns.link(t, "eth0").Attrs().Index, Gw: net.ParseIP("203.0.113.1")}
		if err := h.ns.nl.RouteAdd(gw); err != nil {
			t.Fatal(err)
		}
		mgr, err := New(Config{HostNS: "/run/netns/" + h.ns.name, NSPrefix: fmt.Sprintf("psrt%d-%d-r", os.Getpid(), nsSeq.Add(1)),
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		h.mgr = mgr
		t.Cleanup(func() {
			if err := mgr.Cleanup(context.Background()); err != nil {
				t.Errorf("cleanup %s: %v", h.ns.name, err)
			}
		})
		w.hosts = append(w.hosts, h)
	}
	for _, vni := range vnis {
		for i, h := range w.hosts {
			br, vx := fmt.Sprintf("psbr%d", vni), fmt.Sprintf("psvx%d", vni)
			h.ns.bridge(t, br, 1450)
			vxl := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: vx, MTU: 1450, MasterIndex: h.ns.link(t, br).Attrs().Index},
				VxlanId: vni, SrcAddr: net.ParseIP(h.ip), Port: 4789, Learning: true}
			if err := h.ns.nl.LinkAdd(vxl); err != nil {
				t.Fatalf("vxlan %s: %v", vx, err)
			}
			h.ns.up(t, vx)
			for j, o := range w.hosts {
				if j == i {
					continue
				}
				if err := h.ns.nl.NeighAppend(&netlink.Neigh{LinkIndex: h.ns.link(t, vx).Attrs().Index, Family: unix.AF_BRIDGE,
					Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: net.ParseIP(o.ip), HardwareAddr: make(net.HardwareAddr, 6)}); err != nil {
					t.Fatalf("flood entry: %v", err)
				}
			}
		}
	}
	return w
}

// vm is a namespace with eth0 (mac) on bridge br of host h, address cidr
// and a default route via gw.
func (w *world) vm(t testing.TB, h *host, br, mac, cidr, gw string) *tns {
	t.Helper()
	v := newTNS(t, "vm")
	wire(t, v, "eth0", mac, 1450, h.ns, "psv"+fmt.Sprint(nsSeq.Add(1)), br)
	v.addr(t, "eth0", cidr)
	if err := v.nl.RouteAdd(&netlink.Route{LinkIndex: v.link(t, "eth0").Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// apply applies d on h and fails the test on error.
func (h *host) apply(t testing.TB, d Desired) Stats {
	t.Helper()
	if d.HostMAC == nil {
		d.HostMAC = h.mac
	}
	st, err := h.mgr.Apply(context.Background(), d)
	if err != nil {
		t.Fatalf("apply on %s: %v", h.ns.name, err)
	}
	return st
}

// arpReplies asks on the LAN who has addr and returns the MACs that
// answered before the deadline.
func (w *world) arpReplies(t testing.TB, addr netip.Addr, wait time.Duration) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	err := inNS(w.lan.h, func() error {
		ifi, err := net.InterfaceByName("lanbr")
		if err != nil {
			return err
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Request(addr); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		for {
			p, _, err := c.Read()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return nil
				}
				return err
			}
			if p.Operation == arp.OperationReply && p.SenderIP == addr {
				got[p.SenderHardwareAddr.String()] = true
			}
		}
	})
	if err != nil {
		t.Fatalf("arp on the LAN: %v", err)
	}
	return got
}

// garpWatcher reads ARP on the LAN; wait returns once a gratuitous ARP for
// addr from mac was seen.
type garpWatcher struct {
	c *arp.Client
}

func (w *world) watchARP(t testing.TB) *garpWatcher {
	t.Helper()
	var c *arp.Client
	err := inNS(w.lan.h, func() error {
		ifi, err := net.InterfaceByName("lanbr")
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatalf("arp watcher: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &garpWatcher{c: c}
}

func (g *garpWatcher) wait(t testing.TB, addr netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	g.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		p, _, err := g.c.Read()
		if err != nil {
			t.Fatalf("no gratuitous ARP for %s from %s: %v", addr, mac, err)
		}
		if p.SenderIP == addr && p.TargetIP == addr && p.SenderHardwareAddr.String() == mac.String() {
			return
		}
	}
}

// linksWithPrefix lists the links of ns whose names start with p.
func (ns *tns) linksWithPrefix(t testing.TB, p string) []string {
	t.Helper()
	links, err := ns.nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, p) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}
