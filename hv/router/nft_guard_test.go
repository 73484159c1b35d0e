package router

import (
	"testing"

	"github.com/google/nftables/expr"
)

// TestHostGuardDropsProviderVLANInput: the host's input chain drops what
// enters from a provider network's VLAN sub-interface.
func TestHostGuardDropsProviderVLANInput(t *testing.T) {
	for _, tt := range []struct{ prefix, want string }{{"", "pspv"}, {"xypv", "xypv"}} {
		hostGuardDrops(t, Desired{Routers: []Router{{ID: "r"}}, ProviderVLANPrefix: tt.prefix}, tt.want)
	}
}

func hostGuardDrops(t *testing.T, d Desired, want string) {
	t.Helper()
	chains := hostChains(d, nil)
	for _, c := range chains {
		if c.name != "input" {
			continue
		}
		for _, r := range c.rules {
			if len(r) != 3 {
				continue
			}
			m, ok1 := r[0].(*expr.Meta)
			cmp, ok2 := r[1].(*expr.Cmp)
			v, ok3 := r[2].(*expr.Verdict)
			if ok1 && ok2 && ok3 && m.Key == expr.MetaKeyIIFNAME && string(cmp.Data) == want && v.Kind == expr.VerdictDrop {
				return
			}
		}
	}
	t.Fatalf("host input chains %v: no drop of iifname %s*", chains, want)
}
