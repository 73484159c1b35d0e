package access

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	restidentity "github.com/peerstack/peerstack/rest/identity"
)

// env is a bootstrapped state (project admin, user u with the admin role)
// and the access decisions over it at a settable time.
type env struct {
	t   *testing.T
	s   *statedb.Store
	idx uint64
	now time.Time
	a   *Access
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, s: statedb.NewStore(), now: time.Unix(1_800_000_000, 0).UTC()}
	e.a = New(e.s.Snapshot, func() time.Time { return e.now }, 4)
	e.must(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:     statedb.ClusterConfig{ClusterID: "c"},
		Member:     statedb.Member{ID: "h0", Name: "h0"},
		Project:    statedb.Project{ID: "p-admin", Name: AdminProjectName, Enabled: true},
		Admin:      statedb.User{ID: "u", Name: "admin", Enabled: true},
		Assignment: statedb.Assignment{ProjectID: "p-admin", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: e.now},
	})
	return e
}

func (e *env) must(typ statedb.CmdType, payload any) {
	e.t.Helper()
	e.idx++
	c, err := statedb.NewCommand(typ, fmt.Sprint("r", e.idx), e.now, payload)
	if err != nil {
		e.t.Fatal(err)
	}
	raw, _ := c.Encode()
	if err := e.s.Apply(e.idx, raw).Err; err != nil {
		e.t.Fatalf("apply %d: %v", typ, err)
	}
}

func (e *env) token(project, audit string) string {
	e.t.Helper()
	tok, err := e.a.IssueToken(restidentity.Claims{UserID: "u", ProjectID: project, Roles: []restidentity.RoleRef{{ID: "r", Name: "admin"}},
		Methods: []string{"password"}, IssuedAt: e.now, ExpiresAt: e.now.Add(time.Hour), AuditID: audit})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func TestAuthenticateFollowsTheState(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := e.token("p-admin", "audit-1")
	c, err := e.a.Authenticate(ctx, tok)
	if err != nil || c.UserID != "u" || c.UserName != "admin" || c.ProjectID != "p-admin" || c.ProjectAdminOnly || c.AuditID != "audit-1" {
		t.Fatalf("fresh token = %+v, %v; want admin of the admin project", c, err)
	}
	if e.a.Authorize(c, rest.Admin, "", false) != rest.Allow {
		t.Fatal("the admin project's admin is not allowed admin access")
	}
	if e.a.Authorize(nil, rest.Read, "", true) != rest.Forbidden {
		t.Fatal("no credential is not forbidden")
	}
	if _, err := e.a.Authenticate(ctx, tok+"x"); !errors.Is(err, ErrBadToken) {
		t.Fatalf("tampered token = %v; want ErrBadToken", err)
	}
	// Expired.
	e.now = e.now.Add(2 * time.Hour)
	if _, err := e.a.Authenticate(ctx, tok); !errors.Is(err, ErrBadToken) {
		t.Fatalf("expired token = %v; want ErrBadToken", err)
	}
	e.now = e.now.Add(-2 * time.Hour)
	// Revoked by audit id.
	e.must(statedb.CmdRevokeToken, statedb.RevokeTokenCmd{AuditID: "audit-1", ExpiresAt: e.now.Add(time.Hour)})
	if _, err := e.a.Authenticate(ctx, tok); !errors.Is(err, ErrBadToken) {
		t.Fatalf("revoked token = %v; want ErrBadToken", err)
	}
	// A disabled user's tokens stop working at once.
	e.now = e.now.Add(time.Second)
	tok = e.token("p-admin", "audit-2")
	if _, err := e.a.Authenticate(ctx, tok); err != nil {
		t.Fatal(err)
	}
	off := false
	e.must(statedb.CmdUpdateUser, statedb.UpdateUserCmd{ID: "u", Enabled: &off})
	if _, err := e.a.Authenticate(ctx, tok); !errors.Is(err, ErrBadToken) {
		t.Fatalf("disabled user's token = %v; want ErrBadToken", err)
	}
}

func TestProjectAdminOnlyOutsideTheAdminProject(t *testing.T) {
	e := newEnv(t)
	e.must(statedb.CmdCreateProject, statedb.Project{ID: "p2", Name: "demo", Enabled: true})
	c, err := e.a.Authenticate(context.Background(), e.token("p2", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.ProjectAdminOnly {
		t.Fatal("an admin role in another project rules the cloud")
	}
}

func TestPasswordsCachedOnSuccessOnly(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	h, err := e.a.HashPassword("secret")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.a.CheckPassword(ctx, h, "wrong"); ok || err != nil {
		t.Fatalf("wrong password = %v, %v", ok, err)
	}
	if ok, err := e.a.CheckPassword(ctx, h, "secret"); !ok || err != nil {
		t.Fatalf("right password = %v, %v", ok, err)
	}
	if !e.a.pw.check(h, "secret", time.Now()) || e.a.pw.check(h, "wrong", time.Now()) {
		t.Fatal("the cache holds the failure or not the success")
	}
}
