package statedb

import (
	"slices"
	"time"
)

// Images: Glance records. The bytes live in content-addressed blobs
// (sha256) on hosts or the shared store. Commands 100-129; apply functions
// live in images_apply.go.
const tblImages = "images"

var imageTables = []table{
	idTable(tblImages, func() any { return &Image{} }, "ProjectID", "Name"),
}

// Image is a Glance image.
type Image struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	ProjectID       string            `json:"project_id"` // owner
	Status          string            `json:"status"`     // queued, saving, active, killed, deleted, pending_delete
	Visibility      string            `json:"visibility"` // private, public, shared, community
	Protected       bool              `json:"protected"`
	Hidden          bool              `json:"os_hidden"`
	DiskFormat      string            `json:"disk_format"`
	ContainerFormat string            `json:"container_format"`
	MinDiskGB       int               `json:"min_disk"`
	MinRAMMB        int               `json:"min_ram"`
	Size            int64             `json:"size"`
	VirtualSize     int64             `json:"virtual_size"`
	Checksum        string            `json:"checksum"`                  // md5 hex
	HashAlgo        string            `json:"os_hash_algo"`              // sha512
	HashValue       string            `json:"os_hash_value"`             // sha512 hex
	SHA256          string            `json:"sha256"`                    // blob address
	Holders         []string          `json:"holders"`                   // member ids with the blob locally ("shared" = the shared store)
	DesiredHolders  []string          `json:"desired_holders,omitempty"` // member ids the leader wants to hold the blob (SetImageCopiesCmd)
	UploadHost      string            `json:"upload_host,omitempty"`     // while saving: the host receiving the bytes
	Properties      map[string]string `json:"properties"`
	Tags            []string          `json:"tags"`
	Members         []ImageMember     `json:"members"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
}

// ImageMember shares an image with a project.
type ImageMember struct {
	ProjectID string    `json:"member_id"`
	Status    string    `json:"status"` // pending, accepted, rejected
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Image returns an image by id.
func (sn *Snapshot) Image(id string) (*Image, bool) { return get[Image](sn, tblImages, id) }

// Images lists all images.
func (sn *Snapshot) Images() []*Image { return list[Image](sn, tblImages) }

// ImagesWithBlob lists the images (any status) whose bytes are the blob
// with sha256 sum.
func (sn *Snapshot) ImagesWithBlob(sum string) []*Image {
	var out []*Image
	for _, img := range list[Image](sn, tblImages) {
		if img.SHA256 == sum {
			out = append(out, img)
		}
	}
	return out
}

// ImagesOf lists the images owned by a project.
func (sn *Snapshot) ImagesOf(projectID string) []*Image {
	return listBy[Image](sn, tblImages, "ProjectID", projectID)
}

// HasHolder reports whether host holds the image's blob.
func (img *Image) HasHolder(host string) bool {
	for _, h := range img.Holders {
		if h == host {
			return true
		}
	}
	return false
}

// WantsHolder reports whether the leader wants host to hold the image's blob.
func (img *Image) WantsHolder(host string) bool { return slices.Contains(img.DesiredHolders, host) }

// MemberStatus returns a project's membership status of the image ("" if
// it is not a member).
func (img *Image) MemberStatus(projectID string) string {
	for _, m := range img.Members {
		if m.ProjectID == projectID {
			return m.Status
		}
	}
	return ""
}
