package statedb

import "time"

// Networks: Neutron networks, subnets and ports, with IPAM, VNI and MAC
// allocation done deterministically inside apply. Commands 130-179; apply
// functions live in networks_apply.go.
const (
	tblNetworks = "networks"
	tblSubnets  = "subnets"
	tblPorts    = "ports"
)

var networkTables = []table{
	idTable(tblNetworks, func() any { return &Network{} }, "ProjectID", "Name"),
	idTable(tblSubnets, func() any { return &Subnet{} }, "NetworkID", "ProjectID"),
	idTable(tblPorts, func() any { return &Port{} }, "NetworkID", "DeviceID", "HostID", "ProjectID", "MAC"),
}

// VNI range the FSM allocates tenant segments from; an administrator may
// ask for any VNI in [MinRequestVNI, MaxVNI].
const (
	FirstVNI      uint32 = 1000
	MinRequestVNI uint32 = 1
	MaxVNI        uint32 = 1<<24 - 1
)

// DefaultMTU is the tenant network MTU when Settings.MTU is not set: 1500
// minus the VXLAN overhead.
const DefaultMTU = 1450

// Port statuses.
const (
	PortDown   = "DOWN"
	PortActive = "ACTIVE"
	PortBuild  = "BUILD"
	PortError  = "ERROR"
)

// Device owners the network service itself uses.
const (
	OwnerRouterInterface = "network:router_interface"
	OwnerCompute         = "compute:nova"
)

// Network is a tenant network (one VXLAN segment) or a provider network.
type Network struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	ProjectID    string `json:"project_id"`
	Description  string `json:"description"`
	AdminStateUp bool   `json:"admin_state_up"`
	Shared       bool   `json:"shared"`
	External     bool   `json:"router_external"`
	MTU          int    `json:"mtu"`
	VNI          uint32 `json:"vni"`
	// Provider networks (flat, vlan) map to an interface of each host
	// through PhysicalNetwork; they have no VNI. "" is a VXLAN segment.
	NetworkType     string    `json:"network_type,omitempty"`
	PhysicalNetwork string    `json:"physical_network,omitempty"`
	VLAN            int       `json:"vlan,omitempty"`
	Tags            []string  `json:"tags"`
	Revision        int       `json:"revision_number"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`

	// PortSecurityDisabled: the network's new ports default to port
	// security off (Neutron's network port_security_enabled false).
	PortSecurityDisabled bool `json:"port_security_disabled,omitempty"`
}

// IPRange is an allocation pool.
type IPRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// HostRoute is a static route handed out by DHCP.
type HostRoute struct {
	Destination string `json:"destination"`
	NextHop     string `json:"nexthop"`
}

// Subnet is an IP range of a network.
type Subnet struct {
	ID              string      `json:"id"`
	Name            string      `json:"name"`
	ProjectID       string      `json:"project_id"`
	NetworkID       string      `json:"network_id"`
	IPVersion       int         `json:"ip_version"`
	CIDR            string      `json:"cidr"`
	GatewayIP       string      `json:"gateway_ip"` // "" = none
	AllocationPools []IPRange   `json:"allocation_pools"`
	EnableDHCP      bool        `json:"enable_dhcp"`
	DNSNameservers  []string    `json:"dns_nameservers"`
	HostRoutes      []HostRoute `json:"host_routes"`
	IPv6AddressMode string      `json:"ipv6_address_mode,omitempty"` // "", dhcpv6-stateful, dhcpv6-stateless
	IPv6RAMode      string      `json:"ipv6_ra_mode,omitempty"`
	Description     string      `json:"description"`
	Tags            []string    `json:"tags"`
	Revision        int         `json:"revision_number"`
	CreatedAt       time.Time   `json:"created_at"`
	UpdatedAt       time.Time   `json:"updated_at"`
}

// FixedIP is an address of a port on a subnet.
type FixedIP struct {
	SubnetID string `json:"subnet_id"`
	IP       string `json:"ip_address"`
}

// Port is a virtual NIC on a network.
type Port struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	ProjectID    string    `json:"project_id"`
	NetworkID    string    `json:"network_id"`
	MAC          string    `json:"mac_address"`
	FixedIPs     []FixedIP `json:"fixed_ips"`
	DeviceID     string    `json:"device_id"`
	DeviceOwner  string    `json:"device_owner"`
	HostID       string    `json:"binding_host_id"` // member id where the port lives
	AdminStateUp bool      `json:"admin_state_up"`
	Status       string    `json:"status"` // DOWN, ACTIVE, BUILD
	// Security (secgroups.go): group ids, whether the host filters the
	// port at all, and the extra addresses it may send from.
	SecurityGroups      []string      `json:"security_groups"`
	PortSecurityEnabled bool          `json:"port_security_enabled"`
	AllowedAddressPairs []AddressPair `json:"allowed_address_pairs"`
	Description         string        `json:"description"`
	Tags                []string      `json:"tags"`
	Revision            int           `json:"revision_number"`
	CreatedAt           time.Time     `json:"created_at"`
	UpdatedAt           time.Time     `json:"updated_at"`
}

// Network returns a network by id.
func (sn *Snapshot) Network(id string) (*Network, bool) { return get[Network](sn, tblNetworks, id) }

// Networks lists all networks.
func (sn *Snapshot) Networks() []*Network { return list[Network](sn, tblNetworks) }

// Subnet returns a subnet by id.
func (sn *Snapshot) Subnet(id string) (*Subnet, bool) { return get[Subnet](sn, tblSubnets, id) }

// Subnets lists all subnets.
func (sn *Snapshot) Subnets() []*Subnet { return list[Subnet](sn, tblSubnets) }

// SubnetsOf lists a network's subnets.
func (sn *Snapshot) SubnetsOf(networkID string) []*Subnet {
	return listBy[Subnet](sn, tblSubnets, "NetworkID", networkID)
}

// Port returns a port by id.
func (sn *Snapshot) Port(id string) (*Port, bool) { return get[Port](sn, tblPorts, id) }

// Ports lists all ports.
func (sn *Snapshot) Ports() []*Port { return list[Port](sn, tblPorts) }

// PortsOf lists a network's ports.
func (sn *Snapshot) PortsOf(networkID string) []*Port {
	return listBy[Port](sn, tblPorts, "NetworkID", networkID)
}

// PortsOnHost lists the ports bound to a host.
func (sn *Snapshot) PortsOnHost(hostID string) []*Port {
	return listBy[Port](sn, tblPorts, "HostID", hostID)
}

// PortsOfDevice lists the ports of a device (instance).
func (sn *Snapshot) PortsOfDevice(deviceID string) []*Port {
	return listBy[Port](sn, tblPorts, "DeviceID", deviceID)
}

// PortsByMAC lists the ports with a MAC address (lowercase).
func (sn *Snapshot) PortsByMAC(mac string) []*Port {
	return listBy[Port](sn, tblPorts, "MAC", mac)
}

// PortsOfProject lists a project's ports.
func (sn *Snapshot) PortsOfProject(projectID string) []*Port {
	return listBy[Port](sn, tblPorts, "ProjectID", projectID)
}

// NetworkByVNI finds the network with a VNI.
func (sn *Snapshot) NetworkByVNI(vni uint32) (*Network, bool) {
	for _, n := range sn.Networks() {
		if n.VNI == vni {
			return n, true
		}
	}
	return nil, false
}

// NetworkMTU is the MTU of new networks: Settings.MTU, else DefaultMTU.
func (sn *Snapshot) NetworkMTU() int {
	if cfg, ok := sn.Cluster(); ok && cfg.Settings.MTU > 0 {
		return cfg.Settings.MTU
	}
	return DefaultMTU
}
