package netdev

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Provider is a flat or VLAN provider network as this host must see it: its
// local ports reach the physical network the host maps to Uplink.
//
// Per port, a macvlan device "<prefix>pm<port id>" on the uplink (or on the
// network's 802.1Q sub-interface "<prefix>pv<hash>" of it) carries the
// guest's own MAC, and a tc ingress redirect on each side wires it to the
// port's tap: what the guest sends leaves through the macvlan onto the
// physical network, and what the physical network sends to the guest's MAC
// (and every broadcast) comes back through it. Neither the uplink nor its
// addresses are touched: a host with one NIC keeps its own address on it.
type Provider struct {
	ID     string
	Uplink string // the host interface the physical network is mapped to
	VLAN   int    // 0: flat (untagged on Uplink); 1-4094: 802.1Q on Uplink
	MTU    int    // ports' MTU; 0 means 1500
	Routed bool   // keep the VLAN sub-interface without local ports (a router's gateway uses it)
	Ports  []Port
}

// ProvidersFailed is the error of an Apply that plumbed everything but
// the provider networks IDs and the provider ports Ports (each undone
// alone; a failed network's ports are not listed in Ports).
type ProvidersFailed struct {
	IDs   []string
	Ports []string
	cause map[string]error
	errs  []error
}

func (e *ProvidersFailed) Error() string {
	what := []string{}
	if len(e.IDs) > 0 {
		what = append(what, "provider networks "+strings.Join(e.IDs, ", "))
	}
	if len(e.Ports) > 0 {
		what = append(what, "provider ports "+strings.Join(e.Ports, ", "))
	}
	return fmt.Sprintf("%s: %v", strings.Join(what, " and "), errors.Join(e.errs...))
}

func (e *ProvidersFailed) Unwrap() []error { return e.errs }

// Cause is why the network or port id failed (nil if it did not).
func (e *ProvidersFailed) Cause(id string) error { return e.cause[id] }

// Permanent reports whether the network or port id failed for a reason
// retrying will not fix while the desired state and the host stay as
// they are: an invalid or conflicting request, something this kernel
// does not support, a MAC address taken. A missing device (ENODEV: an
// uplink or bond that appears late at boot, a tap not made yet) is not:
// the next Apply retries it.
func (e *ProvidersFailed) Permanent(id string) bool {
	err := e.cause[id]
	return err != nil && !errors.Is(err, unix.ENODEV) &&
		(errors.Is(err, ErrInvalid) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EADDRINUSE))
}

func (e *ProvidersFailed) add(id string, err error) {
	e.IDs, e.errs = append(e.IDs, id), append(e.errs, err)
	e.setCause(id, err)
}

func (e *ProvidersFailed) addPort(id string, err error) {
	e.Ports, e.errs = append(e.Ports, id), append(e.errs, err)
	e.setCause(id, err)
}

func (e *ProvidersFailed) setCause(id string, err error) {
	if e.cause == nil {
		e.cause = map[string]error{}
	}
	e.cause[id] = err
}

func (e *ProvidersFailed) orNil() error {
	if len(e.IDs) == 0 && len(e.Ports) == 0 {
		return nil
	}
	return e
}

const providerGroup = "provider "

const (
	providerMTU     = 1500
	maxVLAN         = 4094
	addrGenModeNone = 1 // IN6_ADDR_GEN_MODE_NONE
)

// MacvlanName is the macvlan device of a provider port with the default
// prefix: "pspm" and the first 11 characters of the id without dashes.
func MacvlanName(portID string) string { return macvlanName(DefaultPrefix, portID) }

// VLANName is the 802.1Q sub-interface of uplink for VLAN vid with the
// default prefix: "pspv" and a hash of both (the uplink's own name may be
// up to 15 characters long, so it cannot be part of the name).
func VLANName(uplink string, vid int) string { return vlanName(DefaultPrefix, uplink, vid) }

// VLANName is VLANName under this Manager's prefix.
func (m *Manager) VLANName(uplink string, vid int) string { return vlanName(m.prefix, uplink, vid) }

func macvlanName(prefix, id string) string { return portIfName(prefix+"pm", id) }

func vlanName(prefix, uplink string, vid int) string {
	h := fnv.New32a()
	h.Write([]byte(uplink + "." + strconv.Itoa(vid)))
	s := fmt.Sprintf("%08x", h.Sum32())
	if n := maxIfName - len(prefix) - 2; len(s) > n {
		s = s[:n]
	}
	return prefix + "pv" + s
}

func providerMTUOf(p Provider) int {
	if p.MTU == 0 {
		return providerMTU
	}
	return p.MTU
}

// lower is the device a provider's macvlans sit on.
func (p Provider) lower(prefix string) string {
	if p.VLAN == 0 {
		return p.Uplink
	}
	return vlanName(prefix, p.Uplink, p.VLAN)
}

// validateProviders checks the providers; seen holds the VXLAN networks'
// taps and VNIs already checked. A provider network in conflict with one
// before it (the same uplink and VLAN, or a VLAN device name taken) is
// left out and reported in bad, not failing the rest.
func validateProviders(d Desired, prefix string, seen map[any]bool) (ok []Provider, bad *ProvidersFailed, err error) {
	bad = &ProvidersFailed{}
	segs := map[string]bool{}
	vlans := map[string]string{} // VLAN device name → its segment
	for _, pn := range d.Providers {
		seg := pn.Uplink + "." + strconv.Itoa(pn.VLAN)
		if mtu := providerMTUOf(pn); pn.Uplink == "" || len(pn.Uplink) > maxIfName || ours(pn.Uplink, prefix) ||
			pn.VLAN < 0 || pn.VLAN > maxVLAN || mtu < 68 || mtu > 65535 {
			return nil, nil, invalid("provider network %s: uplink %q (1 to %d characters, not ours), VLAN %d (0 to %d), MTU %d",
				pn.ID, pn.Uplink, maxIfName, pn.VLAN, maxVLAN, mtu)
		}
		lower := pn.lower(prefix)
		if segs[seg] {
			bad.add(pn.ID, invalid("provider network %s: VLAN %d of %s is another provider network's", pn.ID, pn.VLAN, pn.Uplink))
			continue
		}
		if other, taken := vlans[lower]; pn.VLAN != 0 && taken && other != seg {
			bad.add(pn.ID, invalid("provider network %s: VLAN device %s is taken by %s", pn.ID, lower, other))
			continue
		}
		segs[seg] = true
		if pn.VLAN != 0 {
			vlans[lower] = seg
		}
		for _, p := range pn.Ports {
			if err := validPort(p, prefix, seen); err != nil {
				return nil, nil, err
			}
			mv := macvlanName(prefix, p.ID)
			if seen[mv] || len(p.MAC) != 6 || p.MAC[0]&1 != 0 {
				return nil, nil, invalid("provider port %s: macvlan %s not unique or MAC %v not unicast", p.ID, mv, p.MAC)
			}
			seen[mv] = true
			for _, s := range p.Sources {
				if !s.Prefix.IsValid() || (len(s.MAC) != 0 && (len(s.MAC) != 6 || s.MAC[0]&1 != 0)) {
					return nil, nil, invalid("provider port %s: source %v %v", p.ID, s.MAC, s.Prefix)
				}
			}
		}
		ok = append(ok, pn)
	}
	return ok, bad, nil
}

// providerWants adds the links the providers need.
func providerWants(d Desired, prefix string, wants map[string]want) {
	for _, pn := range d.Providers {
		if len(pn.Ports) == 0 && !(pn.Routed && pn.VLAN != 0) {
			continue
		}
		lower := pn.lower(prefix)
		if pn.VLAN != 0 {
			wants[lower] = want{kind: KindVLAN, parent: pn.Uplink, vid: pn.VLAN}
		}
		for _, p := range pn.Ports {
			wants[p.Tap] = want{kind: KindTap, mtu: providerMTUOf(pn)}
			wants[macvlanName(prefix, p.ID)] = want{kind: KindMacvlan, parent: lower, mac: p.MAC.String()}
		}
	}
}

// diffProviders creates or fixes the providers' links and wires each
// port's tap to its macvlan. have holds the links that survive the
// deletions; deleted the names deleted by this diff.
func diffProviders(d Desired, have map[string]Link, deleted map[string]bool, prefix string) []Op {
	provs := slices.Clone(d.Providers)
	slices.SortFunc(provs, func(a, b Provider) int { return strings.Compare(a.ID, b.ID) })
	var ops []Op
	created := map[string]bool{}
	upFix := func(name string) {
		if l := have[name]; !l.Up {
			ops = append(ops, Op{Kind: OpSetUp, Link: name})
		}
	}
	for _, pn := range provs {
		if len(pn.Ports) == 0 && !(pn.Routed && pn.VLAN != 0) {
			continue
		}
		first := len(ops)
		lower, mtu := pn.lower(prefix), providerMTUOf(pn)
		if pn.VLAN != 0 {
			if _, ok := have[lower]; ok {
				upFix(lower)
			} else {
				ops = append(ops, Op{Kind: OpAddVLAN, Link: lower, Master: pn.Uplink, VLAN: pn.VLAN})
				created[lower] = true
			}
		}
		ports := slices.Clone(pn.Ports)
		slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.Tap, b.Tap) })
		for i := first; i < len(ops); i++ {
			ops[i].Group = providerGroup + pn.ID
		}
		for _, p := range ports {
			first := len(ops)
			mv := macvlanName(prefix, p.ID)
			if l, ok := have[p.Tap]; !ok {
				ops = append(ops, Op{Kind: OpAddTap, Link: p.Tap, MTU: mtu})
				created[p.Tap] = true
			} else {
				if l.Master != "" {
					ops = append(ops, Op{Kind: OpSetMaster, Link: p.Tap, PrevMaster: l.Master})
				}
				if l.MTU != mtu {
					ops = append(ops, Op{Kind: OpSetMTU, Link: p.Tap, MTU: mtu, PrevMTU: l.MTU})
				}
				upFix(p.Tap)
			}
			if _, ok := have[mv]; !ok {
				ops = append(ops, Op{Kind: OpAddMacvlan, Link: mv, Master: lower, MAC: p.MAC})
				created[mv] = true
			}
			for _, w := range []struct {
				link, peer string
				rules      []wireRule
			}{{p.Tap, mv, tapRules(p)}, {mv, p.Tap, macvlanRules()}} {
				l, ok := have[w.link]
				if !ok || created[w.link] || created[w.peer] || deleted[w.peer] || l.Wire != wireSig(w.rules, w.peer) {
					ops = append(ops, Op{Kind: OpWire, Link: w.link, Peer: w.peer, Rules: w.rules,
						HasIngress: ok && !created[w.link] && l.Ingress})
				}
			}
			// Up only once wired: until then the macvlan would answer
			// nothing but take the guest's frames to the host's stack.
			if created[mv] {
				ops = append(ops, Op{Kind: OpSetUp, Link: mv})
			} else {
				upFix(mv)
			}
			// Each port's ops are a batch of their own: one port that
			// cannot be plumbed leaves its network's other ports working.
			for i := first; i < len(ops); i++ {
				ops[i].Group = providerGroup + pn.ID + "/" + p.ID
			}
		}
	}
	return ops
}

// execProvider performs the provider ops; it returns the op's undo.
func (m *Manager) execProvider(ctx context.Context, op Op, host hostLinks, st *Stats) (func(context.Context) error, error) {
	n := m.nl
	write := func(what string, f func() error) error {
		st.Ops++
		return call(ctx, what+" "+op.Link, f)
	}
	switch op.Kind {
	case OpAddVLAN, OpAddMacvlan:
		parent := host.index[op.Master]
		if parent == 0 {
			return nil, fmt.Errorf("%s: device %q not found: %w", op.Link, op.Master, unix.ENODEV)
		}
		la := netlink.NewLinkAttrs()
		la.Name, la.ParentIndex = op.Link, parent
		var l netlink.Link = &netlink.Vlan{LinkAttrs: la, VlanId: op.VLAN}
		if op.Kind == OpAddMacvlan {
			la.HardwareAddr = op.MAC
			l = &netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}
		}
		if err := write("create", func() error { return n.h.LinkAdd(l) }); err != nil {
			if op.Kind == OpAddVLAN && errors.Is(err, unix.EOPNOTSUPP) {
				err = fmt.Errorf("%w (this kernel has no 802.1Q VLAN support: module 8021q)", err)
			}
			return nil, err
		}
		idx := l.Attrs().Index
		host.index[op.Link] = idx
		undo := func(ctx context.Context) error {
			delete(host.index, op.Link)
			return n.delLink(ctx, op.Link, idx)
		}
		// Both only carry guests' frames: the host must not speak from them
		// (IPv6 with the guest's MAC, ARP answers for its own addresses)
		// nor take input from them.
		err := errors.Join(
			write("no ipv6 addresses on", func() error { return n.h.LinkSetIP6AddrGenMode(ref(idx), addrGenModeNone) }),
			write("quiet", func() error { return n.quiet(op.Link) }))
		if err == nil && op.Kind == OpAddMacvlan {
			// Multicast for the guest (IPv6 neighbour discovery) passes
			// the macvlan's filter only with allmulticast. It goes up once
			// wired (OpSetUp).
			err = write("allmulticast on", func() error { return n.h.LinkSetAllmulticastOn(ref(idx)) })
		} else if err == nil {
			err = write("set up", func() error { return n.h.LinkSetUp(ref(idx)) })
		}
		if err != nil {
			return nil, errors.Join(err, undo(context.WithoutCancel(ctx)))
		}
		return undo, nil

	case OpWire:
		idx, peer := host.index[op.Link], host.index[op.Peer]
		if idx == 0 || peer == 0 {
			return nil, fmt.Errorf("wire %s to %s: device missing: %w", op.Link, op.Peer, unix.ENODEV)
		}
		if !op.HasIngress {
			q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx,
				Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
			if err := write("add ingress qdisc", func() error { return n.h.QdiscAdd(q) }); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, err
			}
		}
		if strings.HasPrefix(op.Link, m.prefix+"pm") {
			// A macvlan made by an older release: allmulticast and quiet
			// as new ones are (both idempotent).
			if err := errors.Join(write("allmulticast on", func() error { return n.h.LinkSetAllmulticastOn(ref(idx)) }),
				write("quiet", func() error { return n.quiet(op.Link) })); err != nil {
				return nil, err
			}
		}
		return nil, n.wire(ctx, op.Link, idx, peer, op.Rules, write)
	}
	return nil, fmt.Errorf("%w: unknown op %v", ErrInvalid, op.Kind)
}

// readWires records, for each of our links with an ingress qdisc, what
// its ingress filters do (one qdisc dump, then one filter dump
// per such link: only provider ports have one).
func (m *Manager) readWires(ctx context.Context, actual *Actual, names map[int]string) error {
	qs, err := dump(ctx, "list qdiscs", func() ([]netlink.Qdisc, error) { return m.nl.h.QdiscList(nil) })
	if err != nil {
		return err
	}
	ingress := map[int]bool{}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_INGRESS {
			ingress[q.Attrs().LinkIndex] = true
		}
	}
	for i := range actual.Links {
		l := &actual.Links[i]
		if !ingress[l.index] {
			continue
		}
		l.Ingress = true
		fs, err := dump(ctx, "list filters of "+l.Name, func() ([]netlink.Filter, error) {
			return m.nl.h.FilterList(ref(l.index), netlink.HANDLE_MIN_INGRESS)
		})
		if err != nil {
			return err
		}
		l.Wire = readSig(fs, names)
	}
	return nil
}
