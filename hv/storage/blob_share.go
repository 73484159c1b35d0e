package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"path"
	"strings"
)

// BlobShareOptions adapt a BlobShare to its environment (tests run the NFS
// server in a network namespace).
type BlobShareOptions struct {
	// Dial opens connections for the NFS client; nil = the default.
	Dial DialFunc
	// Command builds the commands that read and write over nfs://
	// (nfs-cp, nfs-cat from libnfs-utils); nil = exec.CommandContext.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
}

// BlobShare keeps image blobs once on the cluster's NFS share, as
// <share>/images/<sha256>, reached through libnfs (no kernel mount).
// Readers verify the sha256 of what they read, so a blob cut short by a
// crashed writer is detected and rewritten, not trusted.
type BlobShare struct {
	url    NFSURL
	client *NFSClient
	cmd    func(ctx context.Context, name string, args ...string) *exec.Cmd
}

// NewBlobShare returns the blob area of the share at rawURL
// ("nfs://server/export[/path]").
func NewBlobShare(rawURL string, o BlobShareOptions) (*BlobShare, error) {
	u, err := ParseNFSURL(rawURL)
	if err != nil {
		return nil, err
	}
	cmd := o.Command
	if cmd == nil {
		cmd = exec.CommandContext
	}
	return &BlobShare{url: u, client: NewNFSClient(u.Server, o.Dial), cmd: cmd}, nil
}

// blobShareDir is the directory of blobs below the share.
const blobShareDir = "images"

func (s *BlobShare) file(sum string) string { return path.Join(s.url.Dir(), blobShareDir, sum) }

// URL is the nfs:// URL of a blob on the share.
func (s *BlobShare) URL(sum string) (string, error) {
	if !BlobValidSum(sum) {
		return "", fmt.Errorf("%q: %w", sum, ErrBlobBadSum)
	}
	return s.url.File(path.Join(blobShareDir, sum)), nil
}

// Size returns the size of a blob on the share (ErrBlobNotFound if none).
func (s *BlobShare) Size(ctx context.Context, sum string) (int64, error) {
	if !BlobValidSum(sum) {
		return 0, fmt.Errorf("%q: %w", sum, ErrBlobBadSum)
	}
	attr, err := s.client.Stat(ctx, s.file(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s on the share: %w", sum, ErrBlobNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s on the share: %w", sum, err)
	}
	return int64(attr.Size), nil
}

// Put copies a local blob file to the share unless a blob of the same size
// is there already.
func (s *BlobShare) Put(ctx context.Context, localPath, sum string, size int64) error {
	dst, err := s.URL(sum)
	if err != nil {
		return err
	}
	if n, err := s.Size(ctx, sum); err == nil && n == size {
		return nil
	}
	if err := s.client.MkdirAll(ctx, path.Join(s.url.Dir(), blobShareDir)); err != nil {
		return fmt.Errorf("put blob %s: %w", sum, err)
	}
	var stderr bytes.Buffer
	c := s.cmd(ctx, "nfs-cp", localPath, dst)
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("put blob %s: nfs-cp: %w: %s", sum, err, strings.TrimSpace(stderr.String()))
	}
	if n, err := s.Size(ctx, sum); err != nil || n != size {
		return fmt.Errorf("put blob %s: %d bytes on the share after copy, want %d (%v)", sum, n, size, err)
	}
	return nil
}

// Open streams a blob from the share. The bytes are not verified here:
// read them into a BlobWriter and commit with the expected sum.
func (s *BlobShare) Open(ctx context.Context, sum string) (io.ReadCloser, error) {
	src, err := s.URL(sum)
	if err != nil {
		return nil, err
	}
	if _, err := s.Size(ctx, sum); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	c := s.cmd(ctx, "nfs-cat", src)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("read blob %s: %w", sum, err)
	}
	if err := c.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("read blob %s: nfs-cat: %w", sum, err)
	}
	return &blobShareReader{r: out, c: c, cancel: cancel, stderr: &stderr, sum: sum}, nil
}

// blobShareReader is nfs-cat's output; a failed nfs-cat turns into a read
// error, not a short clean EOF.
type blobShareReader struct {
	r      io.Reader
	c      *exec.Cmd
	cancel context.CancelFunc
	stderr *bytes.Buffer
	sum    string
	done   bool
}

func (r *blobShareReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if errors.Is(err, io.EOF) && !r.done {
		r.done = true
		if werr := r.c.Wait(); werr != nil {
			return n, fmt.Errorf("read blob %s: nfs-cat: %w: %s", r.sum, werr, strings.TrimSpace(r.stderr.String()))
		}
	}
	return n, err
}

func (r *blobShareReader) Close() error {
	r.cancel()
	if !r.done {
		r.done = true
		_ = r.c.Wait()
	}
	return nil
}

// Remove deletes a blob from the share; a missing one is not an error.
func (s *BlobShare) Remove(ctx context.Context, sum string) error {
	if !BlobValidSum(sum) {
		return fmt.Errorf("%q: %w", sum, ErrBlobBadSum)
	}
	if err := s.client.Remove(ctx, s.file(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove blob %s from the share: %w", sum, err)
	}
	return nil
}
