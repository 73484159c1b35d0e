package statedb

import (
	"net"
	"slices"
	"strings"
	"time"
)

// CreateSecGroupCmd creates a group with Neutron's two egress rules
// (IPv4 and IPv6 anywhere), whose ids derive from the group's.
type CreateSecGroupCmd struct {
	SecurityGroup
}

func applyCreateSecGroup(t *Txn, c *Command) error {
	cmd, err := decode[CreateSecGroupCmd](c)
	if err != nil {
		return err
	}
	g := cmd.SecurityGroup
	sn := t.read()
	switch {
	case g.ID == "" || g.ProjectID == "":
		return Errorf(KindInvalid, "a security group needs an id and a project")
	case g.Name == DefaultSecGroupName:
		return Errorf(KindInvalid, "Default security group already exists.")
	}
	if _, ok := sn.SecGroup(g.ID); ok {
		return Errorf(KindConflict, "Security group %s already exists.", g.ID)
	}
	if err := validName255("security group", g.Name); err != nil {
		return err
	}
	if err := validDescription(g.Description); err != nil {
		return err
	}
	if err := validTags(g.Tags); err != nil {
		return err
	}
	// Neutron creates the project's default group with its first group.
	if err := ensureDefaultSecGroup(t, c.Time, g.ProjectID); err != nil {
		return err
	}
	// Counted after the default group is made, so it is included; a new
	// group's two egress rules are charged with it (Neutron reserves them
	// in the same transaction).
	if err := checkQuota(t, g.ProjectID, "", charge{QuotaSecurityGroups, 1}, charge{QuotaSecurityGroupRules, 2}); err != nil {
		return err
	}
	return insertSecGroup(t, c.Time, &g, false)
}

// insertSecGroup stores a new group with the egress rules (and, for the
// default group, ingress from its own members).
func insertSecGroup(t *Txn, now time.Time, g *SecurityGroup, isDefault bool) error {
	if g.Tags == nil {
		g.Tags = []string{}
	}
	g.Revision = 1
	g.CreatedAt, g.UpdatedAt = now, now
	if err := t.insert(tblSecGroups, g); err != nil {
		return err
	}
	type seed struct{ dir, eth, remote string }
	seeds := []seed{{Egress, IPv4, ""}, {Egress, IPv6, ""}}
	if isDefault {
		seeds = append(seeds, seed{Ingress, IPv4, g.ID}, seed{Ingress, IPv6, g.ID})
	}
	for _, s := range seeds {
		r := &SecurityGroupRule{
			ID: derivedID(g.ID + "/" + s.dir + "/" + s.eth), GroupID: g.ID, ProjectID: g.ProjectID,
			Direction: s.dir, EtherType: s.eth, RemoteGroupID: s.remote, Revision: 1, CreatedAt: now, UpdatedAt: now,
		}
		if err := t.insert(tblSecRules, r); err != nil {
			return err
		}
	}
	return nil
}

// ensureDefaultSecGroup creates a project's default group if it has none.
// It is never refused for quota: the group is made on the project's
// behalf by whatever first needs it (a port create, a group list), and a
// project whose security_group or security_group_rule limit is already
// used up must still get working ports. Its group and four rules count
// towards the project's usage from then on, as in Neutron, whose default
// group is created internally, past the API's quota check.
func ensureDefaultSecGroup(t *Txn, now time.Time, projectID string) error {
	if projectID == "" {
		return nil
	}
	if _, ok := t.read().DefaultSecGroup(projectID); ok {
		return nil
	}
	g := &SecurityGroup{ID: DefaultSecGroupID(projectID), Name: DefaultSecGroupName, ProjectID: projectID,
		Description: "Default security group", Stateful: true}
	return insertSecGroup(t, now, g, true)
}

// EnsureDefaultSecGroupCmd creates a project's default group unless it
// exists (the API sends it on a project's first security group call).
type EnsureDefaultSecGroupCmd struct {
	ProjectID string `json:"project_id"`
}

func applyEnsureDefaultSecGroup(t *Txn, c *Command) error {
	cmd, err := decode[EnsureDefaultSecGroupCmd](c)
	if err != nil {
		return err
	}
	if cmd.ProjectID == "" {
		return Errorf(KindInvalid, "a project is required")
	}
	return ensureDefaultSecGroup(t, c.Time, cmd.ProjectID)
}

// UpdateSecGroupCmd changes a group; nil fields stay.
type UpdateSecGroupCmd struct {
	ID          string    `json:"id"`
	Name        *string   `json:"name,omitempty"`
	Description *string   `json:"description,omitempty"`
	Stateful    *bool     `json:"stateful,omitempty"`
	Tags        *[]string `json:"tags,omitempty"`
}

func applyUpdateSecGroup(t *Txn, c *Command) error {
	u, err := decode[UpdateSecGroupCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().SecGroup(u.ID)
	if !ok {
		return Errorf(KindNotFound, MsgSecGroupNotFound, u.ID)
	}
	g := *old
	if u.Name != nil {
		if err := validName255("security group", *u.Name); err != nil {
			return err
		}
		if old.ID == DefaultSecGroupID(old.ProjectID) && *u.Name != DefaultSecGroupName {
			return Errorf(KindConflict, "Updating default security group not allowed.")
		}
		if old.ID != DefaultSecGroupID(old.ProjectID) && *u.Name == DefaultSecGroupName {
			return Errorf(KindInvalid, "Default security group already exists.")
		}
		g.Name = *u.Name
	}
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		g.Description = *u.Description
	}
	if u.Stateful != nil {
		g.Stateful = *u.Stateful
	}
	if u.Tags != nil {
		if err := validTags(*u.Tags); err != nil {
			return err
		}
		g.Tags = slices.Clone(*u.Tags)
	}
	g.Revision++
	g.UpdatedAt = c.Time
	return t.insert(tblSecGroups, &g)
}

// applyDeleteSecGroup removes a group and its rules: 409 while a port is
// a member or another group's rule names it as remote group, and for a
// project's default group.
func applyDeleteSecGroup(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	g, ok := sn.SecGroup(d.ID)
	if !ok {
		return Errorf(KindNotFound, MsgSecGroupNotFound, d.ID)
	}
	if g.ID == DefaultSecGroupID(g.ProjectID) {
		return Errorf(KindConflict, MsgSecGroupDefault)
	}
	if len(sn.PortsOfSecGroup(g.ID)) > 0 {
		return Errorf(KindConflict, MsgSecGroupInUse, g.ID)
	}
	for _, r := range sn.SecRulesReferring(g.ID) {
		if r.GroupID != g.ID {
			return Errorf(KindConflict, MsgSecGroupInUse, g.ID)
		}
	}
	for _, r := range sn.SecRulesOf(g.ID) {
		if err := t.delete(tblSecRules, r); err != nil {
			return err
		}
	}
	return t.delete(tblSecGroups, g)
}

func applyCreateSecGroupRule(t *Txn, c *Command) error {
	r, err := decode[SecurityGroupRule](c)
	if err != nil {
		return err
	}
	if r.ID == "" {
		return Errorf(KindInvalid, "a security group rule needs an id")
	}
	sn := t.read()
	if _, ok := sn.SecRule(r.ID); ok {
		return Errorf(KindConflict, "Security group rule %s already exists.", r.ID)
	}
	g, ok := sn.SecGroup(r.GroupID)
	if !ok {
		return Errorf(KindNotFound, MsgSecGroupNotFound, r.GroupID)
	}
	if err := NormalizeRule(r); err != nil {
		return err
	}
	if err := validDescription(r.Description); err != nil {
		return err
	}
	if r.RemoteGroupID != "" {
		rg, ok := sn.SecGroup(r.RemoteGroupID)
		if !ok || rg.ProjectID != g.ProjectID {
			return Errorf(KindNotFound, MsgSecGroupNotFound, r.RemoteGroupID)
		}
	}
	if r.RemoteAddressGroupID != "" {
		ag, ok := sn.AddressGroup(r.RemoteAddressGroupID)
		if !ok || ag.ProjectID != g.ProjectID {
			return Errorf(KindNotFound, MsgAddrGroupNotFound, r.RemoteAddressGroupID)
		}
	}
	for _, o := range sn.SecRulesOf(g.ID) {
		if sameRule(o, r) {
			return Errorf(KindConflict, MsgSecRuleExists, o.ID)
		}
	}
	if err := checkQuota(t, g.ProjectID, "", charge{QuotaSecurityGroupRules, 1}); err != nil {
		return err
	}
	r.ProjectID = g.ProjectID
	r.Revision = 1
	r.CreatedAt, r.UpdatedAt = c.Time, c.Time
	if err := t.insert(tblSecRules, r); err != nil {
		return err
	}
	return touchSecGroup(t, g, c.Time)
}

func applyDeleteSecGroupRule(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	r, ok := sn.SecRule(d.ID)
	if !ok {
		return Errorf(KindNotFound, MsgSecRuleNotFound, d.ID)
	}
	if err := t.delete(tblSecRules, r); err != nil {
		return err
	}
	if g, ok := sn.SecGroup(r.GroupID); ok {
		return touchSecGroup(t, g, c.Time)
	}
	return nil
}

// touchSecGroup bumps a group's revision (its rules changed).
func touchSecGroup(t *Txn, g *SecurityGroup, now time.Time) error {
	cp := *g
	cp.Revision++
	cp.UpdatedAt = now
	return t.insert(tblSecGroups, &cp)
}

// SetServerSecGroupCmd adds a group to, or removes it from, every port of
// a server (Nova's addSecurityGroup / removeSecurityGroup) and the
// server's list of group names.
type SetServerSecGroupCmd struct {
	InstanceID string `json:"instance_id"`
	GroupID    string `json:"group_id"`
	Remove     bool   `json:"remove,omitempty"`
}

func applySetServerSecGroup(t *Txn, c *Command) error {
	cmd, err := decode[SetServerSecGroupCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	inst, ok := sn.Instance(cmd.InstanceID)
	if !ok {
		return Errorf(KindNotFound, "Instance %s could not be found.", cmd.InstanceID)
	}
	if cmd.GroupID == DefaultSecGroupID(inst.ProjectID) {
		if err := ensureDefaultSecGroup(t, c.Time, inst.ProjectID); err != nil {
			return err
		}
		sn = t.read()
	}
	g, ok := sn.SecGroup(cmd.GroupID)
	if !ok || g.ProjectID != inst.ProjectID {
		return Errorf(KindNotFound, MsgSecGroupNotFound, cmd.GroupID)
	}
	ports := sn.PortsOfDevice(inst.ID)
	member := false
	for _, p := range ports {
		member = member || slices.Contains(p.SecurityGroups, g.ID)
	}
	names := slices.Clone(inst.SecurityGroups)
	if len(names) == 0 && len(ports) > 0 {
		names = []string{DefaultSecGroupName}
	}
	if cmd.Remove {
		if !member {
			return Errorf(KindInvalid, "Security group %s not associated with the instance %s", g.Name, inst.ID)
		}
		names = slices.DeleteFunc(names, func(n string) bool { return n == g.Name })
	} else {
		if member {
			return Errorf(KindInvalid, "Security group %s is already associated with the instance %s", g.Name, inst.ID)
		}
		if !slices.Contains(names, g.Name) {
			names = append(names, g.Name)
		}
	}
	for _, p := range ports {
		cp := *p
		if cmd.Remove {
			cp.SecurityGroups = slices.DeleteFunc(slices.Clone(p.SecurityGroups), func(id string) bool { return id == g.ID })
		} else {
			if !p.PortSecurityEnabled {
				continue
			}
			cp.SecurityGroups = append(slices.Clone(p.SecurityGroups), g.ID)
		}
		cp.Revision++
		cp.UpdatedAt = c.Time
		if err := t.insert(tblPorts, &cp); err != nil {
			return err
		}
	}
	ci := *inst
	ci.SecurityGroups = names
	return t.insert(tblInstances, &ci)
}

// PortSecurity is the security part of a port request: groups (nil =
// the project's default group, unless NoGroups), port security (off if
// Disabled, on if Enabled, else the network's default) and allowed
// address pairs.
type PortSecurity struct {
	SecurityGroups []string      `json:"security_groups,omitempty"`
	NoGroups       bool          `json:"no_security_groups,omitempty"`
	Disabled       bool          `json:"port_security_disabled,omitempty"`
	Enabled        bool          `json:"port_security_enabled,omitempty"`
	AddressPairs   []AddressPair `json:"allowed_address_pairs,omitempty"`
}

// setPortSecurity fills a new port's security attributes. Ports of the
// network service itself (device owner "network:…") get no groups.
func setPortSecurity(t *Txn, now time.Time, p *Port, n *Network, req PortSecurity) error {
	p.PortSecurityEnabled = !req.Disabled && (req.Enabled || !n.PortSecurityDisabled)
	p.SecurityGroups = []string{}
	p.AllowedAddressPairs = []AddressPair{}
	groups := req.SecurityGroups
	if groups == nil && !req.NoGroups && p.PortSecurityEnabled && p.ProjectID != "" && !strings.HasPrefix(p.DeviceOwner, "network:") {
		groups = []string{DefaultSecGroupID(p.ProjectID)}
	}
	if err := setPortGroups(t, now, p, groups); err != nil {
		return err
	}
	return setAddressPairs(p, req.AddressPairs)
}

// setPortGroups validates and sets a port's groups: each must exist and
// belong to the port's project (the default group is made on demand),
// and a port without port security can have none.
func setPortGroups(t *Txn, now time.Time, p *Port, groups []string) error {
	if len(groups) > 0 && !p.PortSecurityEnabled {
		return Errorf(KindInvalid, "Port security must be enabled and port must have an IP address in order to use security groups.")
	}
	out := []string{}
	for _, id := range groups {
		if id == DefaultSecGroupID(p.ProjectID) {
			if err := ensureDefaultSecGroup(t, now, p.ProjectID); err != nil {
				return err
			}
		}
		g, ok := t.read().SecGroup(id)
		if !ok || g.ProjectID != p.ProjectID {
			return Errorf(KindNotFound, MsgSecGroupNotFound, id)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	p.SecurityGroups = out
	return nil
}

// setAddressPairs validates and sets a port's allowed address pairs; an
// empty MAC means the port's own.
func setAddressPairs(p *Port, pairs []AddressPair) error {
	if len(pairs) > 0 && !p.PortSecurityEnabled {
		return Errorf(KindConflict, MsgAddressPairsNoSec)
	}
	if len(pairs) > 10 {
		return Errorf(KindInvalid, "The number of allowed address pair exceeds the maximum 10.")
	}
	out, err := NormalizeAddressPairs(p.MAC, pairs)
	if err != nil {
		return err
	}
	p.AllowedAddressPairs = out
	return nil
}

// NormalizeAddressPairs returns pairs in the form a port with MAC mac
// stores them: a single address without its prefix length, a network
// masked, the port's MAC for an empty one, MACs lower-case; a malformed
// or repeated pair is an error.
func NormalizeAddressPairs(mac string, pairs []AddressPair) ([]AddressPair, error) {
	out := []AddressPair{}
	for _, ap := range pairs {
		pfx, err := parsePrefix(ap.IP)
		if err != nil {
			return nil, Errorf(KindInvalid, "Invalid input for allowed_address_pairs. Reason: '%s' is not a valid IP address.", ap.IP)
		}
		ip := pfx.Masked().String()
		if pfx.IsSingleIP() {
			ip = pfx.Addr().String()
		}
		hwMAC := mac
		if ap.MAC != "" {
			hw, err := net.ParseMAC(ap.MAC)
			if err != nil || len(hw) != 6 {
				return nil, Errorf(KindInvalid, "Invalid input for allowed_address_pairs. Reason: '%s' is not a valid MAC address.", ap.MAC)
			}
			hwMAC = hw.String()
		}
		np := AddressPair{IP: ip, MAC: hwMAC}
		if slices.Contains(out, np) {
			return nil, Errorf(KindInvalid, "Request contains duplicate address pair: mac_address %s ip_address %s.", hwMAC, ip)
		}
		out = append(out, np)
	}
	return out, nil
}

// UpdatePortSecurity is the security part of a port update; nil = keep.
type UpdatePortSecurity struct {
	SecurityGroups *[]string      `json:"security_groups,omitempty"`
	Enabled        *bool          `json:"port_security_enabled,omitempty"`
	AddressPairs   *[]AddressPair `json:"allowed_address_pairs,omitempty"`
}

// updatePortSecurity applies a port update's security part to p.
func updatePortSecurity(t *Txn, now time.Time, p *Port, u UpdatePortSecurity) error {
	if u.Enabled != nil {
		groups := p.SecurityGroups
		if u.SecurityGroups != nil {
			groups = *u.SecurityGroups
		}
		pairs := p.AllowedAddressPairs
		if u.AddressPairs != nil {
			pairs = *u.AddressPairs
		}
		if !*u.Enabled && len(groups) > 0 {
			return Errorf(KindConflict, MsgPortSecurityGroups)
		}
		if !*u.Enabled && len(pairs) > 0 {
			return Errorf(KindConflict, MsgAddressPairsNoSec)
		}
		p.PortSecurityEnabled = *u.Enabled
	}
	if u.SecurityGroups != nil {
		if err := setPortGroups(t, now, p, *u.SecurityGroups); err != nil {
			return err
		}
	}
	if u.AddressPairs != nil {
		if err := setAddressPairs(p, *u.AddressPairs); err != nil {
			return err
		}
	}
	if p.SecurityGroups == nil {
		p.SecurityGroups = []string{}
	}
	if p.AllowedAddressPairs == nil {
		p.AllowedAddressPairs = []AddressPair{}
	}
	return nil
}

// SetNetworkPortSecurityCmd sets a network's port_security_enabled: the
// default of the ports created on it later (existing ports keep theirs).
// A command of its own, gated, rather than a field of network create and
// update: a host of a release before it would ignore the field and make
// the network's ports differently.
type SetNetworkPortSecurityCmd struct {
	ID      string `json:"id"`
	Enabled bool   `json:"enabled"`
}

func applySetNetworkPortSecurity(t *Txn, c *Command) error {
	cmd, err := decode[SetNetworkPortSecurityCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Network(cmd.ID)
	if !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, cmd.ID)
	}
	if old.PortSecurityDisabled == !cmd.Enabled {
		return nil
	}
	n := *old
	n.PortSecurityDisabled = !cmd.Enabled
	n.Revision++
	n.UpdatedAt = c.Time
	return t.insert(tblNetworks, &n)
}
