package identity

import (
	"errors"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// userView is a user as Keystone renders it; never the password hash.
type userView struct {
	ID                string         `json:"id"`
	Name              string         `json:"name"`
	DomainID          string         `json:"domain_id"`
	Enabled           bool           `json:"enabled"`
	DefaultProjectID  string         `json:"default_project_id,omitempty"`
	Description       string         `json:"description,omitempty"`
	Email             string         `json:"email,omitempty"`
	PasswordExpiresAt *string        `json:"password_expires_at"`
	Options           map[string]any `json:"options"`
	Links             selfLink       `json:"links"`
}

func userJSON(c *rest.Ctx, sn *statedb.Snapshot, u *statedb.User) userView {
	dom := u.DomainID
	if dom == "" {
		dom = statedb.DefaultDomainID
	}
	return userView{
		ID: u.ID, Name: u.Name, DomainID: dom, Enabled: u.Enabled, DefaultProjectID: u.DefaultProjectID,
		Description: u.Description, Email: u.Email, Options: emptyOptions(),
		Links: selfLink{Self: v3URL(c, sn, "users/"+u.ID)},
	}
}

// userInput is the body of user create and update.
type userInput struct {
	Name             *string `json:"name"`
	Password         *string `json:"password"`
	Enabled          *bool   `json:"enabled"`
	DefaultProjectID *string `json:"default_project_id"`
	DomainID         *string `json:"domain_id"`
	Description      *string `json:"description"`
	Email            *string `json:"email"`
}

func (in *userInput) check() error {
	if in.DomainID != nil && *in.DomainID != "" && *in.DomainID != statedb.DefaultDomainID {
		return notFound("domain", *in.DomainID)
	}
	return nil
}

// hash hashes a new password; the password itself never reaches the state,
// a log or an error message.
func (s *service) hash(pw string) (string, error) {
	if pw == "" {
		return "", rest.BadRequest("Invalid input for field 'password': the password must not be empty.")
	}
	h, err := s.b.HashPassword(pw)
	var he *rest.HTTPError
	if errors.As(err, &he) {
		return "", err // the hashing pool is full
	}
	if err != nil {
		return "", rest.BadRequest("Invalid input for field 'password': the password is not acceptable (at most 72 bytes).")
	}
	return h, nil
}

// lookupUser finds a user by id: 404 when missing.
func lookupUser(sn *statedb.Snapshot, id string) (*statedb.User, error) {
	u, ok := sn.User(id)
	if !ok {
		return nil, notFound("user", id)
	}
	return u, nil
}

// getUser serves GET /v3/users/{id}: the user itself or an administrator.
func (s *service) getUser(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := lookupUser(sn, c.Var("user_id"))
	if err != nil {
		return nil, err
	}
	if err := s.selfOrAdmin(c, u.ID, "user"); err != nil {
		return nil, err
	}
	return map[string]any{"user": userJSON(c, sn, u)}, nil
}

// listUsers serves GET /v3/users (?name=, ?enabled=, ?domain_id=). An
// administrator sees every user, anyone else only itself.
func (s *service) listUsers(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "user"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	q := c.R.URL.Query()
	enabled, hasEnabled, err := queryBool(c, "enabled")
	if err != nil {
		return nil, err
	}
	admin := s.isAdmin(c)
	out := []userView{}
	for _, u := range sn.Users() {
		switch {
		case !admin && u.ID != c.Cred.UserID,
			q.Has("name") && u.Name != q.Get("name"),
			hasEnabled && u.Enabled != enabled,
			q.Has("domain_id") && q.Get("domain_id") != statedb.DefaultDomainID:
			continue
		}
		out = append(out, userJSON(c, sn, u))
	}
	return map[string]any{"users": out, "links": collectionLinks(c, sn)}, nil
}

// createUser serves POST /v3/users (admin): 201, as gophercloud insists.
func (s *service) createUser(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "user"); err != nil {
		return nil, err
	}
	var in userInput
	if err := decodeBody(c, "user", &in); err != nil {
		return nil, err
	}
	if in.Name == nil || *in.Name == "" {
		return nil, expecting("name", "user")
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	u := statedb.User{ID: s.newID(), Name: *in.Name, DomainID: statedb.DefaultDomainID, Enabled: true,
		CreatedAt: s.now()}
	if in.Enabled != nil {
		u.Enabled = *in.Enabled
	}
	if in.DefaultProjectID != nil {
		u.DefaultProjectID = *in.DefaultProjectID
	}
	if in.Description != nil {
		u.Description = *in.Description
	}
	if in.Email != nil {
		u.Email = *in.Email
	}
	if in.Password != nil && *in.Password != "" {
		h, err := s.hash(*in.Password)
		if err != nil {
			return nil, err
		}
		u.PasswordHash, u.PasswordChanged = h, u.CreatedAt
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateUser, u); err != nil {
		return nil, err
	}
	return created(map[string]any{"user": userJSON(c, s.b.State(), &u)}), nil
}

// updateUser serves PATCH /v3/users/{id} (admin). A new password or
// disabling the user revokes the user's earlier tokens; re-enabling a user
// also clears a lockout, as in Keystone.
func (s *service) updateUser(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := lookupUser(sn, c.Var("user_id"))
	if err != nil {
		return nil, err
	}
	if err := s.requireAdmin(c, "user"); err != nil {
		return nil, err
	}
	var in userInput
	if err := decodeBody(c, "user", &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	cmd := statedb.UpdateUserCmd{ID: u.ID, Name: in.Name, Enabled: in.Enabled,
		DefaultProjectID: in.DefaultProjectID, Description: in.Description, Email: in.Email}
	if in.Password != nil {
		h, err := s.hash(*in.Password)
		if err != nil {
			return nil, err
		}
		cmd.PasswordHash = &h
		cmd.RevokeTokens = true
	}
	if in.Enabled != nil && !*in.Enabled {
		cmd.RevokeTokens = true
	}
	if cmd.RevokeTokens {
		cmd.RevokeUntil = s.b.Now().Add(settings(sn).TokenLifetime)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateUser, cmd); err != nil {
		return nil, err
	}
	if in.Enabled != nil && *in.Enabled && in.Password == nil && u.FailedLogins > 0 {
		if err := s.recordLogin(c, statedb.CmdLoginSucceeded, u.ID); err != nil {
			return nil, err
		}
	}
	sn = s.b.State()
	if nu, ok := sn.User(u.ID); ok {
		u = nu
	}
	return map[string]any{"user": userJSON(c, sn, u)}, nil
}

// deleteUser serves DELETE /v3/users/{id} (admin); the user's assignments
// and application credentials go with it, and its tokens stop validating.
func (s *service) deleteUser(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	u, err := lookupUser(sn, c.Var("user_id"))
	if err != nil {
		return nil, err
	}
	if err := s.requireAdmin(c, "user"); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteUser, statedb.DeleteCmd{ID: u.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// changePassword serves POST /v3/users/{id}/password: users change their
// own password, proving the original one (which counts towards lockout).
// Every earlier token of the user, the caller's included, is revoked.
func (s *service) changePassword(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "user"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	u, err := lookupUser(sn, c.Var("user_id"))
	if err != nil {
		return nil, err
	}
	if c.Cred.UserID != u.ID {
		return nil, rest.Forbiddenf("You are not authorized to perform the requested action: users may only change their own password.")
	}
	var in struct {
		Password         *string `json:"password"`
		OriginalPassword *string `json:"original_password"`
	}
	if err := decodeBody(c, "user", &in); err != nil {
		return nil, err
	}
	if in.OriginalPassword == nil {
		return nil, expecting("original_password", "user")
	}
	if in.Password == nil {
		return nil, expecting("password", "user")
	}
	if err := s.checkPassword(c, sn, u, *in.OriginalPassword, "src/"+rest.Source(c.R).String()); err != nil {
		return nil, err
	}
	h, err := s.hash(*in.Password)
	if err != nil {
		return nil, err
	}
	cmd := statedb.UpdateUserCmd{ID: u.ID, PasswordHash: &h, RevokeTokens: true,
		RevokeUntil: s.b.Now().Add(settings(sn).TokenLifetime)}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateUser, cmd); err != nil {
		return nil, err
	}
	return noContent(), nil
}
