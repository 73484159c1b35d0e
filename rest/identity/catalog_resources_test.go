package identity_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestCatalogResources reads the catalog as Keystone services and
// endpoints: the ids match the token's catalog, filters work, members
// are refused and unknown ids are 404s.
func TestCatalogResources(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	_, tok := e.login("admin", adminPassword, "admin")
	admin := e.admin()
	var svcs struct {
		Services []map[string]any `json:"services"`
	}
	admin.Do("GET", "/identity/v3/services", nil).Decode(t, &svcs)
	catalog := tok["catalog"].([]any)
	if len(svcs.Services) != len(catalog) {
		t.Fatalf("services = %d; the token's catalog has %d", len(svcs.Services), len(catalog))
	}
	var compute map[string]any
	for _, c := range catalog {
		if c.(map[string]any)["type"] == "compute" {
			compute = c.(map[string]any)
		}
	}
	var one struct {
		Service map[string]any `json:"service"`
	}
	admin.Do("GET", "/identity/v3/services/"+compute["id"].(string), nil).Decode(t, &one)
	if one.Service["name"] != "nova" || one.Service["enabled"] != true {
		t.Fatalf("service show = %v", one.Service)
	}
	var eps struct {
		Endpoints []map[string]any `json:"endpoints"`
	}
	admin.Do("GET", "/identity/v3/endpoints?interface=public&service_id="+compute["id"].(string), nil).Decode(t, &eps)
	if len(eps.Endpoints) != 1 || !strings.HasSuffix(eps.Endpoints[0]["url"].(string), "/compute/v2.1") {
		t.Fatalf("endpoints = %v", eps.Endpoints)
	}
	var ep struct {
		Endpoint map[string]any `json:"endpoint"`
	}
	admin.Do("GET", "/identity/v3/endpoints/"+eps.Endpoints[0]["id"].(string), nil).Decode(t, &ep)
	if ep.Endpoint["service_id"] != compute["id"] || ep.Endpoint["interface"] != "public" {
		t.Fatalf("endpoint show = %v", ep.Endpoint)
	}
	admin.Do("GET", "/identity/v3/endpoints", nil).Decode(t, &eps)
	volume := 0
	for _, x := range eps.Endpoints {
		if strings.Contains(x["url"].(string), "%(project_id)s") {
			volume++
		}
	}
	if len(eps.Endpoints) != 3*len(catalog) || volume != 6 {
		t.Fatalf("all endpoints = %d (%d templated); want %d (6)", len(eps.Endpoints), volume, 3*len(catalog))
	}
	keystoneError(t, admin.Do("GET", "/identity/v3/endpoints?interface=sideways", nil), http.StatusBadRequest, "interface")
	keystoneError(t, admin.Do("GET", "/identity/v3/services/nope", nil), http.StatusNotFound, "Could not find service: nope.")
	keystoneError(t, admin.Do("GET", "/identity/v3/endpoints/nope", nil), http.StatusNotFound, "Could not find endpoint: nope.")
	keystoneError(t, admin.Do("GET", "/identity/v3/regions/Mars", nil), http.StatusNotFound, "Could not find region: Mars.")

	e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	alice := e.as("alice", "pw-alice", "demo")
	keystoneError(t, alice.Do("GET", "/identity/v3/services", nil), http.StatusForbidden, "")
	keystoneError(t, alice.Do("GET", "/identity/v3/endpoints", nil), http.StatusForbidden, "")
	if r := alice.Do("GET", "/identity/v3/regions", nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "RegionOne") {
		t.Fatalf("regions = %d %s", r.Status, r.Body)
	}
}
