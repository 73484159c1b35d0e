package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Field limits (Cinder's).
const (
	maxNameLen     = 255
	maxMetadataLen = 255
	maxMetadata    = 128
)

// readVolume finds a volume the caller may act on; missing and hidden
// ones are the same 404.
func (s *service) readVolume(c *rest.Ctx, sn *statedb.Snapshot, id string, access rest.Access) (*statedb.Volume, error) {
	v, ok := sn.Volume(id)
	if !ok {
		return nil, volumeNotFound(id)
	}
	if err := rest.Check(s.b, c, access, v.ProjectID, false, "volume"); err != nil {
		if st, _, _ := rest.StatusOf(err); st == http.StatusNotFound {
			return nil, volumeNotFound(id)
		}
		return nil, err
	}
	return v, nil
}

func volumeNotFound(id string) error { return rest.NotFoundf("Volume %s could not be found.", id) }

// intArg reads a size in the form of Cinder's volume_size: a JSON integer
// or a digit string ("1").
func intArg(field string, v any) (int, error) {
	if v == nil {
		return 0, rest.BadRequest("Invalid input for field/attribute %s: it is required.", field)
	}
	conv, err := rest.CinderInt.Convert(field, v)
	if err != nil {
		return 0, formError(err)
	}
	n, err := strconv.ParseInt(string(conv.(json.Number)), 10, 32)
	if err != nil {
		return 0, rest.BadRequest("Invalid input for field/attribute %s. Value: %v. %v is greater than the maximum of %d", field, v, v, math.MaxInt32)
	}
	return int(n), nil
}

// formError renders a value of the wrong form as Cinder's schema
// validation does: "Invalid input for field/attribute <field>. Value:
// <value>. <reason>".
func formError(err error) error {
	var fe *rest.FormError
	if errors.As(err, &fe) {
		return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. %s", fe.Field, fe.Shown(), fe.Reason)
	}
	return err
}

// decodeForms decodes a JSON body into v after converting the attributes
// spec names to Cinder's forms.
func decodeForms(c *rest.Ctx, spec rest.Spec, v any) error {
	var raw json.RawMessage
	if err := c.Decode(&raw); err != nil {
		return err
	}
	return decodeRawForms(raw, spec, v)
}

func decodeRawForms(raw json.RawMessage, spec rest.Spec, v any) error {
	raw, err := rest.Normalize(raw, spec)
	if err != nil {
		return formError(err)
	}
	return decodeRaw(raw, v)
}

// createSpec and extendSpec are the volume attributes Cinder's schemas
// accept as strings.
var (
	createSpec = rest.Spec{"volume.size": rest.CinderInt, "volume.multiattach": rest.CinderBool}
	extendSpec = rest.Spec{"new_size": rest.CinderInt}
)

// checkSize enforces 1 ≤ size ≤ the configured maximum.
func (s *service) checkSize(field string, size int) error {
	if size <= 0 {
		return rest.BadRequest("Invalid input received: %s must be a positive number of GB, not %d.", field, size)
	}
	if size > s.max {
		return rest.BadRequest("Invalid input received: %s %d GB exceeds the maximum volume size of %d GB.", field, size, s.max)
	}
	return nil
}

func checkText(field string, v *string) error {
	if v == nil {
		return nil
	}
	if !utf8.ValidString(*v) || utf8.RuneCountInString(*v) > maxNameLen {
		return rest.BadRequest("Invalid input for field/attribute %s: at most %d characters of valid UTF-8.", field, maxNameLen)
	}
	return nil
}

func checkMetadata(md map[string]string) error {
	if len(md) > maxMetadata {
		return rest.BadRequest("Invalid input for field/attribute metadata: at most %d items.", maxMetadata)
	}
	for k, v := range md {
		if k == "" || utf8.RuneCountInString(k) > maxMetadataLen || utf8.RuneCountInString(v) > maxMetadataLen ||
			!utf8.ValidString(k) || !utf8.ValidString(v) {
			return rest.BadRequest("Invalid input for field/attribute metadata: keys must be 1-%d characters and values at most %d.", maxMetadataLen, maxMetadataLen)
		}
	}
	return nil
}

// firstOf returns the first non-nil pointer.
func firstOf(ps ...*string) *string {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// createInput is the body of POST /volumes. Unsupported sources must be
// null or absent.
type createInput struct {
	Volume *struct {
		Size               any               `json:"size"`
		Name               *string           `json:"name"`
		DisplayName        *string           `json:"display_name"`
		Description        *string           `json:"description"`
		DisplayDescription *string           `json:"display_description"`
		VolumeType         *string           `json:"volume_type"`
		AvailabilityZone   *string           `json:"availability_zone"`
		Metadata           map[string]string `json:"metadata"`
		ImageRef           *string           `json:"imageRef"`
		ImageID            *string           `json:"image_id"`
		SnapshotID         *string           `json:"snapshot_id"`
		SourceVolID        *string           `json:"source_volid"`
		BackupID           *string           `json:"backup_id"`
		ConsistencyGroupID *string           `json:"consistencygroup_id"`
		GroupID            *string           `json:"group_id"`
		Multiattach        *bool             `json:"multiattach"`
	} `json:"volume"`
}

// createVolume serves POST /volumes: 202 with the new volume, in status
// creating; the agent on its host makes its file (this host with shared
// storage, the one placement chooses with local storage).
func (s *service) createVolume(c *rest.Ctx) (any, error) {
	project, err := s.project(c)
	if err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Write, project, false, "volume"); err != nil {
		return nil, err
	}
	var in createInput
	if err := decodeForms(c, createSpec, &in); err != nil {
		return nil, err
	}
	r := in.Volume
	if r == nil {
		return nil, rest.BadRequest("Missing required element 'volume' in request body.")
	}
	size, err := intArg("size", r.Size)
	if err != nil {
		return nil, err
	}
	if err := s.checkSize("size", size); err != nil {
		return nil, err
	}
	name := firstOf(r.Name, r.DisplayName)
	desc := firstOf(r.Description, r.DisplayDescription)
	if err := checkText("name", name); err != nil {
		return nil, err
	}
	if err := checkText("description", desc); err != nil {
		return nil, err
	}
	if err := checkMetadata(r.Metadata); err != nil {
		return nil, err
	}
	for field, p := range map[string]*string{"snapshot_id": r.SnapshotID, "source_volid": r.SourceVolID,
		"backup_id": r.BackupID, "consistencygroup_id": r.ConsistencyGroupID, "group_id": r.GroupID} {
		if str(p) != "" {
			return nil, rest.BadRequest("Invalid input received: creating a volume from %s is not supported.", field)
		}
	}
	if r.Multiattach != nil && *r.Multiattach {
		return nil, rest.BadRequest("Invalid input received: multiattach volumes are not supported.")
	}
	if az := str(r.AvailabilityZone); az != "" && az != AZ {
		return nil, rest.BadRequest("Invalid input received: Availability zone '%s' is invalid.", az)
	}
	sn := s.b.State()
	vt := s.volumeType(sn)
	if t := str(r.VolumeType); t != "" && t != vt.Name && t != vt.ID {
		return nil, rest.NotFoundf("Volume type with name %s could not be found.", t)
	}
	v := statedb.Volume{
		ID: s.b.NewID(), Name: str(name), Description: str(desc), ProjectID: project, UserID: c.Cred.UserID,
		SizeGB: size, VolumeType: vt.Name, Format: volumeFormat, AZ: AZ,
		Metadata: r.Metadata, CreatedAt: s.b.Now().UTC().Truncate(time.Microsecond),
	}
	if ref := str(firstOf(r.ImageRef, r.ImageID)); ref != "" {
		img, err := s.bootImage(c, sn, ref, size)
		if err != nil {
			return nil, err
		}
		v.ImageID, v.Bootable = img.ID, true
	}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	// Shared storage: any host can make the file, so the one serving the
	// request does. Local storage: the leader places the volume on a host
	// with room, whose agent makes the file and reports where.
	if sn.VolumeShared(&v) {
		v.Host = s.b.HostID()
		if v.Path, err = s.b.VolumePath(statedb.VolumeFileBase(v.ID), v.Format); err != nil {
			return nil, fmt.Errorf("volume path on host %s: %w", v.Host, err)
		}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: v}); err != nil {
		return nil, err
	}
	sn = s.b.State()
	got, ok := sn.Volume(v.ID)
	if !ok {
		return nil, fmt.Errorf("volume %s vanished after create", v.ID)
	}
	return &rest.Response{Status: http.StatusAccepted, Body: map[string]any{"volume": s.render(c, sn, got)}}, nil
}

// bootImage finds the image a bootable volume is made from: visible to
// the caller, active, and no larger than the volume.
func (s *service) bootImage(c *rest.Ctx, sn *statedb.Snapshot, ref string, sizeGB int) (*statedb.Image, error) {
	img, ok := sn.Image(ref)
	if !ok || !s.imageVisible(c, img) {
		return nil, rest.BadRequest("Invalid input received: Invalid image identifier or unable to access requested image %s.", ref)
	}
	if img.Status != "active" {
		return nil, rest.BadRequest("Invalid input received: Image %s is not active (status %s).", img.ID, img.Status)
	}
	need := img.VirtualSize
	if need == 0 {
		need = img.Size
	}
	needGB := int((need + (1<<30 - 1)) >> 30)
	if img.MinDiskGB > needGB {
		needGB = img.MinDiskGB
	}
	if needGB > sizeGB {
		return nil, rest.BadRequest("Invalid input received: Image %s needs %d GB, larger than the volume size %d GB.", img.ID, needGB, sizeGB)
	}
	return img, nil
}

func (s *service) imageVisible(c *rest.Ctx, img *statedb.Image) bool {
	public := img.Visibility == "public" || img.Visibility == "community"
	if rest.Visible(s.b, c, img.ProjectID, public) {
		return true
	}
	for _, m := range img.Members {
		if m.ProjectID == c.Cred.ProjectID && m.Status != "rejected" && rest.Visible(s.b, c, m.ProjectID, false) {
			return true
		}
	}
	return false
}

// showVolume serves GET /volumes/{id}; a name is a 404 (clients then list).
func (s *service) showVolume(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	sn := s.b.State()
	v, err := s.readVolume(c, sn, c.Var("volume_id"), rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"volume": s.render(c, sn, v)}, nil
}

// updateInput is the body of PUT /volumes/{id}.
type updateInput struct {
	Volume *struct {
		Name               *string            `json:"name"`
		DisplayName        *string            `json:"display_name"`
		Description        *string            `json:"description"`
		DisplayDescription *string            `json:"display_description"`
		Metadata           *map[string]string `json:"metadata"`
	} `json:"volume"`
}

// updateVolume serves PUT /volumes/{id}: name, description, metadata.
func (s *service) updateVolume(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	sn := s.b.State()
	v, err := s.readVolume(c, sn, c.Var("volume_id"), rest.Write)
	if err != nil {
		return nil, err
	}
	var in updateInput
	if err := c.Decode(&in); err != nil {
		return nil, err
	}
	r := in.Volume
	if r == nil {
		return nil, rest.BadRequest("Missing required element 'volume' in request body.")
	}
	cmd := statedb.UpdateVolumeCmd{ID: v.ID, Name: firstOf(r.Name, r.DisplayName), Description: firstOf(r.Description, r.DisplayDescription)}
	if err := checkText("name", cmd.Name); err != nil {
		return nil, err
	}
	if err := checkText("description", cmd.Description); err != nil {
		return nil, err
	}
	if r.Metadata != nil {
		md := *r.Metadata
		if md == nil {
			md = map[string]string{}
		}
		if err := checkMetadata(md); err != nil {
			return nil, err
		}
		cmd.Metadata = &md
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateVolume, cmd); err != nil {
		return nil, err
	}
	sn = s.b.State()
	if v, err = s.readVolume(c, sn, v.ID, rest.Read); err != nil {
		return nil, err
	}
	return map[string]any{"volume": s.render(c, sn, v)}, nil
}

// deleteVolume serves DELETE /volumes/{id}: 202, the volume goes to
// deleting and the agent on its host removes the file. Attached or busy
// volumes are a 400.
func (s *service) deleteVolume(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	v, err := s.readVolume(c, s.b.State(), c.Var("volume_id"), rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteVolume, statedb.DeleteVolumeCmd{ID: v.ID}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusAccepted}, nil
}
