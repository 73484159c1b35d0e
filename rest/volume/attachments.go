package volume

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// ComputeService returns Nova's os-volume_attachments routes under
// /compute/v2.1. They are registered apart from the compute service, which
// owns every other /compute path.
func ComputeService(b Backend) rest.Service {
	s := newService(b, Options{})
	const (
		get, post, del = http.MethodGet, http.MethodPost, http.MethodDelete
		token          = rest.Token
	)
	atts := "/servers/{server_id}/os-volume_attachments"
	return rest.Service{
		Prefix: "/compute/v2.1",
		Errors: novaErrors,
		Wrap:   computeVersions(novaErrors),
		Routes: []rest.Route{
			{Method: get, Path: atts, Auth: token, Handler: s.listAttachments},
			{Method: post, Path: atts, Auth: token, Handler: s.attach},
			{Method: get, Path: atts + "/{volume_id}", Auth: token, Handler: s.showAttachment},
			{Method: del, Path: atts + "/{volume_id}", Auth: token, Handler: s.detach},
		},
	}
}

// novaAttachment is Nova's volumeAttachment at 2.1: id is the volume id.
type novaAttachment struct {
	ID       string `json:"id"`
	VolumeID string `json:"volumeId"`
	ServerID string `json:"serverId"`
	Device   string `json:"device"`
	// From 2.70 and 2.79 (compute_versions.go).
	Tag                 *any  `json:"tag,omitempty"`
	DeleteOnTermination *bool `json:"delete_on_termination,omitempty"`

	tag string // what the attachment holds, shown by microversion
	dot bool
}

func attachmentJSON(v *statedb.Volume) novaAttachment {
	a := v.Attachment()
	return novaAttachment{ID: v.ID, VolumeID: v.ID, ServerID: a.ServerID, Device: a.Device, tag: a.Tag, dot: a.DeleteOnTermination}
}

// readServer finds a server the caller may act on; missing and hidden ones
// are the same 404.
func (s *service) readServer(c *rest.Ctx, sn *statedb.Snapshot, access rest.Access) (*statedb.Instance, error) {
	id := c.Var("server_id")
	inst, ok := sn.Instance(id)
	if !ok {
		return nil, rest.NotFoundf("Instance %s could not be found.", id)
	}
	if err := rest.Check(s.b, c, access, inst.ProjectID, false, "server"); err != nil {
		if st, _, _ := rest.StatusOf(err); st == http.StatusNotFound {
			return nil, rest.NotFoundf("Instance %s could not be found.", id)
		}
		return nil, err
	}
	return inst, nil
}

// devicePathRE is what Nova accepts as a device hint.
var devicePathRE = regexp.MustCompile(`^/dev/[a-z]+[a-z0-9]*$`)

// attach serves POST /servers/{id}/os-volume_attachments: 200 with the
// attachment; the volume is attaching until the server's host reports it
// attached (then in-use).
func (s *service) attach(c *rest.Ctx) (any, error) {
	var in struct {
		VolumeAttachment *struct {
			VolumeID *string         `json:"volumeId"`
			Device   *string         `json:"device"`
			Tag      *string         `json:"tag"`                   // from 2.49
			DoT      json.RawMessage `json:"delete_on_termination"` // from 2.79
		} `json:"volumeAttachment"`
	}
	if err := c.Decode(&in); err != nil {
		return nil, err
	}
	r := in.VolumeAttachment
	if r == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute volumeAttachment: it is required.")
	}
	if r.VolumeID == nil || uuid.Validate(*r.VolumeID) != nil {
		return nil, rest.BadRequest("Invalid input for field/attribute volumeId: it must be a volume UUID.")
	}
	dev := str(r.Device)
	if dev != "" && !devicePathRE.MatchString(dev) {
		return nil, rest.BadRequest("The supplied device path (%s) is invalid.", dev)
	}
	minor, _ := c.R.Context().Value(computeMinorKey{}).(int)
	if r.Tag != nil && minor < 49 {
		return nil, rest.BadRequest("Invalid input for field/attribute volumeAttachment. Value: %s. Additional properties are not allowed ('tag' was unexpected)", "{...}")
	}
	var dot bool
	if len(r.DoT) > 0 {
		if minor < 79 {
			return nil, rest.BadRequest("Invalid input for field/attribute volumeAttachment. Value: %s. Additional properties are not allowed ('delete_on_termination' was unexpected)", "{...}")
		}
		b, err := rest.NovaBool.Bool("delete_on_termination", r.DoT)
		if err != nil {
			var fe *rest.FormError
			if errors.As(err, &fe) {
				return nil, rest.BadRequest("Invalid input for field/attribute %s. Value: %s. %s", fe.Field, fe.Shown(), fe.Reason)
			}
			return nil, err
		}
		dot = b
	}
	sn := s.b.State()
	inst, err := s.readServer(c, sn, rest.Write)
	if err != nil {
		return nil, err
	}
	v, err := s.readVolume(c, sn, *r.VolumeID, rest.Write)
	if err != nil {
		return nil, err
	}
	if v.Status == statedb.VolumeCreating {
		// A volume created a moment ago is still being placed and made on
		// its host (well under a second). Clients send create and attach
		// back to back; give the create a short while to finish instead of
		// refusing at once. Still creating after that: the FSM says why.
		v = s.waitCreated(c, v)
	}
	cmd := statedb.AttachVolumeCmd{VolumeID: v.ID, ServerID: inst.ID, AttachmentID: s.b.NewID(), Device: dev}
	typ := statedb.CmdAttachVolume
	if str(r.Tag) != "" || dot {
		// Only hosts that know these fields may apply them.
		typ, cmd.Tag, cmd.DeleteOnTermination = statedb.CmdAttachVolumeTagged, str(r.Tag), dot
	}
	if _, err := rest.Propose(c.Context(), s.b, typ, cmd); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Volume(v.ID)
	if !ok || got.Attachment() == nil || got.Attachment().ID != cmd.AttachmentID {
		// Detached (or deleted) again already: answer with what we asked.
		return map[string]any{"volumeAttachment": versionedAttachment(c, novaAttachment{ID: v.ID, VolumeID: v.ID, ServerID: inst.ID, Device: dev,
			tag: cmd.Tag, dot: cmd.DeleteOnTermination})}, nil
	}
	return map[string]any{"volumeAttachment": versionedAttachment(c, attachmentJSON(got))}, nil
}

// createWait bounds how long an attach waits for a volume still being created.
const createWait = 10 * time.Second

// waitCreated polls the local state until v leaves creating, createWait
// passes or the client goes away, and returns the latest v.
func (s *service) waitCreated(c *rest.Ctx, v *statedb.Volume) *statedb.Volume {
	ctx, cancel := context.WithTimeout(c.Context(), createWait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return v
		case <-t.C:
		}
		if cur, ok := s.b.State().Volume(v.ID); !ok || cur.Status != statedb.VolumeCreating {
			if ok {
				return cur
			}
			return v
		}
	}
}

// listAttachments serves GET /servers/{id}/os-volume_attachments.
func (s *service) listAttachments(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.readServer(c, sn, rest.Read)
	if err != nil {
		return nil, err
	}
	out := []novaAttachment{}
	for _, v := range sn.VolumesAttachedTo(inst.ID) {
		out = append(out, versionedAttachment(c, attachmentJSON(v)))
	}
	return map[string]any{"volumeAttachments": out}, nil
}

// attachedVolume finds the volume in the URL attached to the server.
func (s *service) attachedVolume(c *rest.Ctx, sn *statedb.Snapshot, inst *statedb.Instance) (*statedb.Volume, error) {
	id := c.Var("volume_id")
	v, ok := sn.Volume(id)
	if !ok || v.Attachment() == nil || v.Attachment().ServerID != inst.ID {
		return nil, rest.NotFoundf("Volume %s is not attached to server %s.", id, inst.ID)
	}
	return v, nil
}

// showAttachment serves GET /servers/{id}/os-volume_attachments/{volume}.
func (s *service) showAttachment(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.readServer(c, sn, rest.Read)
	if err != nil {
		return nil, err
	}
	v, err := s.attachedVolume(c, sn, inst)
	if err != nil {
		return nil, err
	}
	return map[string]any{"volumeAttachment": versionedAttachment(c, attachmentJSON(v))}, nil
}

// detach serves DELETE /servers/{id}/os-volume_attachments/{volume}: 202;
// the attachment is detaching until the host reports the device gone.
func (s *service) detach(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.readServer(c, sn, rest.Write)
	if err != nil {
		return nil, err
	}
	v, err := s.attachedVolume(c, sn, inst)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDetachVolume, statedb.DetachVolumeCmd{VolumeID: v.ID, ServerID: inst.ID}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusAccepted}, nil
}
