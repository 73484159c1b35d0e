package firewall

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// TestChainEditKeepsOrder: rules added to and removed from a port's
// groups edit its chain in place — one rule object for one rule — and
// the kernel's chain holds exactly the model's rules in the model's order
// after every change, including changes of several rules at once.
func TestChainEditKeepsOrder(t *testing.T) {
	h := newHost(t)
	v := h.addVM(t, 1)
	rnd := rand.New(rand.NewPCG(1, 2))
	on := map[int]bool{}
	rules := func() []Rule {
		out := []Rule{anyV4}
		for p := range 12 {
			if on[p] {
				out = append(out, tcp(true, 7000+p, 7000+p))
			}
		}
		return out
	}
	h.apply(t, nil, h.port(v, true, rules()...))
	for step := range 40 {
		n := 1
		if step%5 == 4 {
			n = 2 + rnd.IntN(3)
		}
		for range n {
			p := rnd.IntN(12)
			on[p] = !on[p]
		}
		st := h.apply(t, nil, h.port(v, true, rules()...))
		if st.Tx != 1 {
			t.Fatalf("step %d: stats %+v; want one transaction", step, st)
		}
		if n == 1 && st.Rules != 1 {
			t.Fatalf("step %d: one rule toggled wrote %d rule objects; want 1", step, st.Rules)
		}
		key := chainKey(nftables.TableFamilyBridge, "i-p-v1")
		want := h.m.cur.chains[key].rules
		var got [][]expr.Any
		if err := h.ns.do(t, func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			rs, err := c.GetRules(h.m.brT, &nftables.Chain{Name: "i-p-v1", Table: h.m.brT})
			for _, r := range rs {
				got = append(got, r.Exprs)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(fingerprints(got), fingerprints(want)) {
			t.Fatalf("step %d: kernel chain\n%s\nwant\n%s", step, strings.Join(fingerprints(got), "\n"), strings.Join(fingerprints(want), "\n"))
		}
	}
}

// fingerprints identifies rules by what they compare with and their
// verdicts, which survive the trip through the kernel unchanged.
func fingerprints(rules [][]expr.Any) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		var b strings.Builder
		for _, e := range r {
			switch e := e.(type) {
			case *expr.Cmp:
				b.WriteString(hex.EncodeToString(e.Data) + " ")
			case *expr.Verdict:
				b.WriteString(e.Chain + "/" + strconv.Itoa(int(e.Kind)) + " ")
			}
		}
		out[i] = b.String()
	}
	return out
}
