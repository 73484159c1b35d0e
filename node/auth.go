package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/identity"
	"github.com/peerstack/peerstack/rest"
	restidentity "github.com/peerstack/peerstack/rest/identity"
)

// errBadToken is what every token failure looks like from outside.
var errBadToken = errors.New("invalid token")

// stateKeys verifies tokens with the signing keys of one state snapshot.
type stateKeys struct {
	sn  *statedb.Snapshot
	now time.Time
}

func (k stateKeys) VerifyKey(id string) ([]byte, bool) {
	key, ok := k.sn.SigningKey(id)
	if !ok || (!key.RetireAt.IsZero() && !k.now.Before(key.RetireAt)) {
		return nil, false
	}
	return key.Secret, true
}

// authenticator verifies tokens locally, with no Raft round trip.
type authenticator struct{ n *Node }

func (a authenticator) Authenticate(ctx context.Context, token string) (*rest.Credential, error) {
	return a.n.Authenticate(ctx, token)
}

// Authenticate verifies a token's signature, expiry and revocation against
// the local state.
func (n *Node) Authenticate(_ context.Context, token string) (*rest.Credential, error) {
	sn := n.State()
	now := n.Now()
	c, err := identity.Verify(token, stateKeys{sn: sn, now: now}, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadToken, err)
	}
	if sn.TokenRevoked(c.AuditID, c.UserID, c.IssuedAt) {
		return nil, fmt.Errorf("%w: revoked", errBadToken)
	}
	u, ok := sn.User(c.UserID)
	if !ok || !u.Enabled {
		return nil, fmt.Errorf("%w: user gone or disabled", errBadToken)
	}
	if c.ProjectID != "" {
		if p, ok := sn.Project(c.ProjectID); !ok || !p.Enabled {
			return nil, fmt.Errorf("%w: project gone or disabled", errBadToken)
		}
	}
	if c.AppCredID != "" {
		ac, ok := sn.AppCredential(c.AppCredID)
		if !ok || (!ac.ExpiresAt.IsZero() && !now.Before(ac.ExpiresAt)) {
			return nil, fmt.Errorf("%w: application credential gone", errBadToken)
		}
	}
	cred := &rest.Credential{
		UserID: c.UserID, UserName: u.Name, ProjectID: c.ProjectID, AuditID: c.AuditID, Token: token,
		IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, Methods: c.Methods, AppCredID: c.AppCredID,
	}
	for _, r := range c.Roles {
		cred.Roles = append(cred.Roles, r.Name)
		cred.RoleIDs = append(cred.RoleIDs, r.ID)
	}
	return cred, nil
}

// Authorize is the one policy function every request passes (rest.Backend).
func (n *Node) Authorize(c *rest.Credential, access rest.Access, owner string, public bool) rest.Decision {
	if c == nil {
		return rest.Forbidden
	}
	var a identity.Access
	switch access {
	case rest.Read:
		a = identity.Read
	case rest.Write:
		a = identity.Write
	default:
		a = identity.Admin
	}
	switch identity.Authorize(identity.Credential{UserID: c.UserID, ProjectID: c.ProjectID, Roles: c.Roles}, a, owner, public) {
	case identity.Allow:
		return rest.Allow
	case identity.NotFound:
		return rest.NotFound
	}
	return rest.Forbidden
}

// IssueToken signs claims with the active key (rest/identity.Backend).
func (n *Node) IssueToken(c restidentity.Claims) (string, error) {
	var active *statedb.SigningKey
	for _, k := range n.State().SigningKeys() {
		if k.RetireAt.IsZero() && (active == nil || k.CreatedAt.After(active.CreatedAt)) {
			active = k
		}
	}
	if active == nil {
		return "", errors.New("no active signing key")
	}
	ic := identity.Claims{UserID: c.UserID, DomainID: statedb.DefaultDomainID, ProjectID: c.ProjectID,
		Methods: c.Methods, AppCredID: c.AppCredID, IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, AuditID: c.AuditID}
	for _, r := range c.Roles {
		ic.Roles = append(ic.Roles, identity.RoleRef{ID: r.ID, Name: r.Name})
	}
	return identity.Sign(identity.Key{ID: active.ID, Secret: active.Secret}, ic)
}

// HashPassword hashes with the configured bcrypt cost.
func (n *Node) HashPassword(pw string) (string, error) {
	return identity.HashPassword(pw, n.cfg.BcryptCost)
}

// CheckPassword compares a password with its hash; recent successes are
// answered from a keyed cache so repeated logins skip bcrypt.
func (n *Node) CheckPassword(hash, pw string) bool {
	now := time.Now()
	if n.pwc.check(hash, pw, now) {
		return true
	}
	if !identity.CheckPassword(hash, pw) {
		return false
	}
	n.pwc.remember(hash, pw, now)
	return true
}
