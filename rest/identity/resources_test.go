package identity_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/resttest"
)

// TestOSCSequences replays what `openstack project create`, `user create`
// and `role add` send and checks what they read.
func TestOSCSequences(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	admin := e.admin()

	// openstack project create demo
	r := admin.Do("POST", "/identity/v3/projects", `{"project": {"name": "demo", "enabled": true, "options": {}, "tags": []}}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("project create = %d %s; want 201", r.Status, r.Body)
	}
	p := r.JSON(t)["project"]
	pid := str(p, "id")
	if len(pid) != 32 || strings.Contains(pid, "-") {
		t.Errorf("project id = %q; want 32 hex chars", pid)
	}
	if str(p, "links", "self") != e.srv.URL+"/identity/v3/projects/"+pid {
		t.Errorf("links = %v; want self url", get(p, "links"))
	}
	if str(p, "name") != "demo" || get(p, "enabled") != true || str(p, "domain_id") != "default" ||
		str(p, "parent_id") != "default" || get(p, "is_domain") != false || get(p, "tags") == nil || get(p, "options") == nil {
		t.Errorf("project = %v", p)
	}

	// openstack user create --project demo --password pw demo-user
	lookup(t, admin, "projects", "demo", pid)
	r = admin.Do("POST", "/identity/v3/users", `{"user": {"name": "demo-user", "default_project_id": "`+pid+
		`", "password": "pw", "enabled": true, "options": {}}}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("user create = %d %s; want 201", r.Status, r.Body)
	}
	u := r.JSON(t)["user"]
	uid := str(u, "id")
	if str(u, "links", "self") != e.srv.URL+"/identity/v3/users/"+uid || str(u, "default_project_id") != pid ||
		str(u, "domain_id") != "default" || get(u, "enabled") != true {
		t.Errorf("user = %v", u)
	}
	if strings.Contains(string(r.Body), "pw") && strings.Contains(string(r.Body), `"password"`) {
		t.Errorf("user create echoed the password: %s", r.Body)
	}
	stored, _ := e.b.State().User(uid)
	if stored.PasswordHash == "" || stored.PasswordHash == "pw" || !resttest.CheckPassword(stored.PasswordHash, "pw") {
		t.Errorf("stored password hash = %q; want a bcrypt hash of the password", stored.PasswordHash)
	}

	// openstack role add --project demo --user demo-user member
	rid := lookup(t, admin, "roles", "member", e.seed.Roles["member"].ID)
	lookup(t, admin, "users", "demo-user", uid)
	lookup(t, admin, "projects", "demo", pid)
	r = admin.Do("PUT", "/identity/v3/projects/"+pid+"/users/"+uid+"/roles/"+rid, nil)
	if r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("role add = %d %q; want 204 with an empty body", r.Status, r.Body)
	}

	// The new user can now sign in to demo.
	_, tok := e.login("demo-user", "pw", "demo")
	if str(tok, "project", "id") != pid || str(tok, "roles", 0, "name") != "member" {
		t.Errorf("demo-user token = %v", tok)
	}
	checkCatalog(t, tok, e.srv.URL, pid)
}

// lookup does the client's name resolution: GET /{coll}/{name} must be 404,
// then GET /{coll}?name= must return exactly the one object.
func lookup(t *testing.T, c *resttest.Client, coll, name, wantID string) string {
	t.Helper()
	keystoneError(t, c.Do("GET", "/identity/v3/"+coll+"/"+name, nil), http.StatusNotFound, "")
	r := c.Do("GET", "/identity/v3/"+coll+"?name="+name, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s?name=%s = %d %s", coll, name, r.Status, r.Body)
	}
	body := r.JSON(t)
	list, _ := body[coll].([]any)
	if len(list) != 1 || str(list[0], "id") != wantID || str(list[0], "name") != name {
		t.Fatalf("GET %s?name=%s = %v; want one with id %s", coll, name, list, wantID)
	}
	links := body["links"].(map[string]any)
	if !strings.HasSuffix(str(links, "self"), "/identity/v3/"+coll+"?name="+name) {
		t.Errorf("links.self = %v", links["self"])
	}
	if v, ok := links["next"]; !ok || v != nil {
		t.Errorf("links.next = %v; want null", v)
	}
	if v, ok := links["previous"]; !ok || v != nil {
		t.Errorf("links.previous = %v; want null", v)
	}
	return wantID
}

func TestProjectCRUD(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	admin := e.admin()
	r := admin.Do("POST", "/identity/v3/projects", map[string]any{"project": map[string]any{
		"name": "p1", "description": "first", "tags": []string{"a", "b"}}})
	if r.Status != http.StatusCreated {
		t.Fatalf("create = %d %s", r.Status, r.Body)
	}
	id := str(r.JSON(t), "project", "id")
	r = admin.Do("PATCH", "/identity/v3/projects/"+id, map[string]any{"project": map[string]any{
		"name": "p1b", "enabled": false, "description": "renamed"}})
	p := r.JSON(t)["project"]
	if r.Status != http.StatusOK || str(p, "name") != "p1b" || get(p, "enabled") != false ||
		str(p, "description") != "renamed" || get(p, "tags", 1) != "b" {
		t.Fatalf("PATCH = %d %v", r.Status, p)
	}
	if got := admin.Do("GET", "/identity/v3/projects?enabled=false", nil).JSON(t)["projects"].([]any); len(got) != 1 || str(got[0], "id") != id {
		t.Errorf("?enabled=false = %v; want p1b only", got)
	}
	if got := admin.Do("GET", "/identity/v3/projects", nil).JSON(t)["projects"].([]any); len(got) != 2 {
		t.Errorf("list = %d projects; want 2", len(got))
	}
	if r := admin.Do("GET", "/identity/v3/projects/"+id, nil); r.Status != http.StatusOK || str(r.JSON(t), "project", "name") != "p1b" {
		t.Errorf("GET = %d %s", r.Status, r.Body)
	}

	tests := []struct {
		name, method, path string
		body               any
		status             int
		msg                string
	}{
		{"duplicate name", "POST", "/identity/v3/projects", `{"project":{"name":"admin"}}`, 409, "Duplicate entry"},
		{"no name", "POST", "/identity/v3/projects", `{"project":{"enabled":true}}`, 400, "Expecting to find name in project"},
		{"no envelope", "POST", "/identity/v3/projects", `{"name":"x"}`, 400, "Expecting to find project"},
		{"wrong type", "POST", "/identity/v3/projects", `{"project":{"name":5}}`, 400, "Invalid input for field 'project'"},
		{"other domain", "POST", "/identity/v3/projects", `{"project":{"name":"x","domain_id":"d2"}}`, 404, "Could not find domain: d2."},
		{"hierarchy", "POST", "/identity/v3/projects", `{"project":{"name":"x","parent_id":"` + id + `"}}`, 400, "hierarchies"},
		{"bad tag", "POST", "/identity/v3/projects", `{"project":{"name":"x","tags":["a/b"]}}`, 400, "tags"},
		{"patch missing", "PATCH", "/identity/v3/projects/nope", `{"project":{"name":"x"}}`, 404, "Could not find project: nope."},
		{"bad bool filter", "GET", "/identity/v3/projects?enabled=maybe", nil, 400, "enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keystoneError(t, admin.Do(tt.method, tt.path, tt.body), tt.status, tt.msg)
		})
	}

	if r := admin.Do("DELETE", "/identity/v3/projects/"+id, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	keystoneError(t, admin.Do("GET", "/identity/v3/projects/"+id, nil), http.StatusNotFound, "Could not find project")
	keystoneError(t, admin.Do("DELETE", "/identity/v3/projects/"+id, nil), http.StatusNotFound, "")
}

func TestUserCRUD(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	admin := e.admin()
	demo, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	aliceTok, _ := e.login("alice", "pw-alice", "demo")

	r := admin.Do("GET", "/identity/v3/users/"+alice.ID, nil)
	u := r.JSON(t)["user"].(map[string]any)
	if r.Status != http.StatusOK || u["name"] != "alice" || u["default_project_id"] != demo.ID {
		t.Fatalf("GET user = %d %v", r.Status, u)
	}
	for _, k := range []string{"password", "password_hash"} {
		if _, ok := u[k]; ok {
			t.Errorf("user has %q", k)
		}
	}
	if v, ok := u["password_expires_at"]; !ok || v != nil {
		t.Errorf("password_expires_at = %v; want null", v)
	}

	// Disabling revokes the user's tokens; enabling lets them sign in again.
	e.b.Advance(time.Second)
	r = admin.Do("PATCH", "/identity/v3/users/"+alice.ID, map[string]any{"user": map[string]any{"enabled": false, "email": "a@x"}})
	if r.Status != http.StatusOK || get(r.JSON(t), "user", "enabled") != false || str(r.JSON(t), "user", "email") != "a@x" {
		t.Fatalf("PATCH disable = %d %s", r.Status, r.Body)
	}
	keystoneError(t, e.anon.With(aliceTok).Do("GET", "/identity/v3/auth/projects", nil), http.StatusUnauthorized, "")
	keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", "pw-alice", "demo")), http.StatusUnauthorized, "")
	e.b.Advance(time.Second)
	admin.Do("PATCH", "/identity/v3/users/"+alice.ID, map[string]any{"user": map[string]any{"enabled": true}})

	// An admin sets a new password.
	r = admin.Do("PATCH", "/identity/v3/users/"+alice.ID, map[string]any{"user": map[string]any{"password": "new-pw"}})
	if r.Status != http.StatusOK || strings.Contains(string(r.Body), "new-pw") {
		t.Fatalf("PATCH password = %d %s", r.Status, r.Body)
	}
	e.b.Advance(time.Second)
	keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", "pw-alice", "demo")), http.StatusUnauthorized, "")
	e.login("alice", "new-pw", "demo")

	keystoneError(t, admin.Do("POST", "/identity/v3/users", `{"user":{"name":"alice"}}`), http.StatusConflict, "Duplicate entry")
	keystoneError(t, admin.Do("POST", "/identity/v3/users", `{"user":{"name":"x","password":"`+strings.Repeat("p", 80)+`"}}`),
		http.StatusBadRequest, "password")
	keystoneError(t, admin.Do("POST", "/identity/v3/users", `{"user":{"name":"x","default_project_id":"nope"}}`),
		http.StatusNotFound, "Could not find project")

	if r := admin.Do("DELETE", "/identity/v3/users/"+alice.ID, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	keystoneError(t, admin.Do("GET", "/identity/v3/users/"+alice.ID, nil), http.StatusNotFound, "Could not find user")
	if roles := e.b.State().UserRoles(alice.ID, demo.ID); len(roles) != 0 {
		t.Errorf("deleted user still has roles %v", roles)
	}
}

func TestSelfPasswordChange(t *testing.T) {
	e := newEnv(t, statedb.Settings{LockoutAttempts: 5, LockoutDuration: time.Minute})
	_, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	_, bob := e.b.ProjectUser(t, "bobs", "bob", "pw-bob", "member")
	aliceTok, _ := e.login("alice", "pw-alice", "demo")
	c := e.anon.With(aliceTok)
	path := "/identity/v3/users/" + alice.ID + "/password"
	change := func(orig, pw string) map[string]any {
		return map[string]any{"user": map[string]any{"original_password": orig, "password": pw}}
	}

	idx := e.b.Index()
	keystoneError(t, c.Do("POST", path, change("wrong", "new-pw")), http.StatusUnauthorized, "")
	if w := e.writesSince(idx); len(w) != 1 || w[0] != statedb.CmdLoginAttempt {
		t.Errorf("writes after a wrong original password = %v; want one login attempt", w)
	}
	keystoneError(t, c.Do("POST", "/identity/v3/users/"+bob.ID+"/password", change("pw-bob", "x")), http.StatusForbidden, "")
	keystoneError(t, c.Do("POST", path, `{"user":{"password":"x"}}`), http.StatusBadRequest, "original_password")
	keystoneError(t, e.anon.Do("POST", path, change("pw-alice", "x")), http.StatusUnauthorized, "")

	e.b.Advance(time.Second)
	if r := c.Do("POST", path, change("pw-alice", "new-pw")); r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("change password = %d %s; want 204", r.Status, r.Body)
	}
	keystoneError(t, c.Do("GET", "/identity/v3/auth/projects", nil), http.StatusUnauthorized, "")
	e.b.Advance(time.Second)
	keystoneError(t, e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth("alice", "pw-alice", "demo")), http.StatusUnauthorized, "")
	e.login("alice", "new-pw", "demo")
	if u, _ := e.b.State().User(alice.ID); u.FailedLogins != 0 {
		t.Errorf("failed logins = %d after a password change; want 0", u.FailedLogins)
	}
}

func TestPolicy(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	a, alice := e.b.ProjectUser(t, "pa", "alice", "pw-alice", "member")
	b, bob := e.b.ProjectUser(t, "pb", "bob", "pw-bob", "member")
	_, rita := e.b.ProjectUser(t, "pr", "rita", "pw-rita", "reader")
	c := e.as("alice", "pw-alice", "pa")
	reader := e.as("rita", "pw-rita", "pr")
	member := e.seed.Roles["member"].ID
	tests := []struct {
		name, method, path string
		body               any
		status             int
	}{
		{"create user", "POST", "/identity/v3/users", `{"user":{"name":"eve","password":"x"}}`, 403},
		{"create project", "POST", "/identity/v3/projects", `{"project":{"name":"px"}}`, 403},
		{"create role", "POST", "/identity/v3/roles", `{"role":{"name":"boss"}}`, 403},
		{"update own project", "PATCH", "/identity/v3/projects/" + a.ID, `{"project":{"name":"mine"}}`, 403},
		{"delete own project", "DELETE", "/identity/v3/projects/" + a.ID, nil, 403},
		{"grant", "PUT", "/identity/v3/projects/" + a.ID + "/users/" + alice.ID + "/roles/" + e.seed.Roles["admin"].ID, nil, 403},
		{"revoke grant", "DELETE", "/identity/v3/projects/" + a.ID + "/users/" + alice.ID + "/roles/" + member, nil, 403},
		{"read other project", "GET", "/identity/v3/projects/" + b.ID, nil, 404},
		{"patch other project", "PATCH", "/identity/v3/projects/" + b.ID, `{"project":{"name":"x"}}`, 404},
		{"read other user", "GET", "/identity/v3/users/" + bob.ID, nil, 403},
		{"update self", "PATCH", "/identity/v3/users/" + alice.ID, `{"user":{"enabled":true}}`, 403},
		{"delete other user", "DELETE", "/identity/v3/users/" + bob.ID, nil, 403},
		{"other user's projects", "GET", "/identity/v3/users/" + bob.ID + "/projects", nil, 403},
		{"other user's grants", "GET", "/identity/v3/projects/" + b.ID + "/users/" + bob.ID + "/roles", nil, 403},
		{"other user's app creds", "GET", "/identity/v3/users/" + bob.ID + "/application_credentials", nil, 403},
		{"read own project", "GET", "/identity/v3/projects/" + a.ID, nil, 200},
		{"read self", "GET", "/identity/v3/users/" + alice.ID, nil, 200},
		{"own projects", "GET", "/identity/v3/users/" + alice.ID + "/projects", nil, 200},
		{"own grants", "GET", "/identity/v3/projects/" + a.ID + "/users/" + alice.ID + "/roles", nil, 200},
		{"check own grant", "HEAD", "/identity/v3/projects/" + a.ID + "/users/" + alice.ID + "/roles/" + member, nil, 204},
		{"roles", "GET", "/identity/v3/roles", nil, 200},
		{"domains", "GET", "/identity/v3/domains", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.Do(tt.method, tt.path, tt.body)
			if r.Status != tt.status {
				t.Errorf("%s %s = %d %s; want %d", tt.method, tt.path, r.Status, r.Body, tt.status)
			}
		})
	}
	// Lists are filtered, not refused.
	if got := c.Do("GET", "/identity/v3/projects", nil).JSON(t)["projects"].([]any); len(got) != 1 || str(got[0], "id") != a.ID {
		t.Errorf("alice's project list = %v; want pa only", got)
	}
	if got := c.Do("GET", "/identity/v3/users", nil).JSON(t)["users"].([]any); len(got) != 1 || str(got[0], "id") != alice.ID {
		t.Errorf("alice's user list = %v; want herself only", got)
	}
	if got := c.Do("GET", "/identity/v3/role_assignments", nil).JSON(t)["role_assignments"].([]any); len(got) != 1 {
		t.Errorf("alice's role assignments = %v; want her own only", got)
	}
	if got := c.Do("GET", "/identity/v3/auth/projects", nil).JSON(t)["projects"].([]any); len(got) != 1 || str(got[0], "id") != a.ID {
		t.Errorf("auth/projects = %v; want pa", got)
	}
	if r := reader.Do("GET", "/identity/v3/users/"+rita.ID+"/projects", nil); r.Status != http.StatusOK {
		t.Errorf("reader's own projects = %d", r.Status)
	}
	if r := e.anon.Do("GET", "/identity/v3/projects", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("anonymous project list = %d; want 401", r.Status)
	}
}

func TestRolesAndAssignments(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	admin := e.admin()
	demo, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")

	r := admin.Do("POST", "/identity/v3/roles", `{"role":{"name":"auditor","description":"reads logs"}}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("role create = %d %s", r.Status, r.Body)
	}
	role := r.JSON(t)["role"].(map[string]any)
	rid := role["id"].(string)
	if v, ok := role["domain_id"]; !ok || v != nil || role["description"] != "reads logs" || str(role, "links", "self") == "" {
		t.Errorf("role = %v", role)
	}
	keystoneError(t, admin.Do("POST", "/identity/v3/roles", `{"role":{"name":"auditor"}}`), http.StatusConflict, "")
	keystoneError(t, admin.Do("POST", "/identity/v3/roles", `{"role":{"name":"x","domain_id":"default"}}`), http.StatusBadRequest, "")
	if r := admin.Do("PATCH", "/identity/v3/roles/"+rid, `{"role":{"description":"reads everything"}}`); str(r.JSON(t), "role", "description") != "reads everything" {
		t.Errorf("PATCH role = %d %s", r.Status, r.Body)
	}

	grant := "/identity/v3/projects/" + demo.ID + "/users/" + alice.ID + "/roles/" + rid
	if r := admin.Do("HEAD", grant, nil); r.Status != http.StatusNotFound {
		t.Errorf("HEAD before grant = %d; want 404", r.Status)
	}
	if r := admin.Do("PUT", grant, nil); r.Status != http.StatusNoContent {
		t.Fatalf("PUT grant = %d %s", r.Status, r.Body)
	}
	if r := admin.Do("HEAD", grant, nil); r.Status != http.StatusNoContent {
		t.Errorf("HEAD after grant = %d; want 204", r.Status)
	}
	keystoneError(t, admin.Do("PUT", "/identity/v3/projects/"+demo.ID+"/users/"+alice.ID+"/roles/nope", nil), http.StatusNotFound, "Could not find role: nope.")
	keystoneError(t, admin.Do("PUT", "/identity/v3/projects/nope/users/"+alice.ID+"/roles/"+rid, nil), http.StatusNotFound, "Could not find project: nope.")

	roles := admin.Do("GET", "/identity/v3/projects/"+demo.ID+"/users/"+alice.ID+"/roles", nil).JSON(t)["roles"].([]any)
	if len(roles) != 2 {
		t.Errorf("alice's roles on demo = %v; want auditor and member", roles)
	}

	ra := admin.Do("GET", "/identity/v3/role_assignments?user.id="+alice.ID+"&scope.project.id="+demo.ID+"&include_names=True&effective", nil).JSON(t)
	list := ra["role_assignments"].([]any)
	if len(list) != 2 {
		t.Fatalf("role_assignments = %v; want 2", list)
	}
	for _, a := range list {
		if str(a, "user", "id") != alice.ID || str(a, "user", "name") != "alice" || str(a, "scope", "project", "id") != demo.ID ||
			str(a, "scope", "project", "name") != "demo" || str(a, "role", "name") == "" ||
			!strings.HasSuffix(str(a, "links", "assignment"), "/identity/v3/projects/"+demo.ID+"/users/"+alice.ID+"/roles/"+str(a, "role", "id")) {
			t.Errorf("assignment = %v", a)
		}
	}
	if got := admin.Do("GET", "/identity/v3/role_assignments?role.id="+rid, nil).JSON(t)["role_assignments"].([]any); len(got) != 1 || get(got[0], "role", "name") != nil {
		t.Errorf("role.id filter = %v; want one, without names", got)
	}
	if got := admin.Do("GET", "/identity/v3/role_assignments?group.id=g", nil).JSON(t)["role_assignments"].([]any); len(got) != 0 {
		t.Errorf("group.id filter = %v; want none", got)
	}

	// Removing a role revokes the tokens that carry it.
	aliceTok, _ := e.login("alice", "pw-alice", "demo")
	e.b.Advance(time.Second)
	if r := admin.Do("DELETE", grant, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE grant = %d %s", r.Status, r.Body)
	}
	keystoneError(t, e.anon.With(aliceTok).Do("GET", "/identity/v3/auth/projects", nil), http.StatusUnauthorized, "")
	keystoneError(t, admin.Do("DELETE", grant, nil), http.StatusNotFound, "")

	if r := admin.Do("DELETE", "/identity/v3/roles/"+rid, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE role = %d %s", r.Status, r.Body)
	}
	keystoneError(t, admin.Do("GET", "/identity/v3/roles/"+rid, nil), http.StatusNotFound, "Could not find role")
}

func TestDomains(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	c := e.admin()
	tests := []struct {
		path  string
		count int
	}{
		{"/identity/v3/domains", 1},
		{"/identity/v3/domains?name=Default", 1},
		{"/identity/v3/domains?name=Other", 0},
		{"/identity/v3/auth/domains", 0},
	}
	for _, tt := range tests {
		r := c.Do("GET", tt.path, nil)
		list, _ := r.JSON(t)["domains"].([]any)
		if r.Status != http.StatusOK || len(list) != tt.count {
			t.Errorf("GET %s = %d %v; want %d domains", tt.path, r.Status, list, tt.count)
		}
		if tt.count == 1 && (str(list[0], "id") != "default" || str(list[0], "name") != "Default") {
			t.Errorf("GET %s = %v", tt.path, list)
		}
	}
	if r := c.Do("GET", "/identity/v3/domains/default", nil); r.Status != http.StatusOK || str(r.JSON(t), "domain", "name") != "Default" {
		t.Errorf("GET default = %d %s", r.Status, r.Body)
	}
	keystoneError(t, c.Do("GET", "/identity/v3/domains/Default", nil), http.StatusNotFound, "Could not find domain: Default.")
}
