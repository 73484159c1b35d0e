package compute_test

import (
	"strings"
	"testing"
)

// TestHypervisorsV253 checks 2.53's hypervisor shape: UUID ids, the
// hostname pattern and with_servers query, show by UUID, and the old
// search and servers routes gone.
func TestHypervisorsV253(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.place(id, "host1", true)
	v := []string{"OpenStack-API-Version", "compute 2.53"}
	hs := hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors/detail", nil, v...))
	h1 := hs["host1"]
	uuid, _ := h1["id"].(string)
	if len(uuid) != 36 || strings.Count(uuid, "-") != 4 {
		t.Fatalf("hypervisor id at 2.53 = %v; want a UUID", h1["id"])
	}
	if svc := h1["service"].(map[string]any); len(svc["id"].(string)) != 36 {
		t.Fatalf("service id at 2.53 = %v", svc["id"])
	}
	if hs := hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors?hypervisor_hostname_pattern=st1", nil, v...)); len(hs) != 1 || hs["host1"] == nil {
		t.Fatalf("pattern filter = %v", hs)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors?hypervisor_hostname_pattern=zzz", nil, v...); r.Status != 404 {
		t.Fatalf("pattern without a match = %d", r.Status)
	}
	hs = hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors?with_servers=true", nil, v...))
	if !strings.Contains(hvServerIDs(hs["host1"]["servers"]), id) {
		t.Fatalf("with_servers = %v", hs["host1"])
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors?with_servers=maybe", nil, v...); r.Status != 400 {
		t.Fatalf("bad with_servers = %d", r.Status)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors/"+uuid, nil, v...); r.Status != 200 {
		t.Fatalf("show by uuid = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors/host1", nil, v...); r.Status != 404 {
		t.Fatalf("show by member id at 2.53 = %d", r.Status)
	}
	for _, p := range []string{"/os-hypervisors/host/search", "/os-hypervisors/host1/servers"} {
		if r := e.admin.Do("GET", api+p, nil, v...); r.Status != 404 {
			t.Fatalf("%s at 2.53 = %d; want 404", p, r.Status)
		}
	}
	if hs := hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors", nil)); hs["host1"]["id"] != "host1" {
		t.Fatalf("id at 2.1 = %v", hs["host1"]["id"])
	}
}

// hvServerIDs lists the server uuids of a hypervisor view.
func hvServerIDs(v any) string {
	b := new(strings.Builder)
	for _, x := range v.([]any) {
		b.WriteString(x.(map[string]any)["uuid"].(string) + " ")
	}
	return b.String()
}
