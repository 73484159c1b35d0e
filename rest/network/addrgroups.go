package network

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Address groups (Neutron's address-group extension): named CIDR lists
// under /v2.0/address-groups, changed by add_addresses and
// remove_addresses, which security group rules name as
// remote_address_group_id. A group belongs to one project; rules of that
// project's groups may name it.

func (s *service) addrGroupRoutes() []rest.Route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	one := "/v2.0/address-groups/{id}"
	return []rest.Route{
		{Method: get, Path: "/v2.0/address-groups", Auth: rest.Token, Handler: s.listAddrGroups},
		{Method: post, Path: "/v2.0/address-groups", Auth: rest.Token, Handler: s.createAddrGroup},
		{Method: get, Path: one, Auth: rest.Token, Handler: s.getAddrGroup},
		{Method: put, Path: one, Auth: rest.Token, Handler: s.updateAddrGroup},
		{Method: del, Path: one, Auth: rest.Token, Handler: s.deleteAddrGroup},
		{Method: put, Path: one + "/add_addresses", Auth: rest.Token, Handler: s.addAddresses},
		{Method: put, Path: one + "/remove_addresses", Auth: rest.Token, Handler: s.removeAddresses},
	}
}

// addrGroupErrorType names the Neutron type of an address group failure
// (messages of consensus/statedb addrgroups.go).
func addrGroupErrorType(msg string) (string, bool) {
	switch {
	case strings.HasPrefix(msg, "Address group ") && strings.Contains(msg, " in use "):
		return "AddressGroupInUse", true
	case strings.HasPrefix(msg, "Address group ") && strings.HasSuffix(msg, "could not be found."):
		return "AddressGroupNotFound", true
	case strings.HasPrefix(msg, "Addresses ") && strings.Contains(msg, "already exist"):
		return "AddressesAlreadyExist", true
	case strings.HasPrefix(msg, "Addresses ") && strings.Contains(msg, "not found"):
		return "AddressesNotFound", true
	}
	return "", false
}

func addrGroupView(g *statedb.AddressGroup) view {
	return view{
		"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID, "project_id": g.ProjectID,
		"addresses": append([]string{}, g.Addresses...), "shared": false,
		"created_at": fmtTime(g.CreatedAt), "updated_at": fmtTime(g.UpdatedAt), "revision_number": g.Revision,
	}
}

func addrGroupNotFound(id string) error {
	return &apiError{status: http.StatusNotFound, typ: "AddressGroupNotFound", msg: fmt.Sprintf(statedb.MsgAddrGroupNotFound, id)}
}

// readAddrGroup finds a group the caller may read (others are 404) and,
// for access beyond reading, checks that too.
func (s *service) readAddrGroup(c *rest.Ctx, sn *statedb.Snapshot, id string, access rest.Access) (*statedb.AddressGroup, error) {
	g, ok := sn.AddressGroup(id)
	if !ok {
		return nil, addrGroupNotFound(id)
	}
	if err := s.check(c, rest.Read, g.ProjectID, false, "Address group", id); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusNotFound {
			return nil, addrGroupNotFound(id)
		}
		return nil, err
	}
	if access != rest.Read {
		if err := s.check(c, access, g.ProjectID, false, "Address group", id); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (s *service) listAddrGroups(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Address group"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var rows []view
	for _, g := range sn.AddressGroups() {
		if s.visible(c, g.ProjectID, false) {
			rows = append(rows, addrGroupView(g))
		}
	}
	return list(c, sn, "address_groups", rows, nil)
}

func (s *service) getAddrGroup(c *rest.Ctx) (any, error) {
	g, err := s.readAddrGroup(c, s.b.State(), c.Var("id"), rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"address_group": addrGroupView(g)}, nil
}

type addrGroupInput struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	ProjectID   *string   `json:"project_id"`
	TenantID    *string   `json:"tenant_id"`
	Addresses   *[]string `json:"addresses"`
}

func (s *service) createAddrGroup(c *rest.Ctx) (any, error) {
	var in addrGroupInput
	if err := decodeBody(c, "address_group", rest.Spec{}, &in); err != nil {
		return nil, err
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Address group")
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, project, false, "Address group", ""); err != nil {
		return nil, forbidden("Address group")
	}
	g := statedb.AddressGroup{ID: s.b.NewID(), Name: strOr(in.Name, ""), ProjectID: project, Description: strOr(in.Description, ""), Addresses: []string{}}
	if in.Addresses != nil {
		g.Addresses = *in.Addresses
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateAddressGroup, statedb.CreateAddressGroupCmd{AddressGroup: g}); err != nil {
		return nil, err
	}
	return s.addrGroupAnswer(g.ID, http.StatusCreated)
}

// addrGroupAnswer renders a group after a write.
func (s *service) addrGroupAnswer(id string, status int) (any, error) {
	got, ok := s.b.State().AddressGroup(id)
	if !ok {
		return nil, addrGroupNotFound(id)
	}
	return &rest.Response{Status: status, Body: map[string]any{"address_group": addrGroupView(got)}}, nil
}

func (s *service) updateAddrGroup(c *rest.Ctx) (any, error) {
	g, err := s.readAddrGroup(c, s.b.State(), c.Var("id"), rest.Write)
	if err != nil {
		return nil, err
	}
	var in addrGroupInput
	if err := decodeBody(c, "address_group", rest.Spec{}, &in); err != nil {
		return nil, err
	}
	if in.Addresses != nil {
		return nil, badRequest("Cannot update read-only attribute addresses")
	}
	if (in.ProjectID != nil && *in.ProjectID != g.ProjectID) || (in.TenantID != nil && *in.TenantID != g.ProjectID) {
		return nil, badRequest("Invalid input for operation: the project of an address group cannot be changed.")
	}
	u := statedb.UpdateAddressGroupCmd{ID: g.ID, Name: in.Name, Description: in.Description}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateAddressGroup, u); err != nil {
		return nil, err
	}
	return s.addrGroupAnswer(g.ID, http.StatusOK)
}

func (s *service) addAddresses(c *rest.Ctx) (any, error)    { return s.changeAddresses(c, false) }
func (s *service) removeAddresses(c *rest.Ctx) (any, error) { return s.changeAddresses(c, true) }

// changeAddresses serves add_addresses and remove_addresses: a body of
// {"addresses": [...]} (Neutron's API reference and openstacksdk) or
// {"address_group": {"addresses": [...]}}, answered with the group.
func (s *service) changeAddresses(c *rest.Ctx, remove bool) (any, error) {
	g, err := s.readAddrGroup(c, s.b.State(), c.Var("id"), rest.Write)
	if err != nil {
		return nil, err
	}
	var body struct {
		Addresses *[]string `json:"addresses"`
		Group     *struct {
			Addresses *[]string `json:"addresses"`
		} `json:"address_group"`
	}
	if err := c.Decode(&body); err != nil {
		var he *rest.HTTPError
		if errors.As(err, &he) && he.Status != http.StatusBadRequest {
			return nil, err
		}
		return nil, badRequest("Malformed request body: %v", err)
	}
	addrs := body.Addresses
	if addrs == nil && body.Group != nil {
		addrs = body.Group.Addresses
	}
	if addrs == nil {
		return nil, badRequest("Invalid input for operation: the body must be {\"addresses\": [...]}.")
	}
	u := statedb.UpdateAddressGroupCmd{ID: g.ID, Add: *addrs}
	if remove {
		u = statedb.UpdateAddressGroupCmd{ID: g.ID, Remove: *addrs}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateAddressGroup, u); err != nil {
		return nil, err
	}
	return s.addrGroupAnswer(g.ID, http.StatusOK)
}

func (s *service) deleteAddrGroup(c *rest.Ctx) (any, error) {
	g, err := s.readAddrGroup(c, s.b.State(), c.Var("id"), rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteAddressGroup, statedb.DeleteCmd{ID: g.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
