package network

import (
	"context"
	"sort"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// networkPublic: shared and external networks are readable by everyone.
func networkPublic(n *statedb.Network) bool { return n.Shared || n.External }

// networkView renders a network; provider attributes only for admins.
func networkView(sn *statedb.Snapshot, n *statedb.Network, admin bool) view {
	subnets := []string{}
	for _, s := range sn.SubnetsOf(n.ID) {
		subnets = append(subnets, s.ID)
	}
	sort.Strings(subnets)
	v := view{
		"id": n.ID, "name": n.Name, "description": n.Description,
		"tenant_id": n.ProjectID, "project_id": n.ProjectID,
		"admin_state_up": n.AdminStateUp, "status": "ACTIVE", "subnets": subnets,
		"shared": n.Shared, "router:external": n.External, "mtu": n.MTU,
		"port_security_enabled": !n.PortSecurityDisabled, "availability_zones": []string{"nova"},
		"availability_zone_hints": []string{}, "ipv4_address_scope": nil, "ipv6_address_scope": nil,
		"l2_adjacency": true, "tags": tagsOf(n.Tags),
		"created_at": fmtTime(n.CreatedAt), "updated_at": fmtTime(n.UpdatedAt), "revision_number": n.Revision,
	}
	if admin {
		switch n.NetworkType {
		case statedb.NetTypeFlat:
			v["provider:network_type"], v["provider:segmentation_id"] = n.NetworkType, nil
		case statedb.NetTypeVLAN:
			v["provider:network_type"], v["provider:segmentation_id"] = n.NetworkType, n.VLAN
		default:
			v["provider:network_type"], v["provider:segmentation_id"] = statedb.NetTypeVXLAN, n.VNI
		}
		v["provider:physical_network"] = nil
		if n.PhysicalNetwork != "" {
			v["provider:physical_network"] = n.PhysicalNetwork
		}
	}
	return v
}

// networkInput is the body of network create and update.
type networkInput struct {
	Name            *string   `json:"name"`
	Description     *string   `json:"description"`
	ProjectID       *string   `json:"project_id"`
	TenantID        *string   `json:"tenant_id"`
	AdminStateUp    *bool     `json:"admin_state_up"`
	Shared          *bool     `json:"shared"`
	External        *bool     `json:"router:external"`
	MTU             *int      `json:"mtu"`
	NetworkType     *string   `json:"provider:network_type"`
	PhysicalNetwork *string   `json:"provider:physical_network"`
	SegmentationID  *int64    `json:"provider:segmentation_id"`
	Tags            *[]string `json:"tags"`
	// PortSecurity is the default of the network's new ports.
	PortSecurity *bool `json:"port_security_enabled"`
}

// providerSpec is a validated set of provider attributes.
type providerSpec struct {
	typ     string // "" (vxlan), flat or vlan
	physnet string
	vlan    int
	vni     uint32 // vxlan: 0 = allocate
}

// provider validates mtu (Neutron's type:non_negative) and the provider
// attributes: vxlan (the default, with an optional VNI), flat (a physical
// network) or vlan (a physical network and a VLAN id).
func (in *networkInput) provider() (providerSpec, error) {
	if in.MTU != nil && *in.MTU < 0 {
		return providerSpec{}, badRequest("Invalid input for mtu. Reason: '%d' should be non-negative.", *in.MTU)
	}
	typ := statedb.NetTypeVXLAN
	if in.NetworkType != nil {
		typ = *in.NetworkType
	}
	physnet := strOr(in.PhysicalNetwork, "")
	switch typ {
	case statedb.NetTypeVXLAN:
		if physnet != "" {
			return providerSpec{}, badRequest("Invalid input for operation: provider:physical_network specified for vxlan network.")
		}
		if in.SegmentationID == nil {
			return providerSpec{}, nil
		}
		id := *in.SegmentationID
		if id < int64(statedb.MinRequestVNI) || id > int64(statedb.MaxVNI) {
			return providerSpec{}, badRequest("Invalid input for operation: segmentation_id %d out of range (%d through %d).", id, statedb.MinRequestVNI, statedb.MaxVNI)
		}
		return providerSpec{vni: uint32(id)}, nil
	case statedb.NetTypeFlat, statedb.NetTypeVLAN:
		if physnet == "" {
			return providerSpec{}, badRequest("Invalid input for operation: provider:physical_network is required for %s provider network.", typ)
		}
		spec := providerSpec{typ: typ, physnet: physnet}
		if typ == statedb.NetTypeFlat {
			if in.SegmentationID != nil {
				return providerSpec{}, badRequest("Invalid input for operation: segmentation_id specified for flat network.")
			}
			return spec, nil
		}
		if in.SegmentationID == nil || *in.SegmentationID < 1 || *in.SegmentationID > 4094 {
			return providerSpec{}, badRequest("Invalid input for operation: segmentation_id out of range (1 through 4094) or missing for vlan network.")
		}
		spec.vlan = int(*in.SegmentationID)
		return spec, nil
	}
	return providerSpec{}, badRequest("Invalid input for operation: network_type value '%s' not supported.", typ)
}

func (in *networkInput) hasProvider() bool {
	return in.NetworkType != nil || in.PhysicalNetwork != nil || in.SegmentationID != nil
}

// adminOnly reports whether the body sets what only admins may set.
func (in *networkInput) adminOnly() bool {
	return in.hasProvider() || (in.Shared != nil && *in.Shared) || (in.External != nil && *in.External)
}

// readNetwork finds a network the caller may see; others are 404.
func (s *service) readNetwork(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.Network, error) {
	n, ok := sn.Network(id)
	if !ok {
		return nil, notFound("Network", id)
	}
	if err := s.check(c, rest.Read, n.ProjectID, networkPublic(n), "Network", id); err != nil {
		return nil, err
	}
	return n, nil
}

// listNetworks serves GET /v2.0/networks: own, shared and external ones
// (all for admins), with filters and paging.
func (s *service) listNetworks(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Network"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	admin := s.isAdmin(c)
	var rows []view
	for _, n := range sn.Networks() {
		if s.visible(c, n.ProjectID, networkPublic(n)) {
			rows = append(rows, networkView(sn, n, admin))
		}
	}
	return list(c, sn, "networks", rows, nil)
}

func (s *service) getNetwork(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	n, err := s.readNetwork(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"network": networkView(sn, n, s.isAdmin(c))}, nil
}

// createNetwork serves POST /v2.0/networks: 201. The FSM picks the VNI
// (lowest free ≥ 1000) unless an admin asks for one.
func (s *service) createNetwork(c *rest.Ctx) (any, error) {
	var in networkInput
	if err := decodeBody(c, "network", networkSpec, &in); err != nil {
		return nil, err
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Network")
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, project, false, "Network", ""); err != nil {
		return nil, forbidden("Network")
	}
	if in.adminOnly() {
		if err := s.check(c, rest.Admin, project, false, "Network", ""); err != nil {
			return nil, err
		}
	}
	spec, err := in.provider()
	if err != nil {
		return nil, err
	}
	n := statedb.Network{
		ID: s.b.NewID(), Name: strOr(in.Name, ""), ProjectID: project, Description: strOr(in.Description, ""),
		AdminStateUp: boolOr(in.AdminStateUp, true), Shared: boolOr(in.Shared, false), External: boolOr(in.External, false),
		VNI: spec.vni, NetworkType: spec.typ, PhysicalNetwork: spec.physnet, VLAN: spec.vlan, Tags: []string{},
	}
	if in.MTU != nil {
		n.MTU = *in.MTU
	}
	if in.Tags != nil {
		n.Tags = *in.Tags
	}
	if in.PortSecurity != nil && !*in.PortSecurity {
		if err := statedb.Commands().Gate(s.b.State(), statedb.CmdSetNetPortSecurity); err != nil {
			return nil, err // a host too old for it: refuse before creating anything
		}
	}
	if n.PhysicalNetwork != "" {
		// Placement reads a provider network's physical network and the
		// hosts' mappings, which a host of an older release ignores: such
		// a host would place its servers differently.
		if err := statedb.Commands().Gate(s.b.State(), statedb.CmdSetHostNetworks); err != nil {
			return nil, err
		}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateNetwork, n); err != nil {
		return nil, err
	}
	if in.PortSecurity != nil && !*in.PortSecurity {
		if err := s.setNetPortSecurity(c, n.ID, false); err != nil {
			// Refused after all, or the client gave up: do not leave a
			// network that would secure its ports. The clean-up outlives
			// the request.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context()), 30*time.Second)
			defer cancel()
			_, _ = rest.Propose(ctx, s.b, statedb.CmdDeleteNetwork, statedb.DeleteCmd{ID: n.ID})
			return nil, err
		}
	}
	sn := s.b.State()
	got, ok := sn.Network(n.ID)
	if !ok {
		return nil, notFound("Network", n.ID)
	}
	return created(map[string]any{"network": networkView(sn, got, s.isAdmin(c))}), nil
}

// updateNetwork serves PUT /v2.0/networks/{id}: 200.
func (s *service) updateNetwork(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	n, err := s.readNetwork(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, n.ProjectID, networkPublic(n), "Network", n.ID); err != nil {
		return nil, err
	}
	var in networkInput
	if err := decodeBody(c, "network", networkSpec, &in); err != nil {
		return nil, err
	}
	for _, p := range []*string{in.ProjectID, in.TenantID} {
		if p != nil && *p != n.ProjectID {
			return nil, badRequest("Invalid input for operation: the project of a network cannot be changed.")
		}
	}
	changesShared := in.Shared != nil && *in.Shared != n.Shared
	changesExternal := in.External != nil && *in.External != n.External
	if in.hasProvider() || changesShared || changesExternal {
		if err := s.check(c, rest.Admin, n.ProjectID, false, "Network", n.ID); err != nil {
			return nil, err
		}
	}
	spec, err := in.provider()
	if err != nil {
		return nil, err
	}
	if in.hasProvider() && (spec.typ != n.NetworkType || spec.physnet != n.PhysicalNetwork || spec.vlan != n.VLAN) {
		return nil, badRequest("Invalid input for operation: the provider type and physical network of a network cannot be changed.")
	}
	vni := spec.vni
	u := statedb.UpdateNetworkCmd{ID: n.ID, Name: in.Name, Description: in.Description, AdminStateUp: in.AdminStateUp,
		Shared: in.Shared, External: in.External, MTU: in.MTU, Tags: in.Tags}
	if vni != 0 {
		u.VNI = &vni
	}
	changePS := in.PortSecurity != nil && *in.PortSecurity == n.PortSecurityDisabled
	if changePS {
		if err := statedb.Commands().Gate(s.b.State(), statedb.CmdSetNetPortSecurity); err != nil {
			return nil, err // refuse before changing anything else
		}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateNetwork, u); err != nil {
		return nil, err
	}
	if changePS {
		if err := s.setNetPortSecurity(c, n.ID, *in.PortSecurity); err != nil {
			return nil, err
		}
	}
	sn = s.b.State()
	got, ok := sn.Network(n.ID)
	if !ok {
		return nil, notFound("Network", n.ID)
	}
	return map[string]any{"network": networkView(sn, got, s.isAdmin(c))}, nil
}

// deleteNetwork serves DELETE /v2.0/networks/{id}: 204, or 409
// NetworkInUse while a device uses one of its ports.
func (s *service) deleteNetwork(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	n, err := s.readNetwork(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, n.ProjectID, networkPublic(n), "Network", n.ID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteNetwork, statedb.DeleteCmd{ID: n.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// setNetPortSecurity proposes a network's port_security_enabled (its own
// command: see statedb.SetNetworkPortSecurityCmd).
func (s *service) setNetPortSecurity(c *rest.Ctx, id string, enabled bool) error {
	_, err := rest.Propose(c.Context(), s.b, statedb.CmdSetNetPortSecurity, statedb.SetNetworkPortSecurityCmd{ID: id, Enabled: enabled})
	return err
}
