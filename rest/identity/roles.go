package identity

import (
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// roleView is a role as Keystone renders it.
type roleView struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	DomainID    *string        `json:"domain_id"`
	Description *string        `json:"description"`
	Options     map[string]any `json:"options"`
	Links       selfLink       `json:"links"`
}

func roleJSON(c *rest.Ctx, sn *statedb.Snapshot, r *statedb.Role) roleView {
	v := roleView{ID: r.ID, Name: r.Name, Options: emptyOptions(), Links: selfLink{Self: v3URL(c, sn, "roles/"+r.ID)}}
	if r.Description != "" {
		d := r.Description
		v.Description = &d
	}
	return v
}

type roleInput struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	DomainID    *string `json:"domain_id"`
}

func (in *roleInput) check() error {
	if in.DomainID != nil && *in.DomainID != "" {
		return rest.BadRequest("Domain-specific roles are not supported.")
	}
	return nil
}

// getRole serves GET /v3/roles/{id}; roles are readable by every user.
func (s *service) getRole(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "role"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	r, ok := sn.Role(c.Var("role_id"))
	if !ok {
		return nil, notFound("role", c.Var("role_id"))
	}
	return map[string]any{"role": roleJSON(c, sn, r)}, nil
}

// listRoles serves GET /v3/roles (?name=).
func (s *service) listRoles(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "role"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	q := c.R.URL.Query()
	out := []roleView{}
	for _, r := range sn.Roles() {
		if q.Has("domain_id") && q.Get("domain_id") != "" {
			continue // no domain-specific roles
		}
		if !q.Has("name") || r.Name == q.Get("name") {
			out = append(out, roleJSON(c, sn, r))
		}
	}
	return map[string]any{"roles": out, "links": collectionLinks(c, sn)}, nil
}

// createRole serves POST /v3/roles (admin): 201.
func (s *service) createRole(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "role"); err != nil {
		return nil, err
	}
	var in roleInput
	if err := decodeBody(c, "role", &in); err != nil {
		return nil, err
	}
	if in.Name == nil || *in.Name == "" {
		return nil, expecting("name", "role")
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	r := statedb.Role{ID: s.newID(), Name: *in.Name}
	if in.Description != nil {
		r.Description = *in.Description
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateRole, r); err != nil {
		return nil, err
	}
	return created(map[string]any{"role": roleJSON(c, s.b.State(), &r)}), nil
}

// updateRole serves PATCH /v3/roles/{id} (admin). Renaming a role the
// policy knows by name (admin, member, reader) changes what it grants.
func (s *service) updateRole(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	old, ok := sn.Role(c.Var("role_id"))
	if !ok {
		return nil, notFound("role", c.Var("role_id"))
	}
	if err := s.requireAdmin(c, "role"); err != nil {
		return nil, err
	}
	var in roleInput
	if err := decodeBody(c, "role", &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	r := *old
	if in.Name != nil {
		r.Name = *in.Name
	}
	if in.Description != nil {
		r.Description = *in.Description
	}
	if oneEntry(sn, statedb.CmdUpdateRoleTokens) {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateRoleTokens, statedb.UpdateRoleCmd{Role: r, TokensExpireAt: tokensExpire(s.b, sn)}); err != nil {
			return nil, err
		}
		return map[string]any{"role": roleJSON(c, s.b.State(), &r)}, nil
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateRole, r); err != nil {
		return nil, err
	}
	if r.Name != old.Name {
		// Tokens carry role names: revoke those that carry the old one.
		if err := s.revokeUsers(c, sn, roleHolders(sn, old.ID)...); err != nil {
			return nil, err
		}
	}
	return map[string]any{"role": roleJSON(c, s.b.State(), &r)}, nil
}

// deleteRole serves DELETE /v3/roles/{id} (admin). Its assignments go with
// it and the tokens of users who held it are revoked.
func (s *service) deleteRole(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	r, ok := sn.Role(c.Var("role_id"))
	if !ok {
		return nil, notFound("role", c.Var("role_id"))
	}
	if err := s.requireAdmin(c, "role"); err != nil {
		return nil, err
	}
	if oneEntry(sn, statedb.CmdDeleteRoleTokens) {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteRoleTokens, statedb.DeleteRoleCmd{ID: r.ID, TokensExpireAt: tokensExpire(s.b, sn)}); err != nil {
			return nil, err
		}
		return noContent(), nil
	}
	holders := roleHolders(sn, r.ID)
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteRole, statedb.DeleteCmd{ID: r.ID}); err != nil {
		return nil, err
	}
	if err := s.revokeUsers(c, sn, holders...); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// roleHolders lists the users holding a role anywhere, once each.
func roleHolders(sn *statedb.Snapshot, roleID string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range sn.Assignments() {
		if a.RoleID == roleID && !seen[a.UserID] {
			seen[a.UserID] = true
			out = append(out, a.UserID)
		}
	}
	return out
}

// grantTarget resolves the project, user and role of a grant path; each
// missing one is a 404.
func grantTarget(c *rest.Ctx, sn *statedb.Snapshot) (statedb.Assignment, error) {
	a := statedb.Assignment{ProjectID: c.Var("project_id"), UserID: c.Var("user_id"), RoleID: c.Var("role_id")}
	if _, ok := sn.Project(a.ProjectID); !ok {
		return a, notFound("project", a.ProjectID)
	}
	if _, ok := sn.User(a.UserID); !ok {
		return a, notFound("user", a.UserID)
	}
	if a.RoleID != "" {
		if _, ok := sn.Role(a.RoleID); !ok {
			return a, notFound("role", a.RoleID)
		}
	}
	return a, nil
}

func hasAssignment(sn *statedb.Snapshot, a statedb.Assignment) bool {
	for _, r := range sn.UserRoles(a.UserID, a.ProjectID) {
		if r.ID == a.RoleID {
			return true
		}
	}
	return false
}

// grant serves PUT /v3/projects/{p}/users/{u}/roles/{r} (admin): 204 with
// an empty body, the only code gophercloud's roles.Assign accepts.
func (s *service) grant(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "role assignment"); err != nil {
		return nil, err
	}
	a, err := grantTarget(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdGrantRole, a); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// checkGrant serves HEAD on a grant: 204 when it exists, else 404.
func (s *service) checkGrant(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	if err := s.selfOrAdmin(c, c.Var("user_id"), "role assignment"); err != nil {
		return nil, err
	}
	a, err := grantTarget(c, sn)
	if err != nil {
		return nil, err
	}
	if !hasAssignment(sn, a) {
		return nil, rest.NotFoundf("Could not find role assignment with role: %s, user: %s, project: %s.",
			a.RoleID, a.UserID, a.ProjectID)
	}
	return noContent(), nil
}

// revokeGrant serves DELETE on a grant (admin). The user's tokens carry
// their roles, so they are revoked; the user signs in again.
func (s *service) revokeGrant(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "role assignment"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	a, err := grantTarget(c, sn)
	if err != nil {
		return nil, err
	}
	if oneEntry(sn, statedb.CmdRevokeRoleTokens) {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRevokeRoleTokens, statedb.RevokeRoleCmd{Assignment: a, TokensExpireAt: tokensExpire(s.b, sn)}); err != nil {
			return nil, err
		}
		return noContent(), nil
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRevokeRole, a); err != nil {
		return nil, err
	}
	if err := s.revokeUsers(c, sn, a.UserID); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// listGrants serves GET /v3/projects/{p}/users/{u}/roles (the user itself
// or an administrator).
func (s *service) listGrants(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	if err := s.selfOrAdmin(c, c.Var("user_id"), "role assignment"); err != nil {
		return nil, err
	}
	a, err := grantTarget(c, sn)
	if err != nil {
		return nil, err
	}
	out := []roleView{}
	for _, r := range sn.UserRoles(a.UserID, a.ProjectID) {
		out = append(out, roleJSON(c, sn, r))
	}
	return map[string]any{"roles": out, "links": collectionLinks(c, sn)}, nil
}

// listAssignments serves GET /v3/role_assignments with the user.id,
// scope.project.id and role.id filters and include_names. Administrators
// see every assignment, other users their own. There are no groups,
// domain or system assignments, so filters on them match nothing, and
// effective changes nothing.
func (s *service) listAssignments(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "role assignment"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	q := c.R.URL.Query()
	names, _, err := queryBool(c, "include_names")
	if err != nil {
		return nil, err
	}
	admin := s.isAdmin(c)
	out := []map[string]any{}
	none := q.Has("group.id") || q.Has("scope.domain.id") || q.Has("scope.system") || q.Has("scope.OS-INHERIT:inherited_to")
	for _, a := range sn.Assignments() {
		switch {
		case none,
			!admin && a.UserID != c.Cred.UserID,
			q.Has("user.id") && a.UserID != q.Get("user.id"),
			q.Has("scope.project.id") && a.ProjectID != q.Get("scope.project.id"),
			q.Has("role.id") && a.RoleID != q.Get("role.id"):
			continue
		}
		out = append(out, assignmentJSON(c, sn, a, names))
	}
	return map[string]any{"role_assignments": out, "links": collectionLinks(c, sn)}, nil
}

func assignmentJSON(c *rest.Ctx, sn *statedb.Snapshot, a *statedb.Assignment, names bool) map[string]any {
	role := map[string]any{"id": a.RoleID}
	user := map[string]any{"id": a.UserID}
	project := map[string]any{"id": a.ProjectID}
	if names {
		if r, ok := sn.Role(a.RoleID); ok {
			role["name"] = r.Name
		}
		if u, ok := sn.User(a.UserID); ok {
			user["name"] = u.Name
			user["domain"] = defaultDomainRef()
		}
		if p, ok := sn.Project(a.ProjectID); ok {
			project["name"] = p.Name
			project["domain"] = defaultDomainRef()
		}
	}
	return map[string]any{
		"role":  role,
		"user":  user,
		"scope": map[string]any{"project": project},
		"links": map[string]string{
			"assignment": v3URL(c, sn, "projects/"+a.ProjectID+"/users/"+a.UserID+"/roles/"+a.RoleID),
		},
	}
}

// oneEntry reports whether the cluster applies role change t, which
// revokes the affected tokens in the same log entry. While a host older
// than the command remains (a rolling upgrade) the role change and the
// revocation go as two proposals, as that release did.
func oneEntry(sn *statedb.Snapshot, t statedb.CmdType) bool {
	return statedb.Commands().Gate(sn, t) == nil
}

// tokensExpire is when tokens issued until now expire anyway.
func tokensExpire(b rest.Backend, sn *statedb.Snapshot) time.Time {
	return b.Now().Add(settings(sn).TokenLifetime)
}
