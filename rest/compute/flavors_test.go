package compute_test

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/peerstack/peerstack/rest/resttest"
)

func flavorIDs(t *testing.T, r *resttest.Resp) []string {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("list flavors = %d %s", r.Status, r.Body)
	}
	var out struct {
		Flavors []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"flavors"`
	}
	r.Decode(t, &out)
	var ids []string
	for _, f := range out.Flavors {
		if f.Name == "" {
			t.Fatalf("flavor %s has no name", f.ID)
		}
		ids = append(ids, f.ID)
	}
	return ids
}

func TestFlavors(t *testing.T) {
	e := newEnv(t)
	// Create as the SDK does: id null → server generated; 200.
	body := map[string]any{"flavor": map[string]any{"OS-FLV-EXT-DATA:ephemeral": 0, "ram": 512, "swap": 0, "disk": 1,
		"name": "m1.priv", "vcpus": 1, "os-flavor-access:is_public": false, "rxtx_factor": 1.0, "id": nil}}
	r := e.admin.Do("POST", api+"/flavors", body)
	if r.Status != 200 {
		t.Fatalf("create flavor = %d %s", r.Status, r.Body)
	}
	f := r.JSON(t)["flavor"].(map[string]any)
	priv, _ := f["id"].(string)
	if len(priv) != 36 || f["os-flavor-access:is_public"] != false || f["swap"] != "" || f["ram"] != 512.0 {
		t.Fatalf("created flavor = %v", f)
	}
	if r := e.admin.Do("POST", api+"/flavors", body); r.Status != 409 {
		t.Fatalf("duplicate name = %d; want 409", r.Status)
	}
	pub := e.admin.Do("POST", api+"/flavors", map[string]any{"flavor": map[string]any{"name": "custom", "ram": "256", "vcpus": 2, "disk": 0, "id": "c1", "swap": 64}})
	if pub.Status != 200 || pub.JSON(t)["flavor"].(map[string]any)["swap"] != 64.0 {
		t.Fatalf("create with string ram = %d %s", pub.Status, pub.Body)
	}

	tests := []struct {
		name   string
		c      *resttest.Client
		query  string
		want   []string
		absent []string
	}{
		{"admin default public", e.admin, "", []string{"1", "2", "3", "c1"}, []string{priv}},
		{"admin True", e.admin, "?is_public=True", []string{"1", "c1"}, []string{priv}},
		{"admin False", e.admin, "?is_public=False", []string{priv}, []string{"1"}},
		{"admin None", e.admin, "?is_public=None", []string{"1", priv}, nil},
		{"member ignores is_public", e.member, "?is_public=None", []string{"1"}, []string{priv}},
		{"minRam", e.admin, "?minRam=1000", []string{"2", "3"}, []string{"1", "c1"}},
		{"limit", e.admin, "?limit=2", []string{"1", "2"}, []string{"3"}},
		{"marker", e.admin, "?marker=2", []string{"3"}, []string{"1", "2"}},
	}
	for _, tt := range tests {
		for _, path := range []string{"/flavors", "/flavors/detail"} {
			ids := flavorIDs(t, tt.c.Do("GET", api+path+tt.query, nil))
			for _, w := range tt.want {
				if !slices.Contains(ids, w) {
					t.Errorf("%s: GET %s%s = %v; missing %s", tt.name, path, tt.query, ids, w)
				}
			}
			for _, a := range tt.absent {
				if slices.Contains(ids, a) {
					t.Errorf("%s: GET %s%s = %v; has %s", tt.name, path, tt.query, ids, a)
				}
			}
		}
	}
	if r := e.admin.Do("GET", api+"/flavors?marker=nope", nil); r.Status != 400 {
		t.Errorf("bad marker = %d; want 400", r.Status)
	}

	// Private flavor: hidden from demo until access is granted.
	if r := e.member.Do("GET", api+"/flavors/"+priv, nil); r.Status != 404 {
		t.Fatalf("member GET private flavor = %d; want 404", r.Status)
	}
	r = e.admin.Do("POST", api+"/flavors/"+priv+"/action", map[string]any{"addTenantAccess": map[string]any{"tenant": e.demo.ID}})
	if r.Status != 200 || !strings.Contains(string(r.Body), e.demo.ID) {
		t.Fatalf("add access = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", api+"/flavors/"+priv, nil); r.Status != 200 {
		t.Fatalf("member GET shared private flavor = %d", r.Status)
	}
	if ids := flavorIDs(t, e.member.Do("GET", api+"/flavors/detail", nil)); !slices.Contains(ids, priv) {
		t.Fatalf("member list = %v; want the shared private flavor", ids)
	}
	if ids := flavorIDs(t, e.alien.Do("GET", api+"/flavors/detail", nil)); slices.Contains(ids, priv) {
		t.Fatal("another project sees the private flavor")
	}
	r = e.admin.Do("GET", api+"/flavors/"+priv+"/os-flavor-access", nil)
	if r.Status != 200 || strings.Count(string(r.Body), "tenant_id") != 2 {
		t.Fatalf("access list = %d %s; want creator and demo", r.Status, r.Body)
	}
	if r := e.admin.Do("GET", api+"/flavors/1/os-flavor-access", nil); r.Status != 404 {
		t.Fatalf("access list of a public flavor = %d; want 404", r.Status)
	}
	if r := e.admin.Do("POST", api+"/flavors/1/action", map[string]any{"addTenantAccess": map[string]any{"tenant": "x"}}); r.Status != 409 {
		t.Fatalf("access to public flavor = %d; want 409", r.Status)
	}
	if r := e.member.Do("POST", api+"/flavors/"+priv+"/action", map[string]any{"removeTenantAccess": map[string]any{"tenant": e.demo.ID}}); r.Status != 403 {
		t.Fatalf("member removes access = %d; want 403", r.Status)
	}
	r = e.admin.Do("POST", api+"/flavors/"+priv+"/action", map[string]any{"removeTenantAccess": map[string]any{"tenant": e.demo.ID}})
	if r.Status != 200 || strings.Contains(string(r.Body), e.demo.ID) {
		t.Fatalf("remove access = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("POST", api+"/flavors/"+priv+"/action", map[string]any{"bogus": map[string]any{}}); r.Status != 400 {
		t.Fatalf("unknown flavor action = %d; want 400", r.Status)
	}

	// Extra specs.
	es := api + "/flavors/1/os-extra_specs"
	if r := e.member.Do("GET", es, nil); r.Status != 200 || string(r.Body) != "{\"extra_specs\":{}}\n" {
		t.Fatalf("empty extra specs = %d %q", r.Status, r.Body)
	}
	if r := e.admin.Do("POST", es, map[string]any{"extra_specs": map[string]any{"hw:cpu_policy": "shared", "n": 2, "b": true}}); r.Status != 200 {
		t.Fatalf("set extra specs = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", es+"/n", nil); r.Status != 200 || r.JSON(t)["n"] != "2" {
		t.Fatalf("get extra spec = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("PUT", es+"/n", map[string]any{"n": "3"}); r.Status != 200 {
		t.Fatalf("put extra spec = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("PUT", es+"/n", map[string]any{"m": "3"}); r.Status != 400 {
		t.Fatalf("put mismatched key = %d; want 400", r.Status)
	}
	if r := e.member.Do("POST", es, map[string]any{"extra_specs": map[string]any{"x": "y"}}); r.Status != 403 {
		t.Fatalf("member sets extra specs = %d; want 403", r.Status)
	}
	if r := e.admin.Do("DELETE", es+"/n", nil); r.Status != 200 {
		t.Fatalf("delete extra spec = %d", r.Status)
	}
	if r := e.admin.Do("DELETE", es+"/n", nil); r.Status != 404 {
		t.Fatalf("delete missing extra spec = %d; want 404", r.Status)
	}
	if r := e.admin.Do("GET", es+"/n", nil); r.Status != 404 {
		t.Fatalf("get deleted extra spec = %d; want 404", r.Status)
	}
	if r := e.admin.Do("POST", es, map[string]any{"extra_specs": map[string]any{"bad key!": "v"}}); r.Status != 400 {
		t.Fatalf("bad extra spec key = %d; want 400", r.Status)
	}

	// Delete.
	if r := e.member.Do("DELETE", api+"/flavors/c1", nil); r.Status != 403 {
		t.Fatalf("member deletes flavor = %d; want 403", r.Status)
	}
	if r := e.admin.Do("DELETE", api+"/flavors/c1", nil); r.Status != 202 {
		t.Fatalf("delete flavor = %d", r.Status)
	}
	if r := e.admin.Do("GET", api+"/flavors/c1", nil); r.Status != 404 {
		t.Fatalf("deleted flavor = %d; want 404", r.Status)
	}
	// Name lookup: GET by name is 404, then the list matches.
	if r := e.member.Do("GET", api+"/flavors/m1.tiny", nil); r.Status != 404 {
		t.Fatalf("GET /flavors/<name> = %d; want 404", r.Status)
	}
}

func TestFlavorCreateBadInput(t *testing.T) {
	e := newEnv(t)
	base := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{"name": "f", "ram": 512, "vcpus": 1, "disk": 1}
		mod(m)
		return map[string]any{"flavor": m}
	}
	tests := []struct {
		name string
		body any
	}{
		{"no name", base(func(m map[string]any) { delete(m, "name") })},
		{"blank name", base(func(m map[string]any) { m["name"] = " x" })},
		{"no ram", base(func(m map[string]any) { delete(m, "ram") })},
		{"zero vcpus", base(func(m map[string]any) { m["vcpus"] = 0 })},
		{"negative disk", base(func(m map[string]any) { m["disk"] = -1 })},
		{"ram string junk", base(func(m map[string]any) { m["ram"] = "lots" })},
		{"bad id", base(func(m map[string]any) { m["id"] = "a/b" })},
		{"bad is_public", base(func(m map[string]any) { m["os-flavor-access:is_public"] = "maybe" })},
		{"rxtx zero", base(func(m map[string]any) { m["rxtx_factor"] = 0 })},
		{"unknown field", base(func(m map[string]any) { m["description"] = "2.55 only" })},
		{"not an object", map[string]any{"flavor": []int{1}}},
		{"extra top key", map[string]any{"flavor": map[string]any{"name": "f", "ram": 1, "vcpus": 1, "disk": 1}, "x": 1}},
	}
	for _, tt := range tests {
		if r := e.admin.Do("POST", api+"/flavors", tt.body); r.Status != 400 {
			t.Errorf("%s: create flavor(%v) = %d %s; want 400", tt.name, tt.body, r.Status, r.Body)
		}
	}
}

func TestKeypairs(t *testing.T) {
	e := newEnv(t)
	r := e.member.Do("POST", api+"/os-keypairs", map[string]any{"keypair": map[string]any{"name": "gen"}})
	if r.Status != 200 {
		t.Fatalf("generate keypair = %d %s", r.Status, r.Body)
	}
	var gen struct {
		Keypair struct {
			Name, PublicKey, Fingerprint, PrivateKey, UserID string
		} `json:"keypair"`
	}
	raw := r.JSON(t)["keypair"].(map[string]any)
	gen.Keypair.PublicKey, _ = raw["public_key"].(string)
	gen.Keypair.PrivateKey, _ = raw["private_key"].(string)
	gen.Keypair.Fingerprint, _ = raw["fingerprint"].(string)
	gen.Keypair.UserID, _ = raw["user_id"].(string)
	signer, err := ssh.ParsePrivateKey([]byte(gen.Keypair.PrivateKey))
	if err != nil {
		t.Fatalf("private_key does not parse: %v (%q)", err, gen.Keypair.PrivateKey)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(gen.Keypair.PublicKey))
	if err != nil || string(pub.Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Fatalf("public key %q does not match the private key (%v)", gen.Keypair.PublicKey, err)
	}
	if gen.Keypair.Fingerprint != ssh.FingerprintLegacyMD5(pub) || gen.Keypair.UserID != e.memberID {
		t.Fatalf("keypair = %v", raw)
	}

	imported := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGf1L8j0VfWuzrdH3t6B6dRzZbHR5ANg8xHhM4mrSCpN test@x"
	r = e.member.Do("POST", api+"/os-keypairs", map[string]any{"keypair": map[string]any{"name": "imp", "public_key": imported}})
	if r.Status != 200 {
		t.Fatalf("import keypair = %d %s", r.Status, r.Body)
	}
	if m := r.JSON(t)["keypair"].(map[string]any); m["private_key"] != nil || m["public_key"] != imported || !strings.Contains(m["fingerprint"].(string), ":") {
		t.Fatalf("imported keypair = %v", m)
	}
	for _, tt := range []struct {
		body   any
		status int
	}{
		{map[string]any{"keypair": map[string]any{"name": "imp"}}, 409},
		{map[string]any{"keypair": map[string]any{"name": "bad", "public_key": "not a key"}}, 400},
		{map[string]any{"keypair": map[string]any{"name": "a/b"}}, 400},
		{map[string]any{"keypair": map[string]any{"name": ""}}, 400},
		{map[string]any{"keypair": map[string]any{}}, 400},
		{map[string]any{"keypair": map[string]any{"name": "x", "type": "x509"}}, 400}, // 2.2+
	} {
		if r := e.member.Do("POST", api+"/os-keypairs", tt.body); r.Status != tt.status {
			t.Errorf("create keypair %v = %d %s; want %d", tt.body, r.Status, r.Body, tt.status)
		}
	}
	if r := e.reader.Do("POST", api+"/os-keypairs", map[string]any{"keypair": map[string]any{"name": "r"}}); r.Status != 403 {
		t.Errorf("reader creates keypair = %d; want 403", r.Status)
	}
	r = e.member.Do("GET", api+"/os-keypairs", nil)
	if r.Status != 200 || strings.Count(string(r.Body), `"keypair"`) != 2 {
		t.Fatalf("list keypairs = %d %s", r.Status, r.Body)
	}
	if r := e.alien.Do("GET", api+"/os-keypairs", nil); r.Status != 200 || strings.Contains(string(r.Body), "imp") {
		t.Fatalf("another user's list = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", api+"/os-keypairs/imp", nil); r.Status != 200 || r.JSON(t)["keypair"].(map[string]any)["user_id"] != e.memberID {
		t.Fatalf("show keypair = %d %s", r.Status, r.Body)
	}
	if r := e.alien.Do("GET", api+"/os-keypairs/imp", nil); r.Status != 404 {
		t.Fatalf("another user shows keypair = %d; want 404", r.Status)
	}
	if r := e.member.Do("DELETE", api+"/os-keypairs/imp", nil); r.Status != 202 {
		t.Fatalf("delete keypair = %d", r.Status)
	}
	if r := e.member.Do("DELETE", api+"/os-keypairs/imp", nil); r.Status != 404 {
		t.Fatalf("delete again = %d; want 404", r.Status)
	}
}
