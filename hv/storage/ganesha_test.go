package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/hv/storage/nfstest"
)

func nfsStore(t testing.TB, srv *nfstest.Server, sub string) *storage.VolumeStore {
	t.Helper()
	needQemuImg(t)
	s, err := storage.NewVolumeStore(srv.URL+sub, storage.VolumeOptions{CommandPrefix: srv.Prefix(), Dial: srv.Dial})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// exportHas reports whether the export directory holds rel. Reading the
// export behind ganesha's back is fine; changing it is not.
func exportHas(t *testing.T, srv *nfstest.Server, rel string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(srv.ExportDir, rel))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestNFSVolumeLifecycle runs the VolumeStore against a real ganesha
// export: create → the file has the requested virtual size; extend; delete
// removes it; a backend subdirectory is made on first use.
func TestNFSVolumeLifecycle(t *testing.T) {
	srv := nfstest.Start(t)
	ctx := t.Context()
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			s := nfsStore(t, srv, "/peerstack/"+format)
			p, err := s.Create(ctx, "vol-a", 1, format, "")
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			want := srv.URL + "/peerstack/" + format + "/vol-a." + format
			if p != want {
				t.Fatalf("Create path = %q; want %q", p, want)
			}
			rel := filepath.Join("peerstack", format, "vol-a."+format)
			if !exportHas(t, srv, rel) {
				t.Fatalf("%s not in the export after Create", rel)
			}
			checkSize(t, s, p, format, 1)
			if _, err := s.Create(ctx, "vol-a", 1, format, ""); !errors.Is(err, storage.ErrVolumeExists) {
				t.Fatalf("second Create = %v; want ErrVolumeExists", err)
			}
			if err := s.Extend(ctx, p, 2); err != nil {
				t.Fatalf("Extend: %v", err)
			}
			checkSize(t, s, p, format, 2)
			if err := s.Extend(ctx, p, 1); !errors.Is(err, storage.ErrVolumeShrink) {
				t.Fatalf("shrink = %v; want ErrVolumeShrink", err)
			}
			if err := s.Delete(ctx, p); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if exportHas(t, srv, rel) {
				t.Fatalf("%s still in the export after Delete", rel)
			}
			if ok, err := s.Exists(ctx, p); ok || err != nil {
				t.Fatalf("Exists after Delete = %v, %v; want false", ok, err)
			}
			if err := s.Delete(ctx, p); err != nil {
				t.Fatalf("second Delete = %v; want nil", err)
			}
			// The name can be used again at once (no stale handle).
			if _, err := s.Create(ctx, "vol-a", 1, format, ""); err != nil {
				t.Fatalf("Create after Delete: %v", err)
			}
		})
	}
}

func TestNFSVolumeFromImage(t *testing.T) {
	srv := nfstest.Start(t)
	s := nfsStore(t, srv, "")
	img, marker := makeImage(t, "qcow2")
	p, err := s.Create(t.Context(), "vol-boot", 1, "qcow2", img)
	if err != nil {
		t.Fatalf("Create from image: %v", err)
	}
	checkSize(t, s, p, "qcow2", 1)
	if got := readAt(t, srv.Prefix(), p, "qcow2", 1<<20, len(marker)); !bytes.Equal(got, marker) {
		t.Fatalf("NFS volume from image reads %q at 1 MiB; want the marker", got)
	}
}

// TestNFSServerDown: with ganesha stopped, operations fail within their
// deadline with an error that names the URL; once it is back, they work.
func TestNFSServerDown(t *testing.T) {
	srv := nfstest.Start(t)
	ctx := t.Context()
	s := nfsStore(t, srv, "")
	p, err := s.Create(ctx, "vol-up", 1, "qcow2", "")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	srv.StopNFS()
	down, err := storage.NewVolumeStore(srv.URL, storage.VolumeOptions{
		CommandPrefix: srv.Prefix(), Dial: srv.Dial, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Through qemu-img (the store knows its directory exists) and through
	// the NFS client (a new store checks the directory first).
	for _, st := range []*storage.VolumeStore{s, down} {
		start := time.Now()
		_, err = st.Create(ctx, "vol-down", 1, "qcow2", "")
		if err == nil || !strings.Contains(err.Error(), srv.URL+"/vol-down.qcow2") {
			t.Fatalf("Create with the server down = %v; want an error naming the URL", err)
		}
		t.Logf("create with the server down failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if _, err := down.Info(ctx, p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Info with the server down = %v; want an error naming the URL", err)
	}
	if err := down.Delete(ctx, p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Delete with the server down = %v; want an error naming the URL", err)
	}

	srv.StartNFS()
	if _, err := down.Create(ctx, "vol-back", 1, "qcow2", ""); err != nil {
		t.Fatalf("Create after restart: %v", err)
	}
	checkSize(t, s, p, "qcow2", 1)
	if err := down.Delete(ctx, p); err != nil {
		t.Fatalf("Delete after restart: %v", err)
	}
}

// TestNFSClient exercises the NFSv3 client directly.
func TestNFSClient(t *testing.T) {
	srv := nfstest.Start(t)
	ctx := t.Context()
	cl := storage.NewNFSClient("127.0.0.1", srv.Dial)
	if err := cl.MkdirAll(ctx, "/export/a/b/c"); err != nil {
		t.Fatalf("MkdirAll: %v", err)
	}
	if err := cl.MkdirAll(ctx, "/export/a/b/c"); err != nil {
		t.Fatalf("MkdirAll again: %v", err)
	}
	if !exportHas(t, srv, "a/b/c") {
		t.Fatal("a/b/c not made")
	}
	attr, err := cl.Stat(ctx, "/export/a/b")
	if err != nil || !attr.Dir {
		t.Fatalf("Stat(dir) = %+v, %v; want a directory", attr, err)
	}
	if _, err := cl.Stat(ctx, "/export/a/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat(missing) = %v; want fs.ErrNotExist", err)
	}
	if err := cl.Remove(ctx, "/export/a/b"); !errors.Is(err, storage.NFS3ErrNotEmpty) {
		t.Fatalf("Remove(non-empty dir) = %v; want NFS3ERR_NOTEMPTY", err)
	}
	for _, p := range []string{"/export/a/b/c", "/export/a/b", "/export/a"} {
		if err := cl.Remove(ctx, p); err != nil {
			t.Fatalf("Remove(%s): %v", p, err)
		}
	}
	if exportHas(t, srv, "a") {
		t.Fatal("a still there")
	}
	if err := cl.Remove(ctx, "/export/a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove(missing) = %v; want fs.ErrNotExist", err)
	}
	if err := cl.MkdirAll(ctx, "/notexported/x"); err == nil {
		t.Fatal("MkdirAll outside the export succeeded")
	}
}

// benchCreate measures Create+Delete of 1 GB qcow2 volumes and reports
// the create latency percentiles.
func benchCreate(b *testing.B, s *storage.VolumeStore) {
	ctx := b.Context()
	var lat []time.Duration
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("vol-bench-%d", i)
		i++
		start := time.Now()
		p, err := s.Create(ctx, name, 1, "qcow2", "")
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(ctx, p); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func BenchmarkVolumeCreateNFS(b *testing.B) {
	srv := nfstest.Start(b)
	benchCreate(b, nfsStore(b, srv, "/bench"))
}
