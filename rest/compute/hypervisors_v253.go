package compute

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// From 2.53 a hypervisor is named by a UUID (its service's by another),
// list and detail filter with ?hypervisor_hostname_pattern= and embed the
// servers with ?with_servers=true, show takes ?with_servers=true too, and
// the /search and /servers routes are gone (404), as in Nova.

// hypervisorUUID is a stable UUID for a host's hypervisor.
func hypervisorUUID(hostID string) string {
	sum := sha256.Sum256([]byte("hypervisor\x00" + hostID))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// versionedHypervisor gives a hypervisor view its 2.53 ids, and its
// servers when asked for.
func (s *service) versionedHypervisor(c *rest.Ctx, sn *statedb.Snapshot, h hostUsage, out map[string]any) (map[string]any, error) {
	if !atLeast(c, 2, 53) {
		return out, nil
	}
	out["id"] = hypervisorUUID(h.ID)
	if svc, ok := out["service"].(map[string]any); ok {
		svc["id"] = serviceUUID(h.ID)
	}
	if v := c.Query("with_servers"); v != "" {
		with, ok := queryBool(v)
		if !ok {
			return nil, rest.BadRequest("Invalid input for query parameters with_servers. Value: %s. Expected a boolean", v)
		}
		if with {
			servers := []map[string]string{}
			for _, i := range sn.InstancesOnHost(h.ID) {
				servers = append(servers, map[string]string{"uuid": i.ID, "name": instanceName(i.ID)})
			}
			out["servers"] = servers
		}
	}
	return out, nil
}

// filterHypervisors applies 2.53's ?hypervisor_hostname_pattern=: no
// match is a 404, as Nova.
func filterHypervisors(c *rest.Ctx, hs []hostUsage) ([]hostUsage, error) {
	pattern := c.Query("hypervisor_hostname_pattern")
	if !atLeast(c, 2, 53) || pattern == "" {
		return hs, nil
	}
	var out []hostUsage
	for _, h := range hs {
		if strings.Contains(h.Name, pattern) {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, rest.NotFoundf("No hypervisor matching '%s' could be found.", pattern)
	}
	return out, nil
}

// listHypervisorViews renders list or detail.
func (s *service) listHypervisorViews(c *rest.Ctx, view func(hostUsage) map[string]any) (any, error) {
	if err := s.requireAdmin(c, "Hypervisors"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	hs, err := filterHypervisors(c, s.hostUsages(sn))
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(hs))
	for _, h := range hs {
		v, err := s.versionedHypervisor(c, sn, h, view(h))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return map[string]any{"hypervisors": out}, nil
}

// hypervisorMatches tells whether id names h: its member id or host name,
// or from 2.53 its UUID.
func hypervisorMatches(c *rest.Ctx, h hostUsage, id string) bool {
	if atLeast(c, 2, 53) {
		return id == hypervisorUUID(h.ID)
	}
	return h.ID == id || h.Name == id
}
