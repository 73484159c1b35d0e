package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// Names and numbers this package owns.
const (
	DefaultNSPrefix = "psr-"
	intRootPrefix   = "psrq"  // host side of an interface veth
	intNSPrefix     = "psri"  // router side of an interface veth
	extRootPrefix   = "psrx"  // host side of the gateway veth
	extInNS         = "psrxg" // router side of the gateway veth
	rtProto         = 77      // protocol of every route this package installs
)

var hostSideAddr = netip.MustParseAddr("169.254.0.1")

// ErrInvalid: the desired state or the configuration is malformed.
var ErrInvalid = errors.New("router: invalid argument")

// Desired is every router this host must run for its own ports.
type Desired struct {
	Routers []Router
	// HostMAC is the source MAC of frames this host routes onto an overlay
	// (unique per host; required when an interface has an Overlay).
	HostMAC net.HardwareAddr
	// AllowTCP are the host ports tenants may reach (the public API);
	// Protected are prefixes tenants may reach only on those ports (the
	// cluster's hosts and storage servers).
	AllowTCP  []uint16
	Protected []netip.Prefix
	// Externals are the host's interfaces on external networks (its
	// physical network mapping). Proxy ARP entries on them belong to this
	// package: the ones no floating IP wants are removed.
	Externals []string
	// ProviderVLANPrefix names the provider networks' 802.1Q
	// sub-interfaces, whose input the host drops; default "pspv" (hv/netdev
	// with its default device prefix "ps": the device prefix plus "pv").
	ProviderVLANPrefix string
}

// Router is one router as this host runs it.
type Router struct {
	ID          string
	Interfaces  []Interface
	Gateway     *Gateway // nil: no external network here
	Routes      []Route  // extra routes
	FloatingIPs []FloatingIP
}

// Interface is an anycast gateway on one subnet.
type Interface struct {
	ID        string           // interface port id (names the veth)
	Bridge    string           // host bridge of the network
	Overlay   string           // VXLAN device on Bridge ("" = none)
	Address   netip.Prefix     // gateway address / subnet prefix length
	MAC       net.HardwareAddr // gateway MAC (the interface port's)
	MTU       int              // 0 = the kernel's default
	Neighbors []Neighbor       // ports of the subnet on other hosts
}

// Neighbor is a port's address and MAC.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// Gateway connects a router to an external network through a host
// interface.
type Gateway struct {
	Iface string // host interface on the external network
	SNAT  bool   // source-NAT egress without a floating IP
}

// Route is an extra route.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// FloatingIP maps an external address to a fixed address of a local port.
type FloatingIP struct {
	Addr  netip.Addr
	Fixed netip.Addr
}

// Config configures a Manager.
type Config struct {
	// HostNS is the path of the host's network namespace ("" = the
	// process's own).
	HostNS string
	// NSPrefix names router namespaces; default DefaultNSPrefix.
	NSPrefix string
	Logger   *slog.Logger
}

// Stats counts what one Apply did.
type Stats struct {
	Writes  int      // netlink and nftables writes (one per nftables transaction)
	NFTTx   int      // nftables transactions (flushes) among Writes
	Changes []string // what was written (the first 32 writes)
	GARPs   int      // floating IPs announced
	// Incremental: the change was floating IPs alone and was written
	// without reading the rest (see delta.go); false when the full
	// convergence ran (also after the incremental write failed).
	Incremental bool
}

// Manager converges a host's routers. Apply and Cleanup are serialised.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	externals []string           // every external interface seen (for Cleanup)
	last      *Desired           // what the last successful Apply converged to
	tables    *Desired           // the state the host tables were last written from
	arpConns  map[string]arpConn // interface name → gratuitous ARP socket
	// pending are the floating IPs new on this host (external interface →
	// addresses) not yet announced: an Apply that fails after adding their
	// proxy entries leaves them here, and the next one, which finds the
	// entries in place, announces them.
	pending map[string]map[netip.Addr]bool
}

// New returns a Manager; it changes nothing until Apply.
func New(cfg Config) (*Manager, error) {
	if cfg.NSPrefix == "" {
		cfg.NSPrefix = DefaultNSPrefix
	}
	if !strings.HasPrefix(cfg.NSPrefix, "psr") || strings.ContainsAny(cfg.NSPrefix, "/ ") {
		return nil, fmt.Errorf("%w: namespace prefix %q must start with psr", ErrInvalid, cfg.NSPrefix)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "router")}, nil
}

// NSName is the namespace of a router on this host.
func (m *Manager) NSName(routerID string) string {
	id := strings.ReplaceAll(routerID, "-", "")
	if len(id) > 12 {
		id = id[:12]
	}
	return m.cfg.NSPrefix + id
}

func hash10(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "/")))
	return hex.EncodeToString(h[:5])
}

func intNames(routerID, ifaceID string) (root, ns string) {
	h := hash10(routerID, ifaceID)
	return intRootPrefix + h, intNSPrefix + h
}

func extRootName(routerID string) string { return extRootPrefix + hash10(routerID) }

func validate(d Desired) error {
	ids := map[string]bool{}
	for _, r := range d.Routers {
		if r.ID == "" || ids[r.ID] {
			return fmt.Errorf("%w: router id %q empty or repeated", ErrInvalid, r.ID)
		}
		ids[r.ID] = true
		for _, i := range r.Interfaces {
			if i.ID == "" || i.Bridge == "" || !i.Address.Addr().Is4() || len(i.MAC) != 6 {
				return fmt.Errorf("%w: router %s interface %+v", ErrInvalid, r.ID, i)
			}
			if i.Overlay != "" && len(d.HostMAC) != 6 {
				return fmt.Errorf("%w: interfaces on an overlay need HostMAC", ErrInvalid)
			}
		}
		for _, f := range r.FloatingIPs {
			if !f.Addr.Is4() || !f.Fixed.Is4() || r.Gateway == nil {
				return fmt.Errorf("%w: router %s floating IP %v→%v (needs IPv4 and a gateway)", ErrInvalid, r.ID, f.Addr, f.Fixed)
			}
		}
		if r.Gateway != nil && (r.Gateway.Iface == "" || len(r.Gateway.Iface) > 15) {
			return fmt.Errorf("%w: router %s gateway interface %q", ErrInvalid, r.ID, r.Gateway.Iface)
		}
	}
	return nil
}

// Apply converges the host to d. It returns what it wrote; on error the
// host is left part-way and the next Apply continues from there.
func (m *Manager) Apply(ctx context.Context, d Desired) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := validate(d); err != nil {
		return Stats{}, err
	}
	host, err := m.openHost()
	if err != nil {
		return Stats{}, err
	}
	defer host.close()
	st := &Stats{}
	w := &writer{st: st}
	if changed, ok := fipDelta(m.last, d); ok {
		announce, err := m.applyFIPDelta(host, w, m.last, d, changed)
		m.queue(announce)
		if err == nil {
			m.last = cloneDesired(d)
			st.Incremental = true
			m.announce(host, st, d)
			return *st, nil
		}
		m.log.Warn("floating IP change: converging fully", "err", err)
	}
	m.last = nil

	ids := make([]string, 0, len(d.Routers))
	for _, r := range d.Routers {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	transit := transitAddrs(ids)

	externals := gatewayIfaces(d)
	wantNS := map[string]bool{}
	wantRoot := map[string]bool{}
	hostRoutes := map[string]netlink.Route{}
	proxies := map[string]map[netip.Addr]bool{} // external iface → floating IPs
	for _, e := range d.Externals {
		if !slices.Contains(m.externals, e) {
			m.externals = append(m.externals, e)
		}
	}
	for _, e := range m.externals {
		proxies[e] = map[netip.Addr]bool{}
	}
	// The host's guard and the bridge table go in before any router
	// namespace can route, and keep what they held for the routers and
	// interfaces being removed (bridge rules that keep a gateway MAC off
	// the overlays, masquerade) until their devices are gone: first the
	// union of the state they were written from and d, then, after the
	// removals, d alone.
	both := unionTables(m.tables, d)
	m.tables = cloneDesired(both)
	if err := syncHostTables(host, w, both, gatewayIfaces(both)); err != nil {
		return *st, err
	}
	for _, r := range d.Routers {
		if ctx.Err() != nil {
			return *st, ctx.Err()
		}
		name := m.NSName(r.ID)
		wantNS[name] = true
		if err := m.applyRouter(host, w, r, name, transit[r.ID], wantRoot, hostRoutes); err != nil {
			return *st, fmt.Errorf("router %s: %w", r.ID, err)
		}
		if r.Gateway != nil {
			if proxies[r.Gateway.Iface] == nil {
				proxies[r.Gateway.Iface] = map[netip.Addr]bool{}
			}
			if !slices.Contains(m.externals, r.Gateway.Iface) {
				m.externals = append(m.externals, r.Gateway.Iface)
			}
			for _, f := range r.FloatingIPs {
				proxies[r.Gateway.Iface][f.Addr] = true
			}
		}
	}
	if len(externals) > 0 {
		if err := host.sysctl(w, "net/ipv4/ip_forward", "1"); err != nil {
			return *st, err
		}
	}
	if err := host.syncRoutes(w, hostRoutes); err != nil {
		return *st, err
	}
	announce, err := host.syncProxies(w, proxies)
	m.queue(announce)
	if err != nil {
		return *st, err
	}
	if err := host.deleteLinks(w, wantRoot, intRootPrefix, extRootPrefix); err != nil {
		return *st, err
	}
	if err := m.deleteNamespaces(w, wantNS); err != nil {
		return *st, err
	}
	if err := syncHostTables(host, w, d, externals); err != nil {
		return *st, err
	}
	m.tables = cloneDesired(d)
	m.announce(host, st, d)
	m.last = cloneDesired(d)
	return *st, nil
}

// syncHostTables converges the host namespace's tables: the guard and
// masquerade (inet) and the anycast gateways' bridge filter.
func syncHostTables(host *hostNS, w *writer, d Desired, externals []string) error {
	conn, err := nftConn(int(host.ns))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	n, err := syncTable(conn, nftables.TableFamilyINet, tblHost, hostChains(d, externals), nil)
	w.nft(n, "table inet %s", tblHost)
	if err != nil {
		return err
	}
	n, err = syncTable(conn, nftables.TableFamilyBridge, tblBridge, bridgeChains(d), nil)
	w.nft(n, "table bridge %s", tblBridge)
	return err
}

// queue adds floating IPs new on this host to the pending announcements.
func (m *Manager) queue(announce map[string][]netip.Addr) {
	for iface, addrs := range announce {
		if len(addrs) == 0 {
			continue
		}
		if m.pending == nil {
			m.pending = map[string]map[netip.Addr]bool{}
		}
		if m.pending[iface] == nil {
			m.pending[iface] = map[netip.Addr]bool{}
		}
		for _, a := range addrs {
			m.pending[iface][a] = true
		}
	}
}

// announce sends gratuitous ARP for the pending floating IPs d still
// wants on their interface and forgets the rest; an address stays pending
// until it was sent.
func (m *Manager) announce(host *hostNS, st *Stats, d Desired) {
	if len(m.pending) == 0 {
		return
	}
	want := map[string]map[netip.Addr]bool{}
	for _, r := range d.Routers {
		if r.Gateway == nil {
			continue
		}
		for _, f := range r.FloatingIPs {
			if want[r.Gateway.Iface] == nil {
				want[r.Gateway.Iface] = map[netip.Addr]bool{}
			}
			want[r.Gateway.Iface][f.Addr] = true
		}
	}
	ifaces := make([]string, 0, len(m.pending))
	for iface := range m.pending {
		ifaces = append(ifaces, iface)
	}
	slices.Sort(ifaces)
	for _, iface := range ifaces {
		var addrs []netip.Addr
		for a := range m.pending[iface] {
			if want[iface][a] {
				addrs = append(addrs, a)
			}
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		delete(m.pending, iface)
		if len(addrs) == 0 {
			continue
		}
		n, err := m.garp(host, iface, addrs)
		st.GARPs += n
		if err != nil {
			m.log.Warn("gratuitous ARP", "iface", iface, "addrs", len(addrs), "err", err)
			m.queue(map[string][]netip.Addr{iface: addrs[n:]})
		}
	}
	m.sweepARP(host)
}

// unionTables is d with the routers (and protected prefixes) of old
// added, for the host tables to keep what they hold for routers and
// interfaces on their way out (the bridge table skips gateways it already
// has); the allowed ports are d's.
func unionTables(old *Desired, d Desired) Desired {
	if old == nil {
		return d
	}
	u := d
	if len(u.HostMAC) == 0 {
		u.HostMAC = old.HostMAC // the bridge table's rewrite of routed frames
	}
	u.Protected = slices.Clone(d.Protected)
	for _, p := range old.Protected {
		if !slices.Contains(u.Protected, p) {
			u.Protected = append(u.Protected, p) // the stricter guard
		}
	}
	u.Routers = make([]Router, 0, len(d.Routers))
	for _, r := range d.Routers {
		r.FloatingIPs = nil // not in the host tables
		u.Routers = append(u.Routers, r)
	}
	for _, r := range old.Routers {
		r.FloatingIPs = nil
		if !slices.ContainsFunc(u.Routers, func(x Router) bool { return reflect.DeepEqual(x, r) }) {
			u.Routers = append(u.Routers, r)
		}
	}
	return u
}

// gatewayIfaces are the external interfaces of d's routers, sorted.
func gatewayIfaces(d Desired) []string {
	var out []string
	for _, r := range d.Routers {
		if r.Gateway != nil && !slices.Contains(out, r.Gateway.Iface) {
			out = append(out, r.Gateway.Iface)
		}
	}
	slices.Sort(out)
	return out
}

// Cleanup removes every namespace, device, route, proxy ARP entry (on
// the external interfaces this Manager has seen) and table this package
// made.
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	known := slices.Clone(m.externals)
	m.mu.Unlock()
	_, err := m.Apply(ctx, Desired{Externals: known})
	m.mu.Lock()
	m.closeARP()
	m.mu.Unlock()
	return err
}

// applyRouter converges one router namespace and records what the host
// side needs (veths, routes).
func (m *Manager) applyRouter(host *hostNS, w *writer, r Router, name string, transit netip.Addr, wantRoot map[string]bool, hostRoutes map[string]netlink.Route) error {
	rns, err := ensureNamedNS(w, name)
	if err != nil {
		return err
	}
	defer rns.Close()
	h, err := netlink.NewHandleAt(rns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", name, err)
	}
	defer h.Close()
	r2 := &routerNS{name: name, ns: rns, h: h}
	if err := r2.setUp(w, "lo"); err != nil {
		return err
	}
	if err := inNS(rns, func() error { return sysctl(w, "net/ipv4/ip_forward", "1") }); err != nil {
		return err
	}
	// Routers are IPv4 only. With IPv6 on, a new interface would send
	// duplicate address detection and multicast listener reports from the
	// gateway MAC before the bridge table that keeps that MAC off the
	// overlays is in place, and other hosts would learn it behind their
	// tunnels. Set before the interfaces exist, so they start without it.
	if err := inNS(rns, func() error { return noIPv6(w) }); err != nil {
		return err
	}
	wantNSLinks := map[string]bool{}
	wantRoutes := map[string]netlink.Route{}
	for _, i := range r.Interfaces {
		root, inside := intNames(r.ID, i.ID)
		wantRoot[root], wantNSLinks[inside] = true, true
		link, err := host.ensureVeth(w, r2, root, inside, i.MAC, i.MTU)
		if err != nil {
			return err
		}
		br, err := host.h.LinkByName(i.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", i.Bridge, err)
		}
		rl, err := host.h.LinkByName(root)
		if err != nil {
			return fmt.Errorf("veth %s: %w", root, err)
		}
		if rl.Attrs().MasterIndex != br.Attrs().Index {
			w.add("enslave %s", root)
			if err := host.h.LinkSetMasterByIndex(rl, br.Attrs().Index); err != nil {
				return fmt.Errorf("enslave %s to %s: %w", root, i.Bridge, err)
			}
		}
		if err := setLinkUp(w, host.h, rl); err != nil {
			return err
		}
		if err := r2.syncAddrs(w, link, []netip.Prefix{i.Address}); err != nil {
			return err
		}
		if err := setLinkUp(w, h, link); err != nil {
			return err
		}
		if err := r2.syncNeighbors(w, link, i.Neighbors); err != nil {
			return err
		}
	}
	if r.Gateway != nil {
		root := extRootName(r.ID)
		wantRoot[root], wantNSLinks[extInNS] = true, true
		link, err := host.ensureVeth(w, r2, root, extInNS, nil, 0)
		if err != nil {
			return err
		}
		rl, err := host.h.LinkByName(root)
		if err != nil {
			return fmt.Errorf("veth %s: %w", root, err)
		}
		if err := host.syncAddrsOf(w, rl, []netip.Prefix{netip.PrefixFrom(hostSideAddr, 32)}); err != nil {
			return err
		}
		if err := setLinkUp(w, host.h, rl); err != nil {
			return err
		}
		addrs := []netip.Prefix{netip.PrefixFrom(transit, 32)}
		hostRoutes[transit.String()] = linkRoute(rl.Attrs().Index, netip.PrefixFrom(transit, 32), netip.Addr{})
		for _, f := range r.FloatingIPs {
			addrs = append(addrs, netip.PrefixFrom(f.Addr, 32))
			hostRoutes[f.Addr.String()] = linkRoute(rl.Attrs().Index, netip.PrefixFrom(f.Addr, 32), netip.Addr{})
		}
		if err := r2.syncAddrs(w, link, addrs); err != nil {
			return err
		}
		if err := setLinkUp(w, h, link); err != nil {
			return err
		}
		idx := link.Attrs().Index
		hop := linkRoute(idx, netip.PrefixFrom(hostSideAddr, 32), netip.Addr{})
		def := linkRoute(idx, netip.MustParsePrefix("0.0.0.0/0"), hostSideAddr)
		wantRoutes[routeKey(hop)], wantRoutes[routeKey(def)] = hop, def
	}
	for _, rt := range r.Routes {
		x := linkRoute(0, rt.Dst, rt.Via)
		wantRoutes[routeKey(x)] = x
	}
	if err := r2.deleteLinks(w, wantNSLinks); err != nil {
		return err
	}
	// NAT before the routes: a new router must not route a tenant's
	// packet out with its own source before its SNAT is in place.
	conn, err := nftConn(int(rns))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", name, err)
	}
	chains, maps := routerChains(r, transit)
	n, err := syncTable(conn, nftables.TableFamilyIPv4, tblRouter, chains, maps)
	w.nft(n, "table ip %s in %s", tblRouter, name)
	if err != nil {
		return err
	}
	if err := syncRoutes(w, h, wantRoutes); err != nil {
		return fmt.Errorf("routes in %s: %w", name, err)
	}
	return nil
}
