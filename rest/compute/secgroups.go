package compute

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Security groups as Nova shows them at 2.1: the os-security-groups and
// os-security-group-rules proxies onto the network service's groups
// (ingress rules only, as Nova), a server's groups, and the
// addSecurityGroup / removeSecurityGroup actions. The groups themselves
// are the network service's (statedb security groups).

func (s *service) secGroupRoutes() []rest.Route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	tok := rest.Token
	return []rest.Route{
		{Method: get, Path: "/os-security-groups", Auth: tok, Handler: s.listNovaSecGroups},
		{Method: post, Path: "/os-security-groups", Auth: tok, Handler: s.createNovaSecGroup},
		{Method: get, Path: "/os-security-groups/{group_id}", Auth: tok, Handler: s.getNovaSecGroup},
		{Method: put, Path: "/os-security-groups/{group_id}", Auth: tok, Handler: s.updateNovaSecGroup},
		{Method: del, Path: "/os-security-groups/{group_id}", Auth: tok, Handler: s.deleteNovaSecGroup},
		{Method: post, Path: "/os-security-group-rules", Auth: tok, Handler: s.createNovaSecRule},
		{Method: del, Path: "/os-security-group-rules/{rule_id}", Auth: tok, Handler: s.deleteNovaSecRule},
		{Method: get, Path: "/servers/{server_id}/os-security-groups", Auth: tok, Handler: s.serverSecGroups},
	}
}

// findSecGroup resolves a group of a project by id or name; "default"
// is the project's default group even before it exists.
func findSecGroup(sn *statedb.Snapshot, project, ref string) (id, name string, ok bool) {
	if g, found := sn.SecGroup(ref); found && g.ProjectID == project {
		return g.ID, g.Name, true
	}
	if ref == statedb.DefaultSecGroupName {
		return statedb.DefaultSecGroupID(project), ref, true
	}
	for _, g := range sn.SecGroupsOfProject(project) {
		if g.Name == ref {
			return g.ID, g.Name, true
		}
	}
	return "", "", false
}

// secGroupIDs resolves the groups of a server create, given by name or
// id (the openstack client sends ids), to ids and the names the server
// shows; nil (the default group) when none were asked for.
func secGroupIDs(sn *statedb.Snapshot, project string, refs []string) (ids, names []string, err error) {
	for _, ref := range refs {
		id, name, ok := findSecGroup(sn, project, ref)
		if !ok {
			return nil, nil, rest.BadRequest("Security group %s not found for project %s.", ref, project)
		}
		if !slices.Contains(ids, id) {
			ids, names = append(ids, id), append(names, name)
		}
	}
	return ids, names, nil
}

func novaRuleView(sn *statedb.Snapshot, r *statedb.SecurityGroupRule) map[string]any {
	v := map[string]any{"id": r.ID, "parent_group_id": r.GroupID, "ip_protocol": nil, "from_port": nil, "to_port": nil,
		"ip_range": map[string]any{}, "group": map[string]any{}}
	if r.Protocol != "" {
		v["ip_protocol"] = r.Protocol
	}
	if r.PortMin != nil {
		v["from_port"] = *r.PortMin
	}
	if r.PortMax != nil {
		v["to_port"] = *r.PortMax
	}
	if r.RemoteIP != "" {
		v["ip_range"] = map[string]any{"cidr": r.RemoteIP}
	}
	if r.RemoteGroupID != "" {
		if g, ok := sn.SecGroup(r.RemoteGroupID); ok {
			v["group"] = map[string]any{"name": g.Name, "tenant_id": g.ProjectID}
		}
	}
	return v
}

func novaSecGroupView(sn *statedb.Snapshot, g *statedb.SecurityGroup) map[string]any {
	rules := []map[string]any{}
	for _, r := range sn.SecRulesOf(g.ID) {
		if r.Direction == statedb.Ingress {
			rules = append(rules, novaRuleView(sn, r))
		}
	}
	return map[string]any{"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID, "rules": rules}
}

func (s *service) novaSecGroup(c *rest.Ctx, sn *statedb.Snapshot, access rest.Access) (*statedb.SecurityGroup, error) {
	id := c.Var("group_id")
	g, ok := sn.SecGroup(id)
	if !ok {
		return nil, rest.NotFoundf("Security group %s not found.", id)
	}
	if err := rest.Check(s.b, c, access, g.ProjectID, false, "Security group "+id); err != nil {
		return nil, err
	}
	return g, nil
}

// ensureDefaultSecGroup makes the caller's default group on first use.
func (s *service) ensureDefaultSecGroup(c *rest.Ctx) error {
	p := c.Cred.ProjectID
	if p == "" {
		return nil
	}
	if _, ok := s.b.State().DefaultSecGroup(p); ok {
		return nil
	}
	_, err := rest.Propose(c.Context(), s.b, statedb.CmdEnsureDefaultSecGroup, statedb.EnsureDefaultSecGroupCmd{ProjectID: p})
	return err
}

func (s *service) listNovaSecGroups(c *rest.Ctx) (any, error) {
	if err := s.ensureDefaultSecGroup(c); err != nil {
		return nil, err
	}
	sn := s.b.State()
	out := []map[string]any{}
	for _, g := range sn.SecGroups() {
		if rest.Visible(s.b, c, g.ProjectID, false) {
			out = append(out, novaSecGroupView(sn, g))
		}
	}
	return map[string]any{"security_groups": out}, nil
}

func (s *service) getNovaSecGroup(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	g, err := s.novaSecGroup(c, sn, rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"security_group": novaSecGroupView(sn, g)}, nil
}

type novaSecGroupInput struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
}

func (in *novaSecGroupInput) check() error {
	if in.Name == nil || *in.Name == "" || len(*in.Name) > maxNameLength {
		return rest.BadRequest("Invalid input for field/attribute name. Value: %v.", in.Name)
	}
	if in.Description == nil || len(*in.Description) > 255 {
		return rest.BadRequest("Invalid input for field/attribute description. 'description' is a required property")
	}
	return nil
}

func (s *service) createNovaSecGroup(c *rest.Ctx) (any, error) {
	if c.Cred == nil || c.Cred.ProjectID == "" {
		return nil, rest.Forbiddenf("Creating a security group needs a project-scoped token.")
	}
	if err := rest.Check(s.b, c, rest.Write, c.Cred.ProjectID, false, "Security group"); err != nil {
		return nil, err
	}
	var in novaSecGroupInput
	if err := decodeBody(c, "security_group", &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	cmd := statedb.CreateSecGroupCmd{SecurityGroup: statedb.SecurityGroup{ID: s.b.NewID(), Name: *in.Name,
		ProjectID: c.Cred.ProjectID, Description: *in.Description, Stateful: true}}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateSecGroup, cmd); err != nil {
		return nil, err
	}
	sn := s.b.State()
	g, ok := sn.SecGroup(cmd.ID)
	if !ok {
		return nil, rest.NotFoundf("Security group %s not found.", cmd.ID)
	}
	return map[string]any{"security_group": novaSecGroupView(sn, g)}, nil
}

func (s *service) updateNovaSecGroup(c *rest.Ctx) (any, error) {
	g, err := s.novaSecGroup(c, s.b.State(), rest.Write)
	if err != nil {
		return nil, err
	}
	var in novaSecGroupInput
	if err := decodeBody(c, "security_group", &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	u := statedb.UpdateSecGroupCmd{ID: g.ID, Name: in.Name, Description: in.Description}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateSecGroup, u); err != nil {
		return nil, err
	}
	sn := s.b.State()
	got, ok := sn.SecGroup(g.ID)
	if !ok {
		return nil, rest.NotFoundf("Security group %s not found.", g.ID)
	}
	return map[string]any{"security_group": novaSecGroupView(sn, got)}, nil
}

func (s *service) deleteNovaSecGroup(c *rest.Ctx) (any, error) {
	g, err := s.novaSecGroup(c, s.b.State(), rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteSecGroup, statedb.DeleteCmd{ID: g.ID}); err != nil {
		return nil, err
	}
	return accepted(), nil
}

// createNovaSecRule serves POST /os-security-group-rules: an ingress
// rule; ICMP from/to -1 mean any type/code.
func (s *service) createNovaSecRule(c *rest.Ctx) (any, error) {
	var in struct {
		ParentGroupID *string `json:"parent_group_id"`
		IPProtocol    *string `json:"ip_protocol"`
		FromPort      *int    `json:"from_port"`
		ToPort        *int    `json:"to_port"`
		CIDR          *string `json:"cidr"`
		GroupID       *string `json:"group_id"`
	}
	if err := decodeBody(c, "security_group_rule", &in); err != nil {
		return nil, err
	}
	if in.ParentGroupID == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute parent_group_id. 'parent_group_id' is a required property")
	}
	sn := s.b.State()
	g, ok := sn.SecGroup(*in.ParentGroupID)
	if !ok || rest.Check(s.b, c, rest.Read, g.ProjectID, false, "Security group") != nil {
		return nil, rest.NotFoundf("Security group %s not found.", *in.ParentGroupID)
	}
	if err := rest.Check(s.b, c, rest.Write, g.ProjectID, false, "Security group "+g.ID); err != nil {
		return nil, err
	}
	r := statedb.SecurityGroupRule{ID: s.b.NewID(), GroupID: g.ID, ProjectID: g.ProjectID, Direction: statedb.Ingress}
	if in.IPProtocol != nil {
		r.Protocol = *in.IPProtocol
	}
	icmp := r.Protocol == "icmp" || r.Protocol == "1"
	for _, p := range []struct {
		src *int
		dst **int
	}{{in.FromPort, &r.PortMin}, {in.ToPort, &r.PortMax}} {
		if p.src != nil && !(icmp && *p.src == -1) {
			v := *p.src
			*p.dst = &v
		}
	}
	if in.CIDR != nil && *in.CIDR != "" {
		r.RemoteIP = *in.CIDR
		if pfx, err := parseCIDRVersion(r.RemoteIP); err == nil && pfx == 6 {
			r.EtherType = statedb.IPv6
		}
	}
	if in.GroupID != nil && *in.GroupID != "" {
		r.RemoteGroupID = *in.GroupID
	}
	if r.RemoteIP == "" && r.RemoteGroupID == "" {
		r.RemoteIP = "0.0.0.0/0"
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateSecGroupRule, r); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.SecRule(r.ID)
	if !ok {
		return nil, rest.NotFoundf("Security group rule %s not found.", r.ID)
	}
	return map[string]any{"security_group_rule": novaRuleView(sn, got)}, nil
}

// parseCIDRVersion is 4 or 6 for a CIDR.
func parseCIDRVersion(cidr string) (int, error) {
	for i := 0; i < len(cidr); i++ {
		if cidr[i] == ':' {
			return 6, nil
		}
	}
	return 4, nil
}

func (s *service) deleteNovaSecRule(c *rest.Ctx) (any, error) {
	id := c.Var("rule_id")
	r, ok := s.b.State().SecRule(id)
	if !ok || rest.Check(s.b, c, rest.Read, r.ProjectID, false, "Security group rule") != nil {
		return nil, rest.NotFoundf("Security group rule %s not found.", id)
	}
	if err := rest.Check(s.b, c, rest.Write, r.ProjectID, false, "Security group rule "+id); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteSecGroupRule, statedb.DeleteCmd{ID: r.ID}); err != nil {
		return nil, err
	}
	return accepted(), nil
}

// serverSecGroups serves GET /servers/{id}/os-security-groups: the
// groups of the server's ports.
func (s *service) serverSecGroups(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.server(c, sn, rest.Read)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	seen := map[string]bool{}
	for _, p := range sn.PortsOfDevice(inst.ID) {
		for _, id := range p.SecurityGroups {
			if g, ok := sn.SecGroup(id); ok && !seen[id] {
				seen[id] = true
				out = append(out, novaSecGroupView(sn, g))
			}
		}
	}
	return map[string]any{"security_groups": out}, nil
}

// serverSecGroupAction serves the addSecurityGroup and
// removeSecurityGroup actions: {"<action>": {"name": <name or id>}}, 202.
func (s *service) serverSecGroupAction(c *rest.Ctx, inst *statedb.Instance, action string, raw json.RawMessage) (any, error) {
	var req struct {
		Name *string `json:"name"`
	}
	if err := decodeStrict(action, raw, &req); err != nil {
		return nil, err
	}
	if req.Name == nil || *req.Name == "" {
		return nil, rest.BadRequest("Invalid input for field/attribute %s. 'name' is a required property", action)
	}
	id, _, ok := findSecGroup(s.b.State(), inst.ProjectID, *req.Name)
	if !ok {
		return nil, rest.NotFoundf("Security group %s not found for project %s.", *req.Name, inst.ProjectID)
	}
	cmd := statedb.SetServerSecGroupCmd{InstanceID: inst.ID, GroupID: id, Remove: action == "removeSecurityGroup"}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetServerSecGroup, cmd); err != nil {
		return nil, err
	}
	return accepted(), nil
}
