package compute

import (
	"encoding/json"
	"net/http"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// rescue serves the rescue action: {"rescue": null} or {"rescue":
// {"adminPass": …, "rescue_image_ref": …}} → 200. The server boots from
// the rescue image (default its own) with its root disk attached second.
// peerstack injects no password into the rescue guest, so adminPass is
// only echoed back when given.
func (s *service) rescue(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) (any, error) {
	var req struct {
		AdminPass *string `json:"adminPass"`
		ImageRef  *string `json:"rescue_image_ref"`
	}
	if string(raw) != "null" {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil || m == nil {
			return nil, rest.BadRequest("Invalid input for field/attribute rescue. Value: %s. %s is not of type 'object', 'null'", raw, raw)
		}
		if err := decodeStrict("rescue", raw, &req); err != nil {
			return nil, err
		}
	}
	cmd := statedb.RescueCmd{ID: inst.ID, By: s.actionBy(c)}
	if req.ImageRef != nil {
		id := *req.ImageRef
		if !isUUID(id) {
			return nil, rest.BadRequest("Invalid input for field/attribute rescue_image_ref. Value: %s. %q is not a 'uuid'", id, id)
		}
		img, ok := s.b.State().Image(id)
		if !ok || !s.imageVisible(c, img) {
			return nil, rest.BadRequest("Image %s could not be found.", id)
		}
		cmd.ImageID = img.ID
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRescueServer, cmd); err != nil {
		return nil, err
	}
	body := map[string]any{}
	if req.AdminPass != nil {
		body["adminPass"] = *req.AdminPass
	}
	return &rest.Response{Status: http.StatusOK, Body: body}, nil
}

// unrescue serves the unrescue action → 202: the server boots its own
// root disk again.
func (s *service) unrescue(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) (any, error) {
	if string(raw) != "null" && string(raw) != "{}" {
		return nil, rest.BadRequest("Invalid input for field/attribute unrescue. Value: %s. It takes no arguments", raw)
	}
	cmd := statedb.RescueCmd{ID: inst.ID, Unrescue: true, By: s.actionBy(c)}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRescueServer, cmd); err != nil {
		return nil, err
	}
	return accepted(), nil
}
