package compute

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// From 2.53 a compute service is named by a UUID and updated with
// PUT /os-services/{service_id}; 2.11 adds forced_down.

// serviceUUID is a stable UUID for a host's nova-compute service.
func serviceUUID(hostID string) string {
	sum := sha256.Sum256([]byte("nova-compute\x00" + hostID))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// versionedService adds the service fields of later microversions.
func versionedService(c *rest.Ctx, h Host, out map[string]any) map[string]any {
	if atLeast(c, 2, 11) {
		out["forced_down"] = false
	}
	if atLeast(c, 2, 53) {
		out["id"] = serviceUUID(h.ID)
	}
	return out
}

// updateService serves PUT /os-services/{service_id} (2.53):
// {"status": "enabled"|"disabled", "disabled_reason"?, "forced_down"?}.
func (s *service) updateService(c *rest.Ctx) (any, error) {
	if !atLeast(c, 2, 53) {
		return nil, rest.NotFoundf("The resource could not be found.")
	}
	if err := s.requireAdmin(c, "Service"); err != nil {
		return nil, err
	}
	id := c.Var("service_id")
	var host *Host
	for _, h := range s.b.Hosts() {
		if serviceUUID(h.ID) == id {
			h := h
			host = &h
		}
	}
	if !isUUID(id) {
		return nil, rest.BadRequest("Invalid uuid %s", id)
	}
	if host == nil {
		return nil, rest.NotFoundf("Service %s could not be found.", id)
	}
	var raw json.RawMessage
	if err := c.Decode(&raw); err != nil {
		return nil, err
	}
	var req struct {
		Status         *string `json:"status"`
		DisabledReason *string `json:"disabled_reason"`
		ForcedDown     *bool   `json:"forced_down"`
	}
	if err := decodeStrict("service", raw, &req); err != nil {
		return nil, err
	}
	if req.Status == nil && req.ForcedDown == nil {
		return nil, rest.BadRequest("No updates were requested. Fields 'status' or 'forced_down' should be specified.")
	}
	if req.ForcedDown != nil && *req.ForcedDown {
		return nil, rest.BadRequest("Forcing a service down is not supported: liveness comes from gossip.")
	}
	disable, reason := host.Disabled, host.DisabledReason
	if req.Status != nil {
		switch *req.Status {
		case "enabled":
			if req.DisabledReason != nil {
				return nil, rest.BadRequest("Specifying 'disabled_reason' with status 'enabled' is invalid.")
			}
			disable, reason = false, ""
		case "disabled":
			disable, reason = true, ""
			if req.DisabledReason != nil {
				if len(*req.DisabledReason) > maxNameLength {
					return nil, rest.BadRequest("Invalid input for field/attribute disabled_reason. The reason is too long.")
				}
				reason = *req.DisabledReason
			}
		default:
			return nil, rest.BadRequest("Invalid input for field/attribute status. Value: %s. %q is not one of ['enabled', 'disabled']", *req.Status, *req.Status)
		}
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetHostEnabled,
			statedb.SetHostEnabledCmd{ID: host.ID, Disabled: disable, Reason: reason}); err != nil {
			return nil, err
		}
	}
	h := *host
	h.Disabled, h.DisabledReason = disable, reason
	return map[string]any{"service": versionedService(c, h, serviceView(h, s.b.Now().UTC().Format(timeUSG)))}, nil
}
