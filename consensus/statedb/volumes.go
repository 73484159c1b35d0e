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
	Status      string             `json:"status"` // creating, available, attaching, in-use, detaching, extending, deleting, error, error_deleting
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
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
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
}

// Volume returns a volume by id.
func (sn *Snapshot) Volume(id string) (*Volume, bool) { return get[Volume](sn, tblVolumes, id) }

// Volumes lists all volumes.
func (sn *Snapshot) Volumes() []*Volume { return list[Volume](sn, tblVolumes) }
