package netdev

// Helpers for tests that run as root: every test works only inside network
// namespaces it creates ("psnt-<pid>-<n>-<what>") and deletes them in
// t.Cleanup. Nothing touches the root namespace's devices.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	path string
	h    netns.NsHandle
	nl   *netlink.Handle
}

// newNS creates a named network namespace with lo up.
func newNS(tb testing.TB, what string) *testNS {
	tb.Helper()
	name := fmt.Sprintf("psnt-%d-%d-%s", os.Getpid(), nsSeq.Add(1), what)
	errc := make(chan error, 1)
	var h netns.NsHandle
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends up in the new namespace and exits with us
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
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	tb.Cleanup(nh.Close)
	ns := &testNS{name: name, path: filepath.Join("/run/netns", name), h: h, nl: nh}
	ns.up(tb, "lo")
	return ns
}

func (ns *testNS) link(tb testing.TB, name string) netlink.Link {
	tb.Helper()
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: link %s: %v", ns.name, name, err)
	}
	return l
}

func (ns *testNS) up(tb testing.TB, name string) {
	tb.Helper()
	if err := ns.nl.LinkSetUp(ns.link(tb, name)); err != nil {
		tb.Fatalf("%s: set %s up: %v", ns.name, name, err)
	}
}

func (ns *testNS) hasLink(name string) bool {
	_, err := ns.nl.LinkByName(name)
	return err == nil
}

// ourLinks lists the names of links carrying the default prefix.
func (ns *testNS) ourLinks(tb testing.TB) []string {
	tb.Helper()
	links, err := ns.nl.LinkList()
	if err != nil {
		tb.Fatalf("%s: list links: %v", ns.name, err)
	}
	var names []string
	for _, l := range links {
		if ours(l.Attrs().Name, DefaultPrefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// fdb returns the static entries of a VXLAN device as "mac dst" strings.
func (ns *testNS) fdb(tb testing.TB, vx string) map[string]bool {
	tb.Helper()
	neighs, err := ns.nl.NeighList(ns.link(tb, vx).Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		tb.Fatalf("%s: fdb of %s: %v", ns.name, vx, err)
	}
	got := map[string]bool{}
	for _, n := range neighs {
		if n.IP != nil {
			got[n.HardwareAddr.String()+" "+n.IP.String()] = true
		}
	}
	return got
}

// connect links two namespaces with a veth pair "ul0" (MTU 1550, so the
// overlay carries 1500-byte frames) addressed addrA and addrB.
func connect(tb testing.TB, a, b *testNS, addrA, addrB string) {
	tb.Helper()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "ul0", 1550
	veth := netlink.NewVeth(la)
	veth.PeerName, veth.PeerMTU, veth.PeerNamespace = "ul0", 1550, netlink.NsFd(int(b.h))
	if err := a.nl.LinkAdd(veth); err != nil {
		tb.Fatalf("add veth: %v", err)
	}
	for _, x := range []struct {
		ns   *testNS
		addr string
	}{{a, addrA}, {b, addrB}} {
		addr, _ := netlink.ParseAddr(x.addr)
		if err := x.ns.nl.AddrAdd(x.ns.link(tb, "ul0"), addr); err != nil {
			tb.Fatalf("%s: add address: %v", x.ns.name, err)
		}
		x.ns.up(tb, "ul0")
	}
}

func newManager(tb testing.TB, ns *testNS) *Manager {
	tb.Helper()
	m, err := New(Config{NetNS: ns.path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// openTap attaches to the tap name in ns, creating it (non-persistent) if
// it does not exist, and returns its queue the way QEMU holds it.
func openTap(tb testing.TB, ns *testNS, name string) *os.File {
	tb.Helper()
	var f *os.File
	err := (&nlh{ns: ns.h}).inNS(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, _ := unix.NewIfreq(name)
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	if err != nil {
		tb.Fatalf("%s: attach tap %s: %v", ns.name, name, err)
	}
	return f
}

// newVM stands a VM in for port p: a namespace whose "eth0" is a tap with
// the port's MAC, and two goroutines that copy frames between that tap and
// the port's tap on the host, exactly as QEMU would between guest and tap.
func newVM(tb testing.TB, host *testNS, p Port, mtu int) *testNS {
	tb.Helper()
	vm := newNS(tb, "vm")
	guest := openTap(tb, vm, "eth0")
	eth0 := vm.link(tb, "eth0")
	if err := vm.nl.LinkSetHardwareAddr(eth0, p.MAC); err != nil {
		tb.Fatal(err)
	}
	if err := vm.nl.LinkSetMTU(eth0, mtu); err != nil {
		tb.Fatal(err)
	}
	vm.up(tb, "eth0")
	hostQ := openTap(tb, host, p.Tap)
	var wg sync.WaitGroup
	copyFrames := func(dst, src *os.File) {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			dst.Write(buf[:n])
		}
	}
	wg.Add(2)
	go copyFrames(hostQ, guest)
	go copyFrames(guest, hostQ)
	tb.Cleanup(func() {
		guest.Close()
		hostQ.Close()
		wg.Wait()
	})
	return vm
}

// run runs a command inside ns.
func run(ctx context.Context, ns *testNS, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// udhcpc runs busybox udhcpc on eth0 in vm; its script configures the
// address and records what the server sent.
func udhcpc(tb testing.TB, vm *testNS) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	script, env := filepath.Join(dir, "script"), filepath.Join(dir, "env")
	body := `#!/bin/sh
case "$1" in bound|renew)
  /bin/busybox ip addr add "$ip/$mask" dev "$interface"
  for v in ip mask router dns hostname mtu serverid lease; do eval "echo $v=\$$v"; done > ` + env + `
;; esac
exit 0
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := run(ctx, vm, "/bin/busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", "eth0", "-s", script, "-O", "mtu")
	if err != nil {
		tb.Fatalf("%s: udhcpc: %v\n%s", vm.name, err, out)
	}
	f, err := os.Open(env)
	if err != nil {
		tb.Fatalf("%s: udhcpc got no lease: %v\n%s", vm.name, err, out)
	}
	defer f.Close()
	got := map[string]string{}
	for s := bufio.NewScanner(f); s.Scan(); {
		k, v, _ := strings.Cut(s.Text(), "=")
		got[k] = v
	}
	return got
}

// ping reports whether ns reaches ip: one echo with a 2 s wait, tried up to
// tries times.
func ping(ns *testNS, ip net.IP, tries int) bool {
	for range tries {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := run(ctx, ns, "/bin/busybox", "ping", "-c", "1", "-W", "2", ip.String())
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// sniff opens a packet socket on ifname in ns; the returned function drains
// it and counts DHCP frames to the server (port 67) and from it.
func sniff(tb testing.TB, ns *testNS, ifname string) func() (toServer, fromServer int) {
	tb.Helper()
	idx := ns.link(tb, ifname).Attrs().Index
	var fd int
	err := (&nlh{ns: ns.h}).inNS(func() (err error) {
		all := unix.ETH_P_ALL<<8 | unix.ETH_P_ALL>>8
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, all); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(all), Ifindex: idx})
	})
	if err != nil {
		tb.Fatalf("%s: sniff %s: %v", ns.name, ifname, err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return func() (toServer, fromServer int) {
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return toServer, fromServer
			}
			b := buf[:n]
			if n < 42 || b[12] != 0x08 || b[13] != 0 || b[23] != unix.IPPROTO_UDP {
				continue
			}
			udp := b[14+int(b[14]&0xf)*4:]
			switch {
			case udp[0] == 0 && udp[1] == 67:
				fromServer++
			case udp[2] == 0 && udp[3] == 67:
				toServer++
			}
		}
	}
}
