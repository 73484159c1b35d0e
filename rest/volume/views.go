package volume

import (
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// volumeView is a volume as Cinder 3.0 renders it.
type volumeView struct {
	ID                 string            `json:"id"`
	Name               string            `json:"name"`
	Description        string            `json:"description"`
	Status             string            `json:"status"`
	Size               int               `json:"size"`
	AvailabilityZone   string            `json:"availability_zone"`
	CreatedAt          *string           `json:"created_at"`
	UpdatedAt          *string           `json:"updated_at"`
	Bootable           string            `json:"bootable"`
	Encrypted          bool              `json:"encrypted"`
	Multiattach        bool              `json:"multiattach"`
	ReplicationStatus  *string           `json:"replication_status"`
	SnapshotID         *string           `json:"snapshot_id"`
	SourceVolID        *string           `json:"source_volid"`
	ConsistencyGroupID *string           `json:"consistencygroup_id"`
	MigrationStatus    *string           `json:"migration_status"`
	VolumeType         string            `json:"volume_type"`
	UserID             string            `json:"user_id"`
	Metadata           map[string]string `json:"metadata"`
	Links              []link            `json:"links"`
	Attachments        []attachmentView  `json:"attachments"`
	TenantID           string            `json:"os-vol-tenant-attr:tenant_id"`
	Host               *string           `json:"os-vol-host-attr:host,omitempty"`
	ImageMetadata      map[string]string `json:"volume_image_metadata,omitempty"`
	// ErrorReason says why a volume is in an error status, or why the
	// last attach or detach failed (not a Cinder field; clients show it).
	ErrorReason string `json:"error_reason,omitempty"`
}

// attachmentView is an entry of a volume's attachments; like Cinder, id is
// the volume's id.
type attachmentView struct {
	ID           string  `json:"id"`
	AttachmentID string  `json:"attachment_id"`
	VolumeID     string  `json:"volume_id"`
	ServerID     string  `json:"server_id"`
	HostName     string  `json:"host_name"`
	Device       string  `json:"device"`
	AttachedAt   *string `json:"attached_at"`
}

// summaryView is an entry of the non-detail list.
type summaryView struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Links []link `json:"links"`
}

func volumeLinks(base string, v *statedb.Volume) []link {
	return []link{
		{Rel: "self", Href: base + "/volume/v3/" + v.ProjectID + "/volumes/" + v.ID},
		{Rel: "bookmark", Href: base + "/volume/" + v.ProjectID + "/volumes/" + v.ID},
	}
}

func memberName(sn *statedb.Snapshot, id string) string {
	if m, ok := sn.Member(id); ok {
		return m.Name
	}
	return id
}

// volumeJSON renders v; admin adds the host attribute.
func volumeJSON(sn *statedb.Snapshot, base string, v *statedb.Volume, admin bool) volumeView {
	md := v.Metadata
	if md == nil {
		md = map[string]string{}
	}
	bootable := "false"
	if v.Bootable {
		bootable = "true"
	}
	az := v.AZ
	if az == "" {
		az = AZ
	}
	out := volumeView{
		ID: v.ID, Name: v.Name, Description: v.Description, Status: v.Status, Size: v.SizeGB,
		AvailabilityZone: az, CreatedAt: fmtTime(v.CreatedAt), UpdatedAt: fmtTime(v.UpdatedAt),
		Bootable: bootable, VolumeType: v.VolumeType, UserID: v.UserID, Metadata: md,
		Links: volumeLinks(base, v), Attachments: []attachmentView{}, TenantID: v.ProjectID,
		ErrorReason: v.ErrorReason,
	}
	if admin && v.Host != "" {
		h := memberName(sn, v.Host) + "@" + v.VolumeType + "#" + v.VolumeType
		out.Host = &h
	}
	if v.ImageID != "" {
		out.ImageMetadata = map[string]string{"image_id": v.ImageID}
		if img, ok := sn.Image(v.ImageID); ok {
			out.ImageMetadata["image_name"] = img.Name
		}
	}
	for _, a := range v.Attachments {
		// Like Cinder, list attachments once they exist in the guest.
		if a.State != statedb.AttachAttached && a.State != statedb.AttachDetaching {
			continue
		}
		out.Attachments = append(out.Attachments, attachmentView{
			ID: v.ID, AttachmentID: a.ID, VolumeID: v.ID, ServerID: a.ServerID,
			HostName: memberName(sn, a.HostID), Device: a.Device, AttachedAt: fmtTime(a.AttachedAt),
		})
	}
	return out
}

func (s *service) render(c *rest.Ctx, sn *statedb.Snapshot, v *statedb.Volume) volumeView {
	return volumeJSON(sn, baseURL(c, sn), v, s.isAdmin(c))
}
