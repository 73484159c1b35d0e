package compute

import (
	"encoding/json"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// resize serves the resize action: {"resize": {"flavorRef": "2" | 2 |
// a link, "OS-DCF:diskConfig": …}} → 202. The resize is cold and on the
// server's own host (statedb/day2_resize.go says why); its capacity is
// checked against the host's totals as gossip reports them.
func (s *service) resize(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) (any, error) {
	var req struct {
		FlavorRef  json.RawMessage `json:"flavorRef"`
		DiskConfig *string         `json:"OS-DCF:diskConfig"`
	}
	if err := decodeStrict("resize", raw, &req); err != nil {
		return nil, err
	}
	if len(req.FlavorRef) == 0 || string(req.FlavorRef) == "null" {
		return nil, rest.BadRequest("Invalid input for field/attribute resize. 'flavorRef' is a required property")
	}
	if req.DiskConfig != nil && *req.DiskConfig != "AUTO" && *req.DiskConfig != "MANUAL" {
		return nil, rest.BadRequest("Invalid input for field/attribute OS-DCF:diskConfig. Value: %s. %q is not one of ['AUTO', 'MANUAL']",
			*req.DiskConfig, *req.DiskConfig)
	}
	var p serverPlan
	if err := s.parseFlavor(c, s.b.State(), req.FlavorRef, &p); err != nil {
		return nil, err
	}
	cmd := statedb.ResizeCmd{ID: inst.ID, Action: statedb.ActionResize, FlavorID: p.Flavor.ID, By: s.actionBy(c)}
	found := false
	for _, h := range s.b.Hosts() {
		if h.ID == inst.Host {
			found = h.Up
			cmd.HostCap = statedb.HostCap{VCPUs: h.VCPUs, RAMMB: h.RAMMB, DiskGB: h.DiskGB}
		}
	}
	if inst.Host != "" && !found {
		return nil, rest.Conflictf("Compute host of instance %s is not available.", inst.ID)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdResizeServer, cmd); err != nil {
		return nil, err
	}
	return accepted(), nil
}

// resizeDecision serves confirmResize (→ 204, as Nova) and revertResize
// (→ 202); both take no arguments.
func (s *service) resizeDecision(c *rest.Ctx, inst *statedb.Instance, action string, raw json.RawMessage) (any, error) {
	if string(raw) != "null" && string(raw) != "{}" {
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil || len(m) > 0 {
			return nil, rest.BadRequest("Invalid input for field/attribute %s. Value: %s. It takes no arguments", action, raw)
		}
	}
	cmd := statedb.ResizeCmd{ID: inst.ID, Action: action, By: s.actionBy(c)}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdResizeServer, cmd); err != nil {
		return nil, err
	}
	if action == statedb.ActionConfirmResize {
		return noContent(), nil
	}
	return accepted(), nil
}
