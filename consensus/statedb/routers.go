package statedb

import (
	"slices"
	"time"
)

// Routing: Neutron routers, floating IPs and the per-host mapping of
// physical networks to interfaces. Commands 165-179; apply functions live
// in routers_apply.go and floatingips_apply.go. A router owns ports: its
// interfaces (device_owner network:router_interface, one per subnet, each
// holding the subnet's gateway address) and its external gateway port
// (network:router_gateway). A floating IP owns a port on the external
// network (network:floatingip) that holds its address.
const (
	tblRouters     = "routers"
	tblFloatingIPs = "floatingips"
	tblHostNets    = "host_networks"
)

var routingTables = []table{
	idTable(tblRouters, func() any { return &Router{} }, "ProjectID"),
	idTable(tblFloatingIPs, func() any { return &FloatingIP{} }, "ProjectID", "PortID", "RouterID", "FloatingNetworkID"),
	withIndex(idTable(tblHostNets, func() any { return &HostNetworks{} }), idxPhysnet, physnetIndexer{}),
}

// Provider network types. A network with NetworkType "" is a tenant VXLAN
// segment.
const (
	NetTypeVXLAN = "vxlan"
	NetTypeFlat  = "flat"
	NetTypeVLAN  = "vlan"
)

// More device owners.
const (
	OwnerRouterGateway = "network:router_gateway"
	OwnerFloatingIP    = "network:floatingip"
)

// Router and floating IP statuses.
const (
	StatusActive = "ACTIVE"
	StatusDown   = "DOWN"
)

// Router is a Neutron router. It exists as data only: every host with
// ports on its networks routes for them itself.
type Router struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	ProjectID    string `json:"project_id"`
	Description  string `json:"description"`
	AdminStateUp bool   `json:"admin_state_up"`
	// Gateway: the external network ("" = none), the port holding the
	// router's addresses on it, and whether egress is source-NATed.
	GatewayNetworkID string      `json:"gateway_network_id,omitempty"`
	GatewayPortID    string      `json:"gateway_port_id,omitempty"`
	EnableSNAT       bool        `json:"enable_snat"`
	Routes           []HostRoute `json:"routes"` // extraroute
	Tags             []string    `json:"tags"`
	Revision         int         `json:"revision_number"`
	CreatedAt        time.Time   `json:"created_at"`
	UpdatedAt        time.Time   `json:"updated_at"`
}

// FloatingIP is an address of an external network, optionally 1:1 NATed
// to a fixed address of a port behind a router.
type FloatingIP struct {
	ID                string    `json:"id"`
	ProjectID         string    `json:"project_id"`
	Description       string    `json:"description"`
	FloatingNetworkID string    `json:"floating_network_id"`
	FloatingPortID    string    `json:"floating_port_id"` // holds the address
	Address           string    `json:"floating_ip_address"`
	PortID            string    `json:"port_id,omitempty"` // "" = not associated
	FixedIP           string    `json:"fixed_ip_address,omitempty"`
	RouterID          string    `json:"router_id,omitempty"`
	Status            string    `json:"status"`            // DOWN, ACTIVE
	HostID            string    `json:"host_id,omitempty"` // host whose agent reported Status
	Tags              []string  `json:"tags"`
	Revision          int       `json:"revision_number"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// HostNetworks is what one host reports about its external connectivity:
// physical network name → interface. A host without a mapping for a
// physical network gets no ports on it.
type HostNetworks struct {
	ID       string            `json:"id"` // member id
	Physnets map[string]string `json:"physnets"`
}

// Router returns a router by id.
func (sn *Snapshot) Router(id string) (*Router, bool) { return get[Router](sn, tblRouters, id) }

// Routers lists all routers.
func (sn *Snapshot) Routers() []*Router { return list[Router](sn, tblRouters) }

// FloatingIP returns a floating IP by id.
func (sn *Snapshot) FloatingIP(id string) (*FloatingIP, bool) {
	return get[FloatingIP](sn, tblFloatingIPs, id)
}

// FloatingIPs lists all floating IPs.
func (sn *Snapshot) FloatingIPs() []*FloatingIP { return list[FloatingIP](sn, tblFloatingIPs) }

// FloatingIPsOfPort lists the floating IPs associated with a port.
func (sn *Snapshot) FloatingIPsOfPort(portID string) []*FloatingIP {
	return listBy[FloatingIP](sn, tblFloatingIPs, "PortID", portID)
}

// FloatingIPsOfRouter lists the floating IPs routed by a router.
func (sn *Snapshot) FloatingIPsOfRouter(routerID string) []*FloatingIP {
	return listBy[FloatingIP](sn, tblFloatingIPs, "RouterID", routerID)
}

// HostNetworks returns what a host reported about its physical networks.
func (sn *Snapshot) HostNetworks(hostID string) (*HostNetworks, bool) {
	return get[HostNetworks](sn, tblHostNets, hostID)
}

// HostHasPhysnet reports whether a host maps a physical network to an
// interface (the scheduler's and the agent's test for external ports).
func (sn *Snapshot) HostHasPhysnet(hostID, physnet string) bool {
	h, ok := sn.HostNetworks(hostID)
	return ok && h.Physnets[physnet] != ""
}

// RouterInterfaces lists a router's interface ports.
func (sn *Snapshot) RouterInterfaces(routerID string) []*Port {
	var out []*Port
	for _, p := range sn.PortsOfDevice(routerID) {
		if p.DeviceOwner == OwnerRouterInterface {
			out = append(out, p)
		}
	}
	return out
}

// RouterOfSubnet returns the router with an interface on a subnet.
func (sn *Snapshot) RouterOfSubnet(subnetID string) (*Router, *Port, bool) {
	s, ok := sn.Subnet(subnetID)
	if !ok {
		return nil, nil, false
	}
	for _, p := range sn.PortsOf(s.NetworkID) {
		if p.DeviceOwner != OwnerRouterInterface || p.DeviceID == "" {
			continue
		}
		if slices.ContainsFunc(p.FixedIPs, func(f FixedIP) bool { return f.SubnetID == subnetID }) {
			if r, ok := sn.Router(p.DeviceID); ok {
				return r, p, true
			}
		}
	}
	return nil, nil, false
}

// IsProvider reports whether a network is a flat or VLAN provider network
// (no VXLAN segment).
func (n *Network) IsProvider() bool {
	return n.NetworkType == NetTypeFlat || n.NetworkType == NetTypeVLAN
}
