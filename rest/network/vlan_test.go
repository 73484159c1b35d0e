package network_test

import (
	"testing"
)

// A VLAN provider network needs a physical network and a segment in
// 1-4094, unique per physical network (Neutron's 400 and 409); the same
// segment on another physical network is another network.
func TestVLANProviderNetwork(t *testing.T) {
	e := newEnv(t)
	vlan := func(name, physnet string, seg any) map[string]any {
		n := map[string]any{"name": name, "provider:network_type": "vlan", "provider:physical_network": physnet}
		if seg != nil {
			n["provider:segmentation_id"] = seg
		}
		return map[string]any{"network": n}
	}
	n := obj(mustStatus(t, e.admin.Do("POST", "/network/v2.0/networks", vlan("v100", "physnet1", 100)), 201), "network")
	if n["provider:network_type"] != "vlan" || n["provider:physical_network"] != "physnet1" || n["provider:segmentation_id"] != float64(100) {
		t.Errorf("vlan network = %v", n)
	}
	neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", vlan("dup", "physnet1", 100)), 409, "VlanIdInUse")
	mustStatus(t, e.admin.Do("POST", "/network/v2.0/networks", vlan("other", "physnet2", 100)), 201)
	for _, bad := range []map[string]any{
		vlan("zero", "physnet1", 0), vlan("big", "physnet1", 4095), vlan("none", "physnet1", nil), vlan("nophys", "", 101),
		{"network": map[string]any{"name": "flatseg", "provider:network_type": "flat", "provider:physical_network": "physnet3", "provider:segmentation_id": 5}},
	} {
		neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", bad), 400, "InvalidInput")
	}
	names := map[string]bool{}
	for _, n := range e.b.State().Networks() {
		names[n.Name] = true
	}
	for _, refused := range []string{"dup", "zero", "big", "none", "nophys", "flatseg"} {
		if names[refused] {
			t.Errorf("refused network %s was written", refused)
		}
	}
}
