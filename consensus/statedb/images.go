package statedb

import "time"

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
	Checksum        string            `json:"checksum"`      // md5 hex
	HashAlgo        string            `json:"os_hash_algo"`  // sha512
	HashValue       string            `json:"os_hash_value"` // sha512 hex
	SHA256          string            `json:"sha256"`        // blob address
	Holders         []string          `json:"holders"`       // member ids with the blob locally ("shared" = the shared store)
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
