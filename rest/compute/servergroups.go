package compute

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

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
		rules := map[string]any{}
		if g.MaxServerPerHost > 0 {
			rules["max_server_per_host"] = g.MaxServerPerHost
		}
		out["policy"], out["rules"] = g.Policy, rules
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
		Name     *string         `json:"name"`
		Policies []string        `json:"policies"`
		Policy   *string         `json:"policy"` // 2.64
		Rules    json.RawMessage `json:"rules"`  // 2.64
	}
	if err := decodeBody(c, "server_group", &req); err != nil {
		return nil, err
	}
	maxPerHost := 0
	if atLeast(c, 2, 64) {
		if req.Policies != nil {
			return nil, rest.BadRequest("Invalid input for field/attribute server_group. Additional properties are not allowed ('policies' was unexpected)")
		}
		if req.Policy == nil {
			return nil, rest.BadRequest("Invalid input for field/attribute server_group. 'policy' is a required property")
		}
		if !contains(groupPolicies, *req.Policy) {
			return nil, rest.BadRequest("Invalid input for field/attribute policy. Value: %s. '%s' is not one of %s", *req.Policy, *req.Policy, pyList(groupPolicies))
		}
		n, err := parseGroupRules(req.Rules)
		if err != nil {
			return nil, err
		}
		maxPerHost = n
		req.Policies = []string{*req.Policy}
	} else if req.Policy != nil || req.Rules != nil {
		field := "policy"
		if req.Policy == nil {
			field = "rules"
		}
		return nil, rest.BadRequest("Invalid input for field/attribute server_group. Additional properties are not allowed ('%s' was unexpected)", field)
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
	if maxPerHost > 0 && req.Policies[0] != statedb.PolicyAntiAffinity {
		return nil, rest.BadRequest("Only anti-affinity policy supports rules.")
	}
	g := statedb.ServerGroup{ID: s.b.NewID(), Name: *req.Name, ProjectID: c.Cred.ProjectID, UserID: c.Cred.UserID,
		Policy: req.Policies[0], CreatedAt: s.b.Now(), MaxServerPerHost: maxPerHost}
	typ := statedb.CmdCreateServerGroup
	if maxPerHost > 0 {
		typ = statedb.CmdCreateGroupWithRules // only hosts that know the rule may apply it
	}
	if _, err := rest.Propose(c.Context(), s.b, typ, g); err != nil {
		return nil, err
	}
	got, ok := s.b.State().ServerGroup(g.ID)
	if !ok {
		return nil, rest.NotFoundf("Instance group %s could not be found.", g.ID)
	}
	return &rest.Response{Status: http.StatusOK, Body: map[string]any{"server_group": groupView(c, got)}}, nil
}

// parseGroupRules validates a 2.64 "rules" object as Nova's schema does
// and returns its max_server_per_host (0 when absent): an object whose only
// property is max_server_per_host, a positive integer given as a JSON
// integer or as a string of digits (the openstack client sends
// "--rule max_server_per_host=2" as the string "2"). Nova's schema lets a
// string "0" through; it is refused here, as the number 0 is, and so is a
// value past 2³¹-1 (Nova has no bound; no cluster has that many hosts'
// worth of members to spread).
func parseGroupRules(raw json.RawMessage) (int, error) {
	if raw == nil {
		return 0, nil
	}
	var rules map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rules); err != nil || rules == nil {
		if string(raw) == "null" {
			raw = json.RawMessage("None") // as Nova prints it
		}
		return 0, rest.BadRequest("Invalid input for field/attribute rules. Value: %s. %s is not of type 'object'", raw, raw)
	}
	for k := range rules {
		if k != "max_server_per_host" {
			return 0, rest.BadRequest("Invalid input for field/attribute rules. Value: %s. Additional properties are not allowed ('%s' was unexpected)", raw, k)
		}
	}
	v, ok := rules["max_server_per_host"]
	if !ok {
		return 0, nil
	}
	const field = "Invalid input for field/attribute max_server_per_host."
	var digits, str string
	switch {
	case len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &str) == nil:
		if str == "" || strings.Trim(str, "0123456789") != "" {
			return 0, rest.BadRequest("%s Value: %s. '%s' does not match '^[0-9]*$'", field, str, str)
		}
		digits = str
	case len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9') && !strings.ContainsAny(string(v), ".eE"):
		digits = string(v)
	default:
		if string(v) == "null" {
			v = json.RawMessage("None") // as Nova prints it
		}
		return 0, rest.BadRequest("%s Value: %s. %s is not of type 'integer', 'string'", field, v, v)
	}
	n, err := strconv.ParseInt(digits, 10, 32)
	switch {
	case err == nil && n >= 1:
		return int(n), nil
	case err == nil || strings.HasPrefix(digits, "-"):
		return 0, rest.BadRequest("%s Value: %s. %s is less than the minimum of 1", field, digits, digits)
	}
	return 0, rest.BadRequest("%s Value: %s. %s is greater than the maximum of %d", field, digits, digits, math.MaxInt32)
}

// pyList renders xs as Python prints a list of strings, as Nova's
// validation messages do.
func pyList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = "'" + x + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
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
