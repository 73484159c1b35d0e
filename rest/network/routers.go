package network

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Routers (extensions router, ext-gw-mode, extraroute, dvr): a router is
// data only; every host routes for its own ports (see docs/routing.md).

func (s *service) routerRoutes() []rest.Route {
	return []rest.Route{
		{Method: "GET", Path: "/v2.0/routers", Auth: rest.Token, Handler: s.listRouters},
		{Method: "POST", Path: "/v2.0/routers", Auth: rest.Token, Handler: s.createRouter},
		{Method: "GET", Path: "/v2.0/routers/{id}", Auth: rest.Token, Handler: s.getRouter},
		{Method: "PUT", Path: "/v2.0/routers/{id}", Auth: rest.Token, Handler: s.updateRouter},
		{Method: "DELETE", Path: "/v2.0/routers/{id}", Auth: rest.Token, Handler: s.deleteRouter},
		{Method: "PUT", Path: "/v2.0/routers/{id}/add_router_interface", Auth: rest.Token, Handler: s.addRouterInterface},
		{Method: "PUT", Path: "/v2.0/routers/{id}/remove_router_interface", Auth: rest.Token, Handler: s.removeRouterInterface},
	}
}

// routerView renders a router; external_gateway_info is null without a
// gateway.
func routerView(sn *statedb.Snapshot, r *statedb.Router) view {
	var gw any
	if r.GatewayNetworkID != "" {
		fixed := []map[string]string{}
		if p, ok := sn.Port(r.GatewayPortID); ok {
			for _, f := range p.FixedIPs {
				fixed = append(fixed, map[string]string{"subnet_id": f.SubnetID, "ip_address": f.IP})
			}
		}
		gw = map[string]any{"network_id": r.GatewayNetworkID, "enable_snat": r.EnableSNAT, "external_fixed_ips": fixed}
	}
	routes := []map[string]string{}
	for _, rt := range r.Routes {
		routes = append(routes, map[string]string{"destination": rt.Destination, "nexthop": rt.NextHop})
	}
	return view{
		"id": r.ID, "name": r.Name, "description": r.Description, "tenant_id": r.ProjectID, "project_id": r.ProjectID,
		"admin_state_up": r.AdminStateUp, "status": statedb.StatusActive, "external_gateway_info": gw,
		"routes": routes, "distributed": true, "ha": false, "flavor_id": nil,
		"availability_zones": []string{"nova"}, "availability_zone_hints": []string{},
		"tags": tagsOf(r.Tags), "created_at": fmtTime(r.CreatedAt), "updated_at": fmtTime(r.UpdatedAt),
		"revision_number": r.Revision,
	}
}

// routerInput is the body of router create and update.
// external_gateway_info is raw: null or {} clears the gateway.
type routerInput struct {
	Name         *string              `json:"name"`
	Description  *string              `json:"description"`
	ProjectID    *string              `json:"project_id"`
	TenantID     *string              `json:"tenant_id"`
	AdminStateUp *bool                `json:"admin_state_up"`
	Gateway      json.RawMessage      `json:"external_gateway_info"`
	Routes       *[]statedb.HostRoute `json:"routes"`
	Distributed  *bool                `json:"distributed"`
	HA           *bool                `json:"ha"`
	Tags         *[]string            `json:"tags"`
}

type gatewayInput struct {
	NetworkID  *string `json:"network_id"`
	EnableSNAT *bool   `json:"enable_snat"`
	FixedIPs   *[]struct {
		SubnetID string `json:"subnet_id"`
		IP       string `json:"ip_address"`
	} `json:"external_fixed_ips"`
}

// gateway decodes external_gateway_info: set reports whether it was
// given, clear whether it asks for no gateway. Setting SNAT or the
// gateway's addresses is for admins (as in Neutron's default policy).
func (s *service) gateway(c *rest.Ctx, in *routerInput, project string) (req *statedb.GatewayReq, set, clear bool, err error) {
	if in.Gateway == nil {
		return nil, false, false, nil
	}
	if string(in.Gateway) == "null" {
		return nil, true, true, nil
	}
	var g gatewayInput
	if err := json.Unmarshal(in.Gateway, &g); err != nil {
		return nil, true, false, invalidInput(err)
	}
	if g.NetworkID == nil || *g.NetworkID == "" {
		if g.EnableSNAT == nil && g.FixedIPs == nil {
			return nil, true, true, nil
		}
		return nil, true, false, badRequest("Invalid input for external_gateway_info. Reason: network_id is required.")
	}
	if (g.EnableSNAT != nil && !*g.EnableSNAT) || g.FixedIPs != nil {
		if err := s.check(c, rest.Admin, project, false, "Router", ""); err != nil {
			return nil, true, false, err
		}
	}
	sn := s.b.State()
	if _, err := s.readNetwork(c, sn, *g.NetworkID); err != nil {
		return nil, true, false, err
	}
	req = &statedb.GatewayReq{NetworkID: *g.NetworkID, EnableSNAT: g.EnableSNAT, PortID: s.b.NewID()}
	if g.FixedIPs != nil {
		for _, f := range *g.FixedIPs {
			req.FixedIPs = append(req.FixedIPs, statedb.FixedIPWant{SubnetID: f.SubnetID, IP: f.IP})
		}
	}
	return req, true, false, nil
}

func (in *routerInput) check() error {
	if in.Distributed != nil && !*in.Distributed {
		return badRequest("Invalid input for distributed. Reason: every router here is distributed.")
	}
	if in.HA != nil && *in.HA {
		return badRequest("Invalid input for ha. Reason: routers here are distributed, not HA pairs.")
	}
	return nil
}

func (s *service) readRouter(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.Router, error) {
	r, ok := sn.Router(id)
	if !ok {
		return nil, notFound("Router", id)
	}
	if err := s.check(c, rest.Read, r.ProjectID, false, "Router", id); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *service) listRouters(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Router"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var rows []view
	for _, r := range sn.Routers() {
		if s.visible(c, r.ProjectID, false) {
			rows = append(rows, routerView(sn, r))
		}
	}
	return list(c, sn, "routers", rows, nil)
}

func (s *service) getRouter(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	r, err := s.readRouter(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"router": routerView(sn, r)}, nil
}

// createRouter serves POST /v2.0/routers: 201.
func (s *service) createRouter(c *rest.Ctx) (any, error) {
	var in routerInput
	if err := decodeBody(c, "router", routerSpec, &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Router")
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, project, false, "Router", ""); err != nil {
		return nil, forbidden("Router")
	}
	if in.Routes != nil && len(*in.Routes) > 0 {
		return nil, badRequest("Invalid input for routes. Reason: a new router has no interfaces to route through.")
	}
	gw, _, _, err := s.gateway(c, &in, project)
	if err != nil {
		return nil, err
	}
	cmd := statedb.CreateRouterCmd{Router: statedb.Router{ID: s.b.NewID(), Name: strOr(in.Name, ""), ProjectID: project,
		Description: strOr(in.Description, ""), AdminStateUp: boolOr(in.AdminStateUp, true), Tags: []string{}}, Gateway: gw}
	if in.Tags != nil {
		cmd.Tags = *in.Tags
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateRouter, cmd); err != nil {
		return nil, err
	}
	sn := s.b.State()
	r, ok := sn.Router(cmd.ID)
	if !ok {
		return nil, notFound("Router", cmd.ID)
	}
	return created(map[string]any{"router": routerView(sn, r)}), nil
}

// updateRouter serves PUT /v2.0/routers/{id}: 200.
func (s *service) updateRouter(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	r, err := s.readRouter(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, r.ProjectID, false, "Router", r.ID); err != nil {
		return nil, err
	}
	var in routerInput
	if err := decodeBody(c, "router", routerSpec, &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	for _, p := range []*string{in.ProjectID, in.TenantID} {
		if p != nil && *p != r.ProjectID {
			return nil, badRequest("Invalid input for operation: the project of a router cannot be changed.")
		}
	}
	gw, _, clear, err := s.gateway(c, &in, r.ProjectID)
	if err != nil {
		return nil, err
	}
	u := statedb.UpdateRouterCmd{ID: r.ID, Name: in.Name, Description: in.Description, AdminStateUp: in.AdminStateUp,
		Gateway: gw, ClearGateway: clear, Routes: in.Routes, Tags: in.Tags}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateRouter, u); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.Router(r.ID)
	if !ok {
		return nil, notFound("Router", r.ID)
	}
	return map[string]any{"router": routerView(sn, got)}, nil
}

// deleteRouter serves DELETE /v2.0/routers/{id}: 204, or 409 RouterInUse
// while it has interfaces.
func (s *service) deleteRouter(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	r, err := s.readRouter(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, r.ProjectID, false, "Router", r.ID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteRouter, statedb.DeleteCmd{ID: r.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// interfaceInput is the body of add/remove_router_interface (not wrapped).
type interfaceInput struct {
	SubnetID *string `json:"subnet_id"`
	PortID   *string `json:"port_id"`
}

// routerInterface decodes and checks an interface request: the router and
// the subnet or port must be the caller's (or an admin's).
func (s *service) routerInterface(c *rest.Ctx) (*statedb.Router, statedb.RouterInterfaceCmd, error) {
	sn := s.b.State()
	r, err := s.readRouter(c, sn, c.Var("id"))
	if err != nil {
		return nil, statedb.RouterInterfaceCmd{}, err
	}
	if err := s.check(c, rest.Write, r.ProjectID, false, "Router", r.ID); err != nil {
		return nil, statedb.RouterInterfaceCmd{}, err
	}
	var in interfaceInput
	if err := c.Decode(&in); err != nil {
		return nil, statedb.RouterInterfaceCmd{}, badRequest("Malformed request body: %v", err)
	}
	cmd := statedb.RouterInterfaceCmd{RouterID: r.ID, SubnetID: strOr(in.SubnetID, ""), PortID: strOr(in.PortID, "")}
	switch {
	case cmd.SubnetID != "" && cmd.PortID != "":
		return nil, cmd, badRouterRequest("Cannot specify both subnet-id and port-id.")
	case cmd.SubnetID != "":
		if _, err := s.readSubnet(c, sn, cmd.SubnetID); err != nil {
			return nil, cmd, err
		}
	case cmd.PortID != "":
		if _, err := s.readPort(c, sn, cmd.PortID); err != nil {
			return nil, cmd, err
		}
	default:
		return nil, cmd, badRouterRequest("Either subnet_id or port_id must be specified.")
	}
	return r, cmd, nil
}

// interfaceInfo is the answer of add/remove_router_interface.
func interfaceInfo(r *statedb.Router, p *statedb.Port) map[string]any {
	subnets := []string{}
	for _, f := range p.FixedIPs {
		subnets = append(subnets, f.SubnetID)
	}
	sort.Strings(subnets)
	first := ""
	if len(subnets) > 0 {
		first = subnets[0]
	}
	return map[string]any{"id": r.ID, "subnet_id": first, "subnet_ids": subnets, "port_id": p.ID,
		"network_id": p.NetworkID, "tenant_id": r.ProjectID, "project_id": r.ProjectID}
}

// addRouterInterface serves PUT .../add_router_interface: 200 (gophercloud
// requires it) with the interface info.
func (s *service) addRouterInterface(c *rest.Ctx) (any, error) {
	r, cmd, err := s.routerInterface(c)
	if err != nil {
		return nil, err
	}
	if cmd.SubnetID != "" {
		cmd.NewPortID = s.b.NewID()
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdAddRouterInterface, cmd); err != nil {
		return nil, err
	}
	portID := cmd.PortID
	if portID == "" {
		portID = cmd.NewPortID
	}
	p, ok := s.b.State().Port(portID)
	if !ok {
		return nil, notFound("Port", portID)
	}
	return interfaceInfo(r, p), nil
}

// removeRouterInterface serves PUT .../remove_router_interface: 200 with
// the removed interface's info.
func (s *service) removeRouterInterface(c *rest.Ctx) (any, error) {
	r, cmd, err := s.routerInterface(c)
	if err != nil {
		return nil, err
	}
	var port *statedb.Port
	for _, p := range s.b.State().RouterInterfaces(r.ID) {
		for _, f := range p.FixedIPs {
			if p.ID == cmd.PortID || (cmd.PortID == "" && f.SubnetID == cmd.SubnetID) {
				port = p
			}
		}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRemoveRouterInterface, cmd); err != nil {
		return nil, err
	}
	if port == nil {
		return nil, notFound("Port", cmd.PortID)
	}
	return interfaceInfo(r, port), nil
}

// badRouterRequest is Neutron's 400 BadRequest for routers.
func badRouterRequest(msg string) error {
	return &apiError{status: http.StatusBadRequest, typ: "BadRequest", msg: "Bad router request: " + msg}
}
