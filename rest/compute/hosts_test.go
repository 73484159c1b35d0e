package compute_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/rest/resttest"
)

func hypervisors(t *testing.T, r *resttest.Resp) map[string]map[string]any {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("hypervisors = %d %s", r.Status, r.Body)
	}
	out := map[string]map[string]any{}
	for _, h := range r.JSON(t)["hypervisors"].([]any) {
		m := h.(map[string]any)
		out[m["hypervisor_hostname"].(string)] = m
	}
	return out
}

func TestHypervisors(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "public", 0, 0, nil, true)
	a := e.createServer(e.member, map[string]any{"name": "a", "imageRef": img, "flavorRef": "1", "networks": "none"})
	b := e.createServer(e.member, map[string]any{"name": "b", "imageRef": img, "flavorRef": "2", "networks": "none"})
	e.createServer(e.member, map[string]any{"name": "pending", "imageRef": img, "flavorRef": "3", "networks": "none"})
	e.place(a, "host1", true)
	e.place(b, "host1", false)

	hs := hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors/detail", nil))
	h1, h2 := hs["host1"], hs["host2"]
	want := map[string]any{
		"vcpus": 4.0, "vcpus_used": 2.0, "memory_mb": 8192.0, "memory_mb_used": 2176.0, "local_gb": 100.0,
		"local_gb_used": 21.0, "free_ram_mb": 6016.0, "free_disk_gb": 79.0, "running_vms": 2.0, "state": "up",
		"status": "enabled", "hypervisor_type": "QEMU", "host_ip": "127.0.0.1", "id": "host1", "peerstack:accelerator": "tcg",
	}
	for k, v := range want {
		if h1[k] != v {
			t.Errorf("host1[%q] = %#v; want %#v", k, h1[k], v)
		}
	}
	if _, ok := h1["hypervisor_version"].(float64); !ok {
		t.Errorf("hypervisor_version = %#v; want a number", h1["hypervisor_version"])
	}
	var cpu map[string]any
	if s, ok := h1["cpu_info"].(string); !ok || json.Unmarshal([]byte(s), &cpu) != nil || cpu["arch"] != "x86_64" {
		t.Errorf("cpu_info = %#v; want a JSON string", h1["cpu_info"])
	}
	if svc := h1["service"].(map[string]any); svc["host"] != "host1" || svc["id"] == nil {
		t.Errorf("service = %v", svc)
	}
	if h2["state"] != "down" || h2["vcpus_used"] != 0.0 {
		t.Errorf("host2 = %v", h2)
	}
	if brief := hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors", nil)); brief["host1"]["id"] != "host1" || brief["host1"]["vcpus"] != nil {
		t.Errorf("brief list = %v", brief)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors/host1", nil); r.Status != 200 || r.JSON(t)["hypervisor"].(map[string]any)["vcpus_used"] != 2.0 {
		t.Errorf("show hypervisor = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors/nope", nil); r.Status != 404 {
		t.Errorf("unknown hypervisor = %d", r.Status)
	}
	if hs := hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors/host/search", nil)); len(hs) != 2 {
		t.Errorf("search = %v", hs)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors/host1/servers", nil); !strings.Contains(string(r.Body), a) || !strings.Contains(string(r.Body), b) {
		t.Errorf("hypervisor servers = %s", r.Body)
	}
	if r := e.admin.Do("GET", api+"/os-hypervisors/host1/uptime", nil); r.Status != 501 {
		t.Errorf("uptime = %d; want 501 (clients skip it)", r.Status)
	}
	if r := e.admin.Do("GET", api+"/os-aggregates", nil); r.Status != 200 || string(r.Body) != "{\"aggregates\":[]}\n" {
		t.Errorf("aggregates = %d %s", r.Status, r.Body)
	}
	r := e.admin.Do("GET", api+"/os-hypervisors/statistics", nil)
	st := r.JSON(t)["hypervisor_statistics"].(map[string]any)
	if st["count"] != 2.0 || st["vcpus"] != 6.0 || st["vcpus_used"] != 2.0 || st["running_vms"] != 2.0 {
		t.Errorf("statistics = %v", st)
	}
	for _, p := range []string{"/os-hypervisors", "/os-hypervisors/detail", "/os-hypervisors/statistics", "/os-hosts", "/os-services", "/os-availability-zone/detail"} {
		if r := e.member.Do("GET", api+p, nil); r.Status != 403 {
			t.Errorf("member GET %s = %d; want 403", p, r.Status)
		}
	}

	// os-hosts, availability zones.
	if r := e.admin.Do("GET", api+"/os-hosts", nil); r.Status != 200 || strings.Count(string(r.Body), `"service":"compute"`) != 2 {
		t.Errorf("os-hosts = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("GET", api+"/os-hosts/host1", nil); r.Status != 200 || !strings.Contains(string(r.Body), "(used_now)") {
		t.Errorf("os-hosts/host1 = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", api+"/os-availability-zone", nil); r.Status != 200 || !strings.Contains(string(r.Body), `"zoneName":"nova"`) {
		t.Errorf("az = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("GET", api+"/os-availability-zone/detail", nil); r.Status != 200 || !strings.Contains(string(r.Body), `"host2"`) {
		t.Errorf("az detail = %d %s", r.Status, r.Body)
	}

	// Services: disable host2 with a reason, as OSC does at 2.1.
	r = e.admin.Do("PUT", api+"/os-services/disable-log-reason", map[string]any{"host": "host2", "binary": "nova-compute", "disabled_reason": "maintenance"})
	if r.Status != 200 || r.JSON(t)["service"].(map[string]any)["status"] != "disabled" {
		t.Fatalf("disable = %d %s", r.Status, r.Body)
	}
	if m, _ := e.b.State().Member("host2"); !m.Disabled || m.DisabledBy != "maintenance" {
		t.Fatalf("member after disable = %+v", m)
	}
	r = e.admin.Do("GET", api+"/os-services?host=host2&binary=nova-compute", nil)
	svcs := r.JSON(t)["services"].([]any)
	if len(svcs) != 1 || svcs[0].(map[string]any)["status"] != "disabled" || svcs[0].(map[string]any)["disabled_reason"] != "maintenance" {
		t.Fatalf("services = %s", r.Body)
	}
	if hypervisors(t, e.admin.Do("GET", api+"/os-hypervisors", nil))["host2"]["status"] != "disabled" {
		t.Fatal("hypervisor not shown disabled")
	}
	if r := e.admin.Do("PUT", api+"/os-services/enable", map[string]any{"host": "host2", "binary": "nova-compute"}); r.Status != 200 {
		t.Fatalf("enable = %d %s", r.Status, r.Body)
	}
	if m, _ := e.b.State().Member("host2"); m.Disabled {
		t.Fatal("member still disabled")
	}
	for _, tt := range []struct {
		path   string
		body   any
		status int
	}{
		{"/os-services/disable", map[string]any{"host": "nope", "binary": "nova-compute"}, 404},
		{"/os-services/disable", map[string]any{"host": "host1", "binary": "nova-scheduler"}, 404},
		{"/os-services/disable", map[string]any{"host": "host1"}, 400},
		{"/os-services/disable", map[string]any{"host": "host1", "binary": "nova-compute", "x": 1}, 400},
		{"/os-services/enable", map[string]any{"host": "host1", "binary": "nova-compute", "disabled_reason": "x"}, 400},
	} {
		if r := e.admin.Do("PUT", api+tt.path, tt.body); r.Status != tt.status {
			t.Errorf("PUT %s %v = %d; want %d", tt.path, tt.body, r.Status, tt.status)
		}
	}
	if r := e.member.Do("PUT", api+"/os-services/disable", map[string]any{"host": "host1", "binary": "nova-compute"}); r.Status != 403 {
		t.Errorf("member disables = %d; want 403", r.Status)
	}
}
