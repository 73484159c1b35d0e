package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The floating-IP fast path. A host may run a thousand floating IPs; the
// full convergence reads every address, route, proxy entry and map
// element of every router to change one. When the desired state differs
// from the last one applied successfully only in floating IPs, Apply
// writes just those differences (an address, a host route and a proxy
// entry each, and one nftables transaction per router namespace touched)
// without reading the rest. An Apply of an unchanged state, any other
// change, or a failure on the fast path takes the full path, which
// repairs whatever drifted: the agent's periodic resync applies an
// unchanged state, so drift never outlives it.

// cloneDesired deep-copies d (the caller may reuse its slices).
func cloneDesired(d Desired) *Desired {
	c := d
	c.HostMAC = slices.Clone(d.HostMAC)
	c.AllowTCP = slices.Clone(d.AllowTCP)
	c.Protected = slices.Clone(d.Protected)
	c.Externals = slices.Clone(d.Externals)
	c.Routers = slices.Clone(d.Routers)
	for i, r := range c.Routers {
		r.FloatingIPs = slices.Clone(r.FloatingIPs)
		r.Routes = slices.Clone(r.Routes)
		if r.Gateway != nil {
			g := *r.Gateway
			r.Gateway = &g
		}
		r.Interfaces = slices.Clone(r.Interfaces) // nil stays nil (fipDelta compares)
		for j, in := range r.Interfaces {
			in.MAC = slices.Clone(in.MAC)
			in.Neighbors = slices.Clone(in.Neighbors)
			for k := range in.Neighbors {
				in.Neighbors[k].MAC = slices.Clone(in.Neighbors[k].MAC)
			}
			r.Interfaces[j] = in
		}
		c.Routers[i] = r
	}
	return &c
}

// fipDelta returns the indexes of the routers whose floating IPs differ
// between last and d, when nothing else differs; ok is false otherwise
// (no last state, another difference, or no difference at all).
func fipDelta(last *Desired, d Desired) (changed []int, ok bool) {
	if last == nil || len(last.Routers) != len(d.Routers) {
		return nil, false
	}
	a, b := *last, d
	a.Routers, b.Routers = nil, nil
	if !reflect.DeepEqual(a, b) {
		return nil, false
	}
	for i := range d.Routers {
		x, y := last.Routers[i], d.Routers[i]
		fx, fy := x.FloatingIPs, y.FloatingIPs
		x.FloatingIPs, y.FloatingIPs = nil, nil
		if !reflect.DeepEqual(x, y) {
			return nil, false
		}
		if !slices.Equal(fx, fy) {
			changed = append(changed, i)
		}
	}
	return changed, len(changed) > 0
}

// applyFIPDelta writes the floating-IP differences of the changed routers:
// every removal first (a floating IP may move between two routers of this
// host in one change), then the NAT maps, then every addition. It returns
// the addresses whose proxy entries it added (to announce), also when it
// fails part-way.
func (m *Manager) applyFIPDelta(host *hostNS, w *writer, last *Desired, d Desired, changed []int) (map[string][]netip.Addr, error) {
	ids := make([]string, 0, len(d.Routers))
	for _, r := range d.Routers {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	transit := transitAddrs(ids)
	type side struct {
		old, new Router
		rns      netns.NsHandle
		h        *netlink.Handle
		inside   netlink.Link // the gateway veth in the router namespace
		root     netlink.Link // its host side
		ext      netlink.Link // the external interface
	}
	announce := map[string][]netip.Addr{}
	sides := make([]*side, 0, len(changed))
	defer func() {
		for _, s := range sides {
			s.h.Close()
			s.rns.Close()
		}
	}()
	for _, i := range changed {
		r := d.Routers[i]
		if r.Gateway == nil {
			return nil, fmt.Errorf("%w: floating IPs without a gateway", ErrInvalid)
		}
		name := m.NSName(r.ID)
		rns, err := netns.GetFromName(name)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", name, err)
		}
		h, err := netlink.NewHandleAt(rns)
		if err != nil {
			rns.Close()
			return nil, fmt.Errorf("netlink in %s: %w", name, err)
		}
		s := &side{old: last.Routers[i], new: r, rns: rns, h: h}
		sides = append(sides, s)
		if s.inside, err = h.LinkByName(extInNS); err != nil {
			return nil, fmt.Errorf("%s in %s: %w", extInNS, name, err)
		}
		if s.root, err = host.h.LinkByName(extRootName(r.ID)); err != nil {
			return nil, fmt.Errorf("veth %s: %w", extRootName(r.ID), err)
		}
		if s.ext, err = host.h.LinkByName(r.Gateway.Iface); err != nil {
			return nil, fmt.Errorf("external interface %s: %w", r.Gateway.Iface, err)
		}
	}
	fipSet := func(fs []FloatingIP) map[netip.Addr]bool {
		out := make(map[netip.Addr]bool, len(fs))
		for _, f := range fs {
			out[f.Addr] = true
		}
		return out
	}
	// Removals.
	for _, s := range sides {
		keep := fipSet(s.new.FloatingIPs)
		for _, f := range s.old.FloatingIPs {
			if keep[f.Addr] {
				continue
			}
			p := prefixNet(netip.PrefixFrom(f.Addr, 32))
			w.add("AddrDel")
			if err := s.h.AddrDel(s.inside, &netlink.Addr{IPNet: p}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return nil, fmt.Errorf("delete address %s: %w", f.Addr, err)
			}
			rt := linkRoute(s.root.Attrs().Index, netip.PrefixFrom(f.Addr, 32), netip.Addr{})
			w.add("RouteDel")
			if err := host.h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				return nil, fmt.Errorf("delete route %s: %w", f.Addr, err)
			}
			w.add("NeighDel")
			if err := host.h.NeighDel(&netlink.Neigh{LinkIndex: s.ext.Attrs().Index, Family: netlink.FAMILY_V4,
				Flags: netlink.NTF_PROXY, IP: net.IP(f.Addr.AsSlice())}); err != nil && !errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("delete proxy entry %s: %w", f.Addr, err)
			}
		}
	}
	// NAT maps: one transaction per router namespace, after the removals
	// (no ARP answer or route leads to a floating IP whose NAT is gone)
	// and before the additions (none leads to one whose NAT is not yet
	// there: a connection would reach the router namespace itself).
	for _, s := range sides {
		_, oldMaps := routerChains(s.old, transit[s.old.ID])
		_, newMaps := routerChains(s.new, transit[s.new.ID])
		conn, err := nftConn(int(s.rns))
		if err != nil {
			return announce, fmt.Errorf("nftables in %s: %w", m.NSName(s.new.ID), err)
		}
		t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: tblRouter}
		dirty := false
		for j, nm := range newMaps {
			set := &nftables.Set{Table: t, Name: nm.name, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
			var del []nftables.SetElement
			add := map[[4]byte][4]byte{}
			for k, v := range oldMaps[j].elems {
				if nv, ok := nm.elems[k]; !ok || nv != v {
					del = append(del, nftables.SetElement{Key: k[:]})
				}
			}
			for k, v := range nm.elems {
				if ov, ok := oldMaps[j].elems[k]; !ok || ov != v {
					add[k] = v
				}
			}
			if len(del) > 0 {
				if err := conn.SetDeleteElements(set, del); err != nil {
					return announce, fmt.Errorf("nftables map %s: %w", nm.name, err)
				}
				dirty = true
			}
			if len(add) > 0 {
				if err := conn.SetAddElements(set, mapElems(add)); err != nil {
					return announce, fmt.Errorf("nftables map %s: %w", nm.name, err)
				}
				dirty = true
			}
		}
		if dirty {
			if err := conn.Flush(); err != nil {
				return announce, fmt.Errorf("write nftables maps in %s: %w", m.NSName(s.new.ID), err)
			}
			w.nft(1, "maps of table ip %s in %s", tblRouter, m.NSName(s.new.ID))
		}
	}
	// Additions.
	for _, s := range sides {
		had := fipSet(s.old.FloatingIPs)
		iface := s.new.Gateway.Iface
		for _, f := range s.new.FloatingIPs {
			if had[f.Addr] {
				continue
			}
			if len(announce[iface]) == 0 {
				if err := host.sysctl(w, "net/ipv4/neigh/"+iface+"/proxy_delay", "0"); err != nil {
					return announce, err
				}
			}
			p := prefixNet(netip.PrefixFrom(f.Addr, 32))
			w.add("AddrAdd")
			if err := s.h.AddrReplace(s.inside, &netlink.Addr{IPNet: p}); err != nil {
				return announce, fmt.Errorf("add address %s: %w", f.Addr, err)
			}
			rt := linkRoute(s.root.Attrs().Index, netip.PrefixFrom(f.Addr, 32), netip.Addr{})
			w.add("RouteAdd")
			if err := host.h.RouteReplace(&rt); err != nil {
				return announce, fmt.Errorf("add route %s: %w", f.Addr, err)
			}
			w.add("NeighAdd")
			if err := host.h.NeighAdd(&netlink.Neigh{LinkIndex: s.ext.Attrs().Index, Family: netlink.FAMILY_V4,
				Flags: netlink.NTF_PROXY, IP: net.IP(f.Addr.AsSlice())}); err != nil && !errors.Is(err, unix.EEXIST) {
				return announce, fmt.Errorf("add proxy entry %s: %w", f.Addr, err)
			}
			announce[iface] = append(announce[iface], f.Addr)
		}
	}
	return announce, nil
}
