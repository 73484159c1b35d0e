package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// errRead marks a failure reading the request body (the client's fault),
// as opposed to writing the blob (ours).
type errRead struct{ err error }

func (e *errRead) Error() string { return "read upload: " + e.err.Error() }
func (e *errRead) Unwrap() error { return e.err }

// bodyReader marks a failure reading the request body as *errRead, so it
// can be told apart from a failure writing the blob.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &errRead{err}
	}
	return n, err
}

// formatMatches reports whether bytes of format real may be stored as the
// declared disk format. An ISO is also a valid raw disk.
func formatMatches(declared, real string) bool {
	switch declared {
	case "qcow2":
		return real == "qcow2"
	case "iso":
		return real == "iso"
	case "raw":
		return real == "raw" || real == "iso"
	}
	return false
}

// upload serves PUT /v2/images/{id}/file: the body is streamed to a blob
// while md5, sha256 and sha512 are computed, the format is checked, and
// the image goes queued → saving → active (or killed on any failure).
func (s *service) upload(c *rest.Ctx) (any, error) {
	img, err := s.loadImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(c.R.Header.Get("Content-Type")); mt != octetStream {
		return nil, unsupportedMedia("Content-Type must be %s for image data.", octetStream)
	}
	if img.Status != statedb.ImageQueued {
		return nil, rest.Conflictf("Image status transition from %s to saving is not allowed", img.Status)
	}
	if img.DiskFormat == "" || img.ContainerFormat == "" {
		return nil, rest.BadRequest("Properties disk_format, container_format must be set prior to saving data.")
	}
	limit := s.b.MaxImageSize()
	if c.R.ContentLength > limit {
		return nil, tooLarge("Image exceeds the storage quota: %d bytes is over the %d byte limit.", c.R.ContentLength, limit)
	}
	ctx := c.Context()
	if _, err := rest.Propose(ctx, s.b, statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: img.ID, HostID: s.b.HostID()}); err != nil {
		return nil, err
	}
	res, err := s.receive(ctx, c.R, img, limit)
	if err != nil {
		s.kill(ctx, img.ID)
		return nil, err
	}
	fin := statedb.FinishImageUploadCmd{ID: img.ID, Size: res.Size, VirtualSize: res.VirtualSize, Checksum: res.MD5,
		HashAlgo: "sha512", HashValue: res.SHA512, SHA256: res.SHA256, Holders: res.Holders}
	if _, err := rest.Propose(ctx, s.b, statedb.CmdFinishImageUpload, fin); err != nil {
		// The image went (deleted) or moved on meanwhile: the bytes may
		// now belong to nothing.
		_ = s.b.DropBlob(context.WithoutCancel(ctx), res.SHA256)
		s.kill(ctx, img.ID)
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}

// received is a committed upload.
type received struct {
	BlobResult
	VirtualSize int64
}

// receive streams and checks the body; nothing is committed unless it is
// complete, within the limit and of the declared format.
func (s *service) receive(ctx context.Context, r *http.Request, img *statedb.Image, limit int64) (*received, error) {
	w, err := s.b.NewBlob(ctx)
	if err != nil {
		return nil, storageUnavailable(err)
	}
	defer w.Abort()
	// The blob writer reads ahead while it hashes and writes.
	n, err := w.ReadFrom(bodyReader{io.LimitReader(r.Body, limit+1)})
	var re *errRead
	switch {
	case errors.As(err, &re):
		return nil, rest.BadRequest("Image data was truncated or unreadable after %d bytes: %v", n, re.err)
	case err != nil:
		return nil, fmt.Errorf("store image %s: %w", img.ID, err)
	case n > limit:
		return nil, tooLarge("Image exceeds the size limit of %d bytes.", limit)
	case r.ContentLength >= 0 && n != r.ContentLength:
		return nil, rest.BadRequest("Image data was truncated: got %d of %d bytes.", n, r.ContentLength)
	}
	info, err := w.Inspect()
	if err != nil {
		return nil, rest.BadRequest("Image data is not a valid %s image: %v", img.DiskFormat, err)
	}
	if !formatMatches(img.DiskFormat, info.Format) {
		return nil, rest.BadRequest("Image data is %s, not the declared disk_format %s.", info.Format, img.DiskFormat)
	}
	if info.BackingFile != "" {
		return nil, rest.BadRequest("Image has a backing file (%q); images must be self-contained.", info.BackingFile)
	}
	if info.DataFile {
		return nil, rest.BadRequest("Image has an external data file; images must be self-contained.")
	}
	res, err := w.Commit(ctx)
	if err != nil {
		return nil, storageUnavailable(fmt.Errorf("store image %s: %w", img.ID, err))
	}
	return &received{BlobResult: res, VirtualSize: info.VirtualSize}, nil
}

// kill marks a failed upload's image killed, even if the client is gone.
func (s *service) kill(ctx context.Context, id string) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, _ = rest.Propose(kctx, s.b, statedb.CmdKillImage, statedb.ImageUploadCmd{ID: id, HostID: s.b.HostID()})
}

// download serves GET /v2/images/{id}/file, streamed, with Content-MD5;
// an image without data answers 204 like Glance.
func (s *service) download(c *rest.Ctx) (any, error) {
	img, err := s.loadImage(c, rest.Read)
	if err != nil {
		return nil, err
	}
	if img.Status != statedb.ImageActive {
		return &rest.Response{Status: http.StatusNoContent}, nil
	}
	rc, err := s.b.OpenImage(c.Context(), img)
	if err != nil {
		return nil, &rest.HTTPError{Status: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"10"}},
			Msg: fmt.Sprintf("The data of image %s is not reachable right now: %v", img.ID, err)}
	}
	return &rest.Response{Status: http.StatusOK, Raw: rc, Close: func() { rc.Close() }, Header: http.Header{
		"Content-Type":   {octetStream},
		"Content-Md5":    {img.Checksum},
		"Content-Length": {strconv.FormatInt(img.Size, 10)},
	}}, nil
}

// storageUnavailable tells the client that the image store (e.g. the NFS
// server) failed, with the cause, instead of a bare 500.
func storageUnavailable(err error) error {
	return &rest.HTTPError{Status: http.StatusServiceUnavailable,
		Msg: fmt.Sprintf("Image storage is unavailable: %v", err), Header: http.Header{"Retry-After": {"30"}}}
}
