package volume

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// action serves POST /volumes/{id}/action: a body with exactly one action
// key. Supported: os-extend and os-detach (any owner) and os-reset_status
// (admin).
func (s *service) action(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	sn := s.b.State()
	v, err := s.readVolume(c, sn, c.Var("volume_id"), rest.Write)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	if len(body) != 1 {
		keys := make([]string, 0, len(body))
		for k := range body {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return nil, rest.BadRequest("Invalid request body: want exactly one action, got %v.", keys)
	}
	for name, raw := range body {
		switch name {
		case "os-extend":
			return s.extend(c, v, raw)
		case "os-reset_status":
			return s.resetStatus(c, v, raw)
		case "os-detach":
			return s.osDetach(c, v, raw)
		default:
			return nil, rest.BadRequest("There is no such action: %s", name)
		}
	}
	return nil, nil // unreachable: one key
}

// extend handles os-extend {"new_size": N}: 202; the volume goes to
// extending (attached volumes too: the host resizes the file and the
// running guest's disk) and its agent reports.
func (s *service) extend(c *rest.Ctx, v *statedb.Volume, raw json.RawMessage) (any, error) {
	var in struct {
		NewSize any `json:"new_size"`
	}
	if err := decodeRawForms(raw, extendSpec, &in); err != nil {
		return nil, err
	}
	size, err := intArg("new_size", in.NewSize)
	if err != nil {
		return nil, err
	}
	if err := s.checkSize("new_size", size); err != nil {
		return nil, err
	}
	if size <= v.SizeGB {
		return nil, rest.BadRequest("Invalid input received: New size for extend must be greater than current size. (current: %d, extended: %d).", v.SizeGB, size)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdExtendVolume, statedb.ExtendVolumeCmd{ID: v.ID, NewSizeGB: size}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusAccepted}, nil
}

// osDetach handles os-detach {"attachment_id": optional}: 202; as with
// Nova's detach, the attachment goes to detaching and its host unplugs it.
// It is accepted again while detaching and after a given-up detach (the
// volume in-use with the reason); a volume not attached is a 400.
func (s *service) osDetach(c *rest.Ctx, v *statedb.Volume, raw json.RawMessage) (any, error) {
	var in struct {
		AttachmentID *string `json:"attachment_id"`
	}
	if string(bytes.TrimSpace(raw)) != "null" {
		if err := decodeRaw(raw, &in); err != nil {
			return nil, err
		}
	}
	a := v.Attachment()
	if a == nil {
		return nil, rest.BadRequest("Invalid volume: Volume %s must be attached in order to detach.", v.ID)
	}
	if id := str(in.AttachmentID); id != "" && id != a.ID {
		return nil, rest.BadRequest("Invalid volume: attachment %s is not an attachment of volume %s.", id, v.ID)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: v.ID, ServerID: a.ServerID}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusAccepted}, nil
}

// resetStatus handles the admin os-reset_status {"status", "attach_status"}.
func (s *service) resetStatus(c *rest.Ctx, v *statedb.Volume, raw json.RawMessage) (any, error) {
	if err := rest.Check(s.b, c, rest.Admin, v.ProjectID, false, "volume"); err != nil {
		return nil, err
	}
	var in struct {
		Status       *string `json:"status"`
		AttachStatus *string `json:"attach_status"`
	}
	if err := decodeRaw(raw, &in); err != nil {
		return nil, err
	}
	if str(in.Status) == "" && str(in.AttachStatus) == "" {
		return nil, rest.BadRequest("Invalid input received: os-reset_status needs a status or an attach_status.")
	}
	cmd := statedb.ResetVolumeStatusCmd{ID: v.ID, Status: str(in.Status), AttachStatus: str(in.AttachStatus)}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdResetVolumeStatus, cmd); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusAccepted}, nil
}

// decodeRaw decodes an action's argument object.
func decodeRaw(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return rest.BadRequest("Malformed request body: %v", err)
	}
	return nil
}
