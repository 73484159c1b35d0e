package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cloudsYAML writes a clouds.yaml with one cloud "peerstack" for the given
// auth block and returns its path.
func cloudsYAML(t *testing.T, boot *Proc, api string, authType string, auth map[string]string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "clouds:\n  peerstack:\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n    cacert: %s\n", filepath.Join(boot.DataDir, "ca.pem"))
	if authType != "" {
		fmt.Fprintf(&b, "    auth_type: %s\n", authType)
	}
	b.WriteString("    auth:\n")
	fmt.Fprintf(&b, "      auth_url: https://%s/identity\n", api)
	for k, v := range auth {
		fmt.Fprintf(&b, "      %s: %q\n", k, v)
	}
	p := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func osc(t *testing.T, clouds string, args ...string) string {
	t.Helper()
	return Run(t, clouds, "openstack", args...)
}

func oscJSON(t *testing.T, clouds string, v any, args ...string) {
	t.Helper()
	out := osc(t, clouds, append(args, "-f", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("openstack %v: %v\n%s", args, err, out)
	}
}

// identityScenario drives the identity API with the real openstack client
// through the host at api.
func identityScenario(t *testing.T, boot *Proc, api string) {
	admin := cloudsYAML(t, boot, api, "", map[string]string{
		"username": "admin", "password": boot.AdminPassword(), "project_name": "admin",
		"user_domain_name": "Default", "project_domain_name": "Default"})
	var tok map[string]string
	oscJSON(t, admin, &tok, "token", "issue")
	if tok["id"] == "" || tok["project_id"] == "" || tok["user_id"] == "" {
		t.Fatalf("token issue = %v", tok)
	}
	osc(t, admin, "project", "create", "demo")
	if out := osc(t, admin, "project", "list"); !strings.Contains(out, "demo") {
		t.Fatalf("project list lacks demo:\n%s", out)
	}
	osc(t, admin, "user", "create", "--project", "demo", "--password", "pw1", "demo-user")
	if out := osc(t, admin, "user", "list"); !strings.Contains(out, "demo-user") {
		t.Fatalf("user list lacks demo-user:\n%s", out)
	}
	osc(t, admin, "role", "add", "--project", "demo", "--user", "demo-user", "member")
	if out := osc(t, admin, "role", "assignment", "list", "--project", "demo", "--names"); !strings.Contains(out, "member") || !strings.Contains(out, "demo-user") {
		t.Fatalf("role assignment list:\n%s", out)
	}
	osc(t, admin, "user", "set", "--password", "pw2", "demo-user")
	demo := cloudsYAML(t, boot, api, "", map[string]string{
		"username": "demo-user", "password": "pw2", "project_name": "demo",
		"user_domain_name": "Default", "project_domain_name": "Default"})
	var dt map[string]string
	oscJSON(t, demo, &dt, "token", "issue")
	if dt["project_id"] == "" {
		t.Fatalf("demo token = %v", dt)
	}
	old := cloudsYAML(t, boot, api, "", map[string]string{
		"username": "demo-user", "password": "pw1", "project_name": "demo",
		"user_domain_name": "Default", "project_domain_name": "Default"})
	if out, err := RunErr(old, "openstack", "token", "issue"); err == nil {
		t.Fatalf("old password still works:\n%s", out)
	}
	// Application credential: create, then authenticate with it.
	var ac map[string]any
	oscJSON(t, demo, &ac, "application", "credential", "create", "ci")
	id, _ := ac["id"].(string)
	secret, _ := ac["secret"].(string)
	if id == "" || secret == "" {
		t.Fatalf("application credential create = %v", ac)
	}
	acClouds := cloudsYAML(t, boot, api, "v3applicationcredential", map[string]string{
		"application_credential_id": id, "application_credential_secret": secret})
	var at map[string]string
	oscJSON(t, acClouds, &at, "token", "issue")
	if at["project_id"] != dt["project_id"] {
		t.Fatalf("app credential token project = %q; want %q", at["project_id"], dt["project_id"])
	}
	// Revoke a token; it stops working everywhere.
	var rt map[string]string
	oscJSON(t, demo, &rt, "token", "issue")
	tokClouds := cloudsYAML(t, boot, api, "token", map[string]string{"token": rt["id"], "project_id": rt["project_id"]})
	osc(t, tokClouds, "token", "issue")
	osc(t, admin, "token", "revoke", rt["id"])
	if out, err := RunErr(tokClouds, "openstack", "token", "issue"); err == nil {
		t.Fatalf("revoked token still works:\n%s", out)
	}
}

func TestIdentityRealClientSingleHost(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	a := StartDaemon(t, "solo", filepath.Join(t.TempDir(), "a"), "agent")
	identityScenario(t, a, a.APIAddr)
}

func TestIdentityRealClientFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	bin := Binary(t)
	root := t.TempDir()
	a := StartDaemon(t, "alpha", filepath.Join(root, "a"), "agent")
	var procs []*Proc
	for _, name := range []string{"beta", "gamma"} {
		tok := LastLine(Run(t, filepath.Join(a.DataDir, "clouds.yaml"), bin, "token", "create"))
		procs = append(procs, StartDaemon(t, name, filepath.Join(root, name), "join", tok))
	}
	// beta joined second: not the bootstrap leader.
	identityScenario(t, a, procs[0].APIAddr)
}
