package network

import (
	"encoding/json"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// subnetView renders a subnet: gateway_ip null when there is none, lists
// never null (OSC iterates allocation_pools and host_routes).
func subnetView(s *statedb.Subnet) view {
	var gw any
	if s.GatewayIP != "" {
		gw = s.GatewayIP
	}
	pools := []map[string]string{}
	for _, p := range s.AllocationPools {
		pools = append(pools, map[string]string{"start": p.Start, "end": p.End})
	}
	routes := []map[string]string{}
	for _, r := range s.HostRoutes {
		routes = append(routes, map[string]string{"destination": r.Destination, "nexthop": r.NextHop})
	}
	dns := append([]string{}, s.DNSNameservers...)
	var addrMode, raMode any
	if s.IPv6AddressMode != "" {
		addrMode = s.IPv6AddressMode
	}
	if s.IPv6RAMode != "" {
		raMode = s.IPv6RAMode
	}
	return view{
		"id": s.ID, "name": s.Name, "description": s.Description, "network_id": s.NetworkID,
		"tenant_id": s.ProjectID, "project_id": s.ProjectID, "ip_version": s.IPVersion, "cidr": s.CIDR,
		"gateway_ip": gw, "allocation_pools": pools, "host_routes": routes, "dns_nameservers": dns,
		"enable_dhcp": s.EnableDHCP, "ipv6_address_mode": addrMode, "ipv6_ra_mode": raMode,
		"subnetpool_id": nil, "segment_id": nil, "service_types": []string{}, "dns_publish_fixed_ip": false,
		"tags": tagsOf(s.Tags), "created_at": fmtTime(s.CreatedAt), "updated_at": fmtTime(s.UpdatedAt),
		"revision_number": s.Revision,
	}
}

// subnetInput is the body of subnet create and update. gateway_ip is raw
// so that absent (default gateway) and null (no gateway) differ.
type subnetInput struct {
	Name            *string              `json:"name"`
	Description     *string              `json:"description"`
	NetworkID       *string              `json:"network_id"`
	ProjectID       *string              `json:"project_id"`
	TenantID        *string              `json:"tenant_id"`
	IPVersion       *int                 `json:"ip_version"`
	CIDR            *string              `json:"cidr"`
	GatewayIP       json.RawMessage      `json:"gateway_ip"`
	AllocationPools *[]statedb.IPRange   `json:"allocation_pools"`
	EnableDHCP      *bool                `json:"enable_dhcp"`
	DNSNameservers  *[]string            `json:"dns_nameservers"`
	HostRoutes      *[]statedb.HostRoute `json:"host_routes"`
	IPv6AddressMode *string              `json:"ipv6_address_mode"`
	IPv6RAMode      *string              `json:"ipv6_ra_mode"`
	SubnetPoolID    *string              `json:"subnetpool_id"`
	UseDefaultPool  *bool                `json:"use_default_subnetpool"`
	Tags            *[]string            `json:"tags"`
}

// gateway decodes gateway_ip: set reports whether it was given, gw is ""
// for null (no gateway).
func (in *subnetInput) gateway() (gw string, set bool, err error) {
	if in.GatewayIP == nil {
		return "", false, nil
	}
	if string(in.GatewayIP) == "null" {
		return "", true, nil
	}
	if err := json.Unmarshal(in.GatewayIP, &gw); err != nil {
		return "", true, badRequest("Invalid input for gateway_ip. Reason: '%s' is not a valid IP address.", in.GatewayIP)
	}
	return gw, true, nil
}

// subnetPublic: subnets of shared networks are readable by everyone.
func subnetPublic(sn *statedb.Snapshot, s *statedb.Subnet) bool {
	n, ok := sn.Network(s.NetworkID)
	return ok && n.Shared
}

func (s *service) readSubnet(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.Subnet, error) {
	sub, ok := sn.Subnet(id)
	if !ok {
		return nil, notFound("Subnet", id)
	}
	if err := s.check(c, rest.Read, sub.ProjectID, subnetPublic(sn, sub), "Subnet", id); err != nil {
		return nil, err
	}
	return sub, nil
}

// listSubnets serves GET /v2.0/subnets: own subnets and those of shared
// networks (all for admins).
func (s *service) listSubnets(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Subnet"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	var rows []view
	for _, sub := range sn.Subnets() {
		if s.visible(c, sub.ProjectID, subnetPublic(sn, sub)) {
			rows = append(rows, subnetView(sub))
		}
	}
	return list(c, sn, "subnets", rows, nil)
}

func (s *service) getSubnet(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	sub, err := s.readSubnet(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"subnet": subnetView(sub)}, nil
}

// createSubnet serves POST /v2.0/subnets: 201. Only cidr and network_id
// are needed; the FSM fills in the gateway (first host), the pools (the
// other hosts), enable_dhcp, dns_nameservers and host_routes.
func (s *service) createSubnet(c *rest.Ctx) (any, error) {
	var in subnetInput
	if err := decodeBody(c, "subnet", subnetSpec, &in); err != nil {
		return nil, err
	}
	if in.NetworkID == nil || *in.NetworkID == "" {
		return nil, badRequest("Invalid input for operation: network_id is required.")
	}
	if in.SubnetPoolID != nil || (in.UseDefaultPool != nil && *in.UseDefaultPool) {
		return nil, badRequest("Invalid input for operation: subnet pools are not supported; give a cidr.")
	}
	if in.CIDR == nil || *in.CIDR == "" {
		return nil, badRequest("Invalid input for operation: cidr is required.")
	}
	version := 0
	if in.IPVersion != nil {
		if *in.IPVersion != 4 && *in.IPVersion != 6 {
			return nil, badRequest("Invalid input for ip_version. Reason: %d is not in [4, 6].", *in.IPVersion)
		}
		version = *in.IPVersion
	}
	sn := s.b.State()
	n, err := s.readNetwork(c, sn, *in.NetworkID)
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, n.ProjectID, networkPublic(n), "Network", n.ID); err != nil {
		return nil, err
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Subnet")
	if err != nil {
		return nil, err
	}
	gw, gwSet, err := in.gateway()
	if err != nil {
		return nil, err
	}
	cmd := statedb.CreateSubnetCmd{
		Subnet: statedb.Subnet{
			ID: s.b.NewID(), Name: strOr(in.Name, ""), Description: strOr(in.Description, ""), ProjectID: project,
			NetworkID: n.ID, IPVersion: version, CIDR: *in.CIDR, GatewayIP: gw, EnableDHCP: boolOr(in.EnableDHCP, true),
			IPv6AddressMode: strOr(in.IPv6AddressMode, ""), IPv6RAMode: strOr(in.IPv6RAMode, ""),
			DNSNameservers: []string{}, HostRoutes: []statedb.HostRoute{}, Tags: []string{},
		},
		GatewayAuto: !gwSet,
		PoolsAuto:   in.AllocationPools == nil || len(*in.AllocationPools) == 0,
	}
	if !cmd.PoolsAuto {
		cmd.AllocationPools = *in.AllocationPools
	}
	if in.DNSNameservers != nil {
		cmd.DNSNameservers = *in.DNSNameservers
	}
	if in.HostRoutes != nil {
		cmd.HostRoutes = *in.HostRoutes
	}
	if in.Tags != nil {
		cmd.Tags = *in.Tags
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateSubnet, cmd); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Subnet(cmd.ID)
	if !ok {
		return nil, notFound("Subnet", cmd.ID)
	}
	return created(map[string]any{"subnet": subnetView(got)}), nil
}

// updateSubnet serves PUT /v2.0/subnets/{id}: 200.
func (s *service) updateSubnet(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	sub, err := s.readSubnet(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, sub.ProjectID, subnetPublic(sn, sub), "Subnet", sub.ID); err != nil {
		return nil, err
	}
	var in subnetInput
	if err := decodeBody(c, "subnet", subnetSpec, &in); err != nil {
		return nil, err
	}
	switch {
	case in.CIDR != nil && *in.CIDR != sub.CIDR,
		in.NetworkID != nil && *in.NetworkID != sub.NetworkID,
		in.IPVersion != nil && *in.IPVersion != sub.IPVersion,
		in.IPv6AddressMode != nil && *in.IPv6AddressMode != sub.IPv6AddressMode,
		in.IPv6RAMode != nil && *in.IPv6RAMode != sub.IPv6RAMode,
		in.ProjectID != nil && *in.ProjectID != sub.ProjectID,
		in.TenantID != nil && *in.TenantID != sub.ProjectID:
		return nil, badRequest("Invalid input for operation: cidr, network_id, ip_version, ipv6 modes and project cannot be changed.")
	}
	u := statedb.UpdateSubnetCmd{ID: sub.ID, Name: in.Name, Description: in.Description, AllocationPools: in.AllocationPools,
		EnableDHCP: in.EnableDHCP, DNSNameservers: in.DNSNameservers, HostRoutes: in.HostRoutes, Tags: in.Tags}
	gw, gwSet, err := in.gateway()
	if err != nil {
		return nil, err
	}
	if gwSet {
		u.GatewayIP = &gw
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateSubnet, u); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Subnet(sub.ID)
	if !ok {
		return nil, notFound("Subnet", sub.ID)
	}
	return map[string]any{"subnet": subnetView(got)}, nil
}

// deleteSubnet serves DELETE /v2.0/subnets/{id}: 204, or 409 SubnetInUse
// while a port holds one of its addresses.
func (s *service) deleteSubnet(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	sub, err := s.readSubnet(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, sub.ProjectID, subnetPublic(sn, sub), "Subnet", sub.ID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteSubnet, statedb.DeleteCmd{ID: sub.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
