package storage_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/hv/storage/nfstest"
)

// TestBlobShareNFS puts a blob on a real ganesha export through libnfs,
// streams it back into another host's store with the sha256 verified,
// and removes it.
func TestBlobShareNFS(t *testing.T) {
	srv := nfstest.Start(t)
	ctx := t.Context()
	prefix := srv.Prefix()
	share, err := storage.NewBlobShare(srv.URL+"/peerstack", storage.BlobShareOptions{
		Dial: srv.Dial,
		Command: func(ctx context.Context, name string, args ...string) *exec.Cmd {
			return exec.CommandContext(ctx, prefix[0], append(append(prefix[1:], name), args...)...)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	src, err := storage.NewBlobStore(filepath.Join(t.TempDir(), "a"), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(i * 31)
	}
	w, _ := src.Create(0)
	w.Write(data)
	sums, err := w.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := src.Path(sums.SHA256)
	if err := share.Put(ctx, p, sums.SHA256, sums.Size); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := share.Put(ctx, p, sums.SHA256, sums.Size); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	if n, err := share.Size(ctx, sums.SHA256); err != nil || n != sums.Size {
		t.Fatalf("Size = %d, %v; want %d", n, err, sums.Size)
	}
	if u, _ := share.URL(sums.SHA256); u != srv.URL+"/peerstack/images/"+sums.SHA256 {
		t.Errorf("URL = %s", u)
	}

	dst, _ := storage.NewBlobStore(filepath.Join(t.TempDir(), "b"), 1<<30)
	rc, err := share.Open(ctx, sums.SHA256)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	w2, _ := dst.Create(0)
	if _, err := w2.ReadFrom(rc); err != nil {
		t.Fatalf("read from the share: %v", err)
	}
	rc.Close()
	want := sha256.Sum256(data)
	if got, err := w2.Commit(hex.EncodeToString(want[:])); err != nil || got.Size != int64(len(data)) {
		t.Fatalf("Commit of the bytes read back = %+v, %v", got, err)
	}

	if err := share.Remove(ctx, sums.SHA256); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := share.Remove(ctx, sums.SHA256); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := share.Size(ctx, sums.SHA256); !errors.Is(err, storage.ErrBlobNotFound) {
		t.Fatalf("Size after Remove = %v; want ErrBlobNotFound", err)
	}
	if _, err := share.Open(ctx, sums.SHA256); !errors.Is(err, storage.ErrBlobNotFound) {
		t.Fatalf("Open after Remove = %v; want ErrBlobNotFound", err)
	}
}
