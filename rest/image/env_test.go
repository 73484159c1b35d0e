package image_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/image"
	"github.com/peerstack/peerstack/rest/resttest"
)

// blobBackend is image.Backend for tests: the resttest state plus a
// temp-dir BlobStore; this host is "host1" and there are no peers.
type blobBackend struct {
	*resttest.Backend
	store *storage.BlobStore
	limit int64
}

func (b *blobBackend) HostID() string      { return "host1" }
func (b *blobBackend) MaxImageSize() int64 { return b.limit }

func (b *blobBackend) NewBlob(context.Context) (image.BlobWriter, error) {
	w, err := b.store.Create(storage.BlobMD5 | storage.BlobSHA512)
	if err != nil {
		return nil, err
	}
	return &blobWriter{w: w, host: b.HostID()}, nil
}

type blobWriter struct {
	w    *storage.BlobWriter
	host string
}

func (w *blobWriter) Write(p []byte) (int, error)         { return w.w.Write(p) }
func (w *blobWriter) ReadFrom(r io.Reader) (int64, error) { return w.w.ReadFrom(r) }
func (w *blobWriter) Abort()                              { w.w.Abort() }

func (w *blobWriter) Inspect() (image.Inspection, error) {
	f, err := storage.BlobInspectFile(w.w.TempPath())
	return image.Inspection{Format: f.Format, VirtualSize: f.VirtualSize, BackingFile: f.BackingFile, DataFile: f.DataFile}, err
}

func (w *blobWriter) Commit(context.Context) (image.BlobResult, error) {
	s, err := w.w.Commit("")
	return image.BlobResult{Size: s.Size, MD5: s.MD5, SHA256: s.SHA256, SHA512: s.SHA512, Holders: []string{w.host}}, err
}

func (b *blobBackend) OpenImage(_ context.Context, img *statedb.Image) (io.ReadCloser, error) {
	return b.store.Open(img.SHA256)
}

func (b *blobBackend) DropBlob(_ context.Context, sum string) error {
	if len(b.State().ImagesWithBlob(sum)) > 0 {
		return nil
	}
	return b.store.Remove(sum)
}

func (b *blobBackend) OpenLocalBlob(sum string) (io.ReadCloser, int64, error) {
	f, err := b.store.Open(sum)
	if errors.Is(err, storage.ErrBlobNotFound) {
		return nil, 0, image.ErrNoBlob
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

func (b *blobBackend) VerifyBlob(ctx context.Context, sum string) error {
	err := b.store.Verify(ctx, sum)
	if errors.Is(err, storage.ErrBlobCorrupt) {
		return image.ErrCorrupt
	}
	return err
}

// env is a served image API with an admin, a member of project "demo" and
// a member of project "other".
type env struct {
	b      *blobBackend
	srv    *httptest.Server
	h      http.Handler
	seed   *resttest.Seed
	admin  *resttest.Client
	demo   *resttest.Client
	other  *resttest.Client
	reader *resttest.Client
	demoP  *statedb.Project
	otherP *statedb.Project
}

const testLimit = 8 << 20

func newEnv(t testing.TB) *env {
	t.Helper()
	store, err := storage.NewBlobStore(filepath.Join(t.TempDir(), "images"), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	b := &blobBackend{Backend: resttest.New(), store: store, limit: testLimit}
	e := &env{b: b}
	e.seed = b.Bootstrap(t, statedb.Settings{ImageCopies: 2}, "secret")
	srv := rest.NewServer(b, resttest.Logger(t))
	srv.Mount(image.Service(b))
	e.h = srv.Handler()
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	base := &resttest.Client{T: t, Base: e.srv.URL}
	e.admin = base.With(b.Token(e.seed.Admin.ID, e.seed.Project.ID))
	var demoU, otherU *statedb.User
	e.demoP, demoU = b.ProjectUser(t, "demo", "demo-user", "pw", "member")
	e.otherP, otherU = b.ProjectUser(t, "other", "other-user", "pw", "member")
	readerU := b.CreateUser(t, "reader-user", "pw", e.demoP.ID)
	b.Grant(t, e.demoP.ID, readerU.ID, "reader")
	e.demo = base.With(b.Token(demoU.ID, e.demoP.ID))
	e.other = base.With(b.Token(otherU.ID, e.otherP.ID))
	e.reader = base.With(b.Token(readerU.ID, e.demoP.ID))
	return e
}

// create makes an image through the API and returns its id.
func (e *env) create(t testing.TB, c *resttest.Client, body map[string]any) string {
	t.Helper()
	r := c.Do("POST", "/image/v2/images", body)
	if r.Status != http.StatusCreated {
		t.Fatalf("create %v = %d %s; want 201", body, r.Status, r.Body)
	}
	return r.JSON(t)["id"].(string)
}

// put uploads data as application/octet-stream.
func (e *env) put(t testing.TB, c *resttest.Client, id string, data []byte) *resttest.Resp {
	t.Helper()
	return c.Do("PUT", "/image/v2/images/"+id+"/file", data, "Content-Type", "application/octet-stream")
}

// image reads the stored record.
func (e *env) image(t testing.TB, id string) *statedb.Image {
	t.Helper()
	img, ok := e.b.State().Image(id)
	if !ok {
		t.Fatalf("image %s not in the state", id)
	}
	return img
}

// qemuImg runs qemu-img create in a temp dir and returns the bytes.
func qemuImg(t testing.TB, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	a := append([]string{"create", "-q"}, args[:len(args)-1]...)
	a = append(a, p, args[len(args)-1])
	if out, err := exec.Command("qemu-img", a...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", a, err, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// str digs a string out of a decoded JSON object.
func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d expected", what, len(got), len(want))
	}
}

func imageURL(id string, rest ...string) string {
	u := "/image/v2/images/" + id
	for _, r := range rest {
		u += "/" + r
	}
	return u
}
