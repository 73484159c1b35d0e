package identity_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestDiscovery(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	for _, path := range []string{"/identity", "/identity/"} {
		r := e.anon.Do("GET", path, nil)
		if r.Status != http.StatusMultipleChoices {
			t.Fatalf("GET %s = %d; want 300", path, r.Status)
		}
		body := r.JSON(t)
		v := get(body, "versions", "values", 0)
		if str(v, "id") != "v3.14" || str(v, "status") != "stable" {
			t.Errorf("GET %s version = %v; want v3.14 stable", path, v)
		}
		if got, want := str(v, "links", 0, "href"), e.srv.URL+"/identity/v3/"; got != want || str(v, "links", 0, "rel") != "self" {
			t.Errorf("GET %s self href = %q; want %q", path, got, want)
		}
		if str(v, "media-types", 0, "type") != "application/vnd.openstack.identity-v3+json" {
			t.Errorf("GET %s media-types = %v", path, get(v, "media-types"))
		}
	}
	for _, path := range []string{"/identity/v3", "/identity/v3/"} {
		r := e.anon.Do("GET", path, nil)
		if r.Status != http.StatusOK || str(r.JSON(t), "version", "id") != "v3.14" {
			t.Errorf("GET %s = %d %s; want 200 with version v3.14", path, r.Status, r.Body)
		}
	}
}

func TestDiscoveryPublicURL(t *testing.T) {
	e := newEnv(t, statedb.Settings{PublicURL: "https://cloud.example.com/"})
	r := e.anon.Do("GET", "/identity", nil)
	if got := str(r.JSON(t), "versions", "values", 0, "links", 0, "href"); got != "https://cloud.example.com/identity/v3/" {
		t.Errorf("self href = %q; want the public URL", got)
	}
	_, tok := e.login("admin", adminPassword, "admin")
	if got := str(tok, "catalog", 0, "endpoints", 0, "url"); !strings.HasPrefix(got, "https://cloud.example.com/") {
		t.Errorf("catalog url = %q; want it under the public URL", got)
	}
}

func TestTokenIssue(t *testing.T) {
	e := newEnv(t, statedb.Settings{TokenLifetime: 2 * time.Hour})
	admin, proj := e.seed.Admin, e.seed.Project
	byName := passwordAuth("admin", adminPassword, "admin")
	byID := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"id": admin.ID, "password": adminPassword}}},
		"scope": map[string]any{"project": map[string]any{"id": proj.ID}}}}
	byDomainID := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": "admin", "domain": map[string]any{"id": "default"}, "password": adminPassword}}},
		"scope": map[string]any{"project": map[string]any{"name": "admin", "domain": map[string]any{"id": "default"}}}}}
	noScope := passwordAuth("admin", adminPassword, "") // default project

	for name, body := range map[string]any{"name": byName, "id": byID, "domain id": byDomainID, "default project": noScope} {
		t.Run(name, func(t *testing.T) {
			idx := e.b.Index()
			r := e.anon.Do("POST", "/identity/v3/auth/tokens", body)
			if r.Status != http.StatusCreated {
				t.Fatalf("POST tokens = %d %s; want 201", r.Status, r.Body)
			}
			if r.Header.Get("X-Subject-Token") == "" {
				t.Error("no X-Subject-Token header")
			}
			if w := e.writesSince(idx); len(w) != 0 {
				t.Errorf("a successful login wrote %v; want nothing", w)
			}
			tok := r.JSON(t)["token"]
			if got := get(tok, "methods"); len(got.([]any)) != 1 || get(tok, "methods", 0) != "password" {
				t.Errorf("methods = %v; want [password]", got)
			}
			if str(tok, "user", "id") != admin.ID || str(tok, "user", "name") != "admin" ||
				str(tok, "user", "domain", "id") != "default" || str(tok, "user", "domain", "name") != "Default" {
				t.Errorf("user = %v", get(tok, "user"))
			}
			if u := get(tok, "user").(map[string]any); u["password_expires_at"] != nil {
				t.Errorf("password_expires_at = %v; want null", u["password_expires_at"])
			} else if _, ok := u["password_expires_at"]; !ok {
				t.Error("user has no password_expires_at")
			}
			if str(tok, "project", "id") != proj.ID || str(tok, "project", "name") != "admin" ||
				str(tok, "project", "domain", "id") != "default" {
				t.Errorf("project = %v", get(tok, "project"))
			}
			if str(tok, "roles", 0, "name") != "admin" || str(tok, "roles", 0, "id") != e.seed.Roles["admin"].ID {
				t.Errorf("roles = %v; want admin", get(tok, "roles"))
			}
			if get(tok, "is_domain") != false {
				t.Errorf("is_domain = %v; want false", get(tok, "is_domain"))
			}
			if a := str(tok, "audit_ids", 0); len(a) != 22 {
				t.Errorf("audit_ids = %v; want one 22-char id", get(tok, "audit_ids"))
			}
			issued := parseKeystoneTime(t, str(tok, "issued_at"))
			expires := parseKeystoneTime(t, str(tok, "expires_at"))
			if d := expires.Sub(issued); d != 2*time.Hour {
				t.Errorf("expires_at - issued_at = %v; want the configured 2h", d)
			}
			checkCatalog(t, tok, e.srv.URL, proj.ID)
		})
	}
}

func checkCatalog(t *testing.T, tok any, base, projectID string) {
	t.Helper()
	want := map[string]string{
		"identity":      base + "/identity",
		"compute":       base + "/compute/v2.1",
		"image":         base + "/image",
		"volumev3":      base + "/volume/v3/" + projectID,
		"block-storage": base + "/volume/v3/" + projectID,
		"network":       base + "/network",
		"cluster":       base + "/cluster/v1",
	}
	cat, _ := get(tok, "catalog").([]any)
	if len(cat) != len(want) {
		t.Fatalf("catalog has %d services; want %d: %v", len(cat), len(want), cat)
	}
	ids := map[string]bool{}
	for _, s := range cat {
		typ := str(s, "type")
		eps, _ := get(s, "endpoints").([]any)
		var ifaces []string
		for _, ep := range eps {
			if got := str(ep, "url"); got != want[typ] {
				t.Errorf("%s url = %q; want %q", typ, got, want[typ])
			}
			if str(ep, "region") != "RegionOne" || str(ep, "region_id") != "RegionOne" {
				t.Errorf("%s endpoint region = %v", typ, ep)
			}
			id := str(ep, "id")
			if len(id) != 32 || ids[id] {
				t.Errorf("%s endpoint id %q is not a fresh 32-char id", typ, id)
			}
			ids[id] = true
			ifaces = append(ifaces, str(ep, "interface"))
		}
		slices.Sort(ifaces)
		if !slices.Equal(ifaces, []string{"admin", "internal", "public"}) {
			t.Errorf("%s interfaces = %v; want admin, internal, public", typ, ifaces)
		}
	}
}

func TestTokenScopeChoice(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	demo, _ := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	other := e.b.CreateProject(t, "other")
	e.b.CreateUser(t, "bob", "pw-bob", other.ID) // no role on his default project
	tests := []struct {
		name        string
		body        map[string]any
		wantProject string // "" = unscoped
	}{
		{"default project", passwordAuth("alice", "pw-alice", ""), demo.ID},
		{"explicit project", passwordAuth("alice", "pw-alice", "demo"), demo.ID},
		{"no role on default project", passwordAuth("bob", "pw-bob", ""), ""},
		{"explicitly unscoped", func() map[string]any {
			b := passwordAuth("alice", "pw-alice", "")
			b["auth"].(map[string]any)["scope"] = "unscoped"
			return b
		}(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.anon.Do("POST", "/identity/v3/auth/tokens", tt.body)
			if r.Status != http.StatusCreated {
				t.Fatalf("POST tokens = %d %s; want 201", r.Status, r.Body)
			}
			tok := r.JSON(t)["token"].(map[string]any)
			if got := str(tok, "project", "id"); got != tt.wantProject {
				t.Errorf("project = %q; want %q", got, tt.wantProject)
			}
			if _, hasCat := tok["catalog"]; hasCat != (tt.wantProject != "") {
				t.Errorf("catalog present = %v; want %v", hasCat, tt.wantProject != "")
			}
			parseKeystoneTime(t, str(tok, "expires_at"))
		})
	}
}

func TestTokenUnauthorized(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	e.b.CreateProject(t, "nobody")
	e.b.ProjectUser(t, "erins", "erin", "pw-erin", "member") // the one who mistypes
	off, _ := e.b.ProjectUser(t, "off", "carol", "pw-carol", "member")
	e.b.MustApply(t, statedb.CmdUpdateProject, statedb.Project{ID: off.ID, Name: off.Name, Enabled: false})
	dis := e.b.CreateUser(t, "dave", "pw-dave", "")
	f := false
	e.b.MustApply(t, statedb.CmdUpdateUser, statedb.UpdateUserCmd{ID: dis.ID, Enabled: &f})
	withScope := func(user, pw string, scope any) map[string]any {
		b := passwordAuth(user, pw, "")
		b["auth"].(map[string]any)["scope"] = scope
		return b
	}
	userByDomainID := func(domain string) map[string]any {
		return map[string]any{"auth": map[string]any{"identity": map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"name": "alice", "domain": map[string]any{"id": domain},
				"password": "pw-alice"}}}}}
	}
	tests := []struct {
		name       string
		body       map[string]any
		wantWrites []statedb.CmdType
	}{
		{"wrong password", passwordAuth("erin", "nope", "erins"), nil}, // lockout off: nothing to count
		{"unknown user", passwordAuth("mallory", "pw", "demo"), nil},
		{"unknown user domain", userByDomainID("other"), nil},
		{"disabled user", passwordAuth("dave", "pw-dave", ""), nil},
		{"disabled project", passwordAuth("carol", "pw-carol", "off"), nil},
		{"no role on project", passwordAuth("alice", "pw-alice", "nobody"), nil},
		{"unknown project", passwordAuth("alice", "pw-alice", "ghost"), nil},
		{"project in unknown domain", withScope("alice", "pw-alice",
			map[string]any{"project": map[string]any{"name": "demo", "domain": map[string]any{"name": "Other"}}}), nil},
		{"system scope", withScope("alice", "pw-alice", map[string]any{"system": map[string]any{"all": true}}), nil},
		{"domain scope", withScope("alice", "pw-alice", map[string]any{"domain": map[string]any{"id": "default"}}), nil},
		{"unsupported method", map[string]any{"auth": map[string]any{"identity": map[string]any{
			"methods": []string{"totp"}, "totp": map[string]any{"user": map[string]any{"id": "x", "passcode": "1"}}}}}, nil},
		{"two methods", map[string]any{"auth": map[string]any{"identity": map[string]any{
			"methods": []string{"password", "token"}, "token": map[string]any{"id": "x"},
			"password": get(passwordAuth("alice", "pw-alice", ""), "auth", "identity", "password")}}}, nil},
		{"bad token", map[string]any{"auth": map[string]any{"identity": map[string]any{
			"methods": []string{"token"}, "token": map[string]any{"id": "fk.k1.e30.bad"}}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := e.b.Index()
			r := e.anon.Do("POST", "/identity/v3/auth/tokens", tt.body)
			keystoneError(t, r, http.StatusUnauthorized, "")
			if tt.name != "unsupported method" && tt.name != "two methods" {
				if msg := str(r.JSON(t), "error", "message"); msg != "The request you have made requires authentication." {
					t.Errorf("message = %q; want Keystone's generic 401", msg)
				}
			}
			if r.Header.Get("X-Subject-Token") != "" {
				t.Error("a failed login returned a token")
			}
			if got := e.writesSince(idx); !slices.Equal(got, tt.wantWrites) {
				t.Errorf("writes = %v; want %v", got, tt.wantWrites)
			}
		})
	}
}

func TestTokenBadRequest(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	tests := []struct {
		name, body, wantMsg string
	}{
		{"malformed JSON", `{"auth": {"identity": `, "Malformed request body"},
		{"empty body", ``, "Malformed request body"},
		{"not an object", `[1,2]`, "Invalid input"},
		{"no auth", `{}`, "Expecting to find auth"},
		{"no identity", `{"auth":{}}`, "Expecting to find identity in auth"},
		{"no methods", `{"auth":{"identity":{}}}`, "Expecting to find methods in identity"},
		{"empty methods", `{"auth":{"identity":{"methods":[]}}}`, "Expecting to find methods in identity"},
		{"methods not a list", `{"auth":{"identity":{"methods":"password"}}}`, "Invalid input for field 'methods'"},
		{"method without data", `{"auth":{"identity":{"methods":["password"]}}}`, "Expecting to find password in identity"},
		{"unknown method without data", `{"auth":{"identity":{"methods":["totp"]}}}`, "Expecting to find totp in identity"},
		{"password without user", `{"auth":{"identity":{"methods":["password"],"password":{}}}}`, "Expecting to find user in password"},
		{"user without domain", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","password":"x"}}}}}`,
			"Expecting to find domain in user"},
		{"user without password", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"x"}}}}}`,
			"Expecting to find password in user"},
		{"user id wrong type", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":7,"password":"x"}}}}}`,
			"Invalid input for field 'password'"},
		{"token without id", `{"auth":{"identity":{"methods":["token"],"token":{}}}}`, "Expecting to find id in token"},
		{"app cred without secret", `{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"id":"x"}}}}`,
			"Expecting to find secret in application_credential"},
		{"app cred name without user", `{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"name":"x","secret":"s"}}}}`,
			"Expecting to find user in application_credential"},
		{"two scopes", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"x","password":"x"}}},
			"scope":{"project":{"id":"p"},"domain":{"id":"default"}}}}`, "Only one of"},
		{"project name without domain", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"x","password":"x"}}},
			"scope":{"project":{"name":"p"}}}}`, "Expecting to find domain in project"},
		{"bad scope string", `{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"x","password":"x"}}},"scope":"all"}}`,
			"Invalid input for field 'scope'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := e.b.Index()
			r := e.anon.Do("POST", "/identity/v3/auth/tokens", tt.body)
			keystoneError(t, r, http.StatusBadRequest, tt.wantMsg)
			if got := e.writesSince(idx); len(got) != 0 {
				t.Errorf("writes = %v; want none", got)
			}
		})
	}
}

func TestLockout(t *testing.T) {
	e := newEnv(t, statedb.Settings{LockoutAttempts: 3, LockoutDuration: 5 * time.Minute})
	_, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	post := func(pw string) *http.Response {
		r := e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", pw, "demo"))
		return &http.Response{StatusCode: r.Status, Header: r.Header}
	}
	failures := func() int {
		u, _ := e.b.State().User(alice.ID)
		return u.FailedLogins
	}

	// A success after failures resets the counter.
	post("bad")
	post("bad")
	if got := post("pw-alice").StatusCode; got != http.StatusCreated || failures() != 0 {
		t.Fatalf("login after 2 failures = %d, failures %d; want 201 and 0", got, failures())
	}

	for i := 0; i < 3; i++ {
		if got := post("bad").StatusCode; got != http.StatusUnauthorized {
			t.Fatalf("bad password #%d = %d; want 401", i+1, got)
		}
	}
	if failures() != 3 {
		t.Fatalf("failures = %d; want 3", failures())
	}
	idx := e.b.Index()
	r := e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", "pw-alice", "demo"))
	keystoneError(t, r, http.StatusUnauthorized, "The account is locked.")
	if strings.Contains(string(r.Body), alice.ID) {
		t.Errorf("the lockout message names the user: %s", r.Body)
	}
	for _, a := range e.b.AppliedSince(idx) {
		if a.Type != statedb.CmdLoginAttempt || a.Err == nil {
			t.Errorf("a locked login applied %v (err %v); want only a refused attempt", a.Type, a.Err)
		}
	}

	e.b.Advance(4 * time.Minute)
	if got := post("pw-alice").StatusCode; got != http.StatusUnauthorized {
		t.Fatalf("login 4 minutes into the lock = %d; want 401", got)
	}
	e.b.Advance(2 * time.Minute)
	// The lock expired: a wrong password starts counting afresh.
	if got := post("bad").StatusCode; got != http.StatusUnauthorized || failures() != 1 {
		t.Fatalf("bad password after the lock = %d, failures %d; want 401 and 1", got, failures())
	}
	if got := post("pw-alice").StatusCode; got != http.StatusCreated || failures() != 0 {
		t.Fatalf("login after the lock = %d, failures %d; want 201 and 0", got, failures())
	}
}

func TestLockoutUntilReset(t *testing.T) {
	e := newEnv(t, statedb.Settings{LockoutAttempts: 2}) // no duration: locked until an admin acts
	_, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	for i := 0; i < 2; i++ {
		e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", "bad", "demo"))
	}
	e.b.Advance(24 * time.Hour)
	r := e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", "pw-alice", "demo"))
	keystoneError(t, r, http.StatusUnauthorized, "is locked")
	// `openstack user set --enable alice` unlocks, as in Keystone.
	r = e.admin().Do("PATCH", "/identity/v3/users/"+alice.ID, map[string]any{"user": map[string]any{"enabled": true}})
	if r.Status != http.StatusOK {
		t.Fatalf("PATCH enabled = %d %s", r.Status, r.Body)
	}
	e.login("alice", "pw-alice", "demo")
}

func TestTokenValidateAndRevoke(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	adminTok, adminBody := e.login("admin", adminPassword, "admin")
	aliceTok, _ := e.login("alice", "pw-alice", "demo")
	admin, alice := e.anon.With(adminTok), e.anon.With(aliceTok)

	r := admin.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", adminTok)
	if r.Status != http.StatusOK || r.Header.Get("X-Subject-Token") != adminTok {
		t.Fatalf("GET own token = %d %s", r.Status, r.Body)
	}
	tok := r.JSON(t)["token"]
	for _, k := range []string{"expires_at", "issued_at"} {
		if str(tok, k) != str(adminBody, k) {
			t.Errorf("validated %s = %q; issued %q", k, str(tok, k), str(adminBody, k))
		}
	}
	if str(tok, "audit_ids", 0) != str(adminBody, "audit_ids", 0) || str(tok, "roles", 0, "name") != "admin" {
		t.Errorf("validated token = %v", tok)
	}
	checkCatalog(t, tok, e.srv.URL, e.seed.Project.ID)
	if r := admin.Do("GET", "/identity/v3/auth/tokens?nocatalog", nil, "X-Subject-Token", adminTok); get(r.JSON(t), "token", "catalog") != nil {
		t.Error("nocatalog still returned a catalog")
	}
	if r := admin.Do("HEAD", "/identity/v3/auth/tokens", nil, "X-Subject-Token", adminTok); r.Status != http.StatusOK || len(r.Body) != 0 {
		t.Errorf("HEAD = %d %q; want 200 empty", r.Status, r.Body)
	}
	if r := admin.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", aliceTok); r.Status != http.StatusOK {
		t.Errorf("admin validating alice's token = %d; want 200", r.Status)
	}
	keystoneError(t, alice.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", adminTok), http.StatusForbidden, "")
	keystoneError(t, alice.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", "garbage"), http.StatusNotFound,
		"Could not find token: garbage.")
	keystoneError(t, e.anon.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", aliceTok), http.StatusUnauthorized, "")

	// Alice revokes her own token.
	second, _ := e.login("alice", "pw-alice", "demo")
	if r := e.anon.With(second).Do("DELETE", "/identity/v3/auth/tokens", nil, "X-Subject-Token", aliceTok); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s; want 204", r.Status, r.Body)
	}
	keystoneError(t, admin.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", aliceTok), http.StatusNotFound, "Could not find token")
	if r := admin.Do("HEAD", "/identity/v3/auth/tokens", nil, "X-Subject-Token", aliceTok); r.Status != http.StatusNotFound {
		t.Errorf("HEAD revoked = %d; want 404", r.Status)
	}
	keystoneError(t, alice.Do("GET", "/identity/v3/auth/projects", nil), http.StatusUnauthorized, "")
	if r := e.anon.With(second).Do("GET", "/identity/v3/auth/projects", nil); r.Status != http.StatusOK {
		t.Errorf("the other token of alice = %d; want 200 (only one token revoked)", r.Status)
	}

	// Expired.
	e.b.Advance(time.Hour + time.Second)
	fresh, _ := e.login("admin", adminPassword, "admin")
	keystoneError(t, e.anon.With(fresh).Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", adminTok),
		http.StatusNotFound, "Could not find token")
}

func TestTokenRescope(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	demo, _ := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	r := e.anon.Do("POST", "/identity/v3/auth/tokens", map[string]any{"auth": map[string]any{
		"identity": get(passwordAuth("alice", "pw-alice", ""), "auth", "identity"), "scope": "unscoped"}})
	unscoped := r.Header.Get("X-Subject-Token")
	orig := r.JSON(t)["token"]
	if get(orig, "project") != nil || get(orig, "catalog") != nil {
		t.Fatalf("unscoped token has a project or catalog: %v", orig)
	}
	e.b.Advance(time.Minute)
	r = e.anon.Do("POST", "/identity/v3/auth/tokens", map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"token"}, "token": map[string]any{"id": unscoped}},
		"scope":    map[string]any{"project": map[string]any{"id": demo.ID}}}})
	if r.Status != http.StatusCreated {
		t.Fatalf("rescope = %d %s; want 201", r.Status, r.Body)
	}
	tok := r.JSON(t)["token"]
	if str(tok, "project", "id") != demo.ID || str(tok, "roles", 0, "name") != "member" {
		t.Errorf("rescoped token = %v", tok)
	}
	if get(tok, "methods", 0) != "token" || get(tok, "methods", 1) != "password" {
		t.Errorf("methods = %v; want [token password]", get(tok, "methods"))
	}
	if str(tok, "expires_at") != str(orig, "expires_at") {
		t.Errorf("rescoped expires_at = %s; want the original %s", str(tok, "expires_at"), str(orig, "expires_at"))
	}
	// Rescoping to a project without a role fails.
	other := e.b.CreateProject(t, "other")
	r = e.anon.Do("POST", "/identity/v3/auth/tokens", map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"token"}, "token": map[string]any{"id": unscoped}},
		"scope":    map[string]any{"project": map[string]any{"id": other.ID}}}})
	keystoneError(t, r, http.StatusUnauthorized, "")
}
