package netdev

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// readFDB returns the static entries of the given VXLAN devices (index →
// name) from one dump of the bridge-family neighbour table.
func (m *Manager) readFDB(ctx context.Context, vxlans map[int]string) (map[string][]FDBEntry, error) {
	fdb := map[string][]FDBEntry{}
	if len(vxlans) == 0 {
		return fdb, nil
	}
	neighs, err := dump(ctx, "list fdb", func() ([]netlink.Neigh, error) {
		return m.nl.h.NeighListExecute(netlink.Ndmsg{Family: unix.AF_BRIDGE})
	})
	for _, n := range neighs {
		// Bridge (master) entries and device address lists carry no destination.
		if vx, ok := vxlans[n.LinkIndex]; ok && n.Flags&netlink.NTF_SELF != 0 && n.IP != nil && len(n.HardwareAddr) == 6 {
			fdb[vx] = append(fdb[vx], FDBEntry{MAC: n.HardwareAddr, Dst: n.IP})
		}
	}
	return fdb, err
}

func fdbNeigh(index int, mac net.HardwareAddr, dst net.IP) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, HardwareAddr: mac, IP: dst}
}

// execFDB performs one FDB op on the VXLAN device vx and returns its undo.
// Flood entries (all-zeros MAC) are appended, one per remote VTEP: the kernel
// replicates broadcast and unknown unicast to each. Unicast entries are set
// with replace semantics, so a port moving to another host costs one write.
func (m *Manager) execFDB(ctx context.Context, op Op, vx int, st *Stats) (func(context.Context) error, error) {
	h := m.nl.h
	if vx == 0 {
		return nil, fmt.Errorf("vxlan device %s has no index", op.Link)
	}
	del := func(ctx context.Context, dst net.IP) error {
		return call(ctx, fmt.Sprintf("fdb del %v dst %v", op.MAC, dst), func() error {
			if err := h.NeighDel(fdbNeigh(vx, op.MAC, dst)); !gone(err) {
				return err
			}
			return nil
		})
	}
	set := func(ctx context.Context, dst net.IP) error {
		return call(ctx, fmt.Sprintf("fdb set %v dst %v", op.MAC, dst), func() error {
			return h.NeighSet(fdbNeigh(vx, op.MAC, dst))
		})
	}
	st.Ops++
	switch op.Kind {
	case OpFDBDel:
		return nil, del(ctx, op.Dst)
	case OpFDBAppend:
		undo := func(ctx context.Context) error { return del(ctx, op.Dst) }
		return undo, call(ctx, fmt.Sprintf("fdb append %v dst %v", op.MAC, op.Dst), func() error {
			return h.NeighAppend(fdbNeigh(vx, op.MAC, op.Dst))
		})
	case OpFDBSet:
		undo := func(ctx context.Context) error { return del(ctx, op.Dst) }
		if op.PrevDst != nil {
			undo = func(ctx context.Context) error { return set(ctx, op.PrevDst) }
		}
		return undo, set(ctx, op.Dst)
	}
	return nil, fmt.Errorf("unknown op %d", op.Kind)
}
