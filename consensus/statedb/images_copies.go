package statedb

import "slices"

// SetImageCopiesCmd records which hosts the leader wants to hold an
// active image's blob. Each of them fetches it and reports itself with
// ReportImageHolderCmd; a holder that is not listed keeps its copy as
// cache, which its host may evict. An empty list wants no host copy (the
// shared storage holds the image).
type SetImageCopiesCmd struct {
	ImageID string   `json:"image_id"`
	Hosts   []string `json:"hosts"`
}

// applySetImageCopies replaces an active image's desired holders. Every
// host must be a member: a host removed since the leader decided makes
// the command fail, and the leader decides again.
func applySetImageCopies(t *Txn, c *Command) error {
	r, err := decode[SetImageCopiesCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Image(r.ImageID)
	if !ok {
		return Errorf(KindNotFound, "No image found with ID %s", r.ImageID)
	}
	if old.Status != ImageActive {
		return Errorf(KindConflict, "image %s is %s, not active", r.ImageID, old.Status)
	}
	hosts := imageDedupe(r.Hosts)
	for _, h := range hosts {
		if h == "" || h == ImageHolderShared {
			return Errorf(KindInvalid, "a desired holder must be a member id, not %q", h)
		}
		if _, ok := t.read().Member(h); !ok {
			return Errorf(KindInvalid, "desired holder %s is not a member", h)
		}
	}
	if slices.Equal(hosts, old.DesiredHolders) {
		return nil
	}
	img := copyImage(old)
	img.DesiredHolders = hosts
	if len(hosts) == 0 {
		img.DesiredHolders = nil
	}
	return t.insert(tblImages, img)
}
