package network_test

import (
	"testing"
)

func TestNetworkQuotas(t *testing.T) {
	e := newEnv(t)
	q := "/network/v2.0/quotas/" + e.demoProject.ID

	got := obj(mustStatus(t, e.demo.Do("GET", q, nil), 200), "quota")
	for k, v := range map[string]float64{"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50, "security_group": 10, "security_group_rule": 100} {
		if got[k] != v {
			t.Errorf("quota[%s] = %v, want %v", k, got[k], v)
		}
	}
	neutronError(t, e.other.Do("GET", q, nil), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("PUT", q, map[string]any{"quota": map[string]any{"network": 1}}), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("DELETE", q, nil), 403, "PolicyNotAuthorized")

	// network=1, port=-1 (unlimited): the second network is OverQuota.
	got = obj(mustStatus(t, e.admin.Do("PUT", q, map[string]any{"quota": map[string]any{"network": 1, "port": -1, "subnet": "2"}}), 200), "quota")
	if got["network"] != 1.0 || got["port"] != -1.0 || got["subnet"] != 2.0 {
		t.Errorf("PUT answer %v", got)
	}
	n := create(t, e.demo, "networks", "network", map[string]any{"name": "n1"})
	neutronError(t, e.demo.Do("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{"name": "n2"}}), 409, "OverQuota")
	r := e.demo.Do("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{"name": "n2"}})
	if m := r.JSON(t)["NeutronError"].(map[string]any)["message"]; m != "Quota exceeded for resources: ['network']." {
		t.Errorf("OverQuota message %q", m)
	}
	for range 3 {
		create(t, e.demo, "ports", "port", map[string]any{"network_id": n["id"]})
	}

	d := obj(mustStatus(t, e.demo.Do("GET", q+"/details", nil), 200), "quota")
	for k, want := range map[string][3]float64{"network": {1, 1, 0}, "port": {3, -1, 0}, "router": {0, 10, 0}, "security_group": {0, 10, 0}} {
		v, _ := d[k].(map[string]any)
		if v["used"] != want[0] || v["limit"] != want[1] || v["reserved"] != want[2] {
			t.Errorf("details[%s] = %v, want used/limit/reserved %v", k, v, want)
		}
	}
	mustStatus(t, e.demo.Do("GET", q+"/details.json", nil), 200) // gophercloud's path

	def := obj(mustStatus(t, e.demo.Do("GET", q+"/default", nil), 200), "quota")
	if def["network"] != 100.0 || def["project_id"] != e.demoProject.ID {
		t.Errorf("default = %v", def)
	}
	list := items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/quotas", nil), 200), "quotas")
	if len(list) != 1 || list[0]["project_id"] != e.demoProject.ID {
		t.Errorf("list = %v", list)
	}
	neutronError(t, e.demo.Do("GET", "/network/v2.0/quotas", nil), 403, "PolicyNotAuthorized")

	for _, bad := range []map[string]any{{"bogus": 1}, {"network": -5}, {"network": "x"}, {"network": 1.5}} {
		neutronError(t, e.admin.Do("PUT", q, map[string]any{"quota": bad}), 400, "InvalidInput")
	}
	neutronError(t, e.admin.Do("PUT", q, map[string]any{"network": 1}), 400, "InvalidInput")

	mustStatus(t, e.admin.Do("DELETE", q, nil), 204)
	if got := obj(mustStatus(t, e.demo.Do("GET", q, nil), 200), "quota"); got["network"] != 100.0 {
		t.Errorf("after delete network = %v", got["network"])
	}
	create(t, e.demo, "networks", "network", map[string]any{"name": "n2"})
}
