package statedb

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Cluster settings an admin changes at runtime (PATCH /cluster/v1/settings)
// with CmdUpdateSettings; see docs/checklist-command.md.

// Defaults of the settings whose zero value means "default".
const (
	// DefaultImageCopies is how many hosts hold each image with local
	// storage when Settings.ImageCopies is 0.
	DefaultImageCopies = 2
	// DefaultImageSizeLimit is the largest image upload, in bytes, when
	// Settings.ImageSizeLimit is 0.
	DefaultImageSizeLimit int64 = 64 << 30
)

// UpdateSettingsCmd is a patch of the cluster settings: nil fields stay as
// they are. Apply validates every field before it changes any.
type UpdateSettingsCmd struct {
	// Storage is "nfs://server/export[/path]" or "" for a local directory
	// on each host. Volumes and images made before a change stay where
	// they were made (Volume.Path; Settings.FormerStorage for images).
	Storage *string `json:"storage,omitempty"`
	// ImageCopies is how many hosts hold each image with local storage, >= 1.
	ImageCopies *int `json:"image_copies,omitempty"`
	// ImageSizeLimit is the largest image upload in bytes; 0 = the default.
	ImageSizeLimit *int64 `json:"image_size_limit,omitempty"`
	// FenceTimeout is T_fence (docs/ha.md), 2 s to 10 min; 0 = the default.
	// It and HADisabled are proposed with CmdUpdateHASettings, which an
	// older release cannot apply (fencetimeout.go); CmdUpdateSettings
	// entries already in a log with them replay as they applied.
	FenceTimeout *time.Duration `json:"fence_timeout,omitempty"`
	// HADisabled turns automatic restart of a failed host's servers off.
	HADisabled *bool `json:"ha_disabled,omitempty"`
}

// MaxImageCopies bounds ImageCopies to something a cluster can mean.
const MaxImageCopies = 1000

func applyUpdateSettings(t *Txn, c *Command) error {
	r, err := decode[UpdateSettingsCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Cluster()
	if !ok {
		return Errorf(KindConflict, "the cluster is not bootstrapped")
	}
	var storage string
	if r.Storage != nil && *r.Storage != "" {
		if err := CheckStorageURL(*r.Storage); err != nil {
			return err
		}
		storage = strings.TrimRight(*r.Storage, "/")
	}
	if r.ImageCopies != nil && (*r.ImageCopies < 1 || *r.ImageCopies > MaxImageCopies) {
		return Errorf(KindInvalid, "image_copies must be between 1 and %d, not %d", MaxImageCopies, *r.ImageCopies)
	}
	if r.ImageSizeLimit != nil && *r.ImageSizeLimit < 0 {
		return Errorf(KindInvalid, "image_size_limit must be >= 0 bytes (0 = the default), not %d", *r.ImageSizeLimit)
	}
	if err := checkHASettings(r); err != nil {
		return err
	}
	cfg := *old
	s := &cfg.Settings
	setHASettings(s, r, c.Type == CmdUpdateHASettings)
	s.FormerStorage = slices.Clone(s.FormerStorage)
	if r.Storage != nil && storage != s.Storage {
		s.FormerStorage = formerStorage(s.FormerStorage, s.Storage, storage)
		s.Storage = storage
	}
	if r.ImageCopies != nil {
		s.ImageCopies = *r.ImageCopies
	}
	if r.ImageSizeLimit != nil {
		s.ImageSizeLimit = *r.ImageSizeLimit
	}
	return t.insert(tblMeta, &cfg)
}

// formerStorage is the list of earlier NFS backends after a change from
// old to next: old first (if it was a share), next dropped (it is current
// again), each once.
func formerStorage(former []string, old, next string) []string {
	var out []string
	if VolumeBackendType(old) == VolumeTypeNFS {
		out = append(out, old)
	}
	for _, f := range former {
		if f != next && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// CheckStorageURL accepts a cluster storage setting of the form
// nfs://server/export[/path] (no port, user, query or fragment: libnfs
// finds the server's ports through its portmapper). It is the rule the
// state machine applies; "" (local storage) is the caller's case.
func CheckStorageURL(s string) error {
	bad := func(why string) error {
		return Errorf(KindInvalid, "storage %q: %s; want nfs://server/export[/path]", s, why)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return bad("not a URL")
	case u.Scheme != "nfs" || !strings.HasPrefix(s, "nfs://"):
		return bad("the scheme must be nfs://")
	case u.Opaque != "" || u.User != nil:
		return bad("user info is not supported")
	case u.Hostname() == "":
		return bad("the server is missing")
	case u.Port() != "":
		return bad("a port is not supported")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return bad("query parameters and fragments are not supported")
	case strings.Contains(s, "%"):
		return bad("escaped characters are not supported")
	case len(strings.TrimRight(u.Path, "/")) < 2:
		return bad("the export path is missing")
	case strings.Contains(u.Path, "//"):
		return bad("empty path segments are not allowed")
	}
	for _, seg := range strings.Split(u.Path[1:], "/") {
		if seg == "." || seg == ".." {
			return bad("'.' and '..' segments are not allowed")
		}
	}
	// The characters libnfs URLs and hv/storage's parser accept.
	if i := strings.IndexFunc(u.Path, func(r rune) bool { return !storageRune(r, "._~+=,@:/-") }); i >= 0 {
		return bad(fmt.Sprintf("character %q is not allowed in the path", u.Path[i:i+1]))
	}
	if i := strings.IndexFunc(u.Hostname(), func(r rune) bool { return !storageRune(r, ".-:") }); i >= 0 {
		return bad(fmt.Sprintf("character %q is not allowed in the server name", u.Hostname()[i:i+1]))
	}
	return nil
}

func storageRune(r rune, extra string) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(extra, r)
}

// EffectiveImageCopies is ImageCopies, or DefaultImageCopies when unset.
func (s *Settings) EffectiveImageCopies() int {
	if s.ImageCopies > 0 {
		return s.ImageCopies
	}
	return DefaultImageCopies
}

// EffectiveImageSizeLimit is ImageSizeLimit, or DefaultImageSizeLimit
// when unset.
func (s *Settings) EffectiveImageSizeLimit() int64 {
	if s.ImageSizeLimit > 0 {
		return s.ImageSizeLimit
	}
	return DefaultImageSizeLimit
}

// VolumeShared reports whether v's file is on shared storage, so any host
// may open it: its recorded path is an nfs:// URL. A volume without a path
// yet follows the cluster's current setting. It is the per-volume form of
// the check the attach and host-gone rules need once the storage setting
// can change under existing volumes.
func (sn *Snapshot) VolumeShared(v *Volume) bool {
	if v.Path != "" {
		return VolumeBackendType(v.Path) == VolumeTypeNFS
	}
	cfg, ok := sn.Cluster()
	return ok && VolumeBackendType(cfg.Settings.Storage) == VolumeTypeNFS
}
