package statedb

import "slices"

// Image statuses, as Glance names them.
const (
	ImageQueued  = "queued"
	ImageSaving  = "saving"
	ImageActive  = "active"
	ImageKilled  = "killed"
	ImageDeleted = "deleted"
)

// Image member statuses.
const (
	ImageMemberPending  = "pending"
	ImageMemberAccepted = "accepted"
	ImageMemberRejected = "rejected"
)

// ImageHolderShared is the holder id of the cluster's shared storage.
const ImageHolderShared = "shared"

// Limits apply enforces (Glance's defaults).
const (
	MaxImageTags    = 128
	MaxImageMembers = 128
	imageMaxName    = 255
	imageMaxTag     = 255
)

// ValidImageDiskFormat reports whether f is a disk format peerstack accepts
// ("" = not set yet).
func ValidImageDiskFormat(f string) bool { return f == "" || f == "qcow2" || f == "raw" || f == "iso" }

// ValidImageContainerFormat reports whether f is a container format peerstack
// accepts ("" = not set yet).
func ValidImageContainerFormat(f string) bool { return f == "" || f == "bare" }

// ValidImageVisibility reports whether v is a Glance visibility.
func ValidImageVisibility(v string) bool {
	return v == "private" || v == "public" || v == "shared" || v == "community"
}

// ValidBlobSum reports whether s is a lowercase hex sha256.
func ValidBlobSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// liveImage returns an image that exists and is not deleted.
func liveImage(t *Txn, id string) (*Image, error) {
	img, ok := t.read().Image(id)
	if !ok || img.Status == ImageDeleted {
		return nil, Errorf(KindNotFound, "No image found with ID %s", id)
	}
	return img, nil
}

// copyImage returns a deep copy an apply function may change.
func copyImage(img *Image) *Image {
	cp := *img
	cp.Holders = slices.Clone(img.Holders)
	cp.DesiredHolders = slices.Clone(img.DesiredHolders)
	cp.Tags = slices.Clone(img.Tags)
	cp.Members = slices.Clone(img.Members)
	cp.Properties = make(map[string]string, len(img.Properties))
	for k, v := range img.Properties {
		cp.Properties[k] = v
	}
	return &cp
}

func validateImageFields(img *Image) error {
	switch {
	case len(img.Name) > imageMaxName:
		return Errorf(KindInvalid, "image name is longer than %d characters", imageMaxName)
	case !ValidImageDiskFormat(img.DiskFormat):
		return Errorf(KindInvalid, "Invalid disk format '%s' for image.", img.DiskFormat)
	case !ValidImageContainerFormat(img.ContainerFormat):
		return Errorf(KindInvalid, "Invalid container format '%s' for image.", img.ContainerFormat)
	case !ValidImageVisibility(img.Visibility):
		return Errorf(KindInvalid, "Invalid visibility value: %s", img.Visibility)
	case img.MinDiskGB < 0 || img.MinRAMMB < 0:
		return Errorf(KindInvalid, "min_disk and min_ram must be >= 0")
	case len(img.Tags) > MaxImageTags:
		return Errorf(KindInvalid, "an image may have at most %d tags", MaxImageTags)
	}
	for _, tag := range img.Tags {
		if tag == "" || len(tag) > imageMaxTag {
			return Errorf(KindInvalid, "image tags must be 1 to %d characters", imageMaxTag)
		}
	}
	return nil
}

// imageDedupe keeps the first occurrence of each string, in order.
func imageDedupe(xs []string) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func applyCreateImage(t *Txn, c *Command) error {
	in, err := decode[Image](c)
	if err != nil {
		return err
	}
	img, err := newQueuedImage(t, c, in, "shared")
	if err != nil {
		return err
	}
	return t.insert(tblImages, img)
}

// newQueuedImage checks a new image's record (owner, unused id, fields,
// limits) and returns it queued, with nothing uploaded and no holders;
// visibility is the default when the request names none.
func newQueuedImage(t *Txn, c *Command, in *Image, visibility string) (*Image, error) {
	if in.ID == "" || in.ProjectID == "" {
		return nil, Errorf(KindInvalid, "image needs an id and an owner")
	}
	if _, ok := t.read().Image(in.ID); ok {
		return nil, Errorf(KindConflict, "Image with identifier %s already exists!", in.ID)
	}
	img := copyImage(in)
	if img.Visibility == "" {
		img.Visibility = visibility
	}
	img.Tags = imageDedupe(img.Tags)
	if err := validateImageFields(img); err != nil {
		return nil, err
	}
	if err := checkImageLimits(t, img); err != nil {
		return nil, err
	}
	img.Status = ImageQueued
	img.Size, img.VirtualSize = 0, 0
	img.Checksum, img.HashAlgo, img.HashValue, img.SHA256 = "", "", "", ""
	img.Holders, img.DesiredHolders, img.Members, img.UploadHost = nil, nil, nil, ""
	img.CreatedAt, img.UpdatedAt = c.Time, c.Time
	return img, nil
}

// UpdateImageCmd changes the mutable attributes of an image; nil fields
// stay. SetProps adds or replaces extra properties; RemoveProps removes
// existing ones (a missing one is a conflict, as in Glance).
type UpdateImageCmd struct {
	ID              string            `json:"id"`
	Name            *string           `json:"name,omitempty"`
	Visibility      *string           `json:"visibility,omitempty"`
	Protected       *bool             `json:"protected,omitempty"`
	Hidden          *bool             `json:"os_hidden,omitempty"`
	MinDiskGB       *int              `json:"min_disk,omitempty"`
	MinRAMMB        *int              `json:"min_ram,omitempty"`
	DiskFormat      *string           `json:"disk_format,omitempty"`
	ContainerFormat *string           `json:"container_format,omitempty"`
	Tags            *[]string         `json:"tags,omitempty"`
	SetProps        map[string]string `json:"set_props,omitempty"`
	RemoveProps     []string          `json:"remove_props,omitempty"`
}

func applyUpdateImage(t *Txn, c *Command) error {
	u, err := decode[UpdateImageCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, u.ID)
	if err != nil {
		return err
	}
	img := copyImage(old)
	if u.Name != nil {
		img.Name = *u.Name
	}
	if u.Visibility != nil {
		img.Visibility = *u.Visibility
	}
	if u.Protected != nil {
		img.Protected = *u.Protected
	}
	if u.Hidden != nil {
		img.Hidden = *u.Hidden
	}
	if u.MinDiskGB != nil {
		img.MinDiskGB = *u.MinDiskGB
	}
	if u.MinRAMMB != nil {
		img.MinRAMMB = *u.MinRAMMB
	}
	if u.DiskFormat != nil || u.ContainerFormat != nil {
		if old.Status != ImageQueued {
			return Errorf(KindForbidden, "disk_format and container_format can only be changed while the image is queued")
		}
		if u.DiskFormat != nil {
			img.DiskFormat = *u.DiskFormat
		}
		if u.ContainerFormat != nil {
			img.ContainerFormat = *u.ContainerFormat
		}
	}
	if u.Tags != nil {
		img.Tags = imageDedupe(*u.Tags)
	}
	for _, k := range u.RemoveProps {
		if _, ok := img.Properties[k]; !ok {
			return Errorf(KindConflict, "Property %s does not exist.", k)
		}
		delete(img.Properties, k)
	}
	for k, v := range u.SetProps {
		if k == "" {
			return Errorf(KindInvalid, "property names must not be empty")
		}
		img.Properties[k] = v
	}
	if err := validateImageFields(img); err != nil {
		return err
	}
	if err := checkImageLimits(t, img); err != nil {
		return err
	}
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

// ImageRef names one image.
type ImageRef struct {
	ID string `json:"id"`
}

// applyDeleteImage marks an image deleted. A record no host holds goes at
// once; otherwise it stays (invisible to the API) until every holder has
// released its copy (ReportImageHolder with Drop), so holders learn which
// blobs to remove.
func applyDeleteImage(t *Txn, c *Command) error {
	r, err := decode[ImageRef](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ID)
	if err != nil {
		return err
	}
	if old.Protected {
		return Errorf(KindForbidden, "Image %s is protected and cannot be deleted.", r.ID)
	}
	if len(old.Holders) == 0 {
		return t.delete(tblImages, old)
	}
	img := copyImage(old)
	img.Status = ImageDeleted
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

// ImageUploadCmd moves an image into saving (start) or killed (kill).
type ImageUploadCmd struct {
	ID     string `json:"id"`
	HostID string `json:"host_id"`
}

func applyStartImageUpload(t *Txn, c *Command) error {
	r, err := decode[ImageUploadCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ID)
	if err != nil {
		return err
	}
	if old.Status != ImageQueued {
		return Errorf(KindConflict, "Image status transition from %s to saving is not allowed", old.Status)
	}
	if old.DiskFormat == "" || old.ContainerFormat == "" {
		return Errorf(KindInvalid, "Properties disk_format, container_format must be set prior to saving data.")
	}
	img := copyImage(old)
	img.Status = ImageSaving
	img.UploadHost = r.HostID
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

func applyKillImage(t *Txn, c *Command) error {
	r, err := decode[ImageUploadCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ID)
	if err != nil {
		return err
	}
	if old.Status != ImageSaving {
		return Errorf(KindConflict, "Image status transition from %s to killed is not allowed", old.Status)
	}
	img := copyImage(old)
	img.Status = ImageKilled
	img.UploadHost = ""
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

// FinishImageUploadCmd records an upload's result: the blob address, its
// checksums and the holders that have it (the uploading host, and
// ImageHolderShared when the blob was written to the shared storage too).
type FinishImageUploadCmd struct {
	ID          string   `json:"id"`
	Size        int64    `json:"size"`
	VirtualSize int64    `json:"virtual_size"`
	Checksum    string   `json:"checksum"`
	HashAlgo    string   `json:"os_hash_algo"`
	HashValue   string   `json:"os_hash_value"`
	SHA256      string   `json:"sha256"`
	Holders     []string `json:"holders"`
}

func applyFinishImageUpload(t *Txn, c *Command) error {
	r, err := decode[FinishImageUploadCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ID)
	if err != nil {
		return err
	}
	switch {
	case old.Status != ImageSaving:
		return Errorf(KindConflict, "Image status transition from %s to active is not allowed", old.Status)
	case !ValidBlobSum(r.SHA256):
		return Errorf(KindInvalid, "invalid blob address %q", r.SHA256)
	case r.Size < 0 || r.VirtualSize < 0:
		return Errorf(KindInvalid, "sizes must be >= 0")
	case len(r.Holders) == 0 || slices.Contains(r.Holders, ""):
		return Errorf(KindInvalid, "an uploaded image needs a holder")
	}
	img := copyImage(old)
	img.Status = ImageActive
	img.Size, img.VirtualSize = r.Size, r.VirtualSize
	img.Checksum, img.HashAlgo, img.HashValue, img.SHA256 = r.Checksum, r.HashAlgo, r.HashValue, r.SHA256
	img.Holders = imageDedupe(r.Holders)
	img.UploadHost = ""
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

// ImageTagCmd adds or removes one tag.
type ImageTagCmd struct {
	ID  string `json:"id"`
	Tag string `json:"tag"`
}

func applyAddImageTag(t *Txn, c *Command) error {
	r, err := decode[ImageTagCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ID)
	if err != nil {
		return err
	}
	if slices.Contains(old.Tags, r.Tag) {
		return nil
	}
	img := copyImage(old)
	img.Tags = append(img.Tags, r.Tag)
	if err := validateImageFields(img); err != nil {
		return err
	}
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

func applyRemoveImageTag(t *Txn, c *Command) error {
	r, err := decode[ImageTagCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ID)
	if err != nil {
		return err
	}
	i := slices.Index(old.Tags, r.Tag)
	if i < 0 {
		return Errorf(KindNotFound, "Tag %s not found on image %s", r.Tag, r.ID)
	}
	img := copyImage(old)
	img.Tags = slices.Delete(img.Tags, i, i+1)
	img.UpdatedAt = c.Time
	return t.insert(tblImages, img)
}

// ImageMemberCmd adds, updates (Status) or removes a member of a shared
// image.
type ImageMemberCmd struct {
	ImageID  string `json:"image_id"`
	MemberID string `json:"member_id"`
	Status   string `json:"status,omitempty"`
}

func imageMemberIndex(img *Image, project string) int {
	return slices.IndexFunc(img.Members, func(m ImageMember) bool { return m.ProjectID == project })
}

func applyAddImageMember(t *Txn, c *Command) error {
	r, err := decode[ImageMemberCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ImageID)
	if err != nil {
		return err
	}
	switch {
	case r.MemberID == "":
		return Errorf(KindInvalid, "a member needs a project id")
	case old.Visibility != "shared":
		return Errorf(KindForbidden, "Only shared images have members.")
	case imageMemberIndex(old, r.MemberID) >= 0:
		return Errorf(KindConflict, "Member %s already exists on image %s", r.MemberID, r.ImageID)
	case len(old.Members) >= MaxImageMembers:
		return Errorf(KindInvalid, "an image may have at most %d members", MaxImageMembers)
	}
	img := copyImage(old)
	img.Members = append(img.Members, ImageMember{ProjectID: r.MemberID, Status: ImageMemberPending, CreatedAt: c.Time, UpdatedAt: c.Time})
	return t.insert(tblImages, img)
}

func applyUpdateImageMember(t *Txn, c *Command) error {
	r, err := decode[ImageMemberCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ImageID)
	if err != nil {
		return err
	}
	if r.Status != ImageMemberPending && r.Status != ImageMemberAccepted && r.Status != ImageMemberRejected {
		return Errorf(KindInvalid, "Invalid status: %s", r.Status)
	}
	i := imageMemberIndex(old, r.MemberID)
	if i < 0 {
		return Errorf(KindNotFound, "Member %s not found on image %s", r.MemberID, r.ImageID)
	}
	img := copyImage(old)
	img.Members[i].Status, img.Members[i].UpdatedAt = r.Status, c.Time
	return t.insert(tblImages, img)
}

func applyRemoveImageMember(t *Txn, c *Command) error {
	r, err := decode[ImageMemberCmd](c)
	if err != nil {
		return err
	}
	old, err := liveImage(t, r.ImageID)
	if err != nil {
		return err
	}
	i := imageMemberIndex(old, r.MemberID)
	if i < 0 {
		return Errorf(KindNotFound, "Member %s not found on image %s", r.MemberID, r.ImageID)
	}
	img := copyImage(old)
	img.Members = slices.Delete(img.Members, i, i+1)
	return t.insert(tblImages, img)
}

// applyReportImageHolder adds a holder to an active image, or drops one
// from any image. When the last holder of a deleted image drops, the
// record goes.
func applyReportImageHolder(t *Txn, c *Command) error {
	r, err := decode[ReportImageHolderCmd](c)
	if err != nil {
		return err
	}
	if r.HostID == "" {
		return Errorf(KindInvalid, "a holder needs a host id")
	}
	old, ok := t.read().Image(r.ImageID)
	if !ok {
		return Errorf(KindNotFound, "No image found with ID %s", r.ImageID)
	}
	i := slices.Index(old.Holders, r.HostID)
	if r.Drop {
		if i < 0 {
			return nil
		}
		img := copyImage(old)
		img.Holders = slices.Delete(img.Holders, i, i+1)
		if img.Status == ImageDeleted && len(img.Holders) == 0 {
			return t.delete(tblImages, old)
		}
		return t.insert(tblImages, img)
	}
	if old.Status != ImageActive {
		return Errorf(KindConflict, "image %s is %s, not active", r.ImageID, old.Status)
	}
	if i >= 0 {
		return nil
	}
	img := copyImage(old)
	img.Holders = append(img.Holders, r.HostID)
	return t.insert(tblImages, img)
}
