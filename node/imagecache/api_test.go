package imagecache_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/peerstack/peerstack/node/imagecache"
	restimage "github.com/peerstack/peerstack/rest/image"
)

// The blob API's upload lands in the store and reads back; a blob this
// host lacks is restimage.ErrNoBlob for the other hosts; a cache that
// could not be made fails every call.
func TestBlobAPI(t *testing.T) {
	e := newEnv(t, 0)
	api := imagecache.BlobAPI{Cache: func() (*imagecache.Cache, error) { return e.cache, nil }}
	ctx := context.Background()
	data, sum := blob(64<<10, 7)
	w, err := api.NewBlob(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	res, err := w.Commit(ctx)
	if err != nil || res.SHA256 != sum || res.Size != int64(len(data)) {
		t.Fatalf("commit = %+v, %v; want sha256 %s, %d bytes", res, err, sum, len(data))
	}
	r, size, err := api.OpenLocalBlob(sum)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("open local blob = %d, %v", size, err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if string(got) != string(data) {
		t.Fatal("local blob reads back other bytes")
	}
	if err := api.VerifyBlob(ctx, sum); err != nil {
		t.Fatalf("verify a good blob: %v", err)
	}
	_, missing := blob(1024, 8)
	if _, _, err := api.OpenLocalBlob(missing); !errors.Is(err, restimage.ErrNoBlob) {
		t.Fatalf("open a blob not held = %v; want ErrNoBlob", err)
	}
	if err := api.VerifyBlob(ctx, missing); !errors.Is(err, restimage.ErrNoBlob) {
		t.Fatalf("verify a blob not held = %v; want ErrNoBlob", err)
	}
	broken := errors.New("no image dir")
	bad := imagecache.BlobAPI{Cache: func() (*imagecache.Cache, error) { return nil, broken }}
	if _, err := bad.NewBlob(ctx); !errors.Is(err, broken) {
		t.Fatalf("new blob without a cache = %v", err)
	}
	if _, _, err := bad.OpenLocalBlob(sum); !errors.Is(err, broken) {
		t.Fatalf("open without a cache = %v", err)
	}
}
