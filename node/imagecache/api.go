package imagecache

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
	restimage "github.com/peerstack/peerstack/rest/image"
)

// BlobAPI is the byte side of the images API (rest/image's Backend
// without the state): uploads into this host's store, downloads from
// wherever the image is, and the internal blob calls of other hosts.
// Cache makes (once) or returns this host's cache.
type BlobAPI struct {
	Cache func() (*Cache, error)
}

// NewBlob starts an upload's blob in this host's store.
func (a BlobAPI) NewBlob(context.Context) (restimage.BlobWriter, error) {
	c, err := a.Cache()
	if err != nil {
		return nil, err
	}
	u, err := c.NewUpload()
	if err != nil {
		return nil, err
	}
	return uploadBlob{u}, nil
}

// uploadBlob adapts Upload to restimage.BlobWriter.
type uploadBlob struct{ *Upload }

func (u uploadBlob) Inspect() (restimage.Inspection, error) {
	f, err := storage.BlobInspectFile(u.TempPath())
	return restimage.Inspection{Format: f.Format, VirtualSize: f.VirtualSize, BackingFile: f.BackingFile, DataFile: f.DataFile}, err
}

func (u uploadBlob) Commit(ctx context.Context) (restimage.BlobResult, error) {
	sums, holders, err := u.Upload.Commit(ctx)
	return restimage.BlobResult{Size: sums.Size, MD5: sums.MD5, SHA256: sums.SHA256, SHA512: sums.SHA512, Holders: holders}, err
}

// OpenImage opens an image's bytes for download: the local copy, else the
// share, else a stream from a holder.
func (a BlobAPI) OpenImage(ctx context.Context, img *statedb.Image) (io.ReadCloser, error) {
	c, err := a.Cache()
	if err != nil {
		return nil, err
	}
	return c.Open(ctx, img)
}

// DropBlob removes a local blob no image record and no local disk uses.
func (a BlobAPI) DropBlob(_ context.Context, sum string) error {
	c, err := a.Cache()
	if err != nil {
		return err
	}
	return c.DropBlob(sum)
}

// OpenLocalBlob opens a blob this host holds (restimage.ErrNoBlob if
// none).
func (a BlobAPI) OpenLocalBlob(sum string) (io.ReadCloser, int64, error) {
	c, err := a.Cache()
	if err != nil {
		return nil, 0, err
	}
	f, size, err := c.OpenLocal(sum)
	switch {
	case errors.Is(err, storage.ErrBlobNotFound):
		return nil, 0, fmt.Errorf("%w: %v", restimage.ErrNoBlob, err)
	case err != nil:
		return nil, 0, err
	}
	return f, size, nil
}

// VerifyBlob re-hashes a local blob a peer found corrupt; a corrupt copy
// goes, and this host stops being a holder of its images.
func (a BlobAPI) VerifyBlob(ctx context.Context, sum string) error {
	c, err := a.Cache()
	if err != nil {
		return err
	}
	err = c.Verify(ctx, sum)
	switch {
	case errors.Is(err, storage.ErrBlobNotFound):
		return fmt.Errorf("%w: %v", restimage.ErrNoBlob, err)
	case errors.Is(err, storage.ErrBlobCorrupt):
		return fmt.Errorf("%w: %v", restimage.ErrCorrupt, err)
	}
	return err
}
