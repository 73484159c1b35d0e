package netdev

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strings"
)

// LinkKind is the kind of a device of ours.
type LinkKind uint8

const (
	KindOther LinkKind = iota // carries our prefix but is not what the name promises
	KindBridge
	KindVXLAN
	KindTap
	KindVLAN    // 802.1Q sub-interface of a provider network's uplink
	KindMacvlan // a provider port's way onto the physical network
)

// Link is an existing device carrying our prefix, as read from the host.
type Link struct {
	Name   string
	Kind   LinkKind
	Master string // name of the master device, "" if none
	MTU    int
	Up     bool // administratively up

	// VXLAN only.
	VNI      uint32
	Local    net.IP
	Port     int
	Learning bool
	Underlay string // name of the VTEP device, "" if none

	// Tap only.
	MultiQueue bool

	// VLAN and macvlan: the lower device; VLAN: the VLAN id; macvlan: its
	// MAC and whether it is in bridge mode.
	Parent  string
	VLANID  int
	MAC     net.HardwareAddr
	Bridged bool

	// Ingress: the link has an ingress qdisc; Wire: what its ingress
	// filters do, as wireSig writes it ("" if none).
	Ingress bool
	Wire    string

	index int
}

// FDBEntry is a static forwarding entry of a VXLAN device: frames for MAC
// are sent to the VTEP Dst. The all-zeros MAC is the flood list.
type FDBEntry struct {
	MAC net.HardwareAddr
	Dst net.IP
}

// Actual is the host's state as far as this package is concerned.
type Actual struct {
	Links []Link
	FDB   map[string][]FDBEntry // VXLAN device name → its static entries
}

// OpKind says what an Op does.
type OpKind uint8

const (
	OpDelLink    OpKind = iota + 1 // delete Link
	OpAddBridge                    // create bridge Link with MTU, up
	OpAddVXLAN                     // create VXLAN Link (VNI, Local, Underlay) with MTU, up, in Master
	OpAddTap                       // create persistent tap Link with MTU, up, in Master
	OpSetMaster                    // enslave Link to Master
	OpSetMTU                       // set Link's MTU
	OpSetUp                        // set Link up
	OpFDBDel                       // delete the entry MAC → Dst of VXLAN device Link
	OpFDBAppend                    // append a flood entry (all-zeros MAC) → Dst
	OpFDBSet                       // create or replace the entry MAC → Dst
	OpAddVLAN                      // create 802.1Q Link with id VLAN on Master, up
	OpAddMacvlan                   // create bridge-mode macvlan Link with MAC on Master, down until wired
	OpWire                         // redirect frames entering Link to Peer by Rules, drop the rest (tc ingress)
)

var opNames = [...]string{"?", "del-link", "add-bridge", "add-vxlan", "add-tap", "set-master",
	"set-mtu", "set-up", "fdb-del", "fdb-append", "fdb-set", "add-vlan", "add-macvlan", "wire"}

func (k OpKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("op%d", k)
}

// Op is one step of a reconcile. Prev* fields carry the old value of what the
// op changes, so the executor can undo it.
type Op struct {
	Kind     OpKind
	Link     string
	Master   string
	MTU      int
	VNI      uint32
	Local    net.IP
	Underlay string
	MAC      net.HardwareAddr
	Dst      net.IP

	Group      string     // ops of one provider network carry its id; "" for the rest
	VLAN       int        // OpAddVLAN
	Peer       string     // OpWire
	HasIngress bool       // OpWire: Link already has an ingress qdisc
	Rules      []wireRule // OpWire: the filters redirecting to Peer

	PrevMaster string
	PrevMTU    int
	PrevDst    net.IP // OpFDBSet replacing an entry
}

func (o Op) String() string {
	s := o.Kind.String() + " " + o.Link
	if o.VLAN != 0 {
		s += fmt.Sprintf(" vlan %d", o.VLAN)
	}
	if o.Peer != "" {
		s += " to " + o.Peer
	}
	if o.VNI != 0 {
		s += fmt.Sprintf(" vni %d local %v dev %q", o.VNI, o.Local, o.Underlay)
	}
	if o.Master != "" {
		s += " master " + o.Master
	}
	if o.MTU != 0 {
		s += fmt.Sprintf(" mtu %d", o.MTU)
	}
	if o.MAC != nil {
		s += fmt.Sprintf(" %v dst %v", o.MAC, o.Dst)
	}
	return s
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// want is the desired shape of one link.
type want struct {
	kind   LinkKind
	master string
	mtu    int
	vni    uint32
	parent string // VLAN, macvlan
	vid    int    // VLAN
	mac    string // macvlan
}

// Diff computes the ordered operations that turn actual into desired. It is
// pure, and assumes desired is valid (Apply checks it first). Only links whose names carry prefix are considered (Actual should
// hold nothing else). Order: unwanted or incompatible links are deleted (taps,
// then VXLAN devices, then bridges); then per network, by VNI: stale FDB
// entries are deleted, the bridge, VXLAN device and taps are created or
// fixed, and missing FDB entries are added.
func Diff(actual Actual, desired Desired, prefix string) []Op {
	nets := plumbed(desired)
	wants := map[string]want{}
	for _, n := range nets {
		br, vx, mtu := bridgeName(prefix, n.VNI), vxlanName(prefix, n.VNI), networkMTU(n)
		wants[br] = want{kind: KindBridge, mtu: mtu}
		wants[vx] = want{kind: KindVXLAN, master: br, mtu: mtu, vni: n.VNI}
		for _, p := range n.Ports {
			wants[p.Tap] = want{kind: KindTap, master: br, mtu: mtu}
		}
	}
	providerWants(desired, prefix, wants)

	have := map[string]Link{}
	for _, l := range actual.Links {
		if ours(l.Name, prefix) {
			have[l.Name] = l
		}
	}
	var ops []Op
	// Delete what is unwanted or cannot be fixed in place.
	var dels []Link
	for _, l := range have {
		w, ok := wants[l.Name]
		if !ok || !compatible(l, w, desired) {
			dels = append(dels, l)
		}
	}
	deleted := map[string]bool{}
	for _, l := range dels {
		deleted[l.Name] = true
	}
	// A deleted lower device takes its macvlans and VLANs with it.
	for name, l := range have {
		if l.Parent != "" && deleted[l.Parent] && !deleted[name] {
			deleted[name] = true
			dels = append(dels, l)
		}
	}
	slices.SortFunc(dels, func(a, b Link) int {
		if c := delRank[a.Kind] - delRank[b.Kind]; c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, l := range dels {
		ops = append(ops, Op{Kind: OpDelLink, Link: l.Name})
		delete(have, l.Name)
	}
	// A deleted master releases its slaves.
	for name, l := range have {
		if _, ok := have[l.Master]; l.Master != "" && !ok {
			l.Master = ""
			have[name] = l
		}
	}

	for _, n := range nets {
		ops = append(ops, diffNetwork(n, have, actual.FDB, desired.LocalVTEP, desired.UnderlayDev, prefix)...)
	}
	return append(ops, diffProviders(desired, have, deleted, prefix)...)
}

// plumbed returns the networks with local ports, sorted by VNI, ports by tap.
func plumbed(d Desired) []Network {
	var nets []Network
	for _, n := range d.Networks {
		if len(n.Ports) == 0 && !n.Routed {
			continue
		}
		n.Ports = slices.Clone(n.Ports)
		slices.SortFunc(n.Ports, func(a, b Port) int { return strings.Compare(a.Tap, b.Tap) })
		nets = append(nets, n)
	}
	slices.SortFunc(nets, func(a, b Network) int { return cmp.Compare(a.VNI, b.VNI) })
	return nets
}

func ours(name, prefix string) bool {
	for _, k := range []string{"br", "vx", "tap", "pm", "pv"} {
		if strings.HasPrefix(name, prefix+k) {
			return true
		}
	}
	return false
}

// delRank orders deletions: ports before the devices they are enslaved to.
var delRank = [...]int{KindTap: 0, KindMacvlan: 0, KindVXLAN: 1, KindVLAN: 1, KindOther: 2, KindBridge: 3}

// compatible says whether l can become w without being recreated.
func compatible(l Link, w want, d Desired) bool {
	if l.Kind != w.kind {
		return false
	}
	switch l.Kind {
	case KindVXLAN:
		return l.VNI == w.vni && l.Local.Equal(d.LocalVTEP) && l.Port == VXLANPort &&
			!l.Learning && l.Underlay == d.UnderlayDev
	case KindTap:
		return !l.MultiQueue
	case KindVLAN:
		return l.Parent == w.parent && l.VLANID == w.vid
	case KindMacvlan:
		return l.Parent == w.parent && l.MAC.String() == w.mac && l.Bridged
	}
	return true
}

func diffNetwork(n Network, have map[string]Link, fdb map[string][]FDBEntry, local net.IP, underlay, prefix string) []Op {
	br, vx, mtu := bridgeName(prefix, n.VNI), vxlanName(prefix, n.VNI), networkMTU(n)
	var ops, fixes []Op
	fix := func(name string, master string) {
		l := have[name]
		if master != "" && l.Master != master {
			fixes = append(fixes, Op{Kind: OpSetMaster, Link: name, Master: master, PrevMaster: l.Master})
		}
		if l.MTU != mtu {
			fixes = append(fixes, Op{Kind: OpSetMTU, Link: name, MTU: mtu, PrevMTU: l.MTU})
		}
		if !l.Up {
			fixes = append(fixes, Op{Kind: OpSetUp, Link: name})
		}
	}

	// FDB: deletions first, additions last.
	var entries []FDBEntry
	if _, ok := have[vx]; ok {
		entries = fdb[vx]
	}
	fdel, fadd := diffFDB(entries, n, local, vx)
	ops = append(ops, fdel...)

	if _, ok := have[br]; !ok {
		ops = append(ops, Op{Kind: OpAddBridge, Link: br, MTU: mtu})
	}
	if _, ok := have[vx]; !ok {
		ops = append(ops, Op{Kind: OpAddVXLAN, Link: vx, Master: br, MTU: mtu, VNI: n.VNI, Local: local, Underlay: underlay})
	} else {
		fix(vx, br)
	}
	for _, p := range n.Ports {
		if _, ok := have[p.Tap]; !ok {
			ops = append(ops, Op{Kind: OpAddTap, Link: p.Tap, Master: br, MTU: mtu})
		} else {
			fix(p.Tap, br)
		}
	}
	if _, ok := have[br]; ok {
		fix(br, "") // after the ports, so an MTU change lowers the ports first
	}
	ops = append(ops, fixes...)
	return append(ops, fadd...)
}

// diffFDB compares a VXLAN device's entries with the network's remotes.
// Keys are the raw bytes of MACs and IPv4 addresses: cheap, and they sort in
// address order.
func diffFDB(entries []FDBEntry, n Network, local net.IP, vx string) (dels, adds []Op) {
	zero := string(zeroMAC)
	haveFlood := map[string]net.IP{}
	haveMAC := map[string][]net.IP{} // MAC → dsts, in table order
	for _, e := range entries {
		if k := string(e.MAC); k != zero {
			haveMAC[k] = append(haveMAC[k], e.Dst)
		} else {
			haveFlood[string(e.Dst.To4())] = e.Dst
		}
	}
	wantFlood := map[string]net.IP{}
	for _, r := range n.Remotes {
		if !r.Equal(local) {
			wantFlood[string(r.To4())] = r
		}
	}
	wantMAC := map[string]net.IP{}
	for _, r := range n.MACs {
		if !r.VTEP.Equal(local) {
			wantMAC[string(r.MAC)] = r.VTEP
		}
	}

	for _, k := range sortedKeys(haveFlood) {
		if _, ok := wantFlood[k]; !ok {
			dels = append(dels, Op{Kind: OpFDBDel, Link: vx, MAC: zeroMAC, Dst: haveFlood[k]})
		}
	}
	for _, k := range sortedKeys(wantFlood) {
		if _, ok := haveFlood[k]; !ok {
			adds = append(adds, Op{Kind: OpFDBAppend, Link: vx, MAC: zeroMAC, Dst: wantFlood[k]})
		}
	}
	for _, k := range sortedKeys(haveMAC) {
		dsts, mac := haveMAC[k], net.HardwareAddr(k)
		keep := -1 // index of the dst that stays, or gets replaced in place
		if w, ok := wantMAC[k]; ok {
			if keep = slices.IndexFunc(dsts, w.Equal); keep < 0 {
				keep = 0
				adds = append(adds, Op{Kind: OpFDBSet, Link: vx, MAC: mac, Dst: w, PrevDst: dsts[0]})
			}
		}
		for i, d := range dsts {
			if i != keep {
				dels = append(dels, Op{Kind: OpFDBDel, Link: vx, MAC: mac, Dst: d})
			}
		}
	}
	for _, k := range sortedKeys(wantMAC) {
		if _, ok := haveMAC[k]; !ok {
			adds = append(adds, Op{Kind: OpFDBSet, Link: vx, MAC: net.HardwareAddr(k), Dst: wantMAC[k]})
		}
	}
	return dels, adds
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
