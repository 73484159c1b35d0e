package statedb

import (
	"net/netip"
	"slices"
	"time"
)

const (
	msgFIPNotFound     = "Floating IP %s could not be found."
	msgFIPNoRoute      = "External network %s is not reachable from subnet %s.  Therefore, cannot associate Port %s with a Floating IP."
	msgFIPAlreadyAssoc = "Cannot associate floating IP %s (%s) with port %s using fixed IP %s, as that fixed IP already has a floating IP on external network %s."
)

// CreateFloatingIPCmd allocates a floating IP (Address "" = the next free
// one of the external subnets' pools) and optionally associates it.
// FloatingPortID is the id of the port that will hold the address.
type CreateFloatingIPCmd struct {
	FloatingIP
}

// UpdateFloatingIPCmd changes a floating IP; nil fields stay. PortID ""
// disassociates.
type UpdateFloatingIPCmd struct {
	ID          string    `json:"id"`
	PortID      *string   `json:"port_id,omitempty"`
	FixedIP     *string   `json:"fixed_ip_address,omitempty"`
	Description *string   `json:"description,omitempty"`
	Tags        *[]string `json:"tags,omitempty"`
}

// ReportFloatingIPCmd is the agent of the host running a floating IP's
// port reporting that the NAT is in place (ACTIVE), or the host that
// served it reporting it withdrawn (DOWN).
type ReportFloatingIPCmd struct {
	FloatingIPID string `json:"floatingip_id"`
	PortID       string `json:"port_id"`
	HostID       string `json:"host_id"`
	Status       string `json:"status"`
}

func applyCreateFloatingIP(t *Txn, c *Command) error {
	cmd, err := decode[CreateFloatingIPCmd](c)
	if err != nil {
		return err
	}
	f := cmd.FloatingIP
	sn := t.read()
	if f.ID == "" || f.FloatingPortID == "" {
		return Errorf(KindInvalid, "floating ip needs an id and a port id")
	}
	if _, ok := sn.FloatingIP(f.ID); ok {
		return Errorf(KindConflict, "Floating IP %s already exists.", f.ID)
	}
	if err := validDescription(f.Description); err != nil {
		return err
	}
	if err := validTags(f.Tags); err != nil {
		return err
	}
	n, ok := sn.Network(f.FloatingNetworkID)
	if !ok {
		return Errorf(KindNotFound, msgNetworkNotFound, f.FloatingNetworkID)
	}
	if err := checkQuota(t, f.ProjectID, "", charge{QuotaFloatingIPs, 1}); err != nil {
		return err
	}
	if !n.External {
		return Errorf(KindInvalid, "Bad floatingip request: Network %s is not a valid external network.", n.ID)
	}
	var want []FixedIPWant
	if f.Address != "" {
		a, err := netip.ParseAddr(f.Address)
		if err != nil || !a.Is4() {
			return Errorf(KindInvalid, "Invalid input for floating_ip_address. Reason: '%s' is not a valid IPv4 address.", f.Address)
		}
		if !inPools(sn.SubnetsOf(n.ID), a) {
			return Errorf(KindInvalid, "Invalid input for floating_ip_address. Reason: %s is not in an allocation pool of network %s; the addresses outside the pools belong to the hosts and the gateway.", a, n.ID)
		}
		want = []FixedIPWant{{IP: a.String()}}
	}
	p, err := createPort(t, c.Time, PortRequest{ID: f.FloatingPortID, NetworkID: n.ID, FixedIPs: want,
		DeviceID: f.ID, DeviceOwner: OwnerFloatingIP})
	if err != nil {
		return err
	}
	addr := ""
	for _, fx := range p.FixedIPs {
		if a, err := netip.ParseAddr(fx.IP); err == nil && a.Is4() {
			addr = fx.IP
			break
		}
	}
	if addr == "" {
		return Errorf(KindConflict, msgIPExhausted, n.ID)
	}
	cp := *p
	cp.FixedIPs = []FixedIP{{SubnetID: subnetOfIP(p.FixedIPs, addr), IP: addr}}
	cp.Status = PortActive
	if err := t.insert(tblPorts, &cp); err != nil {
		return err
	}
	f.Address = addr
	f.Status, f.HostID, f.RouterID = StatusDown, "", ""
	if f.Tags == nil {
		f.Tags = []string{}
	}
	f.Revision = 1
	f.CreatedAt, f.UpdatedAt = c.Time, c.Time
	if f.PortID != "" {
		if err := associate(sn, &f, f.PortID, f.FixedIP); err != nil {
			return err
		}
	} else {
		f.FixedIP = ""
	}
	return t.insert(tblFloatingIPs, &f)
}

func subnetOfIP(ips []FixedIP, addr string) string {
	for _, f := range ips {
		if f.IP == addr {
			return f.SubnetID
		}
	}
	return ""
}

// inPools reports whether an address lies in an allocation pool of one of
// the subnets.
func inPools(subnets []*Subnet, a netip.Addr) bool {
	for _, s := range subnets {
		for _, r := range poolRanges(s) {
			if r.contains(a) {
				return true
			}
		}
	}
	return false
}

// associate points f at a fixed address of a port: the port's subnet must
// have a router whose gateway is f's network, and no other floating IP on
// that network may already map the same fixed address.
func associate(sn *Snapshot, f *FloatingIP, portID, fixed string) error {
	p, ok := sn.Port(portID)
	if !ok {
		return Errorf(KindNotFound, msgPortNotFound, portID)
	}
	var chosen *FixedIP
	for i, fx := range p.FixedIPs {
		a, err := netip.ParseAddr(fx.IP)
		if err != nil || !a.Is4() {
			continue
		}
		if fixed == "" || fixed == fx.IP {
			chosen = &p.FixedIPs[i]
			break
		}
	}
	if chosen == nil {
		if fixed != "" {
			return Errorf(KindInvalid, "Bad floatingip request: Port %s does not have fixed ip %s.", p.ID, fixed)
		}
		return Errorf(KindInvalid, "Bad floatingip request: Port %s does not have any IPv4 fixed address.", p.ID)
	}
	if p.DeviceOwner == OwnerRouterInterface || p.DeviceOwner == OwnerRouterGateway || p.DeviceOwner == OwnerFloatingIP {
		return Errorf(KindInvalid, "Bad floatingip request: Port %s has owner %s; a floating IP needs a port of a server.", p.ID, p.DeviceOwner)
	}
	r, _, ok := sn.RouterOfSubnet(chosen.SubnetID)
	if !ok || r.GatewayNetworkID != f.FloatingNetworkID {
		return Errorf(KindNotFound, msgFIPNoRoute, f.FloatingNetworkID, chosen.SubnetID, p.ID)
	}
	for _, o := range sn.FloatingIPsOfPort(p.ID) {
		if o.ID != f.ID && o.FixedIP == chosen.IP && o.FloatingNetworkID == f.FloatingNetworkID {
			return Errorf(KindConflict, msgFIPAlreadyAssoc, f.Address, f.ID, p.ID, chosen.IP, f.FloatingNetworkID)
		}
	}
	if f.PortID != p.ID || f.FixedIP != chosen.IP {
		f.Status, f.HostID = StatusDown, ""
	}
	f.PortID, f.FixedIP, f.RouterID = p.ID, chosen.IP, r.ID
	return nil
}

func disassociate(f *FloatingIP) {
	f.PortID, f.FixedIP, f.RouterID, f.Status, f.HostID = "", "", "", StatusDown, ""
}

func applyUpdateFloatingIP(t *Txn, c *Command) error {
	u, err := decode[UpdateFloatingIPCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	old, ok := sn.FloatingIP(u.ID)
	if !ok {
		return Errorf(KindNotFound, msgFIPNotFound, u.ID)
	}
	f := *old
	if u.Description != nil {
		if err := validDescription(*u.Description); err != nil {
			return err
		}
		f.Description = *u.Description
	}
	if u.Tags != nil {
		if err := validTags(*u.Tags); err != nil {
			return err
		}
		f.Tags = slices.Clone(*u.Tags)
	}
	switch {
	case u.PortID != nil && *u.PortID == "":
		disassociate(&f)
	case u.PortID != nil:
		fixed := ""
		if u.FixedIP != nil {
			fixed = *u.FixedIP
		}
		if err := associate(sn, &f, *u.PortID, fixed); err != nil {
			return err
		}
	case u.FixedIP != nil && f.PortID != "":
		if err := associate(sn, &f, f.PortID, *u.FixedIP); err != nil {
			return err
		}
	}
	f.Revision++
	f.UpdatedAt = c.Time
	return t.insert(tblFloatingIPs, &f)
}

func applyDeleteFloatingIP(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	f, ok := sn.FloatingIP(d.ID)
	if !ok {
		return Errorf(KindNotFound, msgFIPNotFound, d.ID)
	}
	if p, ok := sn.Port(f.FloatingPortID); ok {
		if err := t.delete(tblPorts, p); err != nil {
			return err
		}
	}
	return t.delete(tblFloatingIPs, f)
}

// applyReportFloatingIP records a floating IP's data-plane status from the
// agent of the host its port is bound to, or a withdrawal (DOWN) from the
// host that served it last; stale reports (another port or host) and
// no-ops are ignored.
func applyReportFloatingIP(t *Txn, c *Command) error {
	r, err := decode[ReportFloatingIPCmd](c)
	if err != nil {
		return err
	}
	if r.Status != StatusActive && r.Status != StatusDown {
		return Errorf(KindInvalid, "invalid floating ip status %q", r.Status)
	}
	sn := t.read()
	f, ok := sn.FloatingIP(r.FloatingIPID)
	if ok && r.Status == StatusDown && f.HostID != "" && f.HostID == r.HostID {
		// The host that served it withdrew it (its port moved away).
		cp := *f
		cp.Status, cp.HostID = StatusDown, ""
		cp.Revision++
		cp.UpdatedAt = c.Time
		return t.insert(tblFloatingIPs, &cp)
	}
	if !ok || r.Status != StatusActive || f.PortID == "" || f.PortID != r.PortID {
		return nil
	}
	p, ok := sn.Port(f.PortID)
	if !ok || p.HostID != r.HostID || (f.Status == r.Status && f.HostID == r.HostID) {
		return nil
	}
	cp := *f
	cp.Status, cp.HostID = r.Status, r.HostID
	cp.Revision++
	cp.UpdatedAt = c.Time
	return t.insert(tblFloatingIPs, &cp)
}

// releaseFloatingIPs disassociates the floating IPs of a port being
// deleted, as Neutron does.
func releaseFloatingIPs(t *Txn, now time.Time, portID string) error {
	for _, f := range t.read().FloatingIPsOfPort(portID) {
		cp := *f
		disassociate(&cp)
		cp.Revision++
		cp.UpdatedAt = now
		if err := t.insert(tblFloatingIPs, &cp); err != nil {
			return err
		}
	}
	return nil
}

// servicePort reports whether a port belongs to a router or floating IP
// that still exists (such ports are deleted through their owner only).
func servicePort(sn *Snapshot, p *Port) bool {
	switch p.DeviceOwner {
	case OwnerRouterInterface, OwnerRouterGateway:
		_, ok := sn.Router(p.DeviceID)
		return ok
	case OwnerFloatingIP:
		_, ok := sn.FloatingIP(p.DeviceID)
		return ok
	}
	return false
}

// cmdTime is the time of the command a transaction applies (zero without
// one).
func cmdTime(t *Txn) time.Time {
	if t.Cmd == nil {
		return time.Time{}
	}
	return t.Cmd.Time
}
