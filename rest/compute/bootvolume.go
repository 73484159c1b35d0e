package compute

import (
	"encoding/json"
	"fmt"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// bdmV2 is one block_device_mapping_v2 entry.
type bdmV2 struct {
	BootIndex           json.RawMessage `json:"boot_index"`
	UUID                string          `json:"uuid"`
	SourceType          string          `json:"source_type"`
	DestinationType     string          `json:"destination_type"`
	VolumeSize          json.RawMessage `json:"volume_size"`
	DeleteOnTermination json.RawMessage `json:"delete_on_termination"`
	DeviceName          string          `json:"device_name"`
	GuestFormat         string          `json:"guest_format"`
	DiskBus             string          `json:"disk_bus"`
	DeviceType          string          `json:"device_type"`
	VolumeType          *string         `json:"volume_type"`
	NoDevice            json.RawMessage `json:"no_device"`
}

// maxBootVolumeGB is the largest boot volume server create makes: the
// volume API's default limit.
const maxBootVolumeGB = 1000

// bootVolumeFormat is the file format of new boot volumes, as of the
// volumes the volume API creates.
const bootVolumeFormat = "qcow2"

const gib = int64(1) << 30

// parseBDM reads block_device_mapping_v2. One boot device (boot_index 0)
// is supported: the image (source image, destination local, which
// novaclient adds next to imageRef), an existing volume (source volume,
// destination volume) or a new volume made from an image (source image,
// destination volume, volume_size GB). Nova refuses two boot devices;
// the one exception here is novaclient's local image next to a boot
// volume made from that same image (`--image X --block-device
// source_type=image,uuid=X,destination_type=volume,…`), which boots
// from the new volume.
func (s *service) parseBDM(c *rest.Ctx, sn *statedb.Snapshot, req *serverCreateReq, p *serverPlan) error {
	if len(req.BlockDeviceMapping) > 0 && string(req.BlockDeviceMapping) != "null" && string(req.BlockDeviceMapping) != "[]" {
		return rest.BadRequest("Block Device Mapping is Invalid: the legacy block_device_mapping is not supported; use block_device_mapping_v2.")
	}
	if len(req.BlockDeviceMappingV) == 0 || string(req.BlockDeviceMappingV) == "null" {
		return nil
	}
	var bdms []bdmV2
	if err := decodeStrict("block_device_mapping_v2", req.BlockDeviceMappingV, &bdms); err != nil {
		return err
	}
	var local, root *bdmV2
	for i := range bdms {
		b := &bdms[i]
		if b.SourceType == "snapshot" || b.SourceType == "blank" {
			return rest.BadRequest("Block Device Mapping is Invalid: source_type %s is not supported; a server boots from an image, a volume, or a new volume made from an image.", b.SourceType)
		}
		boot := -1
		if len(b.BootIndex) > 0 && string(b.BootIndex) != "null" {
			n, err := intValue("boot_index", b.BootIndex, rest.NovaSignedInt)
			if err != nil {
				return err
			}
			boot = n
		}
		var slot **bdmV2
		switch {
		case boot != 0:
		case b.SourceType == "image" && (b.DestinationType == "local" || b.DestinationType == ""):
			slot = &local
		case b.DestinationType == "volume" && (b.SourceType == "image" || b.SourceType == "volume"):
			slot = &root
		}
		if slot == nil {
			return rest.BadRequest("Block Device Mapping is Invalid: only a boot image or a boot volume (boot_index 0) is supported.")
		}
		if *slot != nil {
			return rest.BadRequest("Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.")
		}
		*slot = b
	}
	if local != nil && root != nil {
		if root.SourceType != "image" || local.UUID != root.UUID {
			return rest.BadRequest("Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.")
		}
		local = nil
	}
	if local != nil {
		if req.ImageRef != nil && *req.ImageRef != "" && *req.ImageRef != local.UUID {
			return rest.BadRequest("Block Device Mapping is Invalid: the boot image differs from imageRef.")
		}
		img := local.UUID
		req.ImageRef = &img
		return nil
	}
	if root == nil {
		return nil
	}
	dot, err := boolValue("delete_on_termination", root.DeleteOnTermination)
	if err != nil {
		return err
	}
	p.BootDelete = dot
	if root.SourceType == "image" {
		return s.parseBootImage(c, sn, root, p)
	}
	if !isUUID(root.UUID) {
		return rest.BadRequest("Block Device Mapping is Invalid: volume id %q is not valid.", root.UUID)
	}
	v, ok := sn.Volume(root.UUID)
	if !ok || !rest.Visible(s.b, c, v.ProjectID, false) {
		return rest.BadRequest("Block Device Mapping is Invalid: failed to get volume %s.", root.UUID)
	}
	if v.Status != statedb.VolumeAvailable {
		return rest.BadRequest("Invalid volume: volume %s status must be 'available', it is '%s'", v.ID, v.Status)
	}
	if p.Max > 1 {
		return rest.BadRequest("Block Device Mapping is Invalid: volume %s can boot one server only; max_count must be 1.", v.ID)
	}
	p.RootVolume = v.ID
	return nil
}

// parseBootImage checks a boot volume to be made from an image: the image
// is visible and active, volume_size is 1 to maxBootVolumeGB GB and holds
// the image (min_disk and virtual size), and the flavor's RAM its min_ram.
func (s *service) parseBootImage(c *rest.Ctx, sn *statedb.Snapshot, b *bdmV2, p *serverPlan) error {
	img, ok := sn.Image(b.UUID)
	if !isUUID(b.UUID) || !ok || !s.imageVisible(c, img) {
		return rest.BadRequest("Image %s could not be found.", b.UUID)
	}
	if img.Status != "active" {
		return rest.BadRequest("Image %s is not active.", img.ID)
	}
	if len(b.VolumeSize) == 0 || string(b.VolumeSize) == "null" {
		return rest.BadRequest("Block Device Mapping is Invalid: volume_size is required to boot from a new volume made from image %s.", img.ID)
	}
	size, err := intValue("volume_size", b.VolumeSize, rest.NovaInt)
	if err != nil {
		return err
	}
	switch {
	case size < 1:
		return rest.BadRequest("Invalid input for field/attribute volume_size. Value: %d. %d is less than the minimum of 1", size, size)
	case size > maxBootVolumeGB:
		return rest.BadRequest("Invalid input for field/attribute volume_size. Value: %d. %d is greater than the maximum of %d", size, size, maxBootVolumeGB)
	}
	vol, minDisk := int64(size)*gib, int64(img.MinDiskGB)*gib
	need := img.VirtualSize
	if need == 0 {
		need = img.Size
	}
	switch {
	case minDisk > vol:
		return rest.BadRequest("Volume is smaller than the minimum size specified in image metadata. Volume size is %d bytes, minimum size is %d bytes.", vol, minDisk)
	case need > vol:
		return rest.BadRequest("Volume is smaller than the image. Volume size is %d bytes, the image's virtual size is %d bytes.", vol, need)
	case img.MinRAMMB > p.Flavor.RAMMB:
		return rest.BadRequest("Flavor's memory is too small for requested image.")
	}
	if t := b.VolumeType; t != nil && *t != "" && *t != volumeType(sn) {
		return rest.BadRequest("Volume type %s could not be found.", *t)
	}
	p.BootImage, p.BootSizeGB = img, size
	p.Arch = imageArch(img)
	return nil
}

// imageArch is the architecture an image asks for, if any.
func imageArch(img *statedb.Image) string {
	if a := img.Properties["hw_architecture"]; a != "" {
		return a
	}
	return img.Properties["architecture"]
}

// volumeType is the cluster's only volume type, named after its storage
// backend.
func volumeType(sn *statedb.Snapshot) string {
	var storage string
	if cfg, ok := sn.Cluster(); ok {
		storage = cfg.Settings.Storage
	}
	return statedb.VolumeBackendType(storage)
}

// placedBoot reports whether new boot volume v is made with its server
// (on whichever host the server is placed, a requested one included): on
// local storage, once every member runs a release that applies
// CreateInstancesPlacedBoot (and CreateInstancesOnHost so).
func placedBoot(sn *statedb.Snapshot, v *statedb.Volume) bool {
	return !sn.VolumeShared(v) && statedb.Commands().Gate(sn, statedb.CmdCreateInstancesPlacedBoot) == nil
}

// placesBootVolume reports whether cmd makes a boot volume whose host its
// server's placement chooses.
func placesBootVolume(cmd statedb.CreateInstancesCmd) bool {
	for _, ic := range cmd.Instances {
		if ic.Root != nil && ic.Root.New != nil && ic.Root.New.Host == "" {
			return true
		}
	}
	return false
}

// rootDisk is the boot volume part of one instance's create: the volume
// to make from p.BootImage, or the reservation of p.RootVolume.
func (s *service) rootDisk(c *rest.Ctx, sn *statedb.Snapshot, p *serverPlan) (*statedb.RootDisk, error) {
	if p.BootImage == nil && p.RootVolume == "" {
		return nil, nil
	}
	r := &statedb.RootDisk{AttachmentID: s.b.NewID(), DeleteOnTermination: p.BootDelete}
	if p.BootImage == nil {
		return r, nil
	}
	v := &statedb.Volume{
		ID: s.b.NewID(), ProjectID: c.Cred.ProjectID, UserID: c.Cred.UserID, SizeGB: p.BootSizeGB,
		VolumeType: volumeType(sn), Format: bootVolumeFormat, Bootable: true, ImageID: p.BootImage.ID,
		AZ: p.AZ, Metadata: map[string]string{},
	}
	if placedBoot(sn, v) {
		// Local storage: the server's placement chooses the volume's host
		// and that host's agent its path (CreateInstancesPlacedBoot).
		r.New = v
		return r, nil
	}
	// Shared storage (any host can make the file, so this one names it),
	// or a cluster with a member of a release that places boot volumes
	// only this way.
	v.Host = s.b.HostID()
	path, err := s.b.VolumePath(statedb.VolumeFileBase(v.ID), v.Format)
	if err != nil {
		return nil, fmt.Errorf("boot volume path on host %s: %w", v.Host, err)
	}
	v.Path = path
	r.New = v
	return r, nil
}
