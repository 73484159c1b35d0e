// Package access decides who a request is and what it may do, from the
// local state alone: it verifies tokens (signature, expiry, revocation,
// a user, project or application credential gone), makes the one policy
// decision every API request passes, signs new tokens with the active key
// and runs this host's bcrypt work in a bounded pool behind a cache of
// recent successes. It reads the state; it never writes it, and it makes
// no network call.
package access

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/identity"
	"github.com/peerstack/peerstack/rest"
	restidentity "github.com/peerstack/peerstack/rest/identity"
)

// AdminProjectName names the project whose admin role is cloud-wide.
const AdminProjectName = "admin"

// ErrBadToken is what every token failure looks like from outside.
var ErrBadToken = errors.New("invalid token")

// Access answers the API's identity questions from the local state.
type Access struct {
	state      func() *statedb.Snapshot
	now        func() time.Time
	bcryptCost int
	pw         *pwCache
}

// New returns the access decisions over the state that state returns at
// the time now returns, hashing new passwords at bcryptCost.
func New(state func() *statedb.Snapshot, now func() time.Time, bcryptCost int) *Access {
	return &Access{state: state, now: now, bcryptCost: bcryptCost, pw: newPWCache(10*time.Minute, 10000)}
}

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

// Authenticate verifies a token's signature, expiry and revocation against
// the local state.
func (a *Access) Authenticate(_ context.Context, token string) (*rest.Credential, error) {
	sn := a.state()
	now := a.now()
	c, err := identity.Verify(token, stateKeys{sn: sn, now: now}, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if sn.TokenRevoked(c.AuditID, c.UserID, c.IssuedAt) {
		return nil, fmt.Errorf("%w: revoked", ErrBadToken)
	}
	u, ok := sn.User(c.UserID)
	if !ok || !u.Enabled {
		return nil, fmt.Errorf("%w: user gone or disabled", ErrBadToken)
	}
	if c.ProjectID != "" {
		if p, ok := sn.Project(c.ProjectID); !ok || !p.Enabled {
			return nil, fmt.Errorf("%w: project gone or disabled", ErrBadToken)
		}
	}
	if c.AppCredID != "" {
		ac, ok := sn.AppCredential(c.AppCredID)
		if !ok || (!ac.ExpiresAt.IsZero() && !now.Before(ac.ExpiresAt)) {
			return nil, fmt.Errorf("%w: application credential gone", ErrBadToken)
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
	if p, ok := sn.ProjectByName(AdminProjectName); !ok || p.ID != c.ProjectID {
		cred.ProjectAdminOnly = true // an admin role here rules this project only
	}
	return cred, nil
}

// Authorize is the one policy function every request passes (rest.Backend).
func (a *Access) Authorize(c *rest.Credential, access rest.Access, owner string, public bool) rest.Decision {
	adminProject := ""
	if p, ok := a.state().ProjectByName(AdminProjectName); ok {
		adminProject = p.ID
	}
	return Decide(c, access, adminProject, owner, public)
}

// Decide is the API's policy decision (node/identity.Authorize) for a
// credential, with adminProjectID the project whose admin role rules the
// cloud. No credential, or an access level the API does not have, is
// forbidden.
func Decide(c *rest.Credential, access rest.Access, adminProjectID, owner string, public bool) rest.Decision {
	if c == nil || access < rest.Read || access > rest.Admin {
		return rest.Forbidden
	}
	want := identity.Admin
	switch access {
	case rest.Read:
		want = identity.Read
	case rest.Write:
		want = identity.Write
	}
	ic := identity.Credential{UserID: c.UserID, ProjectID: c.ProjectID, Roles: c.Roles, AdminProjectID: adminProjectID}
	switch identity.Authorize(ic, want, owner, public) {
	case identity.Allow:
		return rest.Allow
	case identity.NotFound:
		return rest.NotFound
	}
	return rest.Forbidden
}

// IssueToken signs claims with the active key (rest/identity.Backend).
func (a *Access) IssueToken(c restidentity.Claims) (string, error) {
	var active *statedb.SigningKey
	for _, k := range a.state().SigningKeys() {
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

// errPoolFull is the API's answer when the bcrypt pool is full.
func errPoolFull() error {
	return &rest.HTTPError{Status: http.StatusServiceUnavailable, Quiet: true,
		Msg: "Too many passwords are being checked on this host; retry shortly.", Header: http.Header{"Retry-After": {"1"}}}
}

// HashPassword hashes with the configured bcrypt cost, in the password
// pool.
func (a *Access) HashPassword(pw string) (string, error) {
	h, err := a.pw.pool.Hash(context.Background(), pw, a.bcryptCost)
	if errors.Is(err, identity.ErrPoolFull) {
		return "", errPoolFull()
	}
	return h, err
}

// CheckPassword compares a password with its hash in the password pool;
// recent successes are answered from a keyed cache so repeated logins skip
// bcrypt. A full pool is an error.
func (a *Access) CheckPassword(ctx context.Context, hash, pw string) (bool, error) {
	now := time.Now()
	if a.pw.check(hash, pw, now) {
		return true, nil
	}
	ok, err := a.pw.pool.Check(ctx, hash, pw)
	if err != nil || !ok {
		return false, err
	}
	a.pw.remember(hash, pw, now)
	return true, nil
}
