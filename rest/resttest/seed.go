package resttest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Seed is what Bootstrap created.
type Seed struct {
	Project    *statedb.Project // "admin"
	Admin      *statedb.User    // "admin", admin role on Project
	Roles      map[string]*statedb.Role
	SigningKey *statedb.SigningKey
}

// Bootstrap applies the cluster's bootstrap command: cluster settings, the
// "admin" project, an "admin" user with adminPassword and the admin role on
// it, the roles admin, member and reader, and a signing key.
func (b *Backend) Bootstrap(t testing.TB, settings statedb.Settings, adminPassword string) *Seed {
	t.Helper()
	hash, err := HashPassword(adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	now := b.Now()
	roles := []statedb.Role{
		{ID: b.KeystoneID(), Name: "admin", Description: "Administrator of the whole cloud"},
		{ID: b.KeystoneID(), Name: "member", Description: "Read and write in a project"},
		{ID: b.KeystoneID(), Name: "reader", Description: "Read only in a project"},
	}
	project := statedb.Project{ID: b.KeystoneID(), Name: "admin", DomainID: statedb.DefaultDomainID,
		Enabled: true, Tags: []string{}, CreatedAt: now}
	admin := statedb.User{ID: b.KeystoneID(), Name: "admin", DomainID: statedb.DefaultDomainID,
		PasswordHash: hash, Enabled: true, DefaultProjectID: project.ID, CreatedAt: now}
	key := statedb.SigningKey{ID: "k1", Secret: []byte(strings.Repeat("s", 32)), CreatedAt: now}
	b.MustApply(t, statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:     statedb.ClusterConfig{ClusterID: "test", CreatedAt: now, Settings: settings},
		Member:     statedb.Member{ID: "host1", Name: "host1", JoinedAt: now, Version: MemberVersion},
		Project:    project,
		Admin:      admin,
		Roles:      roles,
		Assignment: statedb.Assignment{ProjectID: project.ID, UserID: admin.ID, RoleID: roles[0].ID},
		SigningKey: key,
	})
	sn := b.State()
	s := &Seed{Roles: map[string]*statedb.Role{}}
	s.Project, _ = sn.Project(project.ID)
	s.Admin, _ = sn.User(admin.ID)
	s.SigningKey, _ = sn.SigningKey(key.ID)
	for _, r := range roles {
		s.Roles[r.Name], _ = sn.Role(r.ID)
	}
	return s
}

// KeystoneID returns a new id in Keystone's form: 32 hex characters.
func (b *Backend) KeystoneID() string { return strings.ReplaceAll(b.NewID(), "-", "") }

// MustApply proposes one command and fails the test on error.
func (b *Backend) MustApply(t testing.TB, typ statedb.CmdType, payload any) uint64 {
	t.Helper()
	cmd, err := statedb.NewCommand(typ, b.NewID(), b.Now(), payload)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := b.Apply(context.Background(), cmd)
	if err != nil {
		t.Fatalf("apply command %d: %v", typ, err)
	}
	return idx
}

// CreateProject creates an enabled project.
func (b *Backend) CreateProject(t testing.TB, name string) *statedb.Project {
	t.Helper()
	p := statedb.Project{ID: b.KeystoneID(), Name: name, DomainID: statedb.DefaultDomainID, Enabled: true,
		Tags: []string{}, CreatedAt: b.Now()}
	b.MustApply(t, statedb.CmdCreateProject, p)
	got, _ := b.State().Project(p.ID)
	return got
}

// CreateUser creates an enabled user with password (none if empty) and an
// optional default project.
func (b *Backend) CreateUser(t testing.TB, name, password, defaultProjectID string) *statedb.User {
	t.Helper()
	u := statedb.User{ID: b.KeystoneID(), Name: name, DomainID: statedb.DefaultDomainID, Enabled: true,
		DefaultProjectID: defaultProjectID, CreatedAt: b.Now()}
	if password != "" {
		h, err := HashPassword(password)
		if err != nil {
			t.Fatal(err)
		}
		u.PasswordHash = h
	}
	b.MustApply(t, statedb.CmdCreateUser, u)
	got, _ := b.State().User(u.ID)
	return got
}

// CreateRole creates a role.
func (b *Backend) CreateRole(t testing.TB, name string) *statedb.Role {
	t.Helper()
	r := statedb.Role{ID: b.KeystoneID(), Name: name}
	b.MustApply(t, statedb.CmdCreateRole, r)
	got, _ := b.State().Role(r.ID)
	return got
}

// Grant gives userID the named roles on projectID; the roles must exist.
func (b *Backend) Grant(t testing.TB, projectID, userID string, roleNames ...string) {
	t.Helper()
	for _, name := range roleNames {
		r, ok := b.State().RoleByName(name)
		if !ok {
			t.Fatalf("Grant: no role %q", name)
		}
		b.MustApply(t, statedb.CmdGrantRole, statedb.Assignment{ProjectID: projectID, UserID: userID, RoleID: r.ID})
	}
}

// ProjectUser creates a project and a user with password holding roleNames
// on it (default project set), and returns both.
func (b *Backend) ProjectUser(t testing.TB, project, user, password string, roleNames ...string) (*statedb.Project, *statedb.User) {
	t.Helper()
	p := b.CreateProject(t, project)
	u := b.CreateUser(t, user, password, p.ID)
	b.Grant(t, p.ID, u.ID, roleNames...)
	return p, u
}

// Token mints a token for userID scoped to projectID with the roles the
// state gives them, valid for an hour.
func (b *Backend) Token(userID, projectID string) string {
	c := b.Credential(userID, projectID)
	c.ExpiresAt = c.IssuedAt.Add(time.Hour)
	return b.Mint(c)
}

// MemberVersion is the software version the seeded member reports: new
// enough for every command of this build that handlers gate themselves.
const MemberVersion = "0.2.0"
