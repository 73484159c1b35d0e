package identity_test

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func appCredAuth(id, secret string) map[string]any {
	return map[string]any{"auth": map[string]any{"identity": map[string]any{
		"methods":                []string{"application_credential"},
		"application_credential": map[string]any{"id": id, "secret": secret}}}}
}

func TestAppCredentials(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	demo, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member", "reader")
	_, bob := e.b.ProjectUser(t, "bobs", "bob", "pw-bob", "member")
	c := e.as("alice", "pw-alice", "demo")
	base := "/identity/v3/users/" + alice.ID + "/application_credentials"

	// Generated secret, default roles (all of the token's).
	r := c.Do("POST", base, `{"application_credential":{"name":"ci","description":"for CI"}}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("create = %d %s; want 201", r.Status, r.Body)
	}
	ac := r.JSON(t)["application_credential"].(map[string]any)
	id, secret := ac["id"].(string), ac["secret"].(string)
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{64}$`).MatchString(secret) {
		t.Errorf("secret = %q; want 64 URL-safe characters", secret)
	}
	if ac["project_id"] != demo.ID || ac["user_id"] != alice.ID || ac["unrestricted"] != false ||
		len(ac["roles"].([]any)) != 2 || ac["expires_at"] != nil || str(ac, "links", "self") == "" {
		t.Errorf("created = %v", ac)
	}
	stored, _ := e.b.State().AppCredential(id)
	if stored.SecretHash == secret || !e.checkPW(stored.SecretHash, secret) {
		t.Errorf("stored secret hash = %q; want a bcrypt hash", stored.SecretHash)
	}
	if r := c.Do("GET", base+"/"+id, nil); r.Status != http.StatusOK || get(r.JSON(t), "application_credential", "secret") != nil {
		t.Errorf("GET = %d %s; want 200 without the secret", r.Status, r.Body)
	}
	if got := c.Do("GET", base+"?name=ci", nil).JSON(t)["application_credentials"].([]any); len(got) != 1 {
		t.Errorf("list ?name=ci = %v", got)
	}

	// Authenticate with it, by id and by name.
	byName := map[string]any{"auth": map[string]any{"identity": map[string]any{
		"methods": []string{"application_credential"},
		"application_credential": map[string]any{"name": "ci", "secret": secret,
			"user": map[string]any{"name": "alice", "domain": map[string]any{"name": "Default"}}}}}}
	for name, body := range map[string]any{"id": appCredAuth(id, secret), "name": byName} {
		idx := e.b.Index()
		r = e.anon.Do("POST", "/identity/v3/auth/tokens", body)
		if r.Status != http.StatusCreated {
			t.Fatalf("app cred auth by %s = %d %s", name, r.Status, r.Body)
		}
		tok := r.JSON(t)["token"]
		if get(tok, "methods", 0) != "application_credential" || str(tok, "project", "id") != demo.ID ||
			str(tok, "application_credential", "id") != id || get(tok, "application_credential", "restricted") != true ||
			str(tok, "user", "id") != alice.ID || len(get(tok, "roles").([]any)) != 2 {
			t.Errorf("app cred token by %s = %v", name, tok)
		}
		checkCatalog(t, tok, e.srv.URL, demo.ID)
		if w := e.writesSince(idx); len(w) != 0 {
			t.Errorf("app cred login wrote %v", w)
		}
	}
	acTok := r.Header.Get("X-Subject-Token")

	// A restricted credential cannot make more credentials.
	keystoneError(t, e.anon.With(acTok).Do("POST", base, `{"application_credential":{"name":"more"}}`), http.StatusForbidden, "")

	// Wrong secret, unknown id, a scope to another project.
	other := e.b.CreateProject(t, "other")
	e.b.Grant(t, other.ID, alice.ID, "member")
	scoped := appCredAuth(id, secret)
	scoped["auth"].(map[string]any)["scope"] = map[string]any{"project": map[string]any{"id": other.ID}}
	for name, body := range map[string]any{"wrong secret": appCredAuth(id, "nope"), "unknown": appCredAuth("nope", secret),
		"other project": scoped} {
		t.Run(name, func(t *testing.T) {
			keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", body), http.StatusUnauthorized, "")
		})
	}

	// Explicit roles must be a subset of the token's.
	keystoneError(t, c.Do("POST", base, `{"application_credential":{"name":"x","roles":[{"name":"admin"}]}}`), http.StatusNotFound,
		"Could not find role assignment")
	keystoneError(t, c.Do("POST", base, `{"application_credential":{"name":"x","roles":[{"name":"ghost"}]}}`), http.StatusNotFound, "")
	keystoneError(t, c.Do("POST", base, `{"application_credential":{"name":"ci"}}`), http.StatusConflict, "")
	keystoneError(t, c.Do("POST", base, `{"application_credential":{"name":"x","expires_at":"yesterday"}}`), http.StatusBadRequest, "expires_at")
	keystoneError(t, c.Do("POST", "/identity/v3/users/"+bob.ID+"/application_credentials", `{"application_credential":{"name":"x"}}`),
		http.StatusForbidden, "")

	// Given secret, one role, an expiry.
	exp := e.b.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05")
	r = c.Do("POST", base, `{"application_credential":{"name":"short","secret":"my-secret-of-16+","roles":[{"name":"reader"}],"expires_at":"`+exp+`"}}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("create short = %d %s", r.Status, r.Body)
	}
	short := r.JSON(t)["application_credential"].(map[string]any)
	if short["secret"] != "my-secret-of-16+" || short["expires_at"] != exp+".000000" || str(short, "roles", 0, "name") != "reader" {
		t.Errorf("short = %v", short)
	}
	r = e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(short["id"].(string), "my-secret-of-16+"))
	if r.Status != http.StatusCreated {
		t.Fatalf("auth short = %d %s", r.Status, r.Body)
	}
	tok := r.JSON(t)["token"]
	if got := parseKeystoneTime(t, str(tok, "expires_at")); !got.Equal(e.b.Now().Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("token expiry %v; want capped at the credential's %s", got, exp)
	}
	if len(get(tok, "roles").([]any)) != 1 || str(tok, "roles", 0, "name") != "reader" {
		t.Errorf("short token roles = %v; want reader only", get(tok, "roles"))
	}

	// Losing a role the credential carries disables it.
	e.b.MustApply(t, statedb.CmdRevokeRole, statedb.Assignment{ProjectID: demo.ID, UserID: alice.ID, RoleID: e.seed.Roles["reader"].ID})
	keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(short["id"].(string), "my-secret-of-16+")), http.StatusUnauthorized, "")
	e.b.Grant(t, demo.ID, alice.ID, "reader")

	// Expiry.
	e.b.Advance(2 * time.Hour)
	keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(short["id"].(string), "my-secret-of-16+")), http.StatusUnauthorized, "")

	// Deleting a credential stops it and its tokens.
	c = e.as("alice", "pw-alice", "demo")
	r = e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(id, secret))
	acTok = r.Header.Get("X-Subject-Token")
	if r := c.Do("DELETE", base+"/"+id, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(id, secret)), http.StatusUnauthorized, "")
	keystoneError(t, c.Do("GET", "/identity/v3/auth/tokens", nil, "X-Subject-Token", acTok), http.StatusNotFound, "")
	keystoneError(t, c.Do("GET", base+"/"+id, nil), http.StatusNotFound, "Could not find application credential")

	// An admin may read and delete others' credentials.
	admin := e.admin()
	if r := admin.Do("GET", base, nil); r.Status != http.StatusOK {
		t.Errorf("admin list = %d", r.Status)
	}
}
