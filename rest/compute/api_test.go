package compute_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestVersionDiscovery(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/compute", "/compute/"} {
		r := e.anon.Do("GET", p, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s = %d %s", p, r.Status, r.Body)
		}
		m := r.JSON(t)
		vs := m["versions"].([]any)
		if len(vs) != 2 {
			t.Fatalf("GET %s versions = %v; want v2.0 and v2.1", p, vs)
		}
		v21 := vs[1].(map[string]any)
		if v21["id"] != "v2.1" || v21["status"] != "CURRENT" || v21["version"] != "2.79" || v21["min_version"] != "2.1" {
			t.Fatalf("GET %s v2.1 = %v", p, v21)
		}
		self := v21["links"].([]any)[0].(map[string]any)
		if self["href"] != e.srv.URL+"/compute/v2.1/" {
			t.Fatalf("v2.1 self = %v", self["href"])
		}
	}
	for _, p := range []string{"/compute/v2.1", "/compute/v2.1/"} {
		r := e.anon.Do("GET", p, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s = %d", p, r.Status)
		}
		v := r.JSON(t)["version"].(map[string]any)
		if v["id"] != "v2.1" || v["version"] != "2.79" {
			t.Fatalf("GET %s = %v", p, v)
		}
	}
}

func TestMicroversion(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		hdr    []string
		status int
		echo   string
	}{
		{nil, 200, "2.1"},
		{[]string{"X-OpenStack-Nova-API-Version", "2.1"}, 200, "2.1"},
		{[]string{"OpenStack-API-Version", "compute 2.1"}, 200, "2.1"},
		{[]string{"OpenStack-API-Version", "volume 3.0, compute 2.47"}, 200, "2.47"},
		{[]string{"OpenStack-API-Version", "compute latest"}, 200, "2.79"},
		{[]string{"X-OpenStack-Nova-API-Version", "2.2"}, 200, "2.2"},
		{[]string{"X-OpenStack-Nova-API-Version", "2.79"}, 200, "2.79"},
		{[]string{"X-OpenStack-Nova-API-Version", "2.80"}, 406, "2.1"},
		{[]string{"OpenStack-API-Version", "compute 2.95"}, 406, "2.1"},
		{[]string{"X-OpenStack-Nova-API-Version", "3.0"}, 406, "2.1"},
		{[]string{"X-OpenStack-Nova-API-Version", "2.0"}, 406, "2.1"},
		{[]string{"OpenStack-API-Version", "compute 2"}, 400, "2.1"},
		{[]string{"X-OpenStack-Nova-API-Version", "two"}, 400, "2.1"},
		{[]string{"OpenStack-API-Version", "volume 3.70"}, 200, "2.1"}, // not ours: base version
	}
	for _, tt := range tests {
		r := e.admin.Do("GET", api+"/flavors", nil, tt.hdr...)
		if r.Status != tt.status {
			t.Errorf("GET /flavors with %v = %d %s; want %d", tt.hdr, r.Status, r.Body, tt.status)
			continue
		}
		if got := r.Header.Get("OpenStack-API-Version"); got != "compute "+tt.echo {
			t.Errorf("with %v: OpenStack-API-Version = %q; want compute %s", tt.hdr, got, tt.echo)
		}
		if got := r.Header.Get("X-OpenStack-Nova-API-Version"); got != tt.echo {
			t.Errorf("with %v: X-OpenStack-Nova-API-Version = %q", tt.hdr, got)
		}
		if got := r.Header.Get("Vary"); !strings.Contains(got, "OpenStack-API-Version") || !strings.Contains(got, "X-OpenStack-Nova-API-Version") {
			t.Errorf("with %v: Vary = %q", tt.hdr, got)
		}
		if tt.status == 406 {
			if msg := errMessage(t, r, "computeFault"); !strings.Contains(msg, "not supported by the API") {
				t.Errorf("406 message = %q", msg)
			}
		}
	}
}

func TestErrorShapes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, url string
		body        any
		status      int
		key         string
	}{
		{"GET", api + "/servers/nope", nil, 404, "itemNotFound"},
		{"GET", api + "/flavors/nope", nil, 404, "itemNotFound"},
		{"POST", api + "/servers", `{"server":`, 400, "badRequest"},
		{"POST", api + "/flavors", map[string]any{"flavor": map[string]any{"name": "x", "ram": 1, "vcpus": 1, "disk": 1}}, 403, "forbidden"},
		{"POST", api + "/os-keypairs", map[string]any{"keypair": map[string]any{"name": "dup"}}, 200, ""},
		{"POST", api + "/os-keypairs", map[string]any{"keypair": map[string]any{"name": "dup"}}, 409, "conflictingRequest"},
	}
	for _, tt := range tests {
		r := e.member.Do(tt.method, tt.url, tt.body)
		if r.Status != tt.status {
			t.Errorf("%s %s = %d %s; want %d", tt.method, tt.url, r.Status, r.Body, tt.status)
			continue
		}
		if tt.key != "" {
			errMessage(t, r, tt.key)
		}
	}
	if r := e.anon.Do("GET", api+"/servers", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("GET /servers without a token = %d; want 401", r.Status)
	} else {
		errMessage(t, r, "unauthorized")
	}
}
