package compute

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// deleteServer serves DELETE /servers/{id}: the agent tears the VM down
// and reports it gone; a server never placed goes at once.
func (s *service) deleteServer(c *rest.Ctx) (any, error) {
	inst, err := s.server(c, s.b.State(), rest.Write)
	if err != nil {
		return nil, err
	}
	if err := s.checkLocked(c, inst); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: inst.ID}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// serverAction serves POST /servers/{id}/action with exactly one action.
func (s *service) serverAction(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.server(c, sn, rest.Write)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	if len(body) != 1 {
		return nil, rest.BadRequest("Exactly one action is required in the request body.")
	}
	for action, raw := range body {
		if _, ok := powerActions[action]; ok {
			return s.powerAction(c, inst, action, raw)
		}
		switch action {
		case "os-stop", "os-start":
			if string(raw) != "null" && string(raw) != "{}" {
				var m map[string]any
				if json.Unmarshal(raw, &m) != nil || len(m) > 0 {
					return nil, rest.BadRequest("Invalid input for field/attribute %s. Value: %s. It takes no arguments", action, raw)
				}
			}
			a := statedb.ActionStop
			if action == "os-start" {
				a = statedb.ActionStart
			}
			return s.proposeAction(c, statedb.InstanceActionCmd{ID: inst.ID, Action: a})
		case "reboot":
			var req struct {
				Type *string `json:"type"`
			}
			if err := decodeStrict("reboot", raw, &req); err != nil {
				return nil, err
			}
			if req.Type == nil {
				return nil, rest.BadRequest("Invalid input for field/attribute reboot. 'type' is a required property")
			}
			switch strings.ToUpper(*req.Type) {
			case "SOFT", "HARD":
			default:
				return nil, rest.BadRequest("Invalid input for field/attribute type. Value: %s. %q is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']", *req.Type, *req.Type)
			}
			return s.proposeAction(c, statedb.InstanceActionCmd{ID: inst.ID, Action: statedb.ActionReboot,
				Hard: strings.EqualFold(*req.Type, "HARD")})
		case "os-getConsoleOutput":
			return s.consoleOutput(c, inst, raw)
		case "addSecurityGroup", "removeSecurityGroup":
			return s.serverSecGroupAction(c, inst, action, raw)
		case "rescue":
			return s.rescue(c, inst, raw)
		case "unrescue":
			return s.unrescue(c, inst, raw)
		case "createImage":
			return s.createImage(c, inst, raw)
		case "resize":
			return s.resize(c, inst, raw)
		case "confirmResize", "revertResize":
			return s.resizeDecision(c, inst, action, raw)
		case "evacuate":
			return s.evacuate(c, inst, raw)
		default:
			return nil, rest.BadRequest("There is no such action: %s", action)
		}
	}
	return nil, rest.BadRequest("Exactly one action is required in the request body.")
}

func (s *service) proposeAction(c *rest.Ctx, cmd statedb.InstanceActionCmd) (any, error) {
	cmd.By = s.actionBy(c)
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdInstanceAction, cmd); err != nil {
		return nil, err
	}
	return accepted(), nil
}

// consoleOutput serves os-getConsoleOutput: {"length": N|null} → 200
// {"output": …} from the host that runs the server.
func (s *service) consoleOutput(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) (any, error) {
	length := -1
	if string(raw) != "null" {
		var req map[string]json.RawMessage
		if err := json.Unmarshal(raw, &req); err != nil || req == nil {
			return nil, rest.BadRequest("Invalid input for field/attribute os-getConsoleOutput. Value: %s. It is not an object", raw)
		}
		for k, v := range req {
			if k != "length" {
				return nil, rest.BadRequest("Invalid input for field/attribute os-getConsoleOutput. Additional properties are not allowed ('%s' was unexpected)", k)
			}
			if string(v) == "null" {
				continue
			}
			n, err := intValue("length", v, rest.NovaSignedInt)
			if err != nil {
				return nil, err
			}
			if n < -1 {
				return nil, rest.BadRequest("Invalid input for field/attribute length. Value: %d. %d is less than the minimum of -1", n, n)
			}
			length = n
		}
	}
	if inst.Host == "" {
		return nil, rest.Conflictf("Cannot 'get_console_output' instance %s while it is in vm_state %s", inst.ID, inst.VMState)
	}
	ctx := c.Context()
	if g, err := MintConsoleGrant(s.b.State(), inst.ID, s.b.HostID(), s.b.Now()); err == nil {
		ctx = WithConsoleGrant(ctx, g) // for the host that runs it
	}
	out, err := s.b.ConsoleOutput(ctx, inst, length)
	if err != nil {
		return nil, &rest.HTTPError{Status: http.StatusConflict, Msg: "Unable to get console output: " + err.Error()}
	}
	return map[string]string{"output": out}, nil
}

// internalConsole serves the host-to-host console request:
// POST /internal/v1/instances/{id}/console?length=N, for a member holding
// a grant for the instance (CheckConsoleCaller).
func (s *service) internalConsole(c *rest.Ctx) (any, error) {
	if err := CheckConsoleCaller(s.b.State(), c.R, c.Var("instance_id"), s.b.Now()); err != nil {
		return nil, rest.Forbiddenf("%v", err)
	}
	length := -1
	if l := c.Query("length"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < -1 {
			return nil, rest.BadRequest("length must be an integer of -1 or more")
		}
		length = n
	}
	out, err := s.b.LocalConsole(c.Context(), c.Var("instance_id"), length)
	if err != nil {
		return nil, &rest.HTTPError{Status: http.StatusConflict, Msg: err.Error()}
	}
	return map[string]string{"output": out}, nil
}

// updateServer serves PUT /servers/{id}: rename, and from 2.19 the
// description (the other 2.1 fields are accepted and ignored).
func (s *service) updateServer(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.server(c, sn, rest.Write)
	if err != nil {
		return nil, err
	}
	var req struct {
		Name       *string         `json:"name"`
		AccessIPv4 *string         `json:"accessIPv4"`
		AccessIPv6 *string         `json:"accessIPv6"`
		DiskConfig *string         `json:"OS-DCF:diskConfig"`
		Desc       json.RawMessage `json:"description"` // 2.19
	}
	if err := decodeBody(c, "server", &req); err != nil {
		return nil, err
	}
	if len(req.Desc) > 0 {
		if err := s.setServerDescription(c, inst, req.Desc); err != nil {
			return nil, err
		}
	}
	if req.Name != nil {
		if err := validName("name", *req.Name); err != nil {
			return nil, err
		}
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateInstance, statedb.UpdateInstanceCmd{ID: inst.ID, Name: req.Name}); err != nil {
			return nil, err
		}
	}
	sn = s.b.State()
	got, ok := sn.Instance(inst.ID)
	if !ok {
		return nil, rest.NotFoundf("Instance %s could not be found.", inst.ID)
	}
	return map[string]any{"server": s.newViewCtx(c, sn).server(got)}, nil
}

func metadataOf(i *statedb.Instance) map[string]string {
	if i.Metadata == nil {
		return map[string]string{}
	}
	return i.Metadata
}

func (s *service) getMetadata(c *rest.Ctx) (any, error) {
	inst, err := s.server(c, s.b.State(), rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"metadata": metadataOf(inst)}, nil
}

// setMetadata decodes {"metadata":{…}} and proposes it, replacing or
// merging, then returns the resulting metadata.
func (s *service) setMetadata(c *rest.Ctx, replace bool) (any, error) {
	inst, err := s.server(c, s.b.State(), rest.Write)
	if err != nil {
		return nil, err
	}
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		return nil, err
	}
	raw, ok := env["metadata"]
	if !ok || len(env) != 1 || string(raw) == "null" {
		return nil, rest.BadRequest("Invalid input for field/attribute metadata. 'metadata' is a required property")
	}
	md := map[string]string{}
	if err := parseMetadata(raw, md); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateInstance, statedb.UpdateInstanceCmd{
		ID: inst.ID, Metadata: md, ReplaceMetadata: replace, MaxMetadata: s.metadataLimit(inst.ProjectID)}); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Instance(inst.ID)
	if !ok {
		return nil, rest.NotFoundf("Instance %s could not be found.", inst.ID)
	}
	return map[string]any{"metadata": metadataOf(got)}, nil
}

func (s *service) replaceMetadata(c *rest.Ctx) (any, error) { return s.setMetadata(c, true) }
func (s *service) mergeMetadata(c *rest.Ctx) (any, error)   { return s.setMetadata(c, false) }

func (s *service) getMetadataItem(c *rest.Ctx) (any, error) {
	inst, err := s.server(c, s.b.State(), rest.Read)
	if err != nil {
		return nil, err
	}
	key := c.Var("key")
	v, ok := inst.Metadata[key]
	if !ok {
		return nil, rest.NotFoundf("Metadata item was not found")
	}
	return map[string]any{"meta": map[string]string{key: v}}, nil
}

func (s *service) putMetadataItem(c *rest.Ctx) (any, error) {
	inst, err := s.server(c, s.b.State(), rest.Write)
	if err != nil {
		return nil, err
	}
	key := c.Var("key")
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		return nil, err
	}
	raw, ok := env["meta"]
	if !ok || len(env) != 1 {
		return nil, rest.BadRequest("Invalid input for field/attribute meta. 'meta' is a required property")
	}
	md := map[string]string{}
	if err := parseMetadata(raw, md); err != nil {
		return nil, err
	}
	if _, ok := md[key]; !ok || len(md) != 1 {
		return nil, rest.BadRequest("Request body and URI mismatch")
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateInstance, statedb.UpdateInstanceCmd{
		ID: inst.ID, Metadata: md, MaxMetadata: s.metadataLimit(inst.ProjectID)}); err != nil {
		return nil, err
	}
	return map[string]any{"meta": md}, nil
}

func (s *service) deleteMetadataItem(c *rest.Ctx) (any, error) {
	inst, err := s.server(c, s.b.State(), rest.Write)
	if err != nil {
		return nil, err
	}
	key := c.Var("key")
	if _, ok := inst.Metadata[key]; !ok {
		return nil, rest.NotFoundf("Metadata item was not found")
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateInstance, statedb.UpdateInstanceCmd{
		ID: inst.ID, DeleteKeys: []string{key}}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
