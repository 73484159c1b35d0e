package resttest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

func TestAuthorize(t *testing.T) {
	b := New()
	admin := &rest.Credential{UserID: "a", ProjectID: "p1", Roles: []string{"admin"}}
	member := &rest.Credential{UserID: "m", ProjectID: "p1", Roles: []string{"member"}}
	reader := &rest.Credential{UserID: "r", ProjectID: "p1", Roles: []string{"reader"}}
	norole := &rest.Credential{UserID: "n", ProjectID: "p1"}
	tests := []struct {
		name   string
		c      *rest.Credential
		access rest.Access
		owner  string
		public bool
		want   rest.Decision
	}{
		{"nil credential", nil, rest.Read, "p1", false, rest.Forbidden},
		{"admin anywhere", admin, rest.Write, "p2", false, rest.Allow},
		{"admin access", admin, rest.Admin, "", false, rest.Allow},
		{"member admin access", member, rest.Admin, "", false, rest.Forbidden},
		{"member own write", member, rest.Write, "p1", false, rest.Allow},
		{"member other project", member, rest.Read, "p2", false, rest.NotFound},
		{"member other public read", member, rest.Read, "p2", true, rest.Allow},
		{"member other public write", member, rest.Write, "p2", true, rest.Forbidden},
		{"member global read", member, rest.Read, "", false, rest.Allow},
		{"member global write", member, rest.Write, "", false, rest.Forbidden},
		{"reader own read", reader, rest.Read, "p1", false, rest.Allow},
		{"reader own write", reader, rest.Write, "p1", false, rest.Forbidden},
		{"no role own read", norole, rest.Read, "p1", false, rest.Forbidden},
	}
	for _, tt := range tests {
		if got := b.Authorize(tt.c, tt.access, tt.owner, tt.public); got != tt.want {
			t.Errorf("%s: Authorize = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestApplyAndSeed(t *testing.T) {
	b := New()
	seed := b.Bootstrap(t, statedb.Settings{TokenLifetime: time.Hour}, "pw")
	if seed.Admin == nil || seed.Project == nil || len(seed.Roles) != 3 || seed.SigningKey == nil {
		t.Fatalf("Bootstrap = %+v", seed)
	}
	if !CheckPassword(seed.Admin.PasswordHash, "pw") {
		t.Error("admin password hash does not match")
	}
	p, u := b.ProjectUser(t, "demo", "alice", "pw-a", "member", "reader")
	if got := b.State().UserRoles(u.ID, p.ID); len(got) != 2 {
		t.Errorf("UserRoles = %v; want member and reader", got)
	}
	idx := b.Index()
	_, err := rest.Propose(context.Background(), b, statedb.CmdCreateProject, statedb.Project{ID: "x", Name: "demo"})
	if !errors.Is(err, statedb.ErrConflict) {
		t.Errorf("duplicate project = %v; want a conflict", err)
	}
	if got := b.AppliedSince(idx); len(got) != 1 || got[0].Type != statedb.CmdCreateProject || got[0].Err == nil {
		t.Errorf("AppliedSince = %+v", got)
	}
	b.FailApply(rest.ErrNoLeader)
	if _, err := rest.Propose(context.Background(), b, statedb.CmdCreateRole, statedb.Role{ID: "r", Name: "r"}); !errors.Is(err, rest.ErrNoLeader) {
		t.Errorf("FailApply: err = %v", err)
	}
	b.FailApply(nil)
}

func TestMintAndAuthenticate(t *testing.T) {
	b := New()
	b.Bootstrap(t, statedb.Settings{}, "pw")
	p, u := b.ProjectUser(t, "demo", "alice", "pw-a", "member")
	tok := b.Token(u.ID, p.ID)
	c, err := b.Authenticate(context.Background(), tok)
	if err != nil || c.UserID != u.ID || c.ProjectID != p.ID || len(c.Roles) != 1 || c.Roles[0] != "member" {
		t.Fatalf("Authenticate = %+v, %v", c, err)
	}
	if _, err := b.Authenticate(context.Background(), "nope"); !errors.Is(err, ErrBadToken) {
		t.Errorf("unknown token: %v", err)
	}
	b.Advance(time.Second)
	b.MustApply(t, statedb.CmdRevokeToken, statedb.RevokeTokenCmd{UserID: u.ID, ExpiresAt: b.Now().Add(time.Hour)})
	if _, err := b.Authenticate(context.Background(), tok); !errors.Is(err, ErrBadToken) {
		t.Errorf("revoked token: %v", err)
	}
	b.Advance(time.Second)
	tok2 := b.Token(u.ID, p.ID)
	b.Advance(2 * time.Hour)
	if _, err := b.Authenticate(context.Background(), tok2); !errors.Is(err, ErrBadToken) {
		t.Errorf("expired token: %v", err)
	}
}
