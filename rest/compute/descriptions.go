package compute

import (
	"encoding/json"
	"unicode"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// parseDescription reads a description: a string of at most max
// printable characters, or null (cleared).
func parseDescription(raw json.RawMessage, max int) (string, error) {
	if string(raw) == "null" {
		return "", nil
	}
	var d string
	if err := json.Unmarshal(raw, &d); err != nil {
		return "", rest.BadRequest("Invalid input for field/attribute description. Value: %s. %s is not of type 'string', 'null'", raw, raw)
	}
	if len([]rune(d)) > max {
		return "", rest.BadRequest("Invalid input for field/attribute description. Value: %s. It is too long", d)
	}
	for _, r := range d {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return "", rest.BadRequest("Invalid input for field/attribute description. Value: %q. It contains non-printable characters", d)
		}
	}
	return d, nil
}

// setServerDescription proposes a server's new description (2.19 PUT).
func (s *service) setServerDescription(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) error {
	if !atLeast(c, 2, 19) {
		return rest.BadRequest("Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)")
	}
	d, err := parseDescription(raw, 255)
	if err != nil {
		return err
	}
	_, err = rest.Propose(c.Context(), s.b, statedb.CmdSetInstanceDesc, statedb.SetDescriptionCmd{ID: inst.ID, Description: d})
	return err
}

// updateFlavor serves PUT /flavors/{id} (admin, from 2.55): only the
// description changes, as in Nova.
func (s *service) updateFlavor(c *rest.Ctx) (any, error) {
	if !atLeast(c, 2, 55) {
		return nil, rest.NotFoundf("The resource could not be found.")
	}
	if err := s.requireAdmin(c, "Flavor"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	f, err := s.flavor(c, sn)
	if err != nil {
		return nil, err
	}
	var req struct {
		Description json.RawMessage `json:"description"`
	}
	if err := decodeBody(c, "flavor", &req); err != nil {
		return nil, err
	}
	if len(req.Description) == 0 {
		return nil, rest.BadRequest("Invalid input for field/attribute flavor. 'description' is a required property")
	}
	d, err := parseDescription(req.Description, 65535)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetFlavorDesc, statedb.SetDescriptionCmd{ID: f.ID, Description: d}); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.Flavor(f.ID)
	if !ok {
		return nil, rest.NotFoundf("Flavor %s could not be found.", f.ID)
	}
	return map[string]any{"flavor": s.flavorView(c, sn, got)}, nil
}
