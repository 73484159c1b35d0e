package network

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// portView renders a port; binding details other than the vnic type only
// for admins.
func portView(sn *statedb.Snapshot, p *statedb.Port, admin bool) view {
	ips := []map[string]string{}
	for _, f := range p.FixedIPs {
		ips = append(ips, map[string]string{"subnet_id": f.SubnetID, "ip_address": f.IP})
	}
	v := view{
		"id": p.ID, "name": p.Name, "description": p.Description, "network_id": p.NetworkID,
		"tenant_id": p.ProjectID, "project_id": p.ProjectID, "mac_address": p.MAC,
		"admin_state_up": p.AdminStateUp, "status": p.Status, "device_id": p.DeviceID, "device_owner": p.DeviceOwner,
		"fixed_ips": ips, "extra_dhcp_opts": []any{}, "binding:vnic_type": "normal", "dns_name": "", "dns_assignment": []any{},
		"tags": tagsOf(p.Tags), "created_at": fmtTime(p.CreatedAt), "updated_at": fmtTime(p.UpdatedAt),
		"revision_number": p.Revision,
	}
	portSecurityView(v, p)
	if admin {
		vif := "unbound"
		if p.HostID != "" {
			vif = "bridge"
		}
		v["binding:host_id"] = hostName(sn, p.HostID)
		v["binding:vif_type"] = vif
		v["binding:vif_details"] = map[string]any{}
		v["binding:profile"] = map[string]any{}
	}
	return v
}

// portInput is the body of port create and update. fixed_ips: absent or
// null = one address per IP version; [] = none.
type portInput struct {
	Name         *string                `json:"name"`
	Description  *string                `json:"description"`
	NetworkID    *string                `json:"network_id"`
	ProjectID    *string                `json:"project_id"`
	TenantID     *string                `json:"tenant_id"`
	AdminStateUp *bool                  `json:"admin_state_up"`
	MAC          *string                `json:"mac_address"`
	FixedIPs     *[]statedb.FixedIPWant `json:"fixed_ips"`
	DeviceID     *string                `json:"device_id"`
	DeviceOwner  *string                `json:"device_owner"`
	HostID       *string                `json:"binding:host_id"`
	VNICType     *string                `json:"binding:vnic_type"`
	Tags         *[]string              `json:"tags"`
	portSecurityInput
}

func (in *portInput) check() error {
	if in.VNICType != nil && *in.VNICType != "normal" {
		return badRequest("Invalid input for binding:vnic_type. Reason: only 'normal' is supported.")
	}
	if in.FixedIPs != nil && len(*in.FixedIPs) > 32 {
		return badRequest("Invalid input for fixed_ips. Reason: at most 32 addresses per port.")
	}
	return nil
}

// asksForAddress reports whether fixed_ips names explicit addresses,
// which only the network's owner or an admin may do.
func (in *portInput) asksForAddress() bool {
	if in.FixedIPs == nil {
		return false
	}
	for _, f := range *in.FixedIPs {
		if f.IP != "" {
			return true
		}
	}
	return false
}

// ownerOnly names the first attribute the body sets that only the
// network's owner or an admin may set, as in Neutron (each is
// admin_or_network_owner there): a MAC, explicit addresses, the device id
// or owner, so a tenant on a shared network cannot pose as another
// project's device, and port security or allowed address pairs, which
// would let the port send from any source. Each is compared with the port
// being updated, if any. "" means none.
func (in *portInput) ownerOnly(p *statedb.Port) string {
	changes := func(v *string, cur string) bool { return v != nil && *v != cur }
	var mac, dev, owner string
	secure := true
	var pairs []statedb.AddressPair
	if p != nil {
		mac, dev, owner, secure, pairs = p.MAC, p.DeviceID, p.DeviceOwner, p.PortSecurityEnabled, p.AllowedAddressPairs
	}
	switch {
	case in.asksForAddress():
		return "fixed_ips:ip_address"
	case changes(in.MAC, mac):
		return "mac_address"
	case changes(in.DeviceID, dev):
		return "device_id"
	case changes(in.DeviceOwner, owner):
		return "device_owner"
	case in.PortSecurityEnabled != nil && *in.PortSecurityEnabled != secure && !*in.PortSecurityEnabled:
		return "port_security_enabled"
	case in.AllowedAddressPairs != nil && addsPairs(mac, *in.AllowedAddressPairs, pairs):
		return "allowed_address_pairs"
	}
	return ""
}

// addsPairs reports whether the requested pairs, in the form the port
// (MAC mac) stores them, name one that cur lacks: keeping or dropping
// pairs narrows what the port may send, adding one widens it. Pairs that
// do not parse count as added.
func addsPairs(mac string, req, cur []statedb.AddressPair) bool {
	norm, err := statedb.NormalizeAddressPairs(mac, req)
	if err != nil {
		return true
	}
	for _, ap := range norm {
		if !slices.Contains(cur, ap) {
			return true
		}
	}
	return false
}

func (s *service) readPort(c *rest.Ctx, sn *statedb.Snapshot, id string) (*statedb.Port, error) {
	p, ok := sn.Port(id)
	if !ok {
		return nil, notFound("Port", id)
	}
	if err := s.check(c, rest.Read, p.ProjectID, false, "Port", id); err != nil {
		return nil, err
	}
	return p, nil
}

// listPorts serves GET /v2.0/ports: the caller's ports (all for admins),
// with the fixed_ips=ip_address=…/subnet_id=… filters besides the plain
// ones.
func (s *service) listPorts(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Port"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	admin := s.isAdmin(c)
	var rows []view
	for _, p := range sn.Ports() {
		if s.visible(c, p.ProjectID, false) {
			rows = append(rows, portView(sn, p, admin))
		}
	}
	return list(c, sn, "ports", rows, map[string]customFilter{"fixed_ips": fixedIPFilter})
}

// fixedIPFilter matches fixed_ips=<key>=<value> filters: values of one key
// are alternatives, different keys must all match.
func fixedIPFilter(row view, vals []string) (bool, error) {
	want := map[string][]string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		switch {
		case !ok:
			return false, badRequest("Invalid input for fixed_ips. Reason: '%s' is not key=value.", v)
		case k == "ip_address":
			if a, err := netip.ParseAddr(val); err == nil {
				val = a.String()
			}
		case k != "subnet_id" && k != "ip_address_substr":
			return false, badRequest("Invalid input for fixed_ips. Reason: unknown key '%s'.", k)
		}
		want[k] = append(want[k], val)
	}
	ips, _ := row["fixed_ips"].([]map[string]string)
	for k, vs := range want {
		hit := false
		for _, f := range ips {
			for _, v := range vs {
				switch k {
				case "ip_address_substr":
					hit = hit || strings.Contains(f["ip_address"], v)
				default:
					hit = hit || f[k] == v
				}
			}
		}
		if !hit {
			return false, nil
		}
	}
	return true, nil
}

func (s *service) getPort(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	p, err := s.readPort(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"port": portView(sn, p, s.isAdmin(c))}, nil
}

// createPort serves POST /v2.0/ports: 201, DOWN until the host agent of
// its binding reports it ACTIVE. The FSM picks MAC and addresses.
func (s *service) createPort(c *rest.Ctx) (any, error) {
	var in portInput
	if err := decodeBody(c, "port", portSpec, &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	if in.NetworkID == nil || *in.NetworkID == "" {
		return nil, badRequest("Invalid input for operation: network_id is required.")
	}
	sn := s.b.State()
	n, err := s.readNetwork(c, sn, *in.NetworkID)
	if err != nil {
		return nil, err
	}
	// Ports on a foreign network: only a shared one (or an admin).
	if err := s.check(c, rest.Read, n.ProjectID, n.Shared, "Network", n.ID); err != nil {
		return nil, err
	}
	project, err := s.ownerProject(c, in.ProjectID, in.TenantID, "Port")
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, project, false, "Port", ""); err != nil {
		return nil, forbidden("Port")
	}
	if attr := in.ownerOnly(nil); attr != "" {
		if err := s.check(c, rest.Write, n.ProjectID, false, "Network", n.ID); err != nil {
			return nil, policyDenied("create_port", attr)
		}
	}
	cmd := statedb.CreatePortCmd{
		PortRequest: statedb.PortRequest{ID: s.b.NewID(), Name: strOr(in.Name, ""), ProjectID: project, NetworkID: n.ID,
			MAC: strOr(in.MAC, ""), DeviceID: strOr(in.DeviceID, ""), DeviceOwner: strOr(in.DeviceOwner, "")},
		AdminStateUp: boolOr(in.AdminStateUp, true), Description: strOr(in.Description, ""), Tags: []string{},
	}
	cmd.PortSecurity = in.portSecurityInput.create()
	if in.FixedIPs != nil {
		cmd.FixedIPs = *in.FixedIPs
		cmd.NoFixedIPs = len(*in.FixedIPs) == 0
	}
	if in.Tags != nil {
		cmd.Tags = *in.Tags
	}
	if in.HostID != nil && *in.HostID != "" {
		if err := s.check(c, rest.Admin, project, false, "Port", ""); err != nil {
			return nil, err
		}
		cmd.HostID = hostID(sn, *in.HostID)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreatePort, cmd); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.Port(cmd.ID)
	if !ok {
		return nil, notFound("Port", cmd.ID)
	}
	return created(map[string]any{"port": portView(sn, got, s.isAdmin(c))}), nil
}

// updatePort serves PUT /v2.0/ports/{id}: 200. MAC and binding changes
// are for admins.
func (s *service) updatePort(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	p, err := s.readPort(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, p.ProjectID, false, "Port", p.ID); err != nil {
		return nil, err
	}
	var in portInput
	if err := decodeBody(c, "port", portSpec, &in); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	switch {
	case in.NetworkID != nil && *in.NetworkID != p.NetworkID,
		in.ProjectID != nil && *in.ProjectID != p.ProjectID,
		in.TenantID != nil && *in.TenantID != p.ProjectID:
		return nil, badRequest("Invalid input for operation: network_id and project of a port cannot be changed.")
	}
	if (in.MAC != nil && *in.MAC != p.MAC) || (in.HostID != nil && hostID(sn, *in.HostID) != p.HostID) {
		if err := s.check(c, rest.Admin, p.ProjectID, false, "Port", p.ID); err != nil {
			return nil, err
		}
	}
	if attr := in.ownerOnly(p); attr != "" {
		n, ok := sn.Network(p.NetworkID)
		if !ok || s.check(c, rest.Write, n.ProjectID, false, "Network", n.ID) != nil {
			return nil, policyDenied("update_port", attr)
		}
	}
	// As in Neutron: a bound port's MAC is the one its host plumbed (a
	// provider port's macvlan carries it); unbind it first. Checked here,
	// not in the state machine, so older log entries replay as they did.
	if in.MAC != nil && !strings.EqualFold(*in.MAC, p.MAC) && p.HostID != "" {
		return nil, conflict("PortBound", "Unable to complete operation on port %s, port is already bound, port type: bridge, old_mac %s, new_mac %s.",
			p.ID, p.MAC, strings.ToLower(*in.MAC))
	}
	u := statedb.UpdatePortCmd{ID: p.ID, Name: in.Name, Description: in.Description, AdminStateUp: in.AdminStateUp,
		DeviceID: in.DeviceID, DeviceOwner: in.DeviceOwner, FixedIPs: in.FixedIPs, Tags: in.Tags,
		UpdatePortSecurity: in.portSecurityInput.update()}
	if in.MAC != nil && *in.MAC != p.MAC {
		u.MAC = in.MAC
	}
	if in.HostID != nil {
		h := hostID(sn, *in.HostID)
		u.HostID = &h
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdatePort, u); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.Port(p.ID)
	if !ok {
		return nil, notFound("Port", p.ID)
	}
	return map[string]any{"port": portView(sn, got, s.isAdmin(c))}, nil
}

// deletePort serves DELETE /v2.0/ports/{id}: 204; its addresses are free
// again at once.
func (s *service) deletePort(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	p, err := s.readPort(c, sn, c.Var("id"))
	if err != nil {
		return nil, err
	}
	if err := s.check(c, rest.Write, p.ProjectID, false, "Port", p.ID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeletePort, statedb.DeleteCmd{ID: p.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
