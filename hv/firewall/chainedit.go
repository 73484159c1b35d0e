package firewall

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// editChain queues the change of chain k from old to want as an edit of
// the rules that differ instead of a rewrite: the old rules between the
// longest common head and tail are deleted by handle and the new ones
// inserted before the tail's first rule (appended when there is no
// tail). A rule added to or removed from a port's groups is then one
// object in the transaction, whatever the number of rules the port has.
// It reports false, queuing nothing, when the handles it needs cannot be
// read; the caller then rewrites the chain.
func (m *Manager) editChain(c *nftables.Conn, k string, ch *nftables.Chain, old, want [][]expr.Any, st *Stats) bool {
	head := 0
	for head < len(old) && head < len(want) && reflect.DeepEqual(old[head], want[head]) {
		head++
	}
	tail := 0
	for tail < len(old)-head && tail < len(want)-head && reflect.DeepEqual(old[len(old)-1-tail], want[len(want)-1-tail]) {
		tail++
	}
	gone, anchor := old[head:len(old)-tail], len(old)-tail
	adds := want[head : len(want)-tail]
	hs := m.handles[k]
	known := len(hs) == len(old) && !slices.Contains(hs[head:anchor], 0) && (tail == 0 || len(adds) == 0 || hs[anchor] != 0)
	if !known {
		read, err := readHandles(c, ch)
		if err != nil || len(read) != len(old) {
			m.log.Debug("firewall: rewriting chain: its rule handles cannot be read", "chain", ch.Name, "err", err)
			return false
		}
		hs = read
	}
	for i := range gone {
		if err := c.DelRule(&nftables.Rule{Table: ch.Table, Chain: ch, Handle: hs[head+i]}); err != nil {
			return false // only for a zero handle, which the kernel never gives
		}
	}
	for _, r := range adds {
		if tail > 0 {
			c.InsertRule(&nftables.Rule{Table: ch.Table, Chain: ch, Position: hs[anchor], Exprs: r})
		} else {
			c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r})
		}
	}
	st.Rules += len(gone) + len(adds)
	next := slices.Concat(hs[:head], make([]uint64, len(adds)), hs[anchor:])
	m.handles[k] = next
	return true
}

// readHandles returns the handles of a chain's rules in order.
func readHandles(c *nftables.Conn, ch *nftables.Chain) ([]uint64, error) {
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return nil, fmt.Errorf("firewall: list rules of %s: %w", ch.Name, err)
	}
	out := make([]uint64, len(rules))
	for i, r := range rules {
		if r.Handle == 0 {
			return nil, fmt.Errorf("firewall: rule %d of %s has no handle", i, ch.Name)
		}
		out[i] = r.Handle
	}
	return out, nil
}
