package compute

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

var groupPolicies = []string{"affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"}

// groupView renders a group: "policies" and "metadata" up to 2.63,
// "policy" and "rules" from 2.64.
func groupView(c *rest.Ctx, g *statedb.ServerGroup) map[string]any {
	members := g.Members
	if members == nil {
		members = []string{}
	}
	out := map[string]any{"id": g.ID, "name": g.Name, "members": members, "project_id": g.ProjectID, "user_id": g.UserID}
	if atLeast(c, 2, 64) {
		out["policy"], out["rules"] = g.Policy, map[string]any{}
	} else {
		out["policies"], out["metadata"] = []string{g.Policy}, map[string]string{}
	}
	return out
}

func (s *service) listServerGroups(c *rest.Ctx) (any, error) {
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	if err := rest.Check(s.b, c, rest.Read, c.Cred.ProjectID, false, "Server groups"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var gs []*statedb.ServerGroup
	all, _ := queryBool(c.Query("all_projects"))
	if all && s.isAdmin(c) {
		gs = sn.ServerGroups()
	} else {
		gs = sn.ServerGroupsOfProject(c.Cred.ProjectID)
	}
	sort.Slice(gs, func(i, j int) bool {
		if !gs[i].CreatedAt.Equal(gs[j].CreatedAt) {
			return gs[i].CreatedAt.Before(gs[j].CreatedAt)
		}
		return gs[i].ID < gs[j].ID
	})
	if o := c.Query("offset"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 {
			return nil, rest.BadRequest("offset param must be a positive integer")
		}
		gs = gs[min(n, len(gs)):]
	}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return nil, rest.BadRequest("limit param must be a positive integer")
		}
		gs = gs[:min(n, len(gs))]
	}
	out := make([]map[string]any, 0, len(gs))
	for _, g := range gs {
		if rest.Visible(s.b, c, g.ProjectID, false) {
			out = append(out, groupView(c, g))
		}
	}
	return map[string]any{"server_groups": out}, nil
}

func (s *service) serverGroup(c *rest.Ctx, access rest.Access) (*statedb.ServerGroup, error) {
	id := c.Var("group_id")
	g, ok := s.b.State().ServerGroup(id)
	if !ok {
		return nil, rest.NotFoundf("Instance group %s could not be found.", id)
	}
	if err := rest.Check(s.b, c, access, g.ProjectID, false, "Instance group "+id); err != nil {
		return nil, err
	}
	return g, nil
}

func (s *service) getServerGroup(c *rest.Ctx) (any, error) {
	g, err := s.serverGroup(c, rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"server_group": groupView(c, g)}, nil
}

func (s *service) createServerGroup(c *rest.Ctx) (any, error) {
	if c.Cred == nil || c.Cred.ProjectID == "" {
		return nil, rest.Forbiddenf("Creating a server group needs a project-scoped token.")
	}
	if err := rest.Check(s.b, c, rest.Write, c.Cred.ProjectID, false, "Server group"); err != nil {
		return nil, err
	}
	var req struct {
		Name     *string        `json:"name"`
		Policies []string       `json:"policies"`
		Policy   *string        `json:"policy"` // 2.64
		Rules    map[string]any `json:"rules"`  // 2.64
	}
	if err := decodeBody(c, "server_group", &req); err != nil {
		return nil, err
	}
	if atLeast(c, 2, 64) {
		if req.Policies != nil {
			return nil, rest.BadRequest("Invalid input for field/attribute server_group. Additional properties are not allowed ('policies' was unexpected)")
		}
		if req.Policy == nil {
			return nil, rest.BadRequest("Invalid input for field/attribute server_group. 'policy' is a required property")
		}
		if len(req.Rules) > 0 {
			return nil, rest.BadRequest("Invalid input for field/attribute rules. Value: %v. Server group rules are not supported", req.Rules)
		}
		req.Policies = []string{*req.Policy}
	} else if req.Policy != nil || req.Rules != nil {
		return nil, rest.BadRequest("Invalid input for field/attribute server_group. Additional properties are not allowed ('policy' was unexpected)")
	}
	if req.Name == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute server_group. 'name' is a required property")
	}
	if err := validName("name", *req.Name); err != nil {
		return nil, err
	}
	if len(req.Policies) != 1 || !contains(groupPolicies, req.Policies[0]) {
		return nil, rest.BadRequest("Invalid input for field/attribute policies. Value: %v. It must hold exactly one of %v", req.Policies, groupPolicies)
	}
	g := statedb.ServerGroup{ID: s.b.NewID(), Name: *req.Name, ProjectID: c.Cred.ProjectID, UserID: c.Cred.UserID,
		Policy: req.Policies[0], CreatedAt: s.b.Now()}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateServerGroup, g); err != nil {
		return nil, err
	}
	got, ok := s.b.State().ServerGroup(g.ID)
	if !ok {
		return nil, rest.NotFoundf("Instance group %s could not be found.", g.ID)
	}
	return &rest.Response{Status: http.StatusOK, Body: map[string]any{"server_group": groupView(c, got)}}, nil
}

func (s *service) deleteServerGroup(c *rest.Ctx) (any, error) {
	g, err := s.serverGroup(c, rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteServerGroup, statedb.DeleteCmd{ID: g.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
