package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const netnsDir = "/run/netns"

// writer counts writes.
type writer struct{ st *Stats }

func (w *writer) add(what string, args ...any) {
	w.st.Writes++
	if len(w.st.Changes) < 32 {
		w.st.Changes = append(w.st.Changes, fmt.Sprintf(what, args...))
	}
}

// nft counts n nftables transactions.
func (w *writer) nft(n int, what string, args ...any) {
	for range n {
		w.st.NFTTx++
		w.add(what, args...)
	}
}

// inNS runs fn on a thread switched into ns. If the thread cannot be
// switched back it stays locked, so the runtime discards it.
func inNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// sysctl sets a /proc/sys value of the calling thread's namespace,
// writing only when it differs.
func sysctl(w *writer, key, val string) error {
	p := filepath.Join("/proc/sys", key)
	cur, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(cur)) == val {
		return nil
	}
	w.add("sysctl %s", key)
	if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	return nil
}

// noIPv6 turns IPv6 off in the calling thread's namespace, for the
// interfaces there and those still to come (a kernel without IPv6 has
// nothing to turn off).
func noIPv6(w *writer) error {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return nil
	}
	for _, k := range []string{"net/ipv6/conf/default/disable_ipv6", "net/ipv6/conf/all/disable_ipv6"} {
		if err := sysctl(w, k, "1"); err != nil {
			return err
		}
	}
	return nil
}

// ensureNamedNS opens the named namespace, creating it when missing.
func ensureNamedNS(w *writer, name string) (netns.NsHandle, error) {
	if h, err := netns.GetFromName(name); err == nil {
		return h, nil
	}
	w.add("write")
	var h netns.NsHandle
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	h, err = netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		return 0, fmt.Errorf("leave new netns %s: %w", name, serr)
	}
	runtime.UnlockOSThread()
	if err != nil {
		return 0, fmt.Errorf("create netns %s: %w", name, err)
	}
	return h, nil
}

// deleteNamespaces removes this Manager's namespaces that are not wanted.
func (m *Manager) deleteNamespaces(w *writer, want map[string]bool) error {
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("list namespaces: %w", err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), m.cfg.NSPrefix) || want[e.Name()] {
			continue
		}
		w.add("DeleteNamed")
		if err := netns.DeleteNamed(e.Name()); err != nil {
			return fmt.Errorf("delete netns %s: %w", e.Name(), err)
		}
	}
	return nil
}

// hostNS is the host namespace with a netlink handle in it.
type hostNS struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

func (m *Manager) openHost() (*hostNS, error) {
	var ns netns.NsHandle
	var err error
	if m.cfg.HostNS == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(m.cfg.HostNS)
	}
	if err != nil {
		return nil, fmt.Errorf("open host netns: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in host netns: %w", err)
	}
	return &hostNS{ns: ns, h: h}, nil
}

func (hn *hostNS) close() {
	hn.h.Close()
	hn.ns.Close()
}

func (hn *hostNS) sysctl(w *writer, key, val string) error {
	return inNS(hn.ns, func() error { return sysctl(w, key, val) })
}

// routerNS is a router namespace with a netlink handle in it.
type routerNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func (r *routerNS) setUp(w *writer, name string) error {
	l, err := r.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", name, r.name, err)
	}
	return setLinkUp(w, r.h, l)
}

func setLinkUp(w *writer, h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	w.add("LinkSetUp")
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureVeth makes a veth pair root (host) ↔ inside (router namespace),
// with the inside MAC (nil = any) and MTU (0 = default); a half or a
// mismatched pair is replaced. It returns the inside link.
func (hn *hostNS) ensureVeth(w *writer, r *routerNS, root, inside string, mac net.HardwareAddr, mtu int) (netlink.Link, error) {
	rl, rerr := hn.h.LinkByName(root)
	il, ierr := r.h.LinkByName(inside)
	ok := rerr == nil && ierr == nil
	if ok && (mac != nil && il.Attrs().HardwareAddr.String() != mac.String() ||
		mtu > 0 && (il.Attrs().MTU != mtu || rl.Attrs().MTU != mtu)) {
		ok = false
	}
	if ok && (rl.Attrs().ParentIndex != il.Attrs().Index || il.Attrs().ParentIndex != rl.Attrs().Index) {
		ok = false // not each other's peer (IFLA_LINK)
	}
	if ok {
		return il, nil
	}
	if rerr == nil {
		w.add("LinkDel")
		if err := hn.h.LinkDel(rl); err != nil {
			return nil, fmt.Errorf("delete stale %s: %w", root, err)
		}
	}
	if il, err := r.h.LinkByName(inside); err == nil {
		w.add("LinkDel")
		if err := r.h.LinkDel(il); err != nil {
			return nil, fmt.Errorf("delete stale %s in %s: %w", inside, r.name, err)
		}
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: root, MTU: mtu}, PeerName: inside,
		PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(int(r.ns))}
	w.add("LinkAdd")
	if err := hn.h.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create veth %s/%s: %w", root, inside, err)
	}
	il, err := r.h.LinkByName(inside)
	if err != nil {
		return nil, fmt.Errorf("new veth %s in %s: %w", inside, r.name, err)
	}
	return il, nil
}

// deleteLinks removes links with one of the prefixes that are not wanted.
func (hn *hostNS) deleteLinks(w *writer, want map[string]bool, prefixes ...string) error {
	return deleteLinks(w, hn.h, want, prefixes...)
}

func (r *routerNS) deleteLinks(w *writer, want map[string]bool) error {
	return deleteLinks(w, r.h, want, intNSPrefix, extInNS)
}

func deleteLinks(w *writer, h *netlink.Handle, want map[string]bool, prefixes ...string) error {
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		n := l.Attrs().Name
		if want[n] || !hasAnyPrefix(n, prefixes) {
			continue
		}
		w.add("LinkDel")
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete %s: %w", n, err)
		}
	}
	return nil
}

func hasAnyPrefix(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// syncAddrs makes link hold exactly the IPv4 addresses want.
func (r *routerNS) syncAddrs(w *writer, link netlink.Link, want []netip.Prefix) error {
	return syncAddrs(w, r.h, link, want)
}

func (hn *hostNS) syncAddrsOf(w *writer, link netlink.Link, want []netip.Prefix) error {
	return syncAddrs(w, hn.h, link, want)
}

func syncAddrs(w *writer, h *netlink.Handle, link netlink.Link, want []netip.Prefix) error {
	have, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	wanted := map[string]bool{}
	for _, p := range want {
		wanted[p.String()] = true
	}
	present := map[string]bool{}
	for _, a := range have {
		k := a.IPNet.String()
		present[k] = true
		if !wanted[k] {
			w.add("AddrDel")
			if err := h.AddrDel(link, &a); err != nil {
				return fmt.Errorf("delete address %s of %s: %w", k, link.Attrs().Name, err)
			}
		}
	}
	for _, p := range want {
		if present[p.String()] {
			continue
		}
		w.add("AddrAdd")
		a := &netlink.Addr{IPNet: prefixNet(p)}
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add address %s to %s: %w", p, link.Attrs().Name, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// syncNeighbors makes the permanent neighbours of link exactly want.
func (r *routerNS) syncNeighbors(w *writer, link netlink.Link, want []Neighbor) error {
	have, err := r.h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("neighbours of %s: %w", link.Attrs().Name, err)
	}
	wanted := map[string]string{}
	for _, n := range want {
		wanted[n.IP.String()] = n.MAC.String()
	}
	ok := map[string]bool{}
	for _, n := range have {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		k := n.IP.String()
		if wanted[k] == n.HardwareAddr.String() {
			ok[k] = true
			continue
		}
		w.add("NeighDel")
		if err := r.h.NeighDel(&n); err != nil {
			return fmt.Errorf("delete neighbour %s: %w", k, err)
		}
	}
	for _, n := range want {
		if ok[n.IP.String()] {
			continue
		}
		w.add("NeighSet")
		if err := r.h.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: net.IP(n.IP.AsSlice()), HardwareAddr: n.MAC}); err != nil {
			return fmt.Errorf("set neighbour %s: %w", n.IP, err)
		}
	}
	return nil
}

// linkRoute is a route of this package: on link idx (0 = resolved from
// via), to dst, via a gateway (invalid = directly connected).
func linkRoute(idx int, dst netip.Prefix, via netip.Addr) netlink.Route {
	r := netlink.Route{LinkIndex: idx, Dst: prefixNet(dst), Protocol: rtProto, Family: netlink.FAMILY_V4}
	if via.IsValid() {
		r.Gw = net.IP(via.AsSlice())
		if idx != 0 {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

func routeKey(r netlink.Route) string {
	dst := "0.0.0.0/0"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	return fmt.Sprintf("%s via %v", dst, r.Gw)
}

// syncRoutes makes the main-table routes of protocol rtProto exactly want.
func syncRoutes(w *writer, h *netlink.Handle, want map[string]netlink.Route) error {
	have, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	present := map[string]bool{}
	for _, r := range have {
		k := routeKey(r)
		if wr, ok := want[k]; ok && (wr.LinkIndex == 0 || wr.LinkIndex == r.LinkIndex) {
			present[k] = true
			continue
		}
		w.add("RouteDel")
		if err := h.RouteDel(&r); err != nil {
			return fmt.Errorf("delete route %s: %w", k, err)
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	// Connected routes first: gateways resolve through them.
	slicesSortBy(keys, func(k string) bool { return want[k].Gw == nil })
	for _, k := range keys {
		if present[k] {
			continue
		}
		r := want[k]
		w.add("RouteAdd")
		if err := h.RouteAdd(&r); err != nil {
			return fmt.Errorf("add route %s: %w", k, err)
		}
	}
	return nil
}

func slicesSortBy(keys []string, first func(string) bool) {
	var a, b []string
	for _, k := range keys {
		if first(k) {
			a = append(a, k)
		} else {
			b = append(b, k)
		}
	}
	copy(keys, append(a, b...))
}

func (hn *hostNS) syncRoutes(w *writer, want map[string]netlink.Route) error {
	m := map[string]netlink.Route{}
	for _, r := range want {
		m[routeKey(r)] = r
	}
	if err := syncRoutes(w, hn.h, m); err != nil {
		return fmt.Errorf("host routes: %w", err)
	}
	return nil
}

// syncProxies makes the IPv4 proxy ARP entries of each external interface
// exactly want, and returns the addresses newly added (to announce),
// also when it fails part-way.
func (hn *hostNS) syncProxies(w *writer, want map[string]map[netip.Addr]bool) (map[string][]netip.Addr, error) {
	added := map[string][]netip.Addr{}
	for iface, addrs := range want {
		l, err := hn.h.LinkByName(iface)
		if err != nil {
			if len(addrs) == 0 {
				continue // a gone interface has no entries left
			}
			return added, fmt.Errorf("external interface %s: %w", iface, err)
		}
		if len(addrs) > 0 {
			if err := hn.sysctl(w, "net/ipv4/neigh/"+iface+"/proxy_delay", "0"); err != nil {
				return added, err
			}
		}
		have, err := hn.h.NeighProxyList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return added, fmt.Errorf("proxy entries of %s: %w", iface, err)
		}
		present := map[netip.Addr]bool{}
		for _, n := range have {
			a, ok := netip.AddrFromSlice(n.IP)
			a = a.Unmap()
			if ok && addrs[a] {
				present[a] = true
				continue
			}
			w.add("NeighDel")
			if err := hn.h.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
				Flags: netlink.NTF_PROXY, IP: n.IP}); err != nil {
				return added, fmt.Errorf("delete proxy entry %s on %s: %w", n.IP, iface, err)
			}
		}
		for a := range addrs {
			if present[a] {
				continue
			}
			w.add("NeighAdd")
			if err := hn.h.NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
				Flags: netlink.NTF_PROXY, IP: net.IP(a.AsSlice())}); err != nil {
				return added, fmt.Errorf("add proxy entry %s on %s: %w", a, iface, err)
			}
			added[iface] = append(added[iface], a)
		}
	}
	return added, nil
}

// arpConn is a kept gratuitous ARP socket and the index of the
// interface it was opened on.
type arpConn struct {
	c     *packet.Conn
	index int
}

// garp announces addrs from iface's MAC: for each a gratuitous ARP
// request and reply, broadcast. It returns how many of addrs (a prefix)
// it sent. The send-only packet socket of an interface is kept open
// (opening and closing one waits for the kernel's RCU grace period each
// time, milliseconds on a loaded host); it receives nothing (protocol 0).
// A socket of an interface since recreated (another index) is closed and
// replaced; a send that fails reopens the socket once and retries. The
// interface is looked up by name (net.InterfaceByName would read every
// link of the namespace).
func (m *Manager) garp(hn *hostNS, iface string, addrs []netip.Addr) (int, error) {
	l, err := hn.h.LinkByName(iface)
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w", iface, err)
	}
	at := l.Attrs()
	open := func() (*packet.Conn, error) {
		if k, ok := m.arpConns[iface]; ok {
			if k.index == at.Index {
				return k.c, nil
			}
			k.c.Close()
			delete(m.arpConns, iface)
		}
		ifi := &net.Interface{Index: at.Index, MTU: at.MTU, Name: at.Name, HardwareAddr: at.HardwareAddr, Flags: at.Flags}
		var c *packet.Conn
		if err := inNS(hn.ns, func() error {
			var err error
			c, err = packet.Listen(ifi, packet.Raw, 0, nil)
			return err
		}); err != nil {
			return nil, fmt.Errorf("packet socket on %s: %w", iface, err)
		}
		if m.arpConns == nil {
			m.arpConns = map[string]arpConn{}
		}
		m.arpConns[iface] = arpConn{c: c, index: at.Index}
		return c, nil
	}
	c, err := open()
	if err != nil {
		return 0, err
	}
	retried := false
	sent := 0
	for _, addr := range addrs {
		for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
			p, err := arp.NewPacket(op, at.HardwareAddr, addr, ethernet.Broadcast, addr)
			if err != nil {
				return sent, fmt.Errorf("gratuitous ARP for %s: %w", addr, err)
			}
			pb, err := p.MarshalBinary()
			if err != nil {
				return sent, fmt.Errorf("gratuitous ARP for %s: %w", addr, err)
			}
			f, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: at.HardwareAddr,
				EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
			if err != nil {
				return sent, fmt.Errorf("gratuitous ARP for %s: %w", addr, err)
			}
			for {
				_, err := c.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
				if err == nil {
					break
				}
				c.Close()
				delete(m.arpConns, iface)
				if retried {
					return sent, fmt.Errorf("send gratuitous ARP for %s on %s: %w", addr, iface, err)
				}
				retried = true
				if c, err = open(); err != nil {
					return sent, err
				}
			}
		}
		sent++
	}
	return sent, nil
}

// sweepARP closes the kept sockets of interfaces that are gone or were
// recreated (another index).
func (m *Manager) sweepARP(hn *hostNS) {
	for iface, k := range m.arpConns {
		if l, err := hn.h.LinkByName(iface); err == nil && l.Attrs().Index == k.index {
			continue
		}
		k.c.Close()
		delete(m.arpConns, iface)
	}
}

// closeARP closes the kept packet sockets.
func (m *Manager) closeARP() {
	for k, c := range m.arpConns {
		c.c.Close()
		delete(m.arpConns, k)
	}
}
