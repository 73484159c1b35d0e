package netdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Manager converges one host's (or one namespace's) tenant network devices
// to a desired state and runs the DHCP responders of its local ports. It is
// safe for concurrent use; Apply, Cleanup and Close are serialised.
type Manager struct {
	prefix    string
	log       *slog.Logger
	leaseTime time.Duration
	nl        *nlh

	mu     sync.Mutex
	closed bool
	dhcp   map[string]*responder // by tap name
}

// New returns a Manager. It opens a netlink socket in cfg.NetNS (or the
// current namespace) and changes nothing on the host.
func New(cfg Config) (*Manager, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if err := validPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultWait
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = defaultTerm
	}
	ns := netns.None()
	if cfg.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, wrap("open network namespace "+cfg.NetNS, err)
		}
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err == nil {
		if err = h.SetSocketTimeout(cfg.Timeout); err != nil {
			h.Close()
		}
	}
	if err != nil {
		ns.Close()
		return nil, wrap("open netlink socket", err)
	}
	return &Manager{prefix: cfg.Prefix, log: cfg.Logger.With("component", "netdev"),
		leaseTime: cfg.LeaseTime, nl: &nlh{h: h, ns: ns}, dhcp: map[string]*responder{}}, nil
}

// Apply converges the host to d: it reads the actual state, computes Diff,
// executes the operations (undoing creations and changes if a step fails)
// and then starts and stops DHCP responders to match d's ports.
func (m *Manager) Apply(ctx context.Context, d Desired) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st Stats
	if m.closed {
		return st, ErrClosed
	}
	d, failed, err := validate(d, m.prefix)
	if err != nil {
		return st, err
	}
	actual, host, err := m.read(ctx)
	if err != nil {
		return st, err
	}
	// Each provider network's own ops (its VLAN device), and each of its
	// ports' ops, run as a batch of their own: one that fails (no 802.1Q
	// in the kernel, its interface missing) is undone alone and leaves the
	// other networks and ports plumbed; a failed network's ports wait.
	var errs []error
	touched := map[string]bool{}
	for _, batch := range batches(Diff(actual, d, m.prefix)) {
		id, provider := strings.CutPrefix(batch[0].Group, providerGroup)
		network, port, isPort := strings.Cut(id, "/")
		if provider && isPort && failed.Cause(network) != nil {
			continue // its network failed: nothing to wire to
		}
		t, err := m.execute(ctx, batch, host, &st)
		switch {
		case provider && err != nil && isPort:
			failed.addPort(port, err)
		case provider && err != nil:
			failed.add(network, err)
		default:
			errs = append(errs, err)
		}
		for k := range t {
			touched[k] = true
		}
	}
	if err = errors.Join(append(errs, m.syncDHCP(ctx, d, host, touched, &st))...); err != nil {
		return st, errors.Join(err, failed.orNil())
	}
	if err := failed.orNil(); err != nil {
		return st, err
	}
	if st.Ops > 0 {
		m.log.Info("network devices converged", "stats", st)
	}
	return st, nil
}

// Close stops the DHCP responders and releases the netlink socket. It does
// not delete devices: VMs keep running across daemon restarts.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.stopAllDHCP()
	m.nl.h.Close()
	if m.nl.ns.IsOpen() {
		return m.nl.ns.Close()
	}
	return nil
}

// Cleanup stops the DHCP responders and deletes every device carrying the
// prefix (taps, then VXLAN devices, then bridges).
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.stopAllDHCP()
	actual, host, err := m.read(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, op := range Diff(Actual{Links: actual.Links}, Desired{}, m.prefix) {
		errs = append(errs, m.nl.delLink(ctx, op.Link, host.index[op.Link]))
	}
	return errors.Join(errs...)
}

// batches splits ops by Op.Group, keeping their order.
func batches(ops []Op) [][]Op {
	var out [][]Op
	at := map[string]int{}
	for _, op := range ops {
		i, ok := at[op.Group]
		if !ok {
			i, at[op.Group] = len(out), len(out)
			out = append(out, nil)
		}
		out[i] = append(out[i], op)
	}
	return out
}

// hostLinks is what the executor knows of the namespace's links; it keeps it
// current as it creates and deletes links.
type hostLinks struct {
	index map[string]int              // every link, by name
	mac   map[string]net.HardwareAddr // our taps, by name
}

// read returns the actual state (our links and the FDB of our VXLAN devices).
func (m *Manager) read(ctx context.Context) (Actual, hostLinks, error) {
	host := hostLinks{index: map[string]int{}, mac: map[string]net.HardwareAddr{}}
	links, err := dump(ctx, "list links", m.nl.h.LinkList)
	if err != nil {
		return Actual{}, host, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index], host.index[l.Attrs().Name] = l.Attrs().Name, l.Attrs().Index
	}
	var actual Actual
	vxlans := map[int]string{}
	for _, nl := range links {
		a := nl.Attrs()
		if !ours(a.Name, m.prefix) {
			continue
		}
		l := Link{Name: a.Name, Master: names[a.MasterIndex], MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, index: a.Index}
		is := func(kind string) bool { return strings.HasPrefix(a.Name, m.prefix+kind) }
		switch v := nl.(type) {
		case *netlink.Bridge:
			if is("br") {
				l.Kind = KindBridge
			}
		case *netlink.Vxlan:
			if is("vx") {
				l.Kind, vxlans[a.Index] = KindVXLAN, a.Name
			}
			l.VNI, l.Local, l.Port, l.Learning = uint32(v.VxlanId), v.SrcAddr, v.Port, v.Learning
			l.Underlay = names[v.VtepDevIndex]
		case *netlink.Tuntap:
			if is("tap") && v.Mode == netlink.TUNTAP_MODE_TAP {
				l.Kind, host.mac[a.Name] = KindTap, a.HardwareAddr
			}
			l.MultiQueue = v.Flags&netlink.TUNTAP_MULTI_QUEUE != 0
		case *netlink.Vlan:
			if is("pv") {
				l.Kind = KindVLAN
			}
			l.Parent, l.VLANID = names[a.ParentIndex], v.VlanId
		case *netlink.Macvlan:
			if is("pm") {
				l.Kind = KindMacvlan
			}
			l.Parent, l.MAC, l.Bridged = names[a.ParentIndex], a.HardwareAddr, v.Mode == netlink.MACVLAN_MODE_BRIDGE
		}
		actual.Links = append(actual.Links, l)
	}
	if err := m.readWires(ctx, &actual, names); err != nil {
		return actual, host, err
	}
	actual.FDB, err = m.readFDB(ctx, vxlans)
	return actual, host, err
}

// execute performs ops in order. Each creation or change registers its undo
// once it succeeded; on the first failure the undos run in reverse. It
// returns the taps it created or deleted (their DHCP sockets must be redone).
func (m *Manager) execute(ctx context.Context, ops []Op, host hostLinks, st *Stats) (map[string]bool, error) {
	touched := map[string]bool{}
	var undo []func(context.Context) error
	for _, op := range ops {
		m.log.Debug("netdev op", "op", op.String())
		u, err := m.exec(ctx, op, host, st, touched)
		if err != nil {
			err = fmt.Errorf("%v: %w", op, err)
			for i := len(undo) - 1; i >= 0; i-- {
				if uerr := undo[i](context.WithoutCancel(ctx)); uerr != nil {
					err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
				}
			}
			return touched, err
		}
		st.count(op.Kind)
		if u != nil {
			undo = append(undo, func(ctx context.Context) error { st.Ops++; return u(ctx) })
		}
	}
	return touched, nil
}

// count records a successful op.
func (st *Stats) count(k OpKind) {
	switch k {
	case OpDelLink:
		st.Deleted++
	case OpAddBridge, OpAddVXLAN, OpAddTap, OpAddVLAN, OpAddMacvlan:
		st.Created++
	case OpSetMaster, OpSetMTU, OpSetUp, OpWire:
		st.Updated++
	case OpFDBDel:
		st.FDBDeleted++
	default:
		st.FDBAdded++
	}
}

// exec performs one op and returns its undo (nil when there is none).
func (m *Manager) exec(ctx context.Context, op Op, host hostLinks, st *Stats, touched map[string]bool) (func(context.Context) error, error) {
	n, idx := m.nl, host.index[op.Link]
	write := func(what string, f func() error) error {
		st.Ops++
		return call(ctx, what+" "+op.Link, f)
	}
	undoCreate := func(ctx context.Context) error {
		delete(host.index, op.Link)
		return n.delLink(ctx, op.Link, idx)
	}
	switch op.Kind {
	case OpDelLink:
		st.Ops++
		if err := n.delLink(ctx, op.Link, idx); err != nil {
			return nil, err
		}
		delete(host.index, op.Link)
		delete(host.mac, op.Link)
		touched[op.Link] = true
		return nil, nil

	case OpAddBridge, OpAddVXLAN:
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.Flags = op.Link, op.MTU, net.FlagUp
		var l netlink.Link = &netlink.Bridge{LinkAttrs: la}
		if op.Kind == OpAddVXLAN {
			vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: int(op.VNI), SrcAddr: op.Local, Port: VXLANPort}
			if vx.VtepDevIndex = host.index[op.Underlay]; op.Underlay != "" && vx.VtepDevIndex == 0 {
				return nil, fmt.Errorf("%w: underlay device %q not found", ErrInvalid, op.Underlay)
			}
			l = vx
		}
		if err := write("create", func() error { return n.h.LinkAdd(l) }); err != nil {
			return nil, err
		}
		idx = l.Attrs().Index
		host.index[op.Link] = idx
		if op.Kind == OpAddVXLAN {
			if err := write("enslave", func() error { return n.setMaster(idx, host.index[op.Master]) }); err != nil {
				return nil, errors.Join(err, undoCreate(context.WithoutCancel(ctx)))
			}
		}
		return undoCreate, nil

	case OpAddTap:
		if err := write("create", func() error { return n.inNS(func() error { return createTap(op.Link) }) }); err != nil {
			return nil, err
		}
		touched[op.Link] = true
		l, err := n.h.LinkByName(op.Link)
		err = wrap("get "+op.Link, err)
		if err == nil {
			idx = l.Attrs().Index
			host.index[op.Link], host.mac[op.Link] = idx, l.Attrs().HardwareAddr
			err = errors.Join(
				write("set mtu", func() error { return n.h.LinkSetMTU(ref(idx), op.MTU) }),
				write("enslave", func() error { return n.setMaster(idx, host.index[op.Master]) }),
				write("set up", func() error { return n.h.LinkSetUp(ref(idx)) }))
		}
		if err != nil {
			return nil, errors.Join(err, undoCreate(context.WithoutCancel(ctx)))
		}
		return undoCreate, nil

	case OpSetMaster:
		master, prev := host.index[op.Master], host.index[op.PrevMaster]
		return func(ctx context.Context) error {
			return call(ctx, "re-enslave "+op.Link, func() error { return n.setMaster(idx, prev) })
		}, write("enslave", func() error { return n.setMaster(idx, master) })

	case OpSetMTU:
		return func(ctx context.Context) error {
			return call(ctx, "reset mtu "+op.Link, func() error { return n.h.LinkSetMTU(ref(idx), op.PrevMTU) })
		}, write("set mtu", func() error { return n.h.LinkSetMTU(ref(idx), op.MTU) })

	case OpSetUp:
		return nil, write("set up", func() error { return n.h.LinkSetUp(ref(idx)) })

	case OpAddVLAN, OpAddMacvlan, OpWire:
		return m.execProvider(ctx, op, host, st)
	}
	return m.execFDB(ctx, op, idx, st)
}
