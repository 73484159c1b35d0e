package statedb

import (
	"slices"
	"time"
)

// Address groups: Neutron's named lists of CIDRs a security group rule
// may name as its remote (remote_address_group_id), so a set of outside
// addresses is kept in one place instead of one rule per prefix.
// Commands 157-159; the table is one of secGroupTables.
const tblAddrGroups = "address_groups"

// Hard limits (Neutron has no address group quota; every host holds and
// expands the groups): prefixes per group, groups per project. Over the
// second a create is refused as over quota (Neutron's 409 OverQuota).
const (
	MaxAddressGroupAddresses  = 1024
	MaxAddressGroupsOfProject = 100
)

// AddressGroup is a named list of normalised CIDRs, sorted.
type AddressGroup struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	ProjectID   string    `json:"project_id"`
	Description string    `json:"description"`
	Addresses   []string  `json:"addresses"`
	Revision    int       `json:"revision_number"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Messages of address group failures (Neutron's).
const (
	MsgAddrGroupNotFound = "Address group %s could not be found."
	MsgAddrGroupInUse    = "Address group %s is in use on one or more security group rules."
	MsgAddrExists        = "Addresses %v already exist in the address group %s."
	MsgAddrNotFound      = "Addresses %v not found in the address group %s."
)

// AddressGroup returns an address group by id.
func (sn *Snapshot) AddressGroup(id string) (*AddressGroup, bool) {
	return get[AddressGroup](sn, tblAddrGroups, id)
}

// AddressGroups lists all address groups.
func (sn *Snapshot) AddressGroups() []*AddressGroup { return list[AddressGroup](sn, tblAddrGroups) }

// SecRulesOfAddressGroup lists the rules whose remote is address group id.
func (sn *Snapshot) SecRulesOfAddressGroup(id string) []*SecurityGroupRule {
	return listBy[SecurityGroupRule](sn, tblSecRules, "RemoteAddressGroupID", id)
}

// normalizeAddresses masks each CIDR (a bare address is a host prefix)
// and reports the first invalid one.
func normalizeAddresses(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, a := range in {
		p, err := parsePrefix(a)
		if err != nil {
			return nil, Errorf(KindInvalid, "Invalid input for addresses. Reason: '%s' is not a valid IP subnet.", a)
		}
		out = append(out, p.Masked().String())
	}
	return out, nil
}

// CreateAddressGroupCmd creates an address group.
type CreateAddressGroupCmd struct {
	AddressGroup
}

func applyCreateAddressGroup(t *Txn, c *Command) error {
	cmd, err := decode[CreateAddressGroupCmd](c)
	if err != nil {
		return err
	}
	g := cmd.AddressGroup
	if g.ID == "" || g.ProjectID == "" {
		return Errorf(KindInvalid, "an address group needs an id and a project")
	}
	if _, ok := t.read().AddressGroup(g.ID); ok {
		return Errorf(KindConflict, "Address group %s already exists.", g.ID)
	}
	if n := int64(len(listBy[AddressGroup](t.read(), tblAddrGroups, "ProjectID", g.ProjectID))); n >= MaxAddressGroupsOfProject {
		return overQuota("address_group", 1, n, MaxAddressGroupsOfProject)
	}
	if err := validName255("address group", g.Name); err != nil {
		return err
	}
	if err := validDescription(g.Description); err != nil {
		return err
	}
	addrs, err := normalizeAddresses(g.Addresses)
	if err != nil {
		return err
	}
	slices.Sort(addrs)
	g.Addresses = slices.Compact(addrs)
	if len(g.Addresses) > MaxAddressGroupAddresses {
		return Errorf(KindInvalid, "An address group may hold at most %d addresses.", MaxAddressGroupAddresses)
	}
	g.Revision = 1
	g.CreatedAt, g.UpdatedAt = c.Time, c.Time
	return t.insert(tblAddrGroups, &g)
}

// UpdateAddressGroupCmd changes a group's name or description, or adds
// or removes addresses (Neutron's add_addresses / remove_addresses).
type UpdateAddressGroupCmd struct {
	ID          string   `json:"id"`
	Name        *string  `json:"name,omitempty"`
	Description *string  `json:"description,omitempty"`
	Add         []string `json:"add,omitempty"`
	Remove      []string `json:"remove,omitempty"`
}

func applyUpdateAddressGroup(t *Txn, c *Command) error {
	u, err := decode[UpdateAddressGroupCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().AddressGroup(u.ID)
	if !ok {
		return Errorf(KindNotFound, MsgAddrGroupNotFound, u.ID)
	}
	g := *old
	if u.Name != nil {
		if err := validName255("address group", *u.Name); err != nil {
			return err
		}
		g.Name = *u.Name
	}
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		g.Description = *u.Description
	}
	add, err := normalizeAddresses(u.Add)
	if err != nil {
		return err
	}
	remove, err := normalizeAddresses(u.Remove)
	if err != nil {
		return err
	}
	var there, missing []string
	for _, a := range add {
		if slices.Contains(old.Addresses, a) {
			there = append(there, a)
		}
	}
	for _, a := range remove {
		if !slices.Contains(old.Addresses, a) {
			missing = append(missing, a)
		}
	}
	if len(there) > 0 {
		return Errorf(KindInvalid, MsgAddrExists, there, g.ID)
	}
	if len(missing) > 0 {
		return Errorf(KindNotFound, MsgAddrNotFound, missing, g.ID)
	}
	addrs := append(slices.Clone(old.Addresses), add...)
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return slices.Contains(remove, a) })
	slices.Sort(addrs)
	g.Addresses = slices.Compact(addrs)
	if len(g.Addresses) > MaxAddressGroupAddresses {
		return Errorf(KindInvalid, "An address group may hold at most %d addresses.", MaxAddressGroupAddresses)
	}
	g.Revision++
	g.UpdatedAt = c.Time
	return t.insert(tblAddrGroups, &g)
}

// applyDeleteAddressGroup removes a group no rule names (else 409).
func applyDeleteAddressGroup(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	g, ok := sn.AddressGroup(d.ID)
	if !ok {
		return Errorf(KindNotFound, MsgAddrGroupNotFound, d.ID)
	}
	if len(sn.SecRulesOfAddressGroup(g.ID)) > 0 {
		return Errorf(KindConflict, MsgAddrGroupInUse, g.ID)
	}
	return t.delete(tblAddrGroups, g)
}
