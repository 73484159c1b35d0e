// Package image serves the Glance v2 image API under /image (discovery,
// images, data upload and download, JSON-patch updates, tags, members,
// schemas) in the shapes the openstack client 6.0 and gophercloud v2
// expect, plus the internal host-to-host routes under /internal/v1 that
// move image blobs between hosts.
//
// It owns decoding, policy checks, format checks on uploaded bytes and
// encoding. It must not touch files or other hosts itself: blob storage,
// fetching and host identity come through Backend, which node implements,
// and every write is a statedb command proposed through rest.Propose.
package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Backend is what the image API needs beyond rest.Backend.
type Backend interface {
	rest.Backend
	// HostID is this host's member id.
	HostID() string
	// MaxImageSize is the largest upload accepted, in bytes.
	MaxImageSize() int64
	// NewBlob starts writing uploaded bytes on this host.
	NewBlob(ctx context.Context) (BlobWriter, error)
	// OpenImage opens an active image's bytes wherever they are: this
	// host's copy, the shared storage or a stream from a holder.
	OpenImage(ctx context.Context, img *statedb.Image) (io.ReadCloser, error)
	// DropBlob removes this host's copy of a blob unless an image record
	// or a local disk still uses it (after an upload whose record went).
	DropBlob(ctx context.Context, sum string) error

	// Internal API, called by other hosts.

	// OpenLocalBlob opens a blob this host holds (ErrNoBlob if none).
	OpenLocalBlob(sum string) (io.ReadCloser, int64, error)
	// VerifyBlob re-hashes a local blob and removes it when corrupt
	// (ErrCorrupt).
	VerifyBlob(ctx context.Context, sum string) error
}

// BlobWriter receives uploaded bytes, hashing them as they stream.
type BlobWriter interface {
	io.Writer
	// ReadFrom streams a reader into the blob, reading ahead while it
	// hashes and writes.
	io.ReaderFrom
	// Inspect reads the format of what was written (from headers only).
	Inspect() (Inspection, error)
	// Commit stores the bytes under their sha256 (and on the shared
	// storage when there is one) and returns the sums and the holders to
	// record.
	Commit(ctx context.Context) (BlobResult, error)
	// Abort drops what was written; safe after Commit.
	Abort()
}

// Inspection is what the uploaded bytes really are.
type Inspection struct {
	Format      string // qcow2, raw, iso, or another recognised format
	VirtualSize int64
	BackingFile string // a qcow2's backing file, "" if none
	DataFile    bool   // a qcow2 with an external data file
}

// BlobResult is a committed blob: size, checksums (hex) and holders.
type BlobResult struct {
	Size    int64
	MD5     string
	SHA256  string
	SHA512  string
	Holders []string
}

// Sentinel errors Backend implementations return (wrapped).
var (
	ErrCorrupt = errors.New("blob is corrupt")
	ErrNoBlob  = errors.New("no such blob on this host")
)

// timeFormat is Glance's date format (RFC 3339, UTC, "Z").
const timeFormat = "2006-01-02T15:04:05Z"

// Media types.
const (
	octetStream = "application/octet-stream"
	patchV21    = "application/openstack-images-v2.1-json-patch"
	patchV20    = "application/openstack-images-v2.0-json-patch"
)

// Service returns the /image routes and the internal blob routes.
func Service(b Backend) rest.Service {
	s := &service{b: b}
	const (
		get, post, put, patch, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete
		public, token, internal    = rest.Public, rest.Token, rest.Internal
	)
	img := "/image/v2/images/{image_id}"
	return rest.Service{
		Prefix: "",
		Errors: glanceErrors,
		Routes: []rest.Route{
			{Method: get, Path: "/image", Auth: public, Handler: s.versions},
			{Method: get, Path: "/image/v2", Auth: public, Handler: s.versions},

			{Method: get, Path: "/image/v2/images", Auth: token, Handler: s.list},
			{Method: post, Path: "/image/v2/images", Auth: token, Handler: s.create},
			{Method: get, Path: img, Auth: token, Handler: s.show},
			{Method: patch, Path: img, Auth: token, Handler: s.update},
			{Method: del, Path: img, Auth: token, Handler: s.delete},
			{Method: put, Path: img + "/file", Auth: token, Handler: s.upload},
			{Method: get, Path: img + "/file", Auth: token, Handler: s.download},
			{Method: put, Path: img + "/tags/{tag}", Auth: token, Handler: s.addTag},
			{Method: del, Path: img + "/tags/{tag}", Auth: token, Handler: s.removeTag},
			{Method: get, Path: img + "/members", Auth: token, Handler: s.listMembers},
			{Method: post, Path: img + "/members", Auth: token, Handler: s.addMember},
			{Method: get, Path: img + "/members/{member_id}", Auth: token, Handler: s.showMember},
			{Method: put, Path: img + "/members/{member_id}", Auth: token, Handler: s.updateMember},
			{Method: del, Path: img + "/members/{member_id}", Auth: token, Handler: s.removeMember},

			{Method: get, Path: "/image/v2/schemas/image", Auth: token, Handler: s.schemaImage},
			{Method: get, Path: "/image/v2/schemas/images", Auth: token, Handler: s.schemaImages},
			{Method: get, Path: "/image/v2/schemas/member", Auth: token, Handler: s.schemaMember},
			{Method: get, Path: "/image/v2/schemas/members", Auth: token, Handler: s.schemaMembers},

			{Method: get, Path: "/internal/v1/blobs/{sha256}", Auth: internal, Handler: s.blob},
			{Method: post, Path: "/internal/v1/blobs/{sha256}/verify", Auth: internal, Handler: s.verify},
		},
	}
}

type service struct{ b Backend }

// glanceErrors renders errors the way Glance's webob does: plain text
// with the status line first. Clients only look at the code.
func glanceErrors(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s\n\n%s\n\n", status, title, msg)
}

// versions serves the discovery document: unauthenticated,
// status CURRENT, self link to /image/v2/.
func (s *service) versions(c *rest.Ctx) (any, error) {
	return map[string]any{"versions": []map[string]any{{
		"id": "v2.0", "status": "CURRENT",
		"links": []map[string]string{{"rel": "self", "href": rest.BaseURL(c.R) + "/image/v2/"}},
	}}}, nil
}

// unsupportedMedia is a 415.
func unsupportedMedia(format string, args ...any) error {
	return &rest.HTTPError{Status: http.StatusUnsupportedMediaType, Msg: fmt.Sprintf(format, args...)}
}

// tooLarge is a 413.
func tooLarge(format string, args ...any) error {
	return &rest.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf(format, args...)}
}

// loadImage returns a live image the caller may access, or 404/403.
func (s *service) loadImage(c *rest.Ctx, access rest.Access) (*statedb.Image, error) {
	id := c.Var("image_id")
	img, ok := s.b.State().Image(id)
	if !ok || img.Status == statedb.ImageDeleted {
		return nil, rest.NotFoundf("No image found with ID %s", id)
	}
	if err := s.check(c, img, access); err != nil {
		return nil, err
	}
	return img, nil
}

// check applies the policy to one image: public and community images are
// readable by all; a shared image by its members (any member status, so a
// member can accept it); everything else only inside its project.
func (s *service) check(c *rest.Ctx, img *statedb.Image, access rest.Access) error {
	public := img.Visibility == "public" || img.Visibility == "community"
	if access == rest.Read && img.Visibility == "shared" && c.Cred != nil && img.MemberStatus(c.Cred.ProjectID) != "" {
		public = true
	}
	err := rest.Check(s.b, c, access, img.ProjectID, public, "Image "+img.ID)
	var he *rest.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusNotFound {
		return rest.NotFoundf("No image found with ID %s", img.ID)
	}
	return err
}

// isAdmin reports whether the caller holds the admin role.
func isAdmin(c *rest.Ctx) bool { return c.Cred != nil && c.Cred.IsAdmin() }
