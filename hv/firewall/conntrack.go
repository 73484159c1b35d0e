package firewall

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// cutFlows deletes the conntrack entries of the narrowed ports that their
// current rules no longer allow (all of them for ports that are gone).
// It returns the number deleted and of ports looked at.
func (m *Manager) cutFlows(old, cur *model, narrowed map[string]bool, groups map[string][]netip.Addr) (int, int, error) {
	type target struct {
		p     *Port
		gone  bool
		addrs map[netip.Addr]bool
	}
	var ts []target
	for id := range narrowed {
		p, ok := cur.ports[id]
		gone := !ok
		if gone {
			if p, ok = old.ports[id]; !ok {
				continue
			}
		}
		t := target{p: p, gone: gone, addrs: map[netip.Addr]bool{}}
		for _, a := range p.IPs {
			t.addrs[a.Unmap()] = true
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return 0, 0, nil
	}
	members := map[string]map[netip.Addr]bool{}
	for g, as := range groups {
		members[g] = map[netip.Addr]bool{}
		for _, a := range as {
			members[g][a.Unmap()] = true
		}
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: m.cfg.NetNS})
	if err != nil {
		return 0, len(ts), permission(fmt.Errorf("firewall: conntrack: %w", err))
	}
	defer ct.Close()
	flows, err := ct.Dump(nil)
	if err != nil {
		return 0, len(ts), fmt.Errorf("firewall: conntrack dump: %w", err)
	}
	n := 0
	for _, f := range flows {
		o := f.TupleOrig
		src, dst := o.IP.SourceAddress.Unmap(), o.IP.DestinationAddress.Unmap()
		for _, t := range ts {
			if f.Zone != t.p.Zone || !t.p.Stateful && !t.gone {
				continue
			}
			var keep bool
			switch {
			case t.addrs[src]:
				keep = !t.gone && allows(t.p, false, dst, o.Proto, members)
			case t.addrs[dst]:
				keep = !t.gone && allows(t.p, true, src, o.Proto, members)
			default:
				continue
			}
			if keep {
				continue
			}
			if err := ct.Delete(f); err != nil {
				m.log.Debug("firewall: delete flow", "flow", f.TupleOrig.String(), "err", err)
				continue
			}
			n++
			break
		}
	}
	return n, len(ts), nil
}

// allows evaluates a port's rules for the first packet of a connection
// as the nftables chains do.
func allows(p *Port, ingress bool, remote netip.Addr, pt conntrack.ProtoTuple, members map[string]map[netip.Addr]bool) bool {
	for _, r := range p.Rules {
		if r.Ingress != ingress || r.IPv6 != remote.Is6() {
			continue
		}
		switch {
		case r.RemoteGroup != "":
			if !members[r.RemoteGroup][remote] {
				continue
			}
		case r.RemoteIP.IsValid() && r.RemoteIP.Bits() > 0:
			if !r.RemoteIP.Contains(remote) {
				continue
			}
		}
		if r.Proto == ProtoAny {
			return true
		}
		if int(pt.Protocol) != r.Proto {
			continue
		}
		switch {
		case r.Proto == ProtoICMP || r.Proto == ProtoICMPv6:
			if (r.PortMin < 0 || int(pt.ICMPType) == r.PortMin) && (r.PortMin < 0 || r.PortMax < 0 || int(pt.ICMPCode) == r.PortMax) {
				return true
			}
		case r.PortMin > 0 || r.PortMax > 0:
			hi := max(r.PortMax, r.PortMin)
			if int(pt.DestinationPort) >= r.PortMin && int(pt.DestinationPort) <= hi {
				return true
			}
		default:
			return true
		}
	}
	return false
}
