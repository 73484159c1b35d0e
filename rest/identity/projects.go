package identity

import (
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// projectView is a project as Keystone renders it.
type projectView struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	DomainID    string         `json:"domain_id"`
	Description string         `json:"description"`
	Enabled     bool           `json:"enabled"`
	ParentID    string         `json:"parent_id"`
	IsDomain    bool           `json:"is_domain"`
	Tags        []string       `json:"tags"`
	Options     map[string]any `json:"options"`
	Links       selfLink       `json:"links"`
}

func projectJSON(c *rest.Ctx, sn *statedb.Snapshot, p *statedb.Project) projectView {
	tags := p.Tags
	if tags == nil {
		tags = []string{}
	}
	dom := p.DomainID
	if dom == "" {
		dom = statedb.DefaultDomainID
	}
	return projectView{
		ID: p.ID, Name: p.Name, DomainID: dom, Description: p.Description, Enabled: p.Enabled,
		ParentID: dom, Tags: tags, Options: emptyOptions(),
		Links: selfLink{Self: v3URL(c, sn, "projects/"+p.ID)},
	}
}

// projectInput is the body of project create and update.
type projectInput struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	Enabled     *bool     `json:"enabled"`
	DomainID    *string   `json:"domain_id"`
	ParentID    *string   `json:"parent_id"`
	IsDomain    *bool     `json:"is_domain"`
	Tags        *[]string `json:"tags"`
}

// check rejects what we do not support: other domains, hierarchies and
// projects acting as domains.
func (in *projectInput) check() error {
	if in.DomainID != nil && *in.DomainID != "" && *in.DomainID != statedb.DefaultDomainID {
		return notFound("domain", *in.DomainID)
	}
	if in.ParentID != nil && *in.ParentID != "" && *in.ParentID != statedb.DefaultDomainID {
		return rest.BadRequest("Project hierarchies are not supported: parent_id must be the domain.")
	}
	if in.IsDomain != nil && *in.IsDomain {
		return rest.BadRequest("Projects acting as domains are not supported.")
	}
	if in.Tags != nil {
		if len(*in.Tags) > 80 {
			return rest.BadRequest("Invalid input for field 'tags': at most 80 tags are allowed.")
		}
		for _, t := range *in.Tags {
			if t == "" || len(t) > 255 || strings.ContainsAny(t, "/,") {
				return rest.BadRequest("Invalid input for field 'tags': %q must be 1-255 characters without '/' or ','.", t)
			}
		}
	}
	return nil
}

// readProject finds a project the caller may see: any project for an
// administrator, the token's project, or any project the caller holds a
// role on. Others are 404, like missing ones.
func (s *service) readProject(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.Project, error) {
	p, ok := sn.Project(id)
	if !ok {
		return nil, notFound("project", id)
	}
	if err := s.canSeeProject(c, sn, p); err != nil {
		return nil, err
	}
	return p, nil
}

func (s *service) canSeeProject(c *rest.Ctx, sn *statedb.Snapshot, p *statedb.Project) error {
	if c.Cred != nil && len(sn.UserRoles(c.Cred.UserID, p.ID)) > 0 {
		return rest.Check(s.b, c, rest.Read, "", false, "project")
	}
	if err := rest.Check(s.b, c, rest.Read, p.ID, false, "project"); err != nil {
		return notFound("project", p.ID)
	}
	return nil
}

func (s *service) getProject(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	p, err := s.readProject(c, sn, c.Var("project_id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"project": projectJSON(c, sn, p)}, nil
}

// listProjects serves GET /v3/projects with the name, enabled, domain_id,
// parent_id and is_domain filters; a caller sees the projects canSeeProject
// allows.
func (s *service) listProjects(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "project"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	keep, err := projectFilter(c)
	if err != nil {
		return nil, err
	}
	out := []projectView{}
	for _, p := range sn.Projects() {
		if keep(p) && s.canSeeProject(c, sn, p) == nil {
			out = append(out, projectJSON(c, sn, p))
		}
	}
	return map[string]any{"projects": out, "links": collectionLinks(c, sn)}, nil
}

// projectFilter builds the query filter of project lists.
func projectFilter(c *rest.Ctx) (func(*statedb.Project) bool, error) {
	q := c.R.URL.Query()
	enabled, hasEnabled, err := queryBool(c, "enabled")
	if err != nil {
		return nil, err
	}
	isDomain, hasIsDomain, err := queryBool(c, "is_domain")
	if err != nil {
		return nil, err
	}
	name, hasName := q.Get("name"), q.Has("name")
	dom, hasDom := q.Get("domain_id"), q.Has("domain_id")
	parent, hasParent := q.Get("parent_id"), q.Has("parent_id")
	return func(p *statedb.Project) bool {
		switch {
		case hasName && p.Name != name,
			hasEnabled && p.Enabled != enabled,
			hasIsDomain && isDomain,
			hasDom && dom != statedb.DefaultDomainID,
			hasParent && parent != statedb.DefaultDomainID:
			return false
		}
		return true
	}, nil
}

// createProject serves POST /v3/projects (admin): 201 with the project.
func (s *service) createProject(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "project"); err != nil {
		return nil, err
	}
	var in projectInput
	if err := decodeBody(c, "project", &in); err != nil {
		return nil, err
	}
	if in.Name == nil || *in.Name == "" {
		return nil, expecting("name", "project")
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	p := statedb.Project{ID: s.newID(), Name: *in.Name, DomainID: statedb.DefaultDomainID, Enabled: true,
		Tags: []string{}, CreatedAt: s.now()}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	if in.Tags != nil {
		p.Tags = *in.Tags
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateProject, p); err != nil {
		return nil, err
	}
	return created(map[string]any{"project": projectJSON(c, s.b.State(), &p)}), nil
}

// updateProject serves PATCH /v3/projects/{id} (admin). Disabling a
// project makes its tokens fail validation on every host.
func (s *service) updateProject(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	old, err := s.readProject(c, sn, c.Var("project_id"))
	if err != nil {
		return nil, err
	}
	if err := s.requireAdmin(c, "project"); err != nil {
		return nil, err
	}
	var in projectInput
	if err := decodeBody(c, "project", &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	p := *old
	if in.Name != nil {
		p.Name = *in.Name
	}
	if in.Description != nil {
		p.Description = *in.Description
	}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	if in.Tags != nil {
		p.Tags = *in.Tags
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateProject, p); err != nil {
		return nil, err
	}
	sn = s.b.State()
	if np, ok := sn.Project(p.ID); ok {
		p = *np
	}
	return map[string]any{"project": projectJSON(c, sn, &p)}, nil
}

// deleteProject serves DELETE /v3/projects/{id} (admin); its role
// assignments go with it.
func (s *service) deleteProject(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	p, err := s.readProject(c, sn, c.Var("project_id"))
	if err != nil {
		return nil, err
	}
	if err := s.requireAdmin(c, "project"); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteProject, statedb.DeleteCmd{ID: p.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// userProjects serves GET /v3/users/{id}/projects: the projects the user
// holds a role on (the user itself or an administrator).
func (s *service) userProjects(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	uid := c.Var("user_id")
	if _, ok := sn.User(uid); !ok {
		return nil, notFound("user", uid)
	}
	if err := s.selfOrAdmin(c, uid, "user"); err != nil {
		return nil, err
	}
	keep, err := projectFilter(c)
	if err != nil {
		return nil, err
	}
	out := []projectView{}
	for _, p := range sn.UserProjects(uid) {
		if keep(p) {
			out = append(out, projectJSON(c, sn, p))
		}
	}
	return map[string]any{"projects": out, "links": collectionLinks(c, sn)}, nil
}

// authProjects serves GET /v3/auth/projects: the enabled projects the
// caller may scope to.
func (s *service) authProjects(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "project"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	out := []projectView{}
	for _, p := range sn.UserProjects(c.Cred.UserID) {
		if p.Enabled {
			out = append(out, projectJSON(c, sn, p))
		}
	}
	return map[string]any{"projects": out, "links": collectionLinks(c, sn)}, nil
}
