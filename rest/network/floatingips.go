package network

import (
	"encoding/json"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Floating IPs: an address of an external network, 1:1 NATed by the host
// that runs the associated port.

func (s *service) floatingIPRoutes() []rest.Route {
	return []rest.Route{
		{Method: "GET", Path: "/v2.0/floatingips", Auth: rest.Token, Handler: s.listFloatingIPs},
		{Method: "POST", Path: "/v2.0/floatingips", Auth: rest.Token, Handler: s.createFloatingIP},
		{Method: "GET", Path: "/v2.0/floatingips/{id}", Auth: rest.Token, Handler: s.getFloatingIP},
		{Method: "PUT", Path: "/v2.0/floatingips/{id}", Auth: rest.Token, Handler: s.updateFloatingIP},
		{Method: "DELETE", Path: "/v2.0/floatingips/{id}", Auth: rest.Token, Handler: s.deleteFloatingIP},
	}
}

// floatingIPView renders a floating IP. status is ACTIVE once the agent of
// the host running the port has applied the NAT, DOWN otherwise (also
// while the port moves to another host).
func floatingIPView(sn *statedb.Snapshot, f *statedb.FloatingIP) view {
	status := statedb.StatusDown
	var portID, fixed, router, details any
	if f.PortID != "" {
		portID, fixed, router = f.PortID, f.FixedIP, f.RouterID
		if p, ok := sn.Port(f.PortID); ok {
			if f.Status == statedb.StatusActive && p.HostID != "" && p.HostID == f.HostID {
				status = statedb.StatusActive
			}
			details = map[string]any{"name": p.Name, "network_id": p.NetworkID, "mac_address": p.MAC,
				"admin_state_up": p.AdminStateUp, "status": p.Status, "device_id": p.DeviceID, "device_owner": p.DeviceOwner}
		}
	}
	return view{
		"id": f.ID, "tenant_id": f.ProjectID, "project_id": f.ProjectID, "description": f.Description,
		"floating_network_id": f.FloatingNetworkID, "floating_ip_address": f.Address,
		"fixed_ip_address": fixed, "port_id": portID, "router_id": router, "status": status,
		"port_details": details, "port_forwardings": []any{}, "dns_domain": "", "dns_name": "", "qos_policy_id": nil,
		"tags": tagsOf(f.Tags), "created_at": fmtTime(f.CreatedAt), "updated_at": fmtTime(f.UpdatedAt),
		"revision_number": f.Revision,
	}
}

// floatingIPInput is the body of floating IP create and update. port_id
// is raw: null disassociates.
type floatingIPInput struct {
	FloatingNetworkID *string         `json:"floating_network_id"`
	Address           *string         `json:"floating_ip_address"`
	SubnetID          *string         `json:"subnet_id"`
	PortID            json.RawMessage `json:"port_id"`
	FixedIP           *string         `json:"fixed_ip_address"`
	Description       *string         `json:"description"`
	ProjectID         *string         `json:"project_id"`
	TenantID          *string         `json:"tenant_id"`
	Tags              *[]string       `json:"tags"`
}

// port decodes port_id: set reports whether it was given, id is "" for
// null.
func (in *floatingIPInput) port() (id string, set bool, err error) {
	if in.PortID == nil {
		return "", false, nil
	}
	if string(in.PortID) == "null" {
		return "", true, nil
	}
	if err := json.Unmarshal(in.PortID, &id); err != nil {
		return "", true, badRequest("Invalid input for port_id. Reason: '%s' is not a valid UUID.", in.PortID)
	}
	return id, true, nil
}

func (s *service) readFloatingIP(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.FloatingIP, error) {
	f, ok := sn.FloatingIP(id)
	if !ok {
		return nil, notFound("Floating IP", id)
	}
	if err := s.check(c, rest.Read, f.ProjectID, false, "Floating IP", id); err != nil {
		return nil, err
	}
	return f, nil
}

func (s *service) listFloatingIPs(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Floating IP"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var rows []view
	for _, f := range sn.FloatingIPs() {
		if s.visible(c, f.ProjectID, false) {
			rows = append(rows, floatingIPView(sn, f))
		}
	}
	return list(c, sn, "floatingips", rows, nil)
}

func (s *service) getFloatingIP(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	f, err := s.readFloatingIP(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"floatingip": floatingIPView(sn, f)}, nil
}

// createFloatingIP serves POST /v2.0/floatingips: 201. Choosing the
// address is for admins, as in Neutron's default policy.
func (s *service) createFloatingIP(c *rest.Ctx) (any, error) {
	var in floatingIPInput
	if err := decodeBody(c, "floatingip", floatingIPSpec, &in); err != nil {
		return nil, err
	}
	if in.FloatingNetworkID == nil || *in.FloatingNetworkID == "" {
		return nil, badRequest("Invalid input for operation: floating_network_id is required.")
	}
	if in.SubnetID != nil {
		return nil, badRequest("Invalid input for subnet_id. Reason: choose the address with floating_ip_address.")
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Floating IP")
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, project, false, "Floating IP", ""); err != nil {
		return nil, forbidden("Floating IP")
	}
	if in.Address != nil && *in.Address != "" {
		if err := s.check(c, rest.Admin, project, false, "Floating IP", ""); err != nil {
			return nil, err
		}
	}
	sn := s.b.State()
	if _, err := s.readNetwork(c, sn, *in.FloatingNetworkID); err != nil {
		return nil, err
	}
	portID, _, err := in.port()
	if err != nil {
		return nil, err
	}
	if portID != "" {
		if _, err := s.readPort(c, sn, portID); err != nil {
			return nil, err
		}
	}
	cmd := statedb.CreateFloatingIPCmd{FloatingIP: statedb.FloatingIP{ID: s.b.NewID(), ProjectID: project,
		Description: strOr(in.Description, ""), FloatingNetworkID: *in.FloatingNetworkID, FloatingPortID: s.b.NewID(),
		Address: strOr(in.Address, ""), PortID: portID, FixedIP: strOr(in.FixedIP, ""), Tags: []string{}}}
	if in.Tags != nil {
		cmd.Tags = *in.Tags
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateFloatingIP, cmd); err != nil {
		return nil, err
	}
	sn = s.b.State()
	f, ok := sn.FloatingIP(cmd.ID)
	if !ok {
		return nil, notFound("Floating IP", cmd.ID)
	}
	return created(map[string]any{"floatingip": floatingIPView(sn, f)}), nil
}

// updateFloatingIP serves PUT /v2.0/floatingips/{id}: 200; port_id null
// disassociates.
func (s *service) updateFloatingIP(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	f, err := s.readFloatingIP(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, f.ProjectID, false, "Floating IP", f.ID); err != nil {
		return nil, err
	}
	var in floatingIPInput
	if err := decodeBody(c, "floatingip", floatingIPSpec, &in); err != nil {
		return nil, err
	}
	if (in.FloatingNetworkID != nil && *in.FloatingNetworkID != f.FloatingNetworkID) ||
		(in.Address != nil && *in.Address != f.Address) {
		return nil, badRequest("Invalid input for operation: the network and address of a floating IP cannot be changed.")
	}
	u := statedb.UpdateFloatingIPCmd{ID: f.ID, FixedIP: in.FixedIP, Description: in.Description, Tags: in.Tags}
	portID, set, err := in.port()
	if err != nil {
		return nil, err
	}
	if set {
		if portID != "" {
			if _, err := s.readPort(c, sn, portID); err != nil {
				return nil, err
			}
		}
		u.PortID = &portID
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateFloatingIP, u); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.FloatingIP(f.ID)
	if !ok {
		return nil, notFound("Floating IP", f.ID)
	}
	return map[string]any{"floatingip": floatingIPView(sn, got)}, nil
}

func (s *service) deleteFloatingIP(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	f, err := s.readFloatingIP(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, f.ProjectID, false, "Floating IP", f.ID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteFloatingIP, statedb.DeleteCmd{ID: f.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
