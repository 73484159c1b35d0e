package statedb

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Messages of routing command failures. The API maps them to Neutron
// error types by their leading words, so keep those stable.
const (
	msgRouterNotFound     = "Router %s could not be found."
	msgRouterInUse        = "Router %s still has ports"
	msgNotExternal        = "Bad router request: Network %s is not an external network."
	msgNoInterfaceSubnet  = "Router %s has no interface on subnet %s"
	msgNoInterfacePort    = "Router %s does not have an interface with id %s"
	msgInterfaceInUseByFO = "Router interface for subnet %s on router %s cannot be deleted, as it is required by one or more floating IPs."
	msgGatewayInUseByFIP  = "Gateway cannot be updated for router %s, since a gateway to external network %s is required by one or more floating IPs."
)

// checkProvider validates a flat or VLAN provider network: a physical
// network name, a VLAN id for vlan, and no other network using the same
// physical network untagged (flat) or with the same VLAN.
func checkProvider(sn *Snapshot, n *Network) error {
	switch n.NetworkType {
	case NetTypeFlat, NetTypeVLAN:
	default:
		return Errorf(KindInvalid, "Invalid input for operation: network_type value '%s' not supported.", n.NetworkType)
	}
	if n.PhysicalNetwork == "" || len(n.PhysicalNetwork) > 64 {
		return Errorf(KindInvalid, "Invalid input for operation: provider:physical_network is required for %s provider network.", n.NetworkType)
	}
	n.VNI = 0
	if n.NetworkType == NetTypeFlat {
		if n.VLAN != 0 {
			return Errorf(KindInvalid, "Invalid input for operation: segmentation_id specified for flat network.")
		}
	} else if n.VLAN < 1 || n.VLAN > 4094 {
		return Errorf(KindInvalid, "Invalid input for operation: segmentation_id %d out of range (1 through 4094).", n.VLAN)
	}
	for _, o := range sn.Networks() {
		if o.ID == n.ID || o.PhysicalNetwork != n.PhysicalNetwork || o.NetworkType != n.NetworkType || o.VLAN != n.VLAN {
			continue
		}
		if n.NetworkType == NetTypeFlat {
			return Errorf(KindConflict, "Unable to create the flat network. Physical network %s is in use.", n.PhysicalNetwork)
		}
		return Errorf(KindConflict, "Unable to create the network. The VLAN %d on physical network %s is in use.", n.VLAN, n.PhysicalNetwork)
	}
	return nil
}

// GatewayReq sets a router's external gateway. PortID is the id of the
// gateway port to create when the network changes (the proposer makes it).
type GatewayReq struct {
	NetworkID  string        `json:"network_id"`
	EnableSNAT *bool         `json:"enable_snat,omitempty"` // nil: true
	FixedIPs   []FixedIPWant `json:"fixed_ips,omitempty"`
	PortID     string        `json:"port_id"`
}

// CreateRouterCmd creates a router, with a gateway when Gateway is set.
type CreateRouterCmd struct {
	Router
	Gateway *GatewayReq `json:"gateway,omitempty"`
}

// UpdateRouterCmd changes a router; nil fields stay. ClearGateway removes
// the gateway (and its port).
type UpdateRouterCmd struct {
	ID           string       `json:"id"`
	Name         *string      `json:"name,omitempty"`
	Description  *string      `json:"description,omitempty"`
	AdminStateUp *bool        `json:"admin_state_up,omitempty"`
	Gateway      *GatewayReq  `json:"gateway,omitempty"`
	ClearGateway bool         `json:"clear_gateway,omitempty"`
	Routes       *[]HostRoute `json:"routes,omitempty"`
	Tags         *[]string    `json:"tags,omitempty"`
}

// RouterInterfaceCmd adds or removes a router interface, by subnet or by
// port. On add by subnet NewPortID is the id of the interface port.
type RouterInterfaceCmd struct {
	RouterID  string `json:"router_id"`
	SubnetID  string `json:"subnet_id,omitempty"`
	PortID    string `json:"port_id,omitempty"`
	NewPortID string `json:"new_port_id,omitempty"`
}

func applyCreateRouter(t *Txn, c *Command) error {
	cmd, err := decode[CreateRouterCmd](c)
	if err != nil {
		return err
	}
	r := cmd.Router
	if r.ID == "" {
		return Errorf(KindInvalid, "router needs an id")
	}
	if _, ok := t.read().Router(r.ID); ok {
		return Errorf(KindConflict, "Router %s already exists.", r.ID)
	}
	if err := validName255("router", r.Name); err != nil {
		return err
	}
	if err := validDescription(r.Description); err != nil {
		return err
	}
	if err := validTags(r.Tags); err != nil {
		return err
	}
	if err := checkQuota(t, r.ProjectID, "", charge{QuotaRouters, 1}); err != nil {
		return err
	}
	if r.Tags == nil {
		r.Tags = []string{}
	}
	r.Routes = []HostRoute{}
	r.GatewayNetworkID, r.GatewayPortID, r.EnableSNAT = "", "", false
	r.Revision = 1
	r.CreatedAt, r.UpdatedAt = c.Time, c.Time
	if cmd.Gateway != nil {
		if err := setGateway(t, c.Time, &r, cmd.Gateway); err != nil {
			return err
		}
	}
	return t.insert(tblRouters, &r)
}

// setGateway points r at an external network (creating its gateway port)
// or, on the same network, changes SNAT and the gateway addresses.
func setGateway(t *Txn, now time.Time, r *Router, g *GatewayReq) error {
	sn := t.read()
	n, ok := sn.Network(g.NetworkID)
	if !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, g.NetworkID)
	}
	if !n.External {
		return Errorf(KindInvalid, msgNotExternal, n.ID)
	}
	r.EnableSNAT = g.EnableSNAT == nil || *g.EnableSNAT
	if r.GatewayNetworkID == n.ID && r.GatewayPortID != "" {
		if len(g.FixedIPs) == 0 {
			return nil
		}
		p, ok := sn.Port(r.GatewayPortID)
		if !ok {
			return Errorf(KindInternal, "gateway port %s of router %s is missing", r.GatewayPortID, r.ID)
		}
		ips, err := allocateIPs(sn, n, p.ID, g.FixedIPs, p.FixedIPs, false)
		if err != nil {
			return err
		}
		cp := *p
		cp.FixedIPs, cp.Revision, cp.UpdatedAt = ips, p.Revision+1, now
		return t.insert(tblPorts, &cp)
	}
	if err := clearGateway(t, r); err != nil {
		return err
	}
	if g.PortID == "" {
		return Errorf(KindInvalid, "gateway needs a port id")
	}
	p, err := createPort(t, now, PortRequest{ID: g.PortID, NetworkID: n.ID, FixedIPs: g.FixedIPs,
		DeviceID: r.ID, DeviceOwner: OwnerRouterGateway})
	if err != nil {
		return err
	}
	cp := *p
	cp.Status = PortActive // the gateway exists on every host, no agent binds it
	if err := t.insert(tblPorts, &cp); err != nil {
		return err
	}
	r.GatewayNetworkID, r.GatewayPortID = n.ID, p.ID
	return nil
}

// clearGateway removes a router's gateway port; 409 while floating IPs
// reach the external network through it.
func clearGateway(t *Txn, r *Router) error {
	if r.GatewayNetworkID == "" {
		return nil
	}
	sn := t.read()
	if len(sn.FloatingIPsOfRouter(r.ID)) > 0 {
		return Errorf(KindConflict, msgGatewayInUseByFIP, r.ID, r.GatewayNetworkID)
	}
	if p, ok := sn.Port(r.GatewayPortID); ok {
		if err := t.delete(tblPorts, p); err != nil {
			return err
		}
	}
	r.GatewayNetworkID, r.GatewayPortID, r.EnableSNAT = "", "", false
	return nil
}

func applyUpdateRouter(t *Txn, c *Command) error {
	u, err := decode[UpdateRouterCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Router(u.ID)
	if !ok {
		return Errorf(KindNotFound, msgRouterNotFound, u.ID)
	}
	r := *old
	r.Routes = slices.Clone(old.Routes)
	if u.Name != nil {
		if err := validName255("router", *u.Name); err != nil {
			return err
		}
		r.Name = *u.Name
	}
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		r.Description = *u.Description
	}
	if u.AdminStateUp != nil {
		r.AdminStateUp = *u.AdminStateUp
	}
	if u.Tags != nil {
		if err := validTags(*u.Tags); err != nil {
			return err
		}
		r.Tags = slices.Clone(*u.Tags)
	}
	switch {
	case u.ClearGateway:
		if err := clearGateway(t, &r); err != nil {
			return err
		}
	case u.Gateway != nil:
		if err := setGateway(t, c.Time, &r, u.Gateway); err != nil {
			return err
		}
	}
	if u.Routes != nil {
		if err := checkRoutes(t.read(), &r, *u.Routes); err != nil {
			return err
		}
		r.Routes = slices.Clone(*u.Routes)
	}
	r.Revision++
	r.UpdatedAt = c.Time
	return t.insert(tblRouters, &r)
}

// checkRoutes validates extra routes: IPv4 destinations, and next hops on
// a subnet the router has an interface on.
func checkRoutes(sn *Snapshot, r *Router, routes []HostRoute) error {
	if len(routes) > 30 {
		return Errorf(KindInvalid, "Invalid input for routes. Reason: at most 30 routes are allowed.")
	}
	var connected []netip.Prefix
	for _, p := range sn.RouterInterfaces(r.ID) {
		for _, f := range p.FixedIPs {
			if s, ok := sn.Subnet(f.SubnetID); ok {
				if pfx, err := netip.ParsePrefix(s.CIDR); err == nil {
					connected = append(connected, pfx)
				}
			}
		}
	}
	seen := map[HostRoute]bool{}
	for _, rt := range routes {
		dst, err := netip.ParsePrefix(rt.Destination)
		if err != nil || dst.Masked() != dst {
			return Errorf(KindInvalid, "Invalid input for routes. Reason: '%s' is not a valid CIDR.", rt.Destination)
		}
		hop, err := netip.ParseAddr(rt.NextHop)
		if err != nil || hop.Is4() != dst.Addr().Is4() {
			return Errorf(KindInvalid, "Invalid input for routes. Reason: '%s' is not a valid nexthop.", rt.NextHop)
		}
		if !slices.ContainsFunc(connected, func(p netip.Prefix) bool { return p.Contains(hop) }) {
			return Errorf(KindInvalid, "Invalid format for routes: %s, the nexthop is not connected with router.", rt.Destination)
		}
		if seen[rt] {
			return Errorf(KindInvalid, "Invalid input for routes. Reason: duplicate route %s via %s.", rt.Destination, rt.NextHop)
		}
		seen[rt] = true
	}
	return nil
}

func applyDeleteRouter(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	r, ok := sn.Router(d.ID)
	if !ok {
		return Errorf(KindNotFound, msgRouterNotFound, d.ID)
	}
	if len(sn.RouterInterfaces(r.ID)) > 0 {
		return Errorf(KindConflict, msgRouterInUse, r.ID)
	}
	cp := *r
	if err := clearGateway(t, &cp); err != nil {
		return err
	}
	return t.delete(tblRouters, r)
}

func applyAddRouterInterface(t *Txn, c *Command) error {
	cmd, err := decode[RouterInterfaceCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	r, ok := sn.Router(cmd.RouterID)
	if !ok {
		return Errorf(KindNotFound, msgRouterNotFound, cmd.RouterID)
	}
	var subnetID string
	var port *Port
	switch {
	case cmd.SubnetID != "" && cmd.PortID != "":
		return Errorf(KindInvalid, "Bad router request: Cannot specify both subnet-id and port-id.")
	case cmd.SubnetID != "":
		subnetID = cmd.SubnetID
	case cmd.PortID != "":
		p, ok := sn.Port(cmd.PortID)
		if !ok {
			return Errorf(KindNotFound, msgPortNotFound, cmd.PortID)
		}
		if p.DeviceID != "" {
			return Errorf(KindConflict, "Unable to complete operation on port %s for network %s. Port already has an attached device %s.", p.ID, p.NetworkID, p.DeviceID)
		}
		if len(p.FixedIPs) != 1 {
			return Errorf(KindInvalid, "Bad router request: Router port must have exactly one fixed IP.")
		}
		port, subnetID = p, p.FixedIPs[0].SubnetID
	default:
		return Errorf(KindInvalid, "Bad router request: Either subnet_id or port_id must be specified.")
	}
	s, ok := sn.Subnet(subnetID)
	if !ok {
		return Errorf(KindNotFound, msgSubnetNotFound, subnetID)
	}
	n, ok := sn.Network(s.NetworkID)
	if !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, s.NetworkID)
	}
	if n.External {
		return Errorf(KindInvalid, "Bad router request: Router interface on external network %s is not supported; set it as the gateway.", n.ID)
	}
	if s.IPVersion != 4 {
		return Errorf(KindInvalid, "Bad router request: Only IPv4 subnets can be routed here; subnet %s is IPv%d.", s.ID, s.IPVersion)
	}
	if other, _, ok := sn.RouterOfSubnet(s.ID); ok {
		if other.ID == r.ID {
			return Errorf(KindInvalid, "Bad router request: Router already has a port on subnet %s.", s.ID)
		}
		return Errorf(KindConflict, "IP address %s already allocated in subnet %s.", s.GatewayIP, s.ID)
	}
	for _, ip := range sn.RouterInterfaces(r.ID) {
		for _, f := range ip.FixedIPs {
			if o, ok := sn.Subnet(f.SubnetID); ok && cidrsOverlap(o.CIDR, s.CIDR) {
				return Errorf(KindInvalid, "Bad router request: Cidr %s of subnet %s overlaps with cidr %s of subnet %s.", s.CIDR, s.ID, o.CIDR, o.ID)
			}
		}
	}
	if port == nil {
		if s.GatewayIP == "" {
			return Errorf(KindInvalid, "Bad router request: Subnet for router interface must have a gateway IP.")
		}
		if cmd.NewPortID == "" {
			return Errorf(KindInvalid, "router interface needs a port id")
		}
		p, err := createPort(t, c.Time, PortRequest{ID: cmd.NewPortID, ProjectID: r.ProjectID, NetworkID: n.ID,
			FixedIPs: []FixedIPWant{{SubnetID: s.ID, IP: s.GatewayIP}}, DeviceID: r.ID, DeviceOwner: OwnerRouterInterface})
		if err != nil {
			return err
		}
		port = p
	}
	cp := *port
	cp.DeviceID, cp.DeviceOwner = r.ID, OwnerRouterInterface
	cp.Status = PortActive // an anycast gateway: present wherever the network is
	cp.Revision++
	cp.UpdatedAt = c.Time
	if err := t.insert(tblPorts, &cp); err != nil {
		return err
	}
	return touchRouter(t, r.ID, c.Time)
}

func applyRemoveRouterInterface(t *Txn, c *Command) error {
	cmd, err := decode[RouterInterfaceCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	r, ok := sn.Router(cmd.RouterID)
	if !ok {
		return Errorf(KindNotFound, msgRouterNotFound, cmd.RouterID)
	}
	var port *Port
	for _, p := range sn.RouterInterfaces(r.ID) {
		switch {
		case cmd.PortID != "" && p.ID == cmd.PortID:
			port = p
		case cmd.PortID == "" && slices.ContainsFunc(p.FixedIPs, func(f FixedIP) bool { return f.SubnetID == cmd.SubnetID }):
			port = p
		}
	}
	if port == nil {
		if cmd.PortID != "" {
			return Errorf(KindNotFound, msgNoInterfacePort, r.ID, cmd.PortID)
		}
		return Errorf(KindNotFound, msgNoInterfaceSubnet, r.ID, cmd.SubnetID)
	}
	for _, f := range port.FixedIPs {
		s, ok := sn.Subnet(f.SubnetID)
		if !ok {
			continue
		}
		for _, fip := range sn.FloatingIPsOfRouter(r.ID) {
			if a, err := netip.ParseAddr(fip.FixedIP); err == nil && subnetContains(s, a) {
				return Errorf(KindConflict, msgInterfaceInUseByFO, s.ID, r.ID)
			}
		}
	}
	if err := t.delete(tblPorts, port); err != nil {
		return err
	}
	// Extra routes through the removed subnet go with it, as in Neutron's
	// check that refuses to leave an unreachable next hop behind.
	cp := *r
	cp.Routes = nil
	if err := checkRoutes(t.read(), &cp, r.Routes); err != nil {
		return Errorf(KindConflict, "Router interface for subnet %s on router %s cannot be deleted, as it is required by one or more routes.", strings.Join(subnetsOf(port), ","), r.ID)
	}
	return touchRouter(t, r.ID, c.Time)
}

func subnetsOf(p *Port) []string {
	var out []string
	for _, f := range p.FixedIPs {
		out = append(out, f.SubnetID)
	}
	return out
}

// touchRouter bumps a router's revision (its interfaces changed).
func touchRouter(t *Txn, id string, now time.Time) error {
	r, ok := t.read().Router(id)
	if !ok {
		return nil
	}
	cp := *r
	cp.Revision++
	cp.UpdatedAt = now
	return t.insert(tblRouters, &cp)
}

// applySetHostNetworks records a host's physical network mapping,
// replacing the previous one. Only members may report.
func applySetHostNetworks(t *Txn, c *Command) error {
	h, err := decode[HostNetworks](c)
	if err != nil {
		return err
	}
	if _, ok := t.read().Member(h.ID); !ok {
		return Errorf(KindNotFound, "Host %s could not be found.", h.ID)
	}
	// In name order: the error names the first bad mapping, the same on
	// every host (it is recorded in the replicated state).
	for _, name := range slices.Sorted(maps.Keys(h.Physnets)) {
		dev := h.Physnets[name]
		if name == "" || len(name) > 64 || dev == "" || len(dev) > 15 || strings.ContainsAny(dev, "/ ") {
			return Errorf(KindInvalid, "invalid physical network mapping %q=%q", name, dev)
		}
	}
	if h.Physnets == nil {
		h.Physnets = map[string]string{}
	}
	return t.insert(tblHostNets, h)
}
