package network_test

import (
	"fmt"
	"sync"
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

	// The ports made the default group: it and its 4 rules count.
	d := obj(mustStatus(t, e.demo.Do("GET", q+"/details", nil), 200), "quota")
	for k, want := range map[string][3]float64{"network": {1, 1, 0}, "port": {3, -1, 0}, "router": {0, 10, 0}, "security_group": {1, 10, 0}, "security_group_rule": {4, 100, 0}} {
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

// TestNetworkServiceQuotas: routers, floating IPs, security groups and
// rules are counted in /details and refused with OverQuota; concurrent
// creates never go past a limit; a project whose group limits are spent
// still gets its default group with its first port.
func TestNetworkServiceQuotas(t *testing.T) {
	e := newEnv(t)
	extID, _ := extNet(t, e)
	netID, _ := netWithSubnet(t, e.demo, "n1", "10.0.1.0/24")
	q := "/network/v2.0/quotas/" + e.demoProject.ID
	mustStatus(t, e.admin.Do("PUT", q, map[string]any{"quota": map[string]any{
		"router": 3, "floatingip": 2, "security_group": 0, "security_group_rule": 0}}), 200)

	// Limits at 0 do not stop the first port: the default group is made.
	p := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID})
	if sg, _ := p["security_groups"].([]any); len(sg) != 1 {
		t.Fatalf("first port groups %v, want the default group", p["security_groups"])
	}
	neutronError(t, e.demo.Do("POST", "/network/v2.0/security-groups", map[string]any{"security_group": map[string]any{"name": "web"}}), 409, "OverQuota")
	mustStatus(t, e.admin.Do("PUT", q, map[string]any{"quota": map[string]any{"security_group": 2, "security_group_rule": 7}}), 200)
	g := create(t, e.demo, "security-groups", "security_group", map[string]any{"name": "web"})
	create(t, e.demo, "security-group-rules", "security_group_rule", map[string]any{"security_group_id": g["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22})
	r := e.demo.Do("POST", "/network/v2.0/security-group-rules", map[string]any{"security_group_rule": map[string]any{"security_group_id": g["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}})
	neutronError(t, r, 409, "OverQuota")
	if m := r.JSON(t)["NeutronError"].(map[string]any)["message"]; m != "Quota exceeded for resources: ['security_group_rule']." {
		t.Errorf("OverQuota message %q", m)
	}

	// Ten routers and ten floating IPs at once: exactly the limit is made.
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]map[int]int{"routers": {}, "floatingips": {}}
	for i := range 10 {
		for _, c := range []struct {
			coll, key string
			body      map[string]any
		}{
			{"routers", "router", map[string]any{"name": fmt.Sprint("r", i)}},
			{"floatingips", "floatingip", map[string]any{"floating_network_id": extID}},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := e.demo.Do("POST", "/network/v2.0/"+c.coll, map[string]any{c.key: c.body}).Status
				mu.Lock()
				codes[c.coll][st]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if codes["routers"][201] != 3 || codes["routers"][409] != 7 || codes["floatingips"][201] != 2 || codes["floatingips"][409] != 8 {
		t.Fatalf("concurrent creates answered %v, want 3 routers and 2 floating IPs made, the rest 409", codes)
	}

	d := obj(mustStatus(t, e.demo.Do("GET", q+"/details", nil), 200), "quota")
	for k, want := range map[string][2]float64{"router": {3, 3}, "floatingip": {2, 2}, "security_group": {2, 2}, "security_group_rule": {7, 7}, "port": {1, 500}} {
		v, _ := d[k].(map[string]any)
		if v["used"] != want[0] || v["limit"] != want[1] {
			t.Errorf("details[%s] = %v, want used %v of %v", k, v, want[0], want[1])
		}
	}
}
