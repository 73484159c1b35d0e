package network_test

import (
	"net/http"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// While a member runs a release from before provider networks took part
// in placement, a flat or VLAN network is refused (409) with nothing
// written; a VXLAN network is still created.
func TestProviderNetworkGatedDuringUpgrade(t *testing.T) {
	e := newEnv(t)
	e.b.MustApply(t, statedb.CmdRegisterMember, statedb.Member{ID: "old", Name: "old", Version: "0.1.0"})
	r := e.admin.Do("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{"name": "ext",
		"provider:network_type": "flat", "provider:physical_network": "physnet1", "router:external": true}})
	if r.Status != http.StatusConflict {
		t.Fatalf("flat network during an upgrade = %d %s; want 409", r.Status, r.Body)
	}
	for _, n := range e.b.State().Networks() {
		if n.Name == "ext" {
			t.Fatalf("a refused provider network was written: %+v", n)
		}
	}
	if r := e.admin.Do("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{"name": "tenant"}}); r.Status != http.StatusCreated {
		t.Fatalf("vxlan network during an upgrade = %d %s; want 201", r.Status, r.Body)
	}
}
