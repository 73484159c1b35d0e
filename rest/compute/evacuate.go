package compute

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// evacuate serves the admin action {"evacuate": {...}}: restart a server
// of a host that is down on another host. Body by microversion, as Nova:
// "host" (optional, a compute host name), "adminPass" (accepted and
// ignored: the disk is not rebuilt), "onSharedStorage" (required up to
// 2.13, refused after), "force" (2.29-2.67). Up to 2.13 the answer is
// {"adminPass": null}; after, no body. The server restarts once the
// leader declares its host fenced (docs/ha.md).
func (s *service) evacuate(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) (any, error) {
	if err := s.requireAdmin(c, "os_compute_api:os-evacuate"); err != nil {
		return nil, err
	}
	var req struct {
		Host            *string `json:"host"`
		AdminPass       *string `json:"adminPass"`
		OnSharedStorage *bool   `json:"onSharedStorage"`
		Force           *bool   `json:"force"`
	}
	if string(raw) == "null" {
		return nil, rest.BadRequest("Invalid input for field/attribute evacuate. Value: None. None is not of type 'object'")
	}
	if err := decodeStrict("evacuate", raw, &req); err != nil {
		return nil, err
	}
	legacy := !atLeast(c, 2, 14)
	switch {
	case legacy && req.OnSharedStorage == nil:
		return nil, rest.BadRequest("Invalid input for field/attribute evacuate. 'onSharedStorage' is a required property")
	case !legacy && req.OnSharedStorage != nil:
		return nil, rest.BadRequest("Invalid input for field/attribute evacuate. Additional properties are not allowed ('onSharedStorage' was unexpected)")
	case req.Force != nil && (!atLeast(c, 2, 29) || atLeast(c, 2, 68)):
		return nil, rest.BadRequest("Invalid input for field/attribute evacuate. Additional properties are not allowed ('force' was unexpected)")
	case req.Host != nil && (*req.Host == "" || len(*req.Host) > 255):
		return nil, rest.BadRequest("Invalid input for field/attribute host. Value: %s. It must be 1 to 255 characters", *req.Host)
	}
	sn := s.b.State()
	cmd := statedb.EvacuateCmd{ID: inst.ID, By: s.actionBy(c)}
	if req.Host != nil {
		m, ok := sn.MemberByName(*req.Host)
		if !ok {
			return nil, rest.NotFoundf("Compute host %s could not be found.", *req.Host)
		}
		if m.ID == inst.Host {
			return nil, rest.BadRequest("The target host can't be the same one.")
		}
		cmd.TargetHost = m.ID
	}
	if inst.Host != "" && !sn.HostDown(inst.Host) && !s.shownUp(inst.Host) {
		// The service list already shows the host down (its gossip went
		// silent) but the leader's verdict has not reached this host's
		// state yet: wait for it, as a user who saw "down" expects.
		sn = s.waitHostDown(c, inst.Host, evacuateVerdictWait)
	}
	if inst.Host != "" && !sn.HostDown(inst.Host) {
		name := inst.Host
		if m, ok := sn.Member(inst.Host); ok {
			name = m.Name
		}
		return nil, rest.BadRequest("Compute service of %s is still in use.", name)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdEvacuateInstance, cmd); err != nil {
		return nil, err
	}
	if legacy {
		return map[string]any{"adminPass": nil}, nil
	}
	return &rest.Response{Status: http.StatusOK}, nil
}

// evacuateVerdictWait bounds how long an evacuate waits for the leader's
// "down" verdict on a host the service list already shows down.
const evacuateVerdictWait = 15 * time.Second

// shownUp reports whether the service list shows host up.
func (s *service) shownUp(host string) bool {
	for _, h := range s.b.Hosts() {
		if h.ID == host {
			return h.Up
		}
	}
	return false
}

// waitHostDown polls the state until it records host down, or max passes,
// and returns the last state read.
func (s *service) waitHostDown(c *rest.Ctx, host string, max time.Duration) *statedb.Snapshot {
	deadline := time.Now().Add(max)
	for {
		sn := s.b.State()
		if sn.HostDown(host) || time.Now().After(deadline) {
			return sn
		}
		select {
		case <-c.Context().Done():
			return sn
		case <-time.After(50 * time.Millisecond):
		}
	}
}
