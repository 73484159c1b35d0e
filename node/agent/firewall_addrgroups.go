package agent

import (
	"net/netip"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// fwRules translates a stored rule. A rule naming an address group as
// its remote becomes one rule per prefix of the group of the rule's ether
// type: none when the group holds none (it then matches nothing, as in
// Neutron), and a change to the group rewrites the rules of the ports
// whose groups name it.
func fwRules(sn *statedb.Snapshot, r *statedb.SecurityGroupRule) []FwRule {
	fr, ok := fwRule(r)
	if !ok {
		return nil
	}
	if r.RemoteAddressGroupID == "" {
		return []FwRule{fr}
	}
	ag, ok := sn.AddressGroup(r.RemoteAddressGroupID)
	if !ok {
		return nil
	}
	var out []FwRule
	for _, a := range ag.Addresses {
		pfx, err := netip.ParsePrefix(a)
		if err != nil || pfx.Addr().Is6() != fr.IPv6 {
			continue
		}
		x := fr
		x.RemoteIP = pfx
		out = append(out, x)
	}
	return out
}
