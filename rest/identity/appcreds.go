package identity

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// appCredView is an application credential as Keystone renders it. Secret
// is set only in the create response.
type appCredView struct {
	ID           string        `json:"id"`
	Name         string        `json:"name"`
	Description  *string       `json:"description"`
	UserID       string        `json:"user_id"`
	ProjectID    string        `json:"project_id"`
	Roles        []appCredRole `json:"roles"`
	Unrestricted bool          `json:"unrestricted"`
	ExpiresAt    *string       `json:"expires_at"` // no zone, as gophercloud parses it
	AccessRules  []any         `json:"access_rules"`
	System       *string       `json:"system"`
	Secret       string        `json:"secret,omitempty"`
	Links        selfLink      `json:"links"`
}

type appCredRole struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	DomainID *string `json:"domain_id"`
}

func appCredJSON(c *rest.Ctx, sn *statedb.Snapshot, a *statedb.AppCredential) appCredView {
	v := appCredView{ID: a.ID, Name: a.Name, UserID: a.UserID, ProjectID: a.ProjectID,
		Unrestricted: a.Unrestricted, Roles: []appCredRole{}, AccessRules: []any{},
		Links: selfLink{Self: v3URL(c, sn, "users/"+a.UserID+"/application_credentials/"+a.ID)}}
	if a.Description != "" {
		d := a.Description
		v.Description = &d
	}
	if !a.ExpiresAt.IsZero() {
		e := a.ExpiresAt.UTC().Format(timeFormatNoZ)
		v.ExpiresAt = &e
	}
	for _, id := range a.RoleIDs {
		r := appCredRole{ID: id}
		if role, ok := sn.Role(id); ok {
			r.Name = role.Name
		}
		v.Roles = append(v.Roles, r)
	}
	return v
}

// appCredUser resolves the {user_id} of an application credential path and
// checks that the caller is that user or an administrator.
func (s *service) appCredUser(c *rest.Ctx, sn *statedb.Snapshot) (*statedb.User, error) {
	u, err := lookupUser(sn, c.Var("user_id"))
	if err != nil {
		return nil, err
	}
	if err := s.selfOrAdmin(c, u.ID, "application credential"); err != nil {
		return nil, err
	}
	return u, nil
}

// restrictedAppCred refuses to let a token from a restricted application
// credential manage application credentials, as Keystone does.
func restrictedAppCred(c *rest.Ctx, sn *statedb.Snapshot) error {
	if c.Cred.AppCredID == "" {
		return nil
	}
	if ac, ok := sn.AppCredential(c.Cred.AppCredID); ok && ac.Unrestricted {
		return nil
	}
	return rest.Forbiddenf("You are not authorized to perform the requested action: a restricted application credential cannot manage application credentials.")
}

// listAppCreds serves GET /v3/users/{id}/application_credentials (?name=).
func (s *service) listAppCreds(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := s.appCredUser(c, sn)
	if err != nil {
		return nil, err
	}
	name, hasName := c.R.URL.Query().Get("name"), c.R.URL.Query().Has("name")
	out := []appCredView{}
	for _, a := range sn.AppCredentials(u.ID) {
		if !hasName || a.Name == name {
			out = append(out, appCredJSON(c, sn, a))
		}
	}
	return map[string]any{"application_credentials": out, "links": collectionLinks(c, sn)}, nil
}

// lookupAppCred finds a credential of the path's user: 404 otherwise.
func lookupAppCred(c *rest.Ctx, sn *statedb.Snapshot, u *statedb.User) (*statedb.AppCredential, error) {
	id := c.Var("cred_id")
	a, ok := sn.AppCredential(id)
	if !ok || a.UserID != u.ID {
		return nil, notFound("application credential", id)
	}
	return a, nil
}

// getAppCred serves GET /v3/users/{id}/application_credentials/{cred}.
func (s *service) getAppCred(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := s.appCredUser(c, sn)
	if err != nil {
		return nil, err
	}
	a, err := lookupAppCred(c, sn, u)
	if err != nil {
		return nil, err
	}
	return map[string]any{"application_credential": appCredJSON(c, sn, a)}, nil
}

// deleteAppCred serves DELETE on one credential: 204; tokens issued from it
// stop validating.
func (s *service) deleteAppCred(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := s.appCredUser(c, sn)
	if err != nil {
		return nil, err
	}
	a, err := lookupAppCred(c, sn, u)
	if err != nil {
		return nil, err
	}
	if err := restrictedAppCred(c, sn); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteAppCred, statedb.DeleteCmd{ID: a.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

type appCredInput struct {
	Name         *string `json:"name"`
	Description  *string `json:"description"`
	Secret       *string `json:"secret"`
	ExpiresAt    *string `json:"expires_at"`
	Unrestricted *bool   `json:"unrestricted"`
	Roles        []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"roles"`
	AccessRules []any `json:"access_rules"`
}

// expiryLayouts are the forms Keystone accepts for expires_at.
var expiryLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02T15:04:05", "2006-01-02"}

func parseExpiry(s string) (time.Time, bool) {
	for _, l := range expiryLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC().Truncate(time.Microsecond), true
		}
	}
	return time.Time{}, false
}

// createAppCred serves POST /v3/users/{id}/application_credentials: users
// create credentials for themselves, bound to their token's project, with
// a subset of their token's roles (all of them by default). The secret is
// shown once; only its hash is kept.
func (s *service) createAppCred(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := lookupUser(sn, c.Var("user_id"))
	if err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Read, "", false, "application credential"); err != nil {
		return nil, err
	}
	if c.Cred.UserID != u.ID {
		return nil, rest.Forbiddenf("You are not authorized to perform the requested action: users may only create their own application credentials.")
	}
	if err := restrictedAppCred(c, sn); err != nil {
		return nil, err
	}
	if c.Cred.ProjectID == "" {
		return nil, rest.BadRequest("Application credentials require a project-scoped token.")
	}
	var in appCredInput
	if err := decodeBody(c, "application_credential", &in); err != nil {
		return nil, err
	}
	if in.Name == nil || *in.Name == "" {
		return nil, expecting("name", "application_credential")
	}
	if len(in.AccessRules) > 0 {
		return nil, rest.BadRequest("Access rules are not supported.")
	}
	now := s.now()
	a := statedb.AppCredential{ID: s.newID(), Name: *in.Name, UserID: u.ID, ProjectID: c.Cred.ProjectID,
		CreatedAt: now}
	if in.Description != nil {
		a.Description = *in.Description
	}
	if in.Unrestricted != nil {
		a.Unrestricted = *in.Unrestricted
	}
	if in.ExpiresAt != nil && *in.ExpiresAt != "" {
		t, ok := parseExpiry(*in.ExpiresAt)
		if !ok {
			return nil, rest.BadRequest("Invalid input for field 'expires_at': %q is not an ISO 8601 time.", *in.ExpiresAt)
		}
		if !t.After(now) {
			return nil, rest.BadRequest("Invalid input for field 'expires_at': the expiry must be in the future.")
		}
		a.ExpiresAt = t
	}
	tokenRoles := credClaims(sn, c.Cred).Roles
	if len(in.Roles) == 0 {
		for _, r := range tokenRoles {
			a.RoleIDs = append(a.RoleIDs, r.ID)
		}
	}
	for _, want := range in.Roles {
		var role *statedb.Role
		switch {
		case want.ID != "":
			role, _ = sn.Role(want.ID)
		case want.Name != "":
			role, _ = sn.RoleByName(want.Name)
		default:
			return nil, expecting("id or name", "role")
		}
		if role == nil {
			return nil, notFound("role", want.ID+want.Name)
		}
		if !slices.ContainsFunc(tokenRoles, func(r RoleRef) bool { return r.ID == role.ID }) {
			return nil, rest.NotFoundf("Could not find role assignment with role: %s, user or group: %s, project, domain, or system: %s.",
				role.ID, u.ID, a.ProjectID)
		}
		if !slices.Contains(a.RoleIDs, role.ID) {
			a.RoleIDs = append(a.RoleIDs, role.ID)
		}
	}
	if len(a.RoleIDs) == 0 {
		return nil, rest.BadRequest("The application credential needs at least one role.")
	}
	secret := ""
	if in.Secret != nil {
		secret = *in.Secret
	}
	if secret == "" {
		if secret, err = newSecret(); err != nil {
			return nil, err
		}
	} else if len(secret) < minSecretLen {
		return nil, rest.BadRequest("Invalid input for field 'secret': the secret must be at least %d characters.", minSecretLen)
	}
	a.SecretHash, err = s.b.HashPassword(secret)
	var he *rest.HTTPError
	if errors.As(err, &he) {
		return nil, err // the hashing pool is full
	}
	if err != nil {
		return nil, rest.BadRequest("Invalid input for field 'secret': the secret is not acceptable (at most 72 bytes).")
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateAppCred, a); err != nil {
		return nil, err
	}
	v := appCredJSON(c, s.b.State(), &a)
	v.Secret = secret
	return created(map[string]any{"application_credential": v}), nil
}

// newSecret returns 64 URL-safe characters (384 random bits).
func newSecret() (string, error) {
	var b [48]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
