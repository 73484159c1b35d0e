package statedb

import (
	"strings"
	"time"
)

const (
	tblProjects    = "projects"
	tblUsers       = "users"
	tblRoles       = "roles"
	tblAssignments = "assignments"
	tblAppCreds    = "app_creds"
	tblSigningKeys = "signing_keys"
	tblRevocations = "revocations"

	// DefaultDomainID is the id of the only domain, "Default".
	DefaultDomainID = "default"
)

// Project is a Keystone project; every object belongs to one.
type Project struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	DomainID    string    `json:"domain_id"`
	Description string    `json:"description"`
	Enabled     bool      `json:"enabled"`
	Tags        []string  `json:"tags"`
	CreatedAt   time.Time `json:"created_at"`
}

// User is a Keystone user with a hashed password.
type User struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	DomainID         string    `json:"domain_id"`
	PasswordHash     string    `json:"password_hash"`
	Enabled          bool      `json:"enabled"`
	DefaultProjectID string    `json:"default_project_id,omitempty"`
	Description      string    `json:"description,omitempty"`
	Email            string    `json:"email,omitempty"`
	FailedLogins     int       `json:"failed_logins,omitempty"`
	LastFailure      time.Time `json:"last_failure,omitempty"`
	PasswordChanged  time.Time `json:"password_changed,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
}

// Role is a named role ("admin", "member", "reader", ...).
type Role struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// Assignment grants a role to a user on a project.
type Assignment struct {
	ID        string `json:"id"` // AssignmentID(project, user, role)
	ProjectID string `json:"project_id"`
	UserID    string `json:"user_id"`
	RoleID    string `json:"role_id"`
}

// AssignmentID is the deterministic key of an assignment.
func AssignmentID(project, user, role string) string { return project + "/" + user + "/" + role }

// AppCredential lets automation authenticate as a user on one project.
type AppCredential struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	UserID       string    `json:"user_id"`
	ProjectID    string    `json:"project_id"`
	SecretHash   string    `json:"secret_hash"`
	RoleIDs      []string  `json:"role_ids"`
	Description  string    `json:"description,omitempty"`
	ExpiresAt    time.Time `json:"expires_at,omitempty"`
	Unrestricted bool      `json:"unrestricted"`
	CreatedAt    time.Time `json:"created_at"`
}

// SigningKey signs identity tokens. The newest without RetireAt signs;
// the others verify until RetireAt.
type SigningKey struct {
	ID        string    `json:"id"`
	Secret    []byte    `json:"secret"`
	CreatedAt time.Time `json:"created_at"`
	RetireAt  time.Time `json:"retire_at,omitempty"`
}

// Revocation revokes one token (AuditID) or all tokens of a user issued
// before IssuedBefore. It is dropped after ExpiresAt, when every token it
// could match has expired anyway.
type Revocation struct {
	ID           string    `json:"id"`
	AuditID      string    `json:"audit_id,omitempty"`
	UserID       string    `json:"user_id,omitempty"`
	IssuedBefore time.Time `json:"issued_before,omitempty"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// Project returns a project by id.
func (sn *Snapshot) Project(id string) (*Project, bool) { return get[Project](sn, tblProjects, id) }

// ProjectByName returns a project by name.
func (sn *Snapshot) ProjectByName(name string) (*Project, bool) {
	return firstBy[Project](sn, tblProjects, "Name", name)
}

// Projects lists projects sorted by name.
func (sn *Snapshot) Projects() []*Project {
	return sortByName(list[Project](sn, tblProjects), func(p *Project) string { return p.Name })
}

// User returns a user by id.
func (sn *Snapshot) User(id string) (*User, bool) { return get[User](sn, tblUsers, id) }

// UserByName returns a user by name.
func (sn *Snapshot) UserByName(name string) (*User, bool) {
	return firstBy[User](sn, tblUsers, "Name", name)
}

// Users lists users sorted by name.
func (sn *Snapshot) Users() []*User {
	return sortByName(list[User](sn, tblUsers), func(u *User) string { return u.Name })
}

// Role returns a role by id.
func (sn *Snapshot) Role(id string) (*Role, bool) { return get[Role](sn, tblRoles, id) }

// RoleByName returns a role by name.
func (sn *Snapshot) RoleByName(name string) (*Role, bool) {
	return firstBy[Role](sn, tblRoles, "Name", name)
}

// Roles lists roles sorted by name.
func (sn *Snapshot) Roles() []*Role {
	return sortByName(list[Role](sn, tblRoles), func(r *Role) string { return r.Name })
}

// Assignments lists all role assignments.
func (sn *Snapshot) Assignments() []*Assignment { return list[Assignment](sn, tblAssignments) }

// UserRoles returns the roles of user on project.
func (sn *Snapshot) UserRoles(userID, projectID string) []*Role {
	var out []*Role
	for _, a := range listBy[Assignment](sn, tblAssignments, "UserID", userID) {
		if a.ProjectID != projectID {
			continue
		}
		if r, ok := sn.Role(a.RoleID); ok {
			out = append(out, r)
		}
	}
	return sortByName(out, func(r *Role) string { return r.Name })
}

// UserProjects returns the projects where the user has any role.
func (sn *Snapshot) UserProjects(userID string) []*Project {
	seen := map[string]bool{}
	var out []*Project
	for _, a := range listBy[Assignment](sn, tblAssignments, "UserID", userID) {
		if seen[a.ProjectID] {
			continue
		}
		seen[a.ProjectID] = true
		if p, ok := sn.Project(a.ProjectID); ok {
			out = append(out, p)
		}
	}
	return sortByName(out, func(p *Project) string { return p.Name })
}

// AppCredential returns an application credential by id.
func (sn *Snapshot) AppCredential(id string) (*AppCredential, bool) {
	return get[AppCredential](sn, tblAppCreds, id)
}

// AppCredentials lists a user's application credentials.
func (sn *Snapshot) AppCredentials(userID string) []*AppCredential {
	return sortByName(listBy[AppCredential](sn, tblAppCreds, "UserID", userID),
		func(a *AppCredential) string { return a.Name })
}

// SigningKeys lists all signing keys.
func (sn *Snapshot) SigningKeys() []*SigningKey { return list[SigningKey](sn, tblSigningKeys) }

// SigningKey returns one key by id.
func (sn *Snapshot) SigningKey(id string) (*SigningKey, bool) {
	return get[SigningKey](sn, tblSigningKeys, id)
}

// TokenRevoked reports whether a token with this audit id, user and issue
// time has been revoked.
func (sn *Snapshot) TokenRevoked(auditID, userID string, issuedAt time.Time) bool {
	if auditID != "" {
		if _, ok := firstBy[Revocation](sn, tblRevocations, "AuditID", auditID); ok {
			return true
		}
	}
	for _, r := range listBy[Revocation](sn, tblRevocations, "UserID", userID) {
		if !issuedAt.After(r.IssuedBefore) {
			return true
		}
	}
	return false
}

func validName(kind, name string) error {
	if strings.TrimSpace(name) == "" || len(name) > 255 {
		return Errorf(KindInvalid, "%s name must be 1-255 characters", kind)
	}
	return nil
}

func applyCreateProject(t *Txn, c *Command) error {
	p, err := decode[Project](c)
	if err != nil {
		return err
	}
	if err := validName("project", p.Name); err != nil {
		return err
	}
	if _, ok := t.read().ProjectByName(p.Name); ok {
		return Errorf(KindConflict, "Duplicate entry found with name %s at domain ID default.", p.Name)
	}
	if p.DomainID == "" {
		p.DomainID = DefaultDomainID
	}
	return t.insert(tblProjects, p)
}

func applyUpdateProject(t *Txn, c *Command) error {
	p, err := decode[Project](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Project(p.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find project: %s.", p.ID)
	}
	if err := validName("project", p.Name); err != nil {
		return err
	}
	if other, ok := t.read().ProjectByName(p.Name); ok && other.ID != p.ID {
		return Errorf(KindConflict, "Duplicate entry found with name %s at domain ID default.", p.Name)
	}
	p.CreatedAt, p.DomainID = old.CreatedAt, old.DomainID
	return t.insert(tblProjects, p)
}

// DeleteCmd names one object to delete.
type DeleteCmd struct {
	ID string `json:"id"`
}

func applyDeleteProject(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	p, ok := t.read().Project(d.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find project: %s.", d.ID)
	}
	for _, a := range listBy[Assignment](t.read(), tblAssignments, "ProjectID", p.ID) {
		if err := t.delete(tblAssignments, a); err != nil {
			return err
		}
	}
	if err := t.delete(tblProjects, p); err != nil {
		return err
	}
	return dropProjectLeftovers(t, p.ID) // secgroups_project.go
}

func applyCreateUser(t *Txn, c *Command) error {
	u, err := decode[User](c)
	if err != nil {
		return err
	}
	if err := validName("user", u.Name); err != nil {
		return err
	}
	if _, ok := t.read().UserByName(u.Name); ok {
		return Errorf(KindConflict, "Duplicate entry found with name %s at domain ID default.", u.Name)
	}
	if u.DefaultProjectID != "" {
		if _, ok := t.read().Project(u.DefaultProjectID); !ok {
			return Errorf(KindNotFound, "Could not find project: %s.", u.DefaultProjectID)
		}
	}
	if u.DomainID == "" {
		u.DomainID = DefaultDomainID
	}
	return t.insert(tblUsers, u)
}

// UpdateUserCmd changes a user. Nil fields stay as they are.
type UpdateUserCmd struct {
	ID               string  `json:"id"`
	Name             *string `json:"name,omitempty"`
	PasswordHash     *string `json:"password_hash,omitempty"`
	Enabled          *bool   `json:"enabled,omitempty"`
	DefaultProjectID *string `json:"default_project_id,omitempty"`
	Description      *string `json:"description,omitempty"`
	Email            *string `json:"email,omitempty"`
	// RevokeTokens revokes the user's earlier tokens (password change, disable).
	RevokeTokens bool      `json:"revoke_tokens,omitempty"`
	RevokeUntil  time.Time `json:"revoke_until,omitempty"` // now + token lifetime
}

func applyUpdateUser(t *Txn, c *Command) error {
	r, err := decode[UpdateUserCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().User(r.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find user: %s.", r.ID)
	}
	u := *old
	if r.Name != nil {
		if err := validName("user", *r.Name); err != nil {
			return err
		}
		if other, ok := t.read().UserByName(*r.Name); ok && other.ID != u.ID {
			return Errorf(KindConflict, "Duplicate entry found with name %s at domain ID default.", *r.Name)
		}
		u.Name = *r.Name
	}
	if r.PasswordHash != nil {
		u.PasswordHash, u.PasswordChanged = *r.PasswordHash, c.Time
		u.FailedLogins, u.LastFailure = 0, time.Time{}
	}
	if r.Enabled != nil {
		u.Enabled = *r.Enabled
	}
	if r.DefaultProjectID != nil {
		if *r.DefaultProjectID != "" {
			if _, ok := t.read().Project(*r.DefaultProjectID); !ok {
				return Errorf(KindNotFound, "Could not find project: %s.", *r.DefaultProjectID)
			}
		}
		u.DefaultProjectID = *r.DefaultProjectID
	}
	if r.Description != nil {
		u.Description = *r.Description
	}
	if r.Email != nil {
		u.Email = *r.Email
	}
	if r.RevokeTokens {
		if err := revokeUser(t, u.ID, c.Time, r.RevokeUntil); err != nil {
			return err
		}
	}
	return t.insert(tblUsers, &u)
}

func revokeUser(t *Txn, userID string, before, until time.Time) error {
	return t.insert(tblRevocations, &Revocation{
		ID: "user/" + userID + "/" + before.Format(time.RFC3339Nano), UserID: userID,
		IssuedBefore: before, ExpiresAt: until,
	})
}

func applyDeleteUser(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	u, ok := t.read().User(d.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find user: %s.", d.ID)
	}
	for _, a := range listBy[Assignment](t.read(), tblAssignments, "UserID", u.ID) {
		if err := t.delete(tblAssignments, a); err != nil {
			return err
		}
	}
	for _, a := range listBy[AppCredential](t.read(), tblAppCreds, "UserID", u.ID) {
		if err := t.delete(tblAppCreds, a); err != nil {
			return err
		}
	}
	return t.delete(tblUsers, u)
}

func applyCreateRole(t *Txn, c *Command) error {
	r, err := decode[Role](c)
	if err != nil {
		return err
	}
	if err := validName("role", r.Name); err != nil {
		return err
	}
	if _, ok := t.read().RoleByName(r.Name); ok {
		return Errorf(KindConflict, "Duplicate entry found with name %s.", r.Name)
	}
	return t.insert(tblRoles, r)
}

func applyUpdateRole(t *Txn, c *Command) error {
	r, err := decode[Role](c)
	if err != nil {
		return err
	}
	if _, ok := t.read().Role(r.ID); !ok {
		return Errorf(KindNotFound, "Could not find role: %s.", r.ID)
	}
	if err := validName("role", r.Name); err != nil {
		return err
	}
	if other, ok := t.read().RoleByName(r.Name); ok && other.ID != r.ID {
		return Errorf(KindConflict, "Duplicate entry found with name %s.", r.Name)
	}
	return t.insert(tblRoles, r)
}

func applyDeleteRole(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	r, ok := t.read().Role(d.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find role: %s.", d.ID)
	}
	for _, a := range listBy[Assignment](t.read(), tblAssignments, "RoleID", r.ID) {
		if err := t.delete(tblAssignments, a); err != nil {
			return err
		}
	}
	return t.delete(tblRoles, r)
}

func applyGrantRole(t *Txn, c *Command) error {
	a, err := decode[Assignment](c)
	if err != nil {
		return err
	}
	sn := t.read()
	if _, ok := sn.Project(a.ProjectID); !ok {
		return Errorf(KindNotFound, "Could not find project: %s.", a.ProjectID)
	}
	if _, ok := sn.User(a.UserID); !ok {
		return Errorf(KindNotFound, "Could not find user: %s.", a.UserID)
	}
	if _, ok := sn.Role(a.RoleID); !ok {
		return Errorf(KindNotFound, "Could not find role: %s.", a.RoleID)
	}
	a.ID = AssignmentID(a.ProjectID, a.UserID, a.RoleID)
	return t.insert(tblAssignments, a) // idempotent: same id replaces
}

func applyRevokeRole(t *Txn, c *Command) error {
	a, err := decode[Assignment](c)
	if err != nil {
		return err
	}
	old, ok := get[Assignment](t.read(), tblAssignments, AssignmentID(a.ProjectID, a.UserID, a.RoleID))
	if !ok {
		return Errorf(KindNotFound, "Could not find role assignment.")
	}
	return t.delete(tblAssignments, old)
}

func applyCreateAppCred(t *Txn, c *Command) error {
	a, err := decode[AppCredential](c)
	if err != nil {
		return err
	}
	if err := validName("application credential", a.Name); err != nil {
		return err
	}
	for _, o := range t.read().AppCredentials(a.UserID) {
		if o.Name == a.Name {
			return Errorf(KindConflict, "Duplicate entry found with name %s.", a.Name)
		}
	}
	return t.insert(tblAppCreds, a)
}

func applyDeleteAppCred(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	a, ok := t.read().AppCredential(d.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find application credential: %s.", d.ID)
	}
	return t.delete(tblAppCreds, a)
}

// RotateSigningKeysCmd adds a new active key, retires the previous active
// one at RetireOldAt and drops keys already retired.
type RotateSigningKeysCmd struct {
	New         SigningKey `json:"new"`
	RetireOldAt time.Time  `json:"retire_old_at"`
}

func applyRotateSigningKeys(t *Txn, c *Command) error {
	r, err := decode[RotateSigningKeysCmd](c)
	if err != nil {
		return err
	}
	if r.New.ID == "" || len(r.New.Secret) < 16 {
		return Errorf(KindInvalid, "signing key needs an id and a secret of at least 16 bytes")
	}
	for _, k := range t.read().SigningKeys() {
		switch {
		case !k.RetireAt.IsZero() && !k.RetireAt.After(c.Time):
			if err := t.delete(tblSigningKeys, k); err != nil {
				return err
			}
		case k.RetireAt.IsZero():
			cp := *k
			cp.RetireAt = r.RetireOldAt
			if err := t.insert(tblSigningKeys, &cp); err != nil {
				return err
			}
		}
	}
	k := r.New
	return t.insert(tblSigningKeys, &k)
}

// RevokeTokenCmd revokes one token by audit id, or every token of a user.
type RevokeTokenCmd struct {
	AuditID   string    `json:"audit_id,omitempty"`
	UserID    string    `json:"user_id,omitempty"`
	ExpiresAt time.Time `json:"expires_at"` // when the revoked tokens expire anyway
}

func applyRevokeToken(t *Txn, c *Command) error {
	r, err := decode[RevokeTokenCmd](c)
	if err != nil {
		return err
	}
	// Drop revocations whose tokens have all expired.
	for _, old := range list[Revocation](t.read(), tblRevocations) {
		if !old.ExpiresAt.After(c.Time) {
			_ = t.txn.Delete(tblRevocations, old)
		}
	}
	switch {
	case r.AuditID != "":
		return t.insert(tblRevocations, &Revocation{ID: "audit/" + r.AuditID, AuditID: r.AuditID, ExpiresAt: r.ExpiresAt})
	case r.UserID != "":
		return revokeUser(t, r.UserID, c.Time, r.ExpiresAt)
	}
	return Errorf(KindInvalid, "revocation needs an audit id or a user id")
}

// LoginCmd records a failed or successful password login for lockout.
type LoginCmd struct {
	UserID string `json:"user_id"`
}

func applyLoginFailed(t *Txn, c *Command) error {
	r, err := decode[LoginCmd](c)
	if err != nil {
		return err
	}
	u, ok := t.read().User(r.UserID)
	if !ok {
		return nil
	}
	cp := *u
	cp.FailedLogins++
	cp.LastFailure = c.Time
	return t.insert(tblUsers, &cp)
}

func applyLoginSucceeded(t *Txn, c *Command) error {
	r, err := decode[LoginCmd](c)
	if err != nil {
		return err
	}
	u, ok := t.read().User(r.UserID)
	if !ok || u.FailedLogins == 0 {
		return nil
	}
	cp := *u
	cp.FailedLogins, cp.LastFailure = 0, time.Time{}
	return t.insert(tblUsers, &cp)
}

// ErrAccountLocked is the message of the KindForbidden error a login
// attempt on a locked account gets. It names no user.
const ErrAccountLocked = "The account is locked."

// applyLoginAttempt reserves one password check for a user under the
// cluster's lockout settings, before the password is checked: a locked
// user is refused; an expired lock starts the count again; otherwise the
// attempt counts as a failure until a CmdLoginSucceeded resets it. Since
// apply is serial, N parallel guesses reserve at most LockoutAttempts
// checks, whatever snapshot each proposer read. A missing user or lockout
// turned off reserves nothing and refuses nothing.
func applyLoginAttempt(t *Txn, c *Command) error {
	r, err := decode[LoginCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	u, ok := sn.User(r.UserID)
	if !ok {
		return nil
	}
	var st Settings
	if cfg, ok := sn.Cluster(); ok {
		st = cfg.Settings
	}
	if st.LockoutAttempts <= 0 {
		return nil
	}
	cp := *u
	if cp.FailedLogins >= st.LockoutAttempts {
		if st.LockoutDuration <= 0 || c.Time.Sub(cp.LastFailure) < st.LockoutDuration {
			return Errorf(KindForbidden, "%s", ErrAccountLocked)
		}
		cp.FailedLogins = 0
	}
	cp.FailedLogins++
	cp.LastFailure = c.Time
	return t.insert(tblUsers, &cp)
}
