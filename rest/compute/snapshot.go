package compute

import (
	"encoding/json"

	"net/http"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// snapshotProps are the base image's properties a snapshot does not
// inherit (they describe the base, not the copy).
var snapshotProps = map[string]bool{"image_type": true, "instance_uuid": true, "base_image_ref": true,
	"image_location": true, "owner_user_name": true, "owner_project_name": true, "user_id": true}

// createImage serves the createImage action: {"createImage": {"name":
// …, "metadata": {…}}} → 202. The new image (qcow2, private, queued) is
// filled by the server's host with a copy of its root disk (the boot
// volume of a volume-backed server, see docs/day2-compute.md). Before 2.45
// its URL is in Location; from 2.45 its id is the body.
func (s *service) createImage(c *rest.Ctx, inst *statedb.Instance, raw json.RawMessage) (any, error) {
	var req struct {
		Name     *string         `json:"name"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := decodeStrict("createImage", raw, &req); err != nil {
		return nil, err
	}
	if req.Name == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute createImage. 'name' is a required property")
	}
	if err := validName("name", *req.Name); err != nil {
		return nil, err
	}
	md := map[string]string{}
	if err := parseMetadata(req.Metadata, md); err != nil {
		return nil, err
	}
	sn := s.b.State()
	props := map[string]string{}
	minRAM, minDisk, baseID := 0, inst.Flavor.DiskGB, inst.ImageID
	if v, ok := sn.Volume(inst.RootVolume); ok && inst.RootVolume != "" {
		// Volume-backed: the image is a copy of the boot volume, which
		// needs a disk of the volume's size; its properties come from
		// the image the volume was made from, if any.
		minDisk = v.SizeGB
		if baseID == "" {
			baseID = v.ImageID
		}
	}
	if base, ok := sn.Image(baseID); ok && baseID != "" {
		for k, v := range base.Properties {
			if !snapshotProps[k] {
				props[k] = v
			}
		}
		minRAM = base.MinRAMMB
	}
	for k, v := range md {
		props[k] = v
	}
	props["image_type"], props["instance_uuid"], props["base_image_ref"] = "snapshot", inst.ID, baseID
	if c.Cred != nil {
		props["user_id"] = c.Cred.UserID
	}
	img := statedb.Image{ID: s.b.NewID(), Name: *req.Name, ProjectID: inst.ProjectID, Visibility: "private",
		DiskFormat: "qcow2", ContainerFormat: "bare", MinDiskGB: minDisk, MinRAMMB: minRAM, Properties: props}
	cmd := statedb.SnapshotServerCmd{ID: inst.ID, Image: img, By: s.actionBy(c)}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSnapshotServer, cmd); err != nil {
		return nil, err
	}
	if atLeast(c, 2, 45) {
		return &rest.Response{Status: http.StatusAccepted, Body: map[string]string{"image_id": img.ID}}, nil
	}
	return &rest.Response{Status: http.StatusAccepted,
		Header: http.Header{"Location": {base(c, sn) + "/image/v2/images/" + img.ID}}}, nil
}
