package firewall

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"reflect"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// editChain queues the change of chain ch from old to want as an edit of
// the rules that differ instead of a rewrite: the old rules between the
// longest common head and tail are deleted by handle and the new ones
// inserted before the tail's first rule (appended when there is no
// tail). A rule added to or removed from a port's groups is then one
// object in the transaction, whatever the number of rules the port has.
// The handles are read back from the kernel and used only when the
// chain holds exactly old, rule for rule by tag; otherwise (changed
// from outside, or written by a release without tags) it reports false,
// queuing nothing, and the caller rewrites the chain.
func (m *Manager) editChain(c *nftables.Conn, ch *nftables.Chain, fam nftables.TableFamily, old, want [][]expr.Any, st *Stats) bool {
	head := 0
	for head < len(old) && head < len(want) && reflect.DeepEqual(old[head], want[head]) {
		head++
	}
	tail := 0
	for tail < len(old)-head && tail < len(want)-head && reflect.DeepEqual(old[len(old)-1-tail], want[len(want)-1-tail]) {
		tail++
	}
	hs, ok := m.readMatching(c, ch, fam, old)
	if !ok {
		return false
	}
	gone, anchor := old[head:len(old)-tail], len(old)-tail
	for i := range gone {
		if err := c.DelRule(&nftables.Rule{Table: ch.Table, Chain: ch, Handle: hs[head+i]}); err != nil {
			return false // only for a zero handle, which readMatching refuses
		}
	}
	for _, r := range want[head : len(want)-tail] {
		nr := &nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r, UserData: tag(fam, r)}
		if tail > 0 {
			nr.Position = hs[anchor]
			c.InsertRule(nr)
		} else {
			c.AddRule(nr)
		}
	}
	st.Rules += len(gone) + len(want) - head - tail
	return true
}

// writeChain queues the rewrite of chain ch with rules: created if it is
// new, else (re-added, in case someone deleted it) flushed first.
func writeChain(c *nftables.Conn, ch *nftables.Chain, fam nftables.TableFamily, rules [][]expr.Any, existed bool, st *Stats) {
	if existed {
		c.AddChain(ch) // a no-op when it exists
		c.FlushChain(ch)
		st.Rules++
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r, UserData: tag(fam, r)})
	}
	st.Rules += len(rules)
}

// readMatching reads chain ch back and returns its rules' handles in
// order when it holds exactly rules (same count, same tag at every
// position); false when it cannot be read or differs.
func (m *Manager) readMatching(c *nftables.Conn, ch *nftables.Chain, fam nftables.TableFamily, rules [][]expr.Any) ([]uint64, bool) {
	got, err := c.GetRules(ch.Table, ch)
	if err != nil {
		m.log.Warn("firewall: rewriting chain: its rules cannot be read", "chain", ch.Name, "err", err)
		return nil, false
	}
	if len(got) != len(rules) {
		m.log.Warn("firewall: rewriting chain changed from outside", "chain", ch.Name, "rules", len(got), "want", len(rules))
		return nil, false
	}
	hs := make([]uint64, len(got))
	for i, r := range got {
		if r.Handle == 0 || !bytes.Equal(r.UserData, tag(fam, rules[i])) {
			m.log.Warn("firewall: rewriting chain changed from outside or by an older release", "chain", ch.Name, "rule", i)
			return nil, false
		}
		hs[i] = r.Handle
	}
	return hs, true
}

// tag is the UserData written with every rule: an nft comment holding a
// short hash of the rule's expressions, by which a chain read back is
// matched with the model rule for rule.
func tag(fam nftables.TableFamily, r []expr.Any) []byte {
	h := fnv.New64a()
	for _, e := range r {
		b, err := expr.Marshal(byte(fam), e)
		if err != nil { // not for an expression AddRule accepts
			b = fmt.Appendf(nil, "%T%v", e, err)
		}
		h.Write(b)
	}
	return userdata.AppendString(nil, userdata.TypeComment, fmt.Sprintf("peerstack:%016x", h.Sum64()))
}
