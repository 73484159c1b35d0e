package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
	restidentity "github.com/peerstack/peerstack/rest/identity"
)

// adminContext returns ctx carrying the bootstrap admin's credential, as a
// request with an admin token would: commands the test proposes through a
// follower with it are forwarded on the admin's behalf (a member's
// certificate alone carries host commands only).
func adminContext(ctx context.Context, t testing.TB, n *node.Node) context.Context {
	t.Helper()
	sn := n.State()
	u, ok1 := sn.UserByName("admin")
	p, ok2 := sn.ProjectByName("admin")
	r, ok3 := sn.RoleByName("admin")
	if !ok1 || !ok2 || !ok3 {
		t.Fatal("adminContext: no admin user, project or role in the state")
	}
	now := n.Now()
	tok, err := n.IssueToken(restidentity.Claims{UserID: u.ID, ProjectID: p.ID, Roles: []restidentity.RoleRef{{ID: r.ID, Name: r.Name}},
		Methods: []string{"password"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour), AuditID: uuid.NewString()})
	if err != nil {
		t.Fatalf("adminContext: issue token: %v", err)
	}
	cred, err := n.Authenticate(ctx, tok)
	if err != nil {
		t.Fatalf("adminContext: %v", err)
	}
	return rest.WithCredential(ctx, cred)
}

// ByID returns the running node with member id id.
func (c *Cluster) ByID(id string) *node.Node {
	c.t.Helper()
	for _, n := range c.Running() {
		if n.ID() == id {
			return n
		}
	}
	c.t.Fatalf("no running node %s", id)
	return nil
}
