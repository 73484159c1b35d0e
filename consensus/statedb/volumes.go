package statedb

import "time"

// Volumes: Cinder volumes as files on the cluster's storage backend.
// Commands 180-219; apply functions live in volumes_apply.go.
const tblVolumes = "volumes"

var volumeTables = []table{
	idTable(tblVolumes, func() any { return &Volume{} }, "ProjectID", "Host"),
}

// Volume is a block storage volume.
type Volume struct {
	ID          string             `json:"id"`
	Name        string             `json:"name"`
	ProjectID   string             `json:"project_id"`
	UserID      string             `json:"user_id"`
	Description string             `json:"description"`
	SizeGB      int                `json:"size"`
	Status      string             `json:"status"` // creating, available, attaching, in-use, detaching, extending, deleting, error, error_deleting, error_extending
	VolumeType  string             `json:"volume_type"`
	Format      string             `json:"format"` // qcow2 or raw
	Bootable    bool               `json:"bootable"`
	ImageID     string             `json:"image_id,omitempty"`
	Host        string             `json:"host,omitempty"` // member that creates it; with local storage, where it lives
	Path        string             `json:"path"`           // file path or nfs:// URL
	AZ          string             `json:"availability_zone"`
	Metadata    map[string]string  `json:"metadata"`
	Attachments []VolumeAttachment `json:"attachments"`
	ErrorReason string             `json:"error_reason,omitempty"`
	// PrevSizeGB is the size before an extend in progress (status
	// extending); a failed extend returns to it. 0 otherwise.
	PrevSizeGB int       `json:"prev_size,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// VolumeAttachment ties a volume to a server on a host. A volume has at
// most one: attach is exclusive.
type VolumeAttachment struct {
	ID         string    `json:"attachment_id"`
	ServerID   string    `json:"server_id"`
	HostID     string    `json:"host_id"`
	Device     string    `json:"device"`
	State      string    `json:"state"` // attaching, attached, detaching
	AttachedAt time.Time `json:"attached_at"`
	// DeleteOnTermination: deleting the server deletes the volume; without
	// it the volume stays, available. Set by server create on a boot
	// volume's attachment, or asked for at attach (compute 2.79).
	DeleteOnTermination bool `json:"delete_on_termination,omitempty"`
	// Tag is the device tag given at attach (compute 2.49), "" for none.
	Tag string `json:"tag,omitempty"`
}

// Volume returns a volume by id.
func (sn *Snapshot) Volume(id string) (*Volume, bool) { return get[Volume](sn, tblVolumes, id) }

// Volumes lists all volumes.
func (sn *Snapshot) Volumes() []*Volume { return list[Volume](sn, tblVolumes) }

// VolumesOfProject lists a project's volumes.
func (sn *Snapshot) VolumesOfProject(projectID string) []*Volume {
	return listBy[Volume](sn, tblVolumes, "ProjectID", projectID)
}

// VolumesOnHost lists the volumes whose Host is hostID: with local
// storage, the volumes that live there.
func (sn *Snapshot) VolumesOnHost(hostID string) []*Volume {
	return listBy[Volume](sn, tblVolumes, "Host", hostID)
}

// VolumesAttachedTo lists the volumes with an attachment (in any state) to
// a server.
func (sn *Snapshot) VolumesAttachedTo(serverID string) []*Volume {
	var out []*Volume
	for _, v := range list[Volume](sn, tblVolumes) {
		if v.Attachment() != nil && v.Attachment().ServerID == serverID {
			out = append(out, v)
		}
	}
	return out
}

// Attachment returns the volume's attachment, or nil: attach is exclusive,
// so there is at most one.
func (v *Volume) Attachment() *VolumeAttachment {
	if len(v.Attachments) == 0 {
		return nil
	}
	return &v.Attachments[0]
}

// FileName is the name of the volume's file on the storage backend.
func (v *Volume) FileName() string { return VolumeFileBase(v.ID) + "." + v.Format }

// VolumeFileBase is the base name (no extension) of a volume's file.
func VolumeFileBase(id string) string { return "vol-" + id }
