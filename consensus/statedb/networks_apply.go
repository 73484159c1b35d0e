package statedb

import (
	"slices"
	"strings"
	"time"
)

// Messages of network command failures. The API maps them to Neutron
// error types by their leading words, so keep those stable.
const (
	msgNetworkNotFound = "Network %s could not be found."
	msgSubnetNotFound  = "Subnet %s could not be found."
	msgPortNotFound    = "Port %s could not be found."
	msgNetworkInUse    = "Unable to complete operation on network %s. There are one or more ports still in use on the network."
	msgSubnetInUse     = "Unable to complete operation on subnet %s: One or more ports have an IP allocation from this subnet."
	msgVNIInUse        = "Unable to create the network. The VNI %d is in use."
	msgNoVNI           = "Unable to create the network. No VNI is available."
	msgIPExhausted     = "No more IP addresses available on network %s."
	msgMACInUse        = "Unable to complete operation for network %s. The mac address %s is in use."
	msgMACExhausted    = "Unable to generate a unique MAC address for port %s."
)

// PortRequest asks for a port inside another command's apply (server
// create): on NetworkID, optionally on given subnets / addresses.
type PortRequest struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	ProjectID   string        `json:"project_id"`
	NetworkID   string        `json:"network_id"`
	FixedIPs    []FixedIPWant `json:"fixed_ips,omitempty"`
	MAC         string        `json:"mac,omitempty"`
	DeviceID    string        `json:"device_id"`
	DeviceOwner string        `json:"device_owner"`
	// NoFixedIPs asks for a port without addresses (Neutron "fixed_ips":
	// []); otherwise an empty FixedIPs gets one address per IP version.
	NoFixedIPs bool `json:"no_fixed_ips,omitempty"`
	PortSecurity
}

// FixedIPWant is a requested subnet and/or address.
type FixedIPWant struct {
	SubnetID string `json:"subnet_id,omitempty"`
	IP       string `json:"ip_address,omitempty"`
}

// validName255 allows empty names, as Neutron does.
func validName255(kind, name string) error {
	if len(name) > 255 {
		return Errorf(KindInvalid, "Invalid input for name. Reason: the %s name is longer than 255 characters.", kind)
	}
	return nil
}

func validDescription(d string) error {
	if len(d) > 255 {
		return Errorf(KindInvalid, "Invalid input for description. Reason: longer than 255 characters.")
	}
	return nil
}

func validTags(tags []string) error {
	if len(tags) > 50 {
		return Errorf(KindInvalid, "Invalid input for tags. Reason: at most 50 tags are allowed.")
	}
	for _, t := range tags {
		if t == "" || len(t) > 255 || strings.Contains(t, ",") {
			return Errorf(KindInvalid, "Invalid input for tags. Reason: '%s' is not a valid tag.", t)
		}
	}
	return nil
}

func validMTU(mtu int) error {
	if mtu < 68 || mtu > 9216 {
		return Errorf(KindInvalid, "Invalid input for mtu. Reason: %d is not in range 68-9216.", mtu)
	}
	return nil
}

// ---- networks ----

func applyCreateNetwork(t *Txn, c *Command) error {
	n, err := decode[Network](c)
	if err != nil {
		return err
	}
	sn := t.read()
	if n.ID == "" {
		return Errorf(KindInvalid, "network needs an id")
	}
	if _, ok := sn.Network(n.ID); ok {
		return Errorf(KindConflict, "Network %s already exists.", n.ID)
	}
	if err := checkQuota(t, n.ProjectID, "", charge{QuotaNetworks, 1}); err != nil {
		return err
	}
	if err := validName255("network", n.Name); err != nil {
		return err
	}
	if err := validDescription(n.Description); err != nil {
		return err
	}
	if err := validTags(n.Tags); err != nil {
		return err
	}
	if n.MTU == 0 {
		n.MTU = sn.NetworkMTU()
	}
	if err := validMTU(n.MTU); err != nil {
		return err
	}
	if n.NetworkType == NetTypeVXLAN {
		n.NetworkType = ""
	}
	if n.NetworkType != "" {
		if err := checkProvider(sn, n); err != nil {
			return err
		}
	} else if n.VNI == 0 {
		vni, ok := freeVNI(sn)
		if !ok {
			return Errorf(KindConflict, msgNoVNI)
		}
		n.VNI = vni
	} else if err := checkVNI(sn, n.VNI, n.ID); err != nil {
		return err
	}
	if n.Tags == nil {
		n.Tags = []string{}
	}
	n.PortSecurityDisabled = false // only SetNetworkPortSecurity sets it
	n.Revision = 1
	n.CreatedAt, n.UpdatedAt = c.Time, c.Time
	return t.insert(tblNetworks, n)
}

// freeVNI is the lowest VNI ≥ FirstVNI that no network uses.
func freeVNI(sn *Snapshot) (uint32, bool) {
	used := map[uint32]bool{}
	for _, n := range sn.Networks() {
		used[n.VNI] = true
	}
	for v := FirstVNI; v <= MaxVNI; v++ {
		if !used[v] {
			return v, true
		}
	}
	return 0, false
}

// checkVNI validates a requested VNI for network id.
func checkVNI(sn *Snapshot, vni uint32, id string) error {
	if vni < MinRequestVNI || vni > MaxVNI {
		return Errorf(KindInvalid, "Invalid input for provider:segmentation_id. Reason: %d is not in range %d-%d.", vni, MinRequestVNI, MaxVNI)
	}
	if other, ok := sn.NetworkByVNI(vni); ok && other.ID != id {
		return Errorf(KindConflict, msgVNIInUse, vni)
	}
	return nil
}

// UpdateNetworkCmd changes a network; nil fields stay as they are.
type UpdateNetworkCmd struct {
	ID           string    `json:"id"`
	Name         *string   `json:"name,omitempty"`
	Description  *string   `json:"description,omitempty"`
	AdminStateUp *bool     `json:"admin_state_up,omitempty"`
	Shared       *bool     `json:"shared,omitempty"`
	External     *bool     `json:"router_external,omitempty"`
	MTU          *int      `json:"mtu,omitempty"`
	VNI          *uint32   `json:"vni,omitempty"`
	Tags         *[]string `json:"tags,omitempty"`
}

func applyUpdateNetwork(t *Txn, c *Command) error {
	u, err := decode[UpdateNetworkCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	old, ok := sn.Network(u.ID)
	if !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, u.ID)
	}
	n := *old
	if u.Name != nil {
		if err := validName255("network", *u.Name); err != nil {
			return err
		}
		n.Name = *u.Name
	}
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		n.Description = *u.Description
	}
	if u.AdminStateUp != nil {
		n.AdminStateUp = *u.AdminStateUp
	}
	if u.Shared != nil {
		if n.Shared && !*u.Shared {
			for _, p := range sn.PortsOf(n.ID) {
				if p.ProjectID != n.ProjectID {
					return Errorf(KindConflict, msgNetworkInUse, n.ID)
				}
			}
		}
		n.Shared = *u.Shared
	}
	if u.External != nil {
		n.External = *u.External
	}
	if u.MTU != nil {
		if err := validMTU(*u.MTU); err != nil {
			return err
		}
		n.MTU = *u.MTU
	}
	if u.VNI != nil {
		if err := checkVNI(sn, *u.VNI, n.ID); err != nil {
			return err
		}
		n.VNI = *u.VNI
	}
	if u.Tags != nil {
		if err := validTags(*u.Tags); err != nil {
			return err
		}
		n.Tags = slices.Clone(*u.Tags)
	}
	n.Revision++
	n.UpdatedAt = c.Time
	return t.insert(tblNetworks, &n)
}

// applyDeleteNetwork removes a network with its subnets and the ports no
// device uses; ports a device (instance, router) uses make it 409.
func applyDeleteNetwork(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	n, ok := sn.Network(d.ID)
	if !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, d.ID)
	}
	ports := sn.PortsOf(n.ID)
	for _, p := range ports {
		if p.DeviceID != "" {
			return Errorf(KindConflict, msgNetworkInUse, n.ID)
		}
	}
	for _, p := range ports {
		if err := t.delete(tblPorts, p); err != nil {
			return err
		}
	}
	for _, s := range sn.SubnetsOf(n.ID) {
		if err := t.delete(tblSubnets, s); err != nil {
			return err
		}
	}
	return t.delete(tblNetworks, n)
}

// touchNetwork bumps a network's revision (its subnets changed).
func touchNetwork(t *Txn, id string, now time.Time) error {
	n, ok := t.read().Network(id)
	if !ok {
		return nil
	}
	cp := *n
	cp.Revision++
	cp.UpdatedAt = now
	return t.insert(tblNetworks, &cp)
}

// ---- subnets ----

// CreateSubnetCmd creates a subnet. GatewayAuto fills GatewayIP with the
// first host address (GatewayIP "" without it means no gateway);
// PoolsAuto fills AllocationPools with every host address but the gateway.
type CreateSubnetCmd struct {
	Subnet
	GatewayAuto bool `json:"gateway_auto,omitempty"`
	PoolsAuto   bool `json:"pools_auto,omitempty"`
}

func applyCreateSubnet(t *Txn, c *Command) error {
	cmd, err := decode[CreateSubnetCmd](c)
	if err != nil {
		return err
	}
	s := cmd.Subnet
	sn := t.read()
	if s.ID == "" {
		return Errorf(KindInvalid, "subnet needs an id")
	}
	if _, ok := sn.Subnet(s.ID); ok {
		return Errorf(KindConflict, "Subnet %s already exists.", s.ID)
	}
	if err := checkQuota(t, s.ProjectID, "", charge{QuotaSubnets, 1}); err != nil {
		return err
	}
	if _, ok := sn.Network(s.NetworkID); !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, s.NetworkID)
	}
	if err := validName255("subnet", s.Name); err != nil {
		return err
	}
	if err := validDescription(s.Description); err != nil {
		return err
	}
	if err := validTags(s.Tags); err != nil {
		return err
	}
	if err := prepareSubnet(&s, cmd.GatewayAuto, cmd.PoolsAuto); err != nil {
		return err
	}
	for _, o := range sn.SubnetsOf(s.NetworkID) {
		if cidrsOverlap(o.CIDR, s.CIDR) {
			return Errorf(KindInvalid, "Invalid input for operation: Requested subnet with cidr: %s for network: %s overlaps with another subnet.", s.CIDR, s.NetworkID)
		}
	}
	s.Revision = 1
	s.CreatedAt, s.UpdatedAt = c.Time, c.Time
	if err := t.insert(tblSubnets, &s); err != nil {
		return err
	}
	return touchNetwork(t, s.NetworkID, c.Time)
}

// UpdateSubnetCmd changes a subnet; nil fields stay. GatewayIP "" removes
// the gateway. New pools must not contain the gateway; addresses already
// allocated outside them stay allocated.
type UpdateSubnetCmd struct {
	ID              string       `json:"id"`
	Name            *string      `json:"name,omitempty"`
	Description     *string      `json:"description,omitempty"`
	GatewayIP       *string      `json:"gateway_ip,omitempty"`
	AllocationPools *[]IPRange   `json:"allocation_pools,omitempty"`
	EnableDHCP      *bool        `json:"enable_dhcp,omitempty"`
	DNSNameservers  *[]string    `json:"dns_nameservers,omitempty"`
	HostRoutes      *[]HostRoute `json:"host_routes,omitempty"`
	Tags            *[]string    `json:"tags,omitempty"`
}

func applyUpdateSubnet(t *Txn, c *Command) error {
	u, err := decode[UpdateSubnetCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	old, ok := sn.Subnet(u.ID)
	if !ok {
		return Errorf(KindNotFound, msgSubnetNotFound, u.ID)
	}
	s := *old
	s.AllocationPools = slices.Clone(old.AllocationPools)
	s.DNSNameservers = slices.Clone(old.DNSNameservers)
	s.HostRoutes = slices.Clone(old.HostRoutes)
	if u.Name != nil {
		if err := validName255("subnet", *u.Name); err != nil {
			return err
		}
		s.Name = *u.Name
	}
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		s.Description = *u.Description
	}
	if u.EnableDHCP != nil {
		s.EnableDHCP = *u.EnableDHCP
	}
	if u.AllocationPools != nil {
		s.AllocationPools = slices.Clone(*u.AllocationPools)
	}
	if u.DNSNameservers != nil {
		s.DNSNameservers = slices.Clone(*u.DNSNameservers)
	}
	if u.HostRoutes != nil {
		s.HostRoutes = slices.Clone(*u.HostRoutes)
	}
	if u.Tags != nil {
		if err := validTags(*u.Tags); err != nil {
			return err
		}
		s.Tags = slices.Clone(*u.Tags)
	}
	if u.GatewayIP != nil && *u.GatewayIP != old.GatewayIP {
		s.GatewayIP = *u.GatewayIP
		if s.GatewayIP != "" {
			// The new gateway must not be a port's address (except a router's).
			used := map[string]bool{}
			for _, p := range sn.PortsOf(s.NetworkID) {
				for _, f := range p.FixedIPs {
					if f.SubnetID == s.ID && p.DeviceOwner != OwnerRouterInterface {
						used[f.IP] = true
					}
				}
			}
			if used[s.GatewayIP] {
				return Errorf(KindConflict, "IP address %s already allocated in subnet %s.", s.GatewayIP, s.ID)
			}
		}
	}
	if err := prepareSubnet(&s, false, false); err != nil {
		return err
	}
	s.Revision++
	s.UpdatedAt = c.Time
	return t.insert(tblSubnets, &s)
}

func applyDeleteSubnet(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	s, ok := sn.Subnet(d.ID)
	if !ok {
		return Errorf(KindNotFound, msgSubnetNotFound, d.ID)
	}
	for _, p := range sn.PortsOf(s.NetworkID) {
		for _, f := range p.FixedIPs {
			if f.SubnetID == s.ID {
				return Errorf(KindConflict, msgSubnetInUse, s.ID)
			}
		}
	}
	if err := t.delete(tblSubnets, s); err != nil {
		return err
	}
	return touchNetwork(t, s.NetworkID, c.Time)
}

// ---- ports ----

// CreatePortCmd is the port API's create: a PortRequest plus the
// attributes only the API sets. HostID is a member id (binding).
type CreatePortCmd struct {
	PortRequest
	AdminStateUp bool     `json:"admin_state_up"`
	Description  string   `json:"description,omitempty"`
	Tags         []string `json:"tags,omitempty"`
	HostID       string   `json:"host_id,omitempty"`
}

func applyCreatePort(t *Txn, c *Command) error {
	cmd, err := decode[CreatePortCmd](c)
	if err != nil {
		return err
	}
	if err := validTags(cmd.Tags); err != nil {
		return err
	}
	if err := validDescription(cmd.Description); err != nil {
		return err
	}
	if err := checkQuota(t, cmd.ProjectID, "", charge{QuotaPorts, 1}); err != nil {
		return err
	}
	p, err := createPort(t, c.Time, cmd.PortRequest)
	if err != nil {
		return err
	}
	cp := *p
	cp.AdminStateUp, cp.Description, cp.HostID = cmd.AdminStateUp, cmd.Description, cmd.HostID
	if cmd.Tags != nil {
		cp.Tags = slices.Clone(cmd.Tags)
	}
	return t.insert(tblPorts, &cp)
}

// createPort allocates a port (MAC, fixed IPs) inside a transaction. Used by
// the port API and by server create. The port starts DOWN and
// administratively up, with no host binding.
func createPort(t *Txn, now time.Time, req PortRequest) (*Port, error) {
	sn := t.read()
	if req.ID == "" {
		return nil, Errorf(KindInvalid, "port needs an id")
	}
	if _, ok := sn.Port(req.ID); ok {
		return nil, Errorf(KindConflict, "Port %s already exists.", req.ID)
	}
	if err := validName255("port", req.Name); err != nil {
		return nil, err
	}
	n, ok := sn.Network(req.NetworkID)
	if !ok {
		return nil, Errorf(KindNotFound, msgNetworkNotFound, req.NetworkID)
	}
	mac, err := portMAC(sn, n.ID, req.ID, req.MAC)
	if err != nil {
		return nil, err
	}
	p := &Port{
		ID: req.ID, Name: req.Name, ProjectID: req.ProjectID, NetworkID: n.ID, MAC: mac,
		DeviceID: req.DeviceID, DeviceOwner: req.DeviceOwner, AdminStateUp: true, Status: PortDown,
		Tags: []string{}, Revision: 1, CreatedAt: now, UpdatedAt: now,
	}
	if !req.NoFixedIPs {
		if p.FixedIPs, err = allocateIPs(sn, n, req.ID, req.FixedIPs, nil, req.DeviceOwner == OwnerRouterInterface); err != nil {
			return nil, err
		}
	}
	if p.FixedIPs == nil {
		p.FixedIPs = []FixedIP{}
	}
	if err := setPortSecurity(t, now, p, n, req.PortSecurity); err != nil {
		return nil, err
	}
	if err := t.insert(tblPorts, p); err != nil {
		return nil, err
	}
	return p, nil
}

// UpdatePortCmd changes a port; nil fields stay. FixedIPs replaces the
// addresses: ones the port already holds are kept, others are allocated.
// HostID is a member id ("" unbinds).
type UpdatePortCmd struct {
	ID           string         `json:"id"`
	Name         *string        `json:"name,omitempty"`
	Description  *string        `json:"description,omitempty"`
	AdminStateUp *bool          `json:"admin_state_up,omitempty"`
	DeviceID     *string        `json:"device_id,omitempty"`
	DeviceOwner  *string        `json:"device_owner,omitempty"`
	HostID       *string        `json:"host_id,omitempty"`
	MAC          *string        `json:"mac,omitempty"`
	FixedIPs     *[]FixedIPWant `json:"fixed_ips,omitempty"`
	Tags         *[]string      `json:"tags,omitempty"`
	UpdatePortSecurity
}

func applyUpdatePort(t *Txn, c *Command) error {
	u, err := decode[UpdatePortCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	old, ok := sn.Port(u.ID)
	if !ok {
		return Errorf(KindNotFound, msgPortNotFound, u.ID)
	}
	p := *old
	p.FixedIPs = slices.Clone(old.FixedIPs)
	if u.Name != nil {
		if err := validName255("port", *u.Name); err != nil {
			return err
		}
		p.Name = *u.Name
	}
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		p.Description = *u.Description
	}
	if u.AdminStateUp != nil {
		p.AdminStateUp = *u.AdminStateUp
	}
	if u.DeviceID != nil {
		p.DeviceID = *u.DeviceID
	}
	if u.DeviceOwner != nil {
		p.DeviceOwner = *u.DeviceOwner
	}
	if u.HostID != nil && *u.HostID != p.HostID {
		p.HostID = *u.HostID
		p.Status = PortDown // the new host's agent reports again
	}
	if u.MAC != nil {
		if *u.MAC == "" {
			return Errorf(KindInvalid, "Invalid input for mac_address. Reason: a MAC address is required.")
		}
		if p.MAC, err = portMAC(sn, p.NetworkID, p.ID, *u.MAC); err != nil {
			return err
		}
	}
	if u.FixedIPs != nil {
		n, ok := sn.Network(p.NetworkID)
		if !ok {
			return Errorf(KindNotFound, msgNetworkNotFound, p.NetworkID)
		}
		p.FixedIPs = []FixedIP{}
		if len(*u.FixedIPs) > 0 {
			if p.FixedIPs, err = allocateIPs(sn, n, p.ID, *u.FixedIPs, old.FixedIPs, p.DeviceOwner == OwnerRouterInterface); err != nil {
				return err
			}
		}
	}
	if u.Tags != nil {
		if err := validTags(*u.Tags); err != nil {
			return err
		}
		p.Tags = slices.Clone(*u.Tags)
	}
	if err := updatePortSecurity(t, c.Time, &p, u.UpdatePortSecurity); err != nil {
		return err
	}
	p.Revision++
	p.UpdatedAt = c.Time
	return t.insert(tblPorts, &p)
}

func applyDeletePort(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	p, ok := t.read().Port(d.ID)
	if !ok {
		return Errorf(KindNotFound, msgPortNotFound, d.ID)
	}
	if servicePort(t.read(), p) {
		return Errorf(KindConflict, "Port %s cannot be deleted directly via the port API: has device owner %s.", p.ID, p.DeviceOwner)
	}
	if err := releaseFloatingIPs(t, c.Time, p.ID); err != nil {
		return err
	}
	if err := t.delete(tblPorts, p); err != nil {
		return err
	}
	return dropOrphanSecGroups(t, p.ProjectID)
}

// applyReportPort records a port status reported by the agent of the host
// the port is bound to; reports from any other host, for ports that are
// gone, or that change nothing are ignored.
func applyReportPort(t *Txn, c *Command) error {
	r, err := decode[ReportPortCmd](c)
	if err != nil {
		return err
	}
	switch r.Status {
	case PortActive, PortDown, PortBuild, PortError:
	default:
		return Errorf(KindInvalid, "invalid port status %q", r.Status)
	}
	p, ok := t.read().Port(r.PortID)
	if !ok || p.HostID == "" || p.HostID != r.HostID || p.Status == r.Status {
		return nil
	}
	cp := *p
	cp.Status = r.Status
	cp.Revision++
	cp.UpdatedAt = c.Time
	return t.insert(tblPorts, &cp)
}

// bindPorts binds every port of a device to a host (scheduler placement);
// their status goes back to DOWN until that host's agent reports.
func bindPorts(t *Txn, now time.Time, deviceID, hostID string) error {
	for _, p := range t.read().PortsOfDevice(deviceID) {
		if p.HostID == hostID {
			continue
		}
		cp := *p
		cp.HostID, cp.Status = hostID, PortDown
		cp.Revision++
		cp.UpdatedAt = now
		if err := t.insert(tblPorts, &cp); err != nil {
			return err
		}
	}
	return nil
}

// deletePortsOfDevice removes every port of a device (server delete),
// which releases their addresses.
func deletePortsOfDevice(t *Txn, deviceID string) error {
	if deviceID == "" {
		return nil
	}
	for _, p := range t.read().PortsOfDevice(deviceID) {
		if err := releaseFloatingIPs(t, cmdTime(t), p.ID); err != nil {
			return err
		}
		if err := t.delete(tblPorts, p); err != nil {
			return err
		}
	}
	return nil
}
