package identity_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/applicationcredentials"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestGophercloud drives the server with the real gophercloud v2 client:
// discovery, password auth, the identity calls the CLI makes, token
// validation and revocation, and application credentials.
func TestGophercloud(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	ctx := context.Background()
	eo := gophercloud.EndpointOpts{Region: "RegionOne"}

	for _, endpoint := range []string{e.srv.URL + "/identity", e.srv.URL + "/identity/v3"} {
		t.Run(endpoint[len(e.srv.URL):], func(t *testing.T) {
			p, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
				IdentityEndpoint: endpoint, Username: "admin", Password: adminPassword,
				DomainName: "Default", TenantName: "admin",
			})
			if err != nil {
				t.Fatalf("AuthenticatedClient: %v", err)
			}
			if p.Token() == "" {
				t.Fatal("no token")
			}
		})
	}

	provider, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: e.srv.URL + "/identity", Username: "admin", Password: adminPassword,
		DomainName: "Default", TenantName: "admin", AllowReauth: true,
	})
	if err != nil {
		t.Fatalf("AuthenticatedClient: %v", err)
	}
	idc, err := openstack.NewIdentityV3(provider, eo)
	if err != nil {
		t.Fatalf("NewIdentityV3: %v", err)
	}
	if want := e.srv.URL + "/identity/v3/"; idc.Endpoint != want {
		t.Errorf("identity endpoint = %q; want %q", idc.Endpoint, want)
	}
	bs, err := openstack.NewBlockStorageV3(provider, eo)
	if err != nil || !strings.HasSuffix(bs.Endpoint, "/volume/v3/"+e.seed.Project.ID+"/") {
		t.Errorf("NewBlockStorageV3 = %v, %v; want the project's volume endpoint", bs, err)
	}
	if cc, err := openstack.NewComputeV2(provider, eo); err != nil || !strings.HasSuffix(cc.Endpoint, "/compute/v2.1/") {
		t.Errorf("NewComputeV2 = %v, %v", cc, err)
	}

	// Identity: projects Create/List, users Create/List, roles List(name)/Assign.
	proj, err := projects.Create(ctx, idc, projects.CreateOpts{Name: "demo", Description: "gophercloud"}).Extract()
	if err != nil || proj.Name != "demo" || len(proj.ID) != 32 {
		t.Fatalf("projects.Create = %+v, %v", proj, err)
	}
	pages, err := projects.List(idc, projects.ListOpts{Name: "demo"}).AllPages(ctx)
	if err != nil {
		t.Fatalf("projects.List: %v", err)
	}
	plist, err := projects.ExtractProjects(pages)
	if err != nil || len(plist) != 1 || plist[0].ID != proj.ID {
		t.Fatalf("projects.List(name=demo) = %+v, %v", plist, err)
	}
	if got, err := projects.Get(ctx, idc, proj.ID).Extract(); err != nil || got.Name != "demo" || !got.Enabled {
		t.Errorf("projects.Get = %+v, %v", got, err)
	}

	user, err := users.Create(ctx, idc, users.CreateOpts{Name: "demo-user", DefaultProjectID: proj.ID,
		Password: "pw", Enabled: gophercloud.Enabled}).Extract()
	if err != nil || user.Name != "demo-user" {
		t.Fatalf("users.Create = %+v, %v", user, err)
	}
	upages, err := users.List(idc, users.ListOpts{Name: "demo-user"}).AllPages(ctx)
	if err != nil {
		t.Fatalf("users.List: %v", err)
	}
	if ul, err := users.ExtractUsers(upages); err != nil || len(ul) != 1 || ul[0].ID != user.ID {
		t.Fatalf("users.List = %+v, %v", ul, err)
	}

	rpages, err := roles.List(idc, roles.ListOpts{Name: "member"}).AllPages(ctx)
	if err != nil {
		t.Fatalf("roles.List: %v", err)
	}
	rl, err := roles.ExtractRoles(rpages)
	if err != nil || len(rl) != 1 {
		t.Fatalf("roles.List(name=member) = %+v, %v", rl, err)
	}
	if err := roles.Assign(ctx, idc, rl[0].ID, roles.AssignOpts{UserID: user.ID, ProjectID: proj.ID}).ExtractErr(); err != nil {
		t.Fatalf("roles.Assign: %v", err)
	}

	// The new user signs in to the new project.
	up, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: e.srv.URL + "/identity", Username: "demo-user", Password: "pw",
		DomainName: "Default", TenantID: proj.ID,
	})
	if err != nil {
		t.Fatalf("demo-user AuthenticatedClient: %v", err)
	}
	uidc, err := openstack.NewIdentityV3(up, eo)
	if err != nil {
		t.Fatal(err)
	}

	// Tokens: Get, Validate, Revoke.
	userTok := up.Token()
	tok, err := tokens.Get(ctx, idc, userTok).ExtractToken()
	if err != nil || tok.ID != userTok || time.Until(tok.ExpiresAt) <= 0 {
		t.Fatalf("tokens.Get = %+v, %v", tok, err)
	}
	gr := tokens.Get(ctx, idc, userTok)
	if p, err := gr.ExtractProject(); err != nil || p.ID != proj.ID {
		t.Errorf("token project = %+v, %v", p, err)
	}
	if u, err := gr.ExtractUser(); err != nil || u.ID != user.ID {
		t.Errorf("token user = %+v, %v", u, err)
	}
	if ok, err := tokens.Validate(ctx, idc, userTok); err != nil || !ok {
		t.Errorf("tokens.Validate = %v, %v; want true", ok, err)
	}

	// Application credentials through gophercloud, then authenticate with one.
	exp := time.Now().UTC().Add(48 * time.Hour).Truncate(time.Second)
	ac, err := applicationcredentials.Create(ctx, uidc, user.ID, applicationcredentials.CreateOpts{
		Name: "gc", ExpiresAt: &exp}).Extract()
	if err != nil || ac.Secret == "" || !ac.ExpiresAt.Equal(exp) || ac.ProjectID != proj.ID {
		t.Fatalf("applicationcredentials.Create = %+v, %v", ac, err)
	}
	if got, err := applicationcredentials.Get(ctx, uidc, user.ID, ac.ID).Extract(); err != nil || got.Name != "gc" || len(got.Roles) != 1 {
		t.Errorf("applicationcredentials.Get = %+v, %v", got, err)
	}
	acp, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: e.srv.URL + "/identity", ApplicationCredentialID: ac.ID, ApplicationCredentialSecret: ac.Secret,
	})
	if err != nil {
		t.Fatalf("app cred AuthenticatedClient: %v", err)
	}
	if _, err := openstack.NewBlockStorageV3(acp, eo); err != nil {
		t.Errorf("app cred catalog: %v", err)
	}

	if err := tokens.Revoke(ctx, idc, userTok).Err; err != nil {
		t.Fatalf("tokens.Revoke: %v", err)
	}
	if ok, err := tokens.Validate(ctx, idc, userTok); err != nil || ok {
		t.Errorf("tokens.Validate after revoke = %v, %v; want false", ok, err)
	}
	if _, err := projects.Get(ctx, uidc, proj.ID).Extract(); !gophercloud.ResponseCodeIs(err, 401) {
		t.Errorf("revoked token use = %v; want 401", err)
	}
}
