package compute

import (
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// parseRequestedHost reads the host an admin asks a new server to go on:
// "host" and "hypervisor_hostname" from microversion 2.74, or the older
// availability_zone form "nova:host[:node]". Both name a member (by name
// or id; the hypervisor is the member). The host pins only the first
// placement, which still checks capacity and the other constraints.
func (s *service) parseRequestedHost(c *rest.Ctx, sn *statedb.Snapshot, req *serverCreateReq, p *serverPlan) error {
	var names []string
	for _, f := range []struct {
		field string
		v     *string
	}{{"host", req.Host}, {"hypervisor_hostname", req.HypervisorHostname}} {
		if f.v == nil {
			continue
		}
		if !atLeast(c, 2, 74) {
			return rest.BadRequest("Invalid input for field/attribute server. Additional properties are not allowed ('%s' was unexpected)", f.field)
		}
		if *f.v == "" || len(*f.v) > 255 {
			return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. It must be 1 to 255 characters long.", f.field, *f.v)
		}
		names = append(names, *f.v)
	}
	if az := req.AvailabilityZone; az != nil && strings.Contains(*az, ":") {
		parts := strings.SplitN(*az, ":", 3)
		if parts[0] != "" && parts[0] != "nova" {
			return rest.BadRequest("The requested availability zone is not available")
		}
		for _, n := range parts[1:] {
			if n != "" {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	if !s.isAdmin(c) {
		return rest.Forbiddenf("Policy doesn't allow compute:servers:create:requested_destination to be performed.")
	}
	for _, n := range names {
		id := memberByName(sn, n)
		if id == "" {
			return rest.BadRequest("Compute host %s could not be found.", n)
		}
		if p.RequestedHost != "" && p.RequestedHost != id {
			return rest.BadRequest("The requested host %s and hypervisor %s are not the same compute node.", names[0], n)
		}
		p.RequestedHost = id
	}
	return nil
}

// memberByName returns the id of the member named (or with id) name, or "".
func memberByName(sn *statedb.Snapshot, name string) string {
	if m, ok := sn.MemberByName(name); ok {
		return m.ID
	}
	if m, ok := sn.Member(name); ok {
		return m.ID
	}
	return ""
}
