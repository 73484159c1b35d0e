package network

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Security groups and rules (Neutron's security-group and
// stateful-security-group extensions). The URLs are security-groups and
// security-group-rules, the JSON keys security_group(s) and
// security_group_rule(s). A project's default group is made on its first
// list or port.

func (s *service) secGroupRoutes() []rest.Route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return append([]rest.Route{
		{Method: get, Path: "/v2.0/security-groups", Auth: rest.Token, Handler: s.listSecGroups},
		{Method: post, Path: "/v2.0/security-groups", Auth: rest.Token, Handler: s.createSecGroup},
		{Method: get, Path: "/v2.0/security-groups/{id}", Auth: rest.Token, Handler: s.getSecGroup},
		{Method: put, Path: "/v2.0/security-groups/{id}", Auth: rest.Token, Handler: s.updateSecGroup},
		{Method: del, Path: "/v2.0/security-groups/{id}", Auth: rest.Token, Handler: s.deleteSecGroup},
		{Method: get, Path: "/v2.0/security-group-rules", Auth: rest.Token, Handler: s.listSecRules},
		{Method: post, Path: "/v2.0/security-group-rules", Auth: rest.Token, Handler: s.createSecRule},
		{Method: get, Path: "/v2.0/security-group-rules/{id}", Auth: rest.Token, Handler: s.getSecRule},
		{Method: del, Path: "/v2.0/security-group-rules/{id}", Auth: rest.Token, Handler: s.deleteSecRule},
	}, s.addrGroupRoutes()...)
}

func secGroupNotFound(id string) error {
	return &apiError{status: http.StatusNotFound, typ: "SecurityGroupNotFound", msg: "Security group " + id + " does not exist"}
}

func secRuleNotFound(id string) error {
	return &apiError{status: http.StatusNotFound, typ: "SecurityGroupRuleNotFound", msg: "Security group rule " + id + " does not exist"}
}

// secGroupErrorTypes maps the leading words of the FSM's security group
// messages (consensus/statedb secgroups.go) to Neutron error types.
var secGroupErrorTypes = []struct{ prefix, typ string }{
	{"Security group rule protocol", "SecurityGroupRuleInvalidProtocol"},
	{"For TCP/UDP protocols", "SecurityGroupInvalidPortRange"},
	{"Invalid value for port", "SecurityGroupInvalidPortValue"},
	{"Invalid value for ICMP", "SecurityGroupInvalidIcmpValue"},
	{"ICMP code (port-range-max)", "SecurityGroupMissingIcmpType"},
	{"Must also specify protocol", "SecurityGroupProtocolRequiredWithPorts"},
	{"Only remote_ip_prefix or remote_group_id", "SecurityGroupRemoteGroupAndRemoteIpPrefix"},
	{"Only one of remote_ip_prefix, remote_group_id", "SecurityGroupMultipleRemoteEntites"},
	{"Conflicting value ethertype", "SecurityGroupRuleParameterConflict"},
	{"Security group rule already exists", "SecurityGroupRuleExists"},
	{"Security Group ", "SecurityGroupInUse"},
	{"Insufficient rights for removing default", "SecurityGroupCannotRemoveDefault"},
	{"Updating default security group", "SecurityGroupCannotUpdateDefault"},
	{"Default security group already exists", "SecurityGroupDefaultAlreadyExists"},
	{"Port has security group associated", "PortSecurityPortHasSecurityGroup"},
	{"Port security must be enabled", "PortSecurityAndIPRequiredForSecurityGroups"},
	{"Address pairs need port security", "AddressPairAndPortSecurityRequired"},
	{"Security group rule ", "SecurityGroupRuleNotFound"},
	{"Security group ", "SecurityGroupNotFound"},
}

// secGroupErrorType names the Neutron type of a security group failure.
func secGroupErrorType(msg string) (string, bool) {
	if typ, ok := addrGroupErrorType(msg); ok {
		return typ, true
	}
	for _, t := range secGroupErrorTypes {
		if strings.HasPrefix(msg, t.prefix) {
			return t.typ, true
		}
	}
	return "", false
}

func secRuleView(r *statedb.SecurityGroupRule) view {
	v := view{
		"id": r.ID, "security_group_id": r.GroupID, "tenant_id": r.ProjectID, "project_id": r.ProjectID,
		"direction": r.Direction, "ethertype": r.EtherType, "protocol": nil, "port_range_min": nil,
		"port_range_max": nil, "remote_ip_prefix": nil, "remote_group_id": nil, "remote_address_group_id": nil,
		"normalized_cidr": nil, "description": r.Description, "belongs_to_default_sg": r.GroupID == statedb.DefaultSecGroupID(r.ProjectID),
		"tags": []string{}, "created_at": fmtTime(r.CreatedAt), "updated_at": fmtTime(r.UpdatedAt), "revision_number": r.Revision,
	}
	if r.Protocol != "" {
		v["protocol"] = r.Protocol
	}
	if r.PortMin != nil {
		v["port_range_min"] = *r.PortMin
	}
	if r.PortMax != nil {
		v["port_range_max"] = *r.PortMax
	}
	if r.RemoteIP != "" {
		v["remote_ip_prefix"], v["normalized_cidr"] = r.RemoteIP, r.RemoteIP
	}
	if r.RemoteGroupID != "" {
		v["remote_group_id"] = r.RemoteGroupID
	}
	if r.RemoteAddressGroupID != "" {
		v["remote_address_group_id"] = r.RemoteAddressGroupID
	}
	return v
}

func secGroupView(sn *statedb.Snapshot, g *statedb.SecurityGroup) view {
	rules := []view{}
	for _, r := range sn.SecRulesOf(g.ID) {
		rules = append(rules, secRuleView(r))
	}
	return view{
		"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID, "project_id": g.ProjectID,
		"stateful": g.Stateful, "shared": false, "security_group_rules": rules, "tags": tagsOf(g.Tags),
		"created_at": fmtTime(g.CreatedAt), "updated_at": fmtTime(g.UpdatedAt), "revision_number": g.Revision,
	}
}

// checkSecGroup applies the policy to a group, hiding foreign ones as
// SecurityGroupNotFound.
func (s *service) checkSecGroup(c *rest.Ctx, access rest.Access, g *statedb.SecurityGroup) error {
	err := s.check(c, access, g.ProjectID, false, "Security group", g.ID)
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return secGroupNotFound(g.ID)
	}
	return err
}

func (s *service) readSecGroup(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.SecurityGroup, error) {
	g, ok := sn.SecGroup(id)
	if !ok {
		return nil, secGroupNotFound(id)
	}
	if err := s.checkSecGroup(c, rest.Read, g); err != nil {
		return nil, err
	}
	return g, nil
}

// ensureDefault makes the caller's project's default group unless it
// exists, as Neutron does on a project's first security group call.
func (s *service) ensureDefault(c *rest.Ctx) error {
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

func (s *service) listSecGroups(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Security group"); err != nil {
		return nil, err
	}
	if err := s.ensureDefault(c); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var rows []view
	for _, g := range sn.SecGroups() {
		if s.visible(c, g.ProjectID, false) {
			rows = append(rows, secGroupView(sn, g))
		}
	}
	return list(c, sn, "security_groups", rows, nil)
}

func (s *service) getSecGroup(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	g, err := s.readSecGroup(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"security_group": secGroupView(sn, g)}, nil
}

type secGroupInput struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	ProjectID   *string   `json:"project_id"`
	TenantID    *string   `json:"tenant_id"`
	Stateful    *bool     `json:"stateful"`
	Tags        *[]string `json:"tags"`
}

func (s *service) createSecGroup(c *rest.Ctx) (any, error) {
	var in secGroupInput
	if err := decodeBody(c, "security_group", secGroupSpec, &in); err != nil {
		return nil, err
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Security group")
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, project, false, "Security group", ""); err != nil {
		return nil, forbidden("Security group")
	}
	cmd := statedb.CreateSecGroupCmd{SecurityGroup: statedb.SecurityGroup{ID: s.b.NewID(), Name: strOr(in.Name, ""),
		ProjectID: project, Description: strOr(in.Description, ""), Stateful: boolOr(in.Stateful, true)}}
	if in.Tags != nil {
		cmd.Tags = *in.Tags
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateSecGroup, cmd); err != nil {
		return nil, err
	}
	sn := s.b.State()
	g, ok := sn.SecGroup(cmd.ID)
	if !ok {
		return nil, secGroupNotFound(cmd.ID)
	}
	return created(map[string]any{"security_group": secGroupView(sn, g)}), nil
}

func (s *service) updateSecGroup(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	g, err := s.readSecGroup(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.checkSecGroup(c, rest.Write, g); err != nil {
		return nil, err
	}
	var in secGroupInput
	if err := decodeBody(c, "security_group", secGroupSpec, &in); err != nil {
		return nil, err
	}
	if (in.ProjectID != nil && *in.ProjectID != g.ProjectID) || (in.TenantID != nil && *in.TenantID != g.ProjectID) {
		return nil, badRequest("Invalid input for operation: the project of a security group cannot be changed.")
	}
	u := statedb.UpdateSecGroupCmd{ID: g.ID, Name: in.Name, Description: in.Description, Stateful: in.Stateful, Tags: in.Tags}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateSecGroup, u); err != nil {
		return nil, err
	}
	sn = s.b.State()
	if g, ok := sn.SecGroup(g.ID); ok {
		return map[string]any{"security_group": secGroupView(sn, g)}, nil
	}
	return nil, secGroupNotFound(g.ID)
}

func (s *service) deleteSecGroup(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	g, err := s.readSecGroup(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.checkSecGroup(c, rest.Write, g); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteSecGroup, statedb.DeleteCmd{ID: g.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

func (s *service) readSecRule(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.SecurityGroupRule, error) {
	r, ok := sn.SecRule(id)
	if !ok {
		return nil, secRuleNotFound(id)
	}
	if err := s.check(c, rest.Read, r.ProjectID, false, "Security group rule", id); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusNotFound {
			return nil, secRuleNotFound(id)
		}
		return nil, err
	}
	return r, nil
}

func (s *service) listSecRules(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Security group rule"); err != nil {
		return nil, err
	}
	if err := s.ensureDefault(c); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var rows []view
	for _, r := range sn.SecRules() {
		if s.visible(c, r.ProjectID, false) {
			rows = append(rows, secRuleView(r))
		}
	}
	return list(c, sn, "security_group_rules", rows, nil)
}

func (s *service) getSecRule(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	r, err := s.readSecRule(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"security_group_rule": secRuleView(r)}, nil
}

type secRuleInput struct {
	GroupID       *string         `json:"security_group_id"`
	Direction     *string         `json:"direction"`
	EtherType     *string         `json:"ethertype"`
	Protocol      json.RawMessage `json:"protocol"`
	PortMin       *int            `json:"port_range_min"`
	PortMax       *int            `json:"port_range_max"`
	RemoteIP      *string         `json:"remote_ip_prefix"`
	RemoteGroupID *string         `json:"remote_group_id"`
	Description   *string         `json:"description"`
	RemoteAGID    *string         `json:"remote_address_group_id"`
	ProjectID     *string         `json:"project_id"`
	TenantID      *string         `json:"tenant_id"`
}

// protocol reads "protocol": a name, a number (as a string or a JSON
// number) or null.
func (in *secRuleInput) protocol() (string, error) {
	raw := in.Protocol
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return strconv.Itoa(n), nil
	}
	return "", badRequest(statedb.MsgSecRuleProtocol, string(raw))
}

func (s *service) createSecRule(c *rest.Ctx) (any, error) {
	var in secRuleInput
	if err := decodeBody(c, "security_group_rule", secRuleSpec, &in); err != nil {
		return nil, err
	}
	if in.GroupID == nil || *in.GroupID == "" {
		return nil, badRequest("Invalid input for operation: security_group_id is required.")
	}
	if in.Direction == nil {
		return nil, badRequest("Invalid input for operation: direction is required.")
	}
	sn := s.b.State()
	g, err := s.readSecGroup(c, sn, *in.GroupID)
	if err != nil {
		return nil, err
	}
	if err := s.checkSecGroup(c, rest.Write, g); err != nil {
		return nil, err
	}
	proto, err := in.protocol()
	if err != nil {
		return nil, err
	}
	r := statedb.SecurityGroupRule{ID: s.b.NewID(), GroupID: g.ID, ProjectID: g.ProjectID, Direction: *in.Direction,
		EtherType: strOr(in.EtherType, ""), Protocol: proto, PortMin: in.PortMin, PortMax: in.PortMax,
		RemoteIP: strOr(in.RemoteIP, ""), RemoteGroupID: strOr(in.RemoteGroupID, ""), Description: strOr(in.Description, ""),
		RemoteAddressGroupID: strOr(in.RemoteAGID, "")}
	if r.RemoteGroupID != "" {
		if _, err := s.readSecGroup(c, sn, r.RemoteGroupID); err != nil {
			return nil, err
		}
	}
	if r.RemoteAddressGroupID != "" {
		if _, err := s.readAddrGroup(c, sn, r.RemoteAddressGroupID, rest.Read); err != nil {
			return nil, err
		}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateSecGroupRule, r); err != nil {
		return nil, err
	}
	got, ok := s.b.State().SecRule(r.ID)
	if !ok {
		return nil, secRuleNotFound(r.ID)
	}
	return created(map[string]any{"security_group_rule": secRuleView(got)}), nil
}

func (s *service) deleteSecRule(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	r, err := s.readSecRule(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, r.ProjectID, false, "Security group rule", r.ID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteSecGroupRule, statedb.DeleteCmd{ID: r.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// portSecurityView is the security part of a port view.
func portSecurityView(v view, p *statedb.Port) {
	groups := append([]string{}, p.SecurityGroups...)
	pairs := []map[string]string{}
	for _, ap := range p.AllowedAddressPairs {
		pairs = append(pairs, map[string]string{"ip_address": ap.IP, "mac_address": ap.MAC})
	}
	v["security_groups"], v["allowed_address_pairs"], v["port_security_enabled"] = groups, pairs, p.PortSecurityEnabled
}

// portSecurityInput is the security part of a port body.
type portSecurityInput struct {
	SecurityGroups      *[]string              `json:"security_groups"`
	PortSecurityEnabled *bool                  `json:"port_security_enabled"`
	AllowedAddressPairs *[]statedb.AddressPair `json:"allowed_address_pairs"`
}

// create is the security part of a port create command.
func (in *portSecurityInput) create() statedb.PortSecurity {
	var ps statedb.PortSecurity
	if in.SecurityGroups != nil {
		ps.SecurityGroups = append([]string{}, *in.SecurityGroups...)
		ps.NoGroups = len(*in.SecurityGroups) == 0
	}
	if in.PortSecurityEnabled != nil && !*in.PortSecurityEnabled {
		ps.Disabled = true
		ps.NoGroups = ps.NoGroups || in.SecurityGroups == nil
	}
	// Unset, the network's port_security_enabled decides.
	ps.Enabled = in.PortSecurityEnabled != nil && *in.PortSecurityEnabled
	if in.AllowedAddressPairs != nil {
		ps.AddressPairs = *in.AllowedAddressPairs
	}
	return ps
}

// update is the security part of a port update command.
func (in *portSecurityInput) update() statedb.UpdatePortSecurity {
	return statedb.UpdatePortSecurity{SecurityGroups: in.SecurityGroups, Enabled: in.PortSecurityEnabled, AddressPairs: in.AllowedAddressPairs}
}
