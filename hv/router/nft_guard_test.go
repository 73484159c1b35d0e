package router

import (
	"testing"

	"github.com/google/nftables/expr"
)

// TestHostGuardDropsProviderVLANInput: the host's input chain drops what
// enters from a provider network's VLAN sub-interface.
func TestHostGuardDropsProviderVLANInput(t *testing.T) {
	chains := hostChains(Desired{Routers: []Router{{ID: "r"}}}, nil)
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
			if ok1 && ok2 && ok3 && m.Key == expr.MetaKeyIIFNAME && string(cmp.Data) == "pspv" && v.Kind == expr.VerdictDrop {
				return
			}
		}
	}
	t.Fatalf("host input chains %v: no drop of iifname pspv*", chains)
}
