package statedb

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Which hosts map a physical network, as an index of the host_networks
// table: every physical network a host maps to an interface (the test of
// MapsPhysnets) is one key of its row. go-memdb keeps it through every
// insert, replace and delete of a row and rebuilds it on Restore, so a
// placement needing physical networks can list the hosts that may take it
// without reading every host's mapping.

// idxPhysnet names the index: a physical network → the rows mapping it.
const idxPhysnet = "physnet"

// withIndex adds a non-unique index that rows may be missing from.
func withIndex(t table, name string, ix memdb.Indexer) table {
	t.schema.Indexes[name] = &memdb.IndexSchema{Name: name, AllowMissing: true, Indexer: ix}
	return t
}

// physnetIndexer indexes a *HostNetworks by the physical networks it maps
// to an interface; one mapped to "" maps nothing (MapsPhysnets).
type physnetIndexer struct{}

func (physnetIndexer) FromObject(obj any) (bool, [][]byte, error) {
	h, ok := obj.(*HostNetworks)
	if !ok {
		return false, nil, fmt.Errorf("physnet index: %T is not a *HostNetworks", obj)
	}
	var keys [][]byte
	for name, dev := range h.Physnets {
		if name != "" && dev != "" {
			keys = append(keys, []byte(name+"\x00"))
		}
	}
	slices.SortFunc(keys, func(a, b []byte) int { return slices.Compare(a, b) })
	return len(keys) > 0, keys, nil
}

func (physnetIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("physnet index: want one argument, got %d", len(args))
	}
	name, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("physnet index: argument %#v is not a string", args[0])
	}
	return []byte(name + "\x00"), nil
}

// HostsMapping lists, by host id, the reports (HostNetworks) of the hosts
// that map every one of need to an interface: the hosts MapsPhysnets lets
// take an instance needing them (all reports for an empty need). It reads
// only the rows mapping need[0], through the index, and applies
// MapsPhysnets to those. A report outlives its host's membership, so
// callers placing instances still want members.
func (sn *Snapshot) HostsMapping(need []string) []*HostNetworks {
	if len(need) == 0 {
		return list[HostNetworks](sn, tblHostNets)
	}
	var out []*HostNetworks
	for _, h := range listBy[HostNetworks](sn, tblHostNets, idxPhysnet, need[0]) {
		if MapsPhysnets(h.Physnets, need) {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *HostNetworks) int { return strings.Compare(a.ID, b.ID) })
	return out
}
