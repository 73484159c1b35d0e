package storage_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/hv/storage"
)

func needQemuImg(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img is needed (apt-get install qemu-utils): %v", err)
	}
}

func localStore(t testing.TB) (*storage.VolumeStore, string) {
	t.Helper()
	needQemuImg(t)
	dir := filepath.Join(t.TempDir(), "volumes")
	s, err := storage.NewVolumeStore(dir, storage.VolumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestNewVolumeStore(t *testing.T) {
	tests := []struct {
		backend string
		typ     string
		wantErr string
	}{
		{"/var/lib/peerstack/volumes", storage.BackendLocal, ""},
		{"nfs://srv/export/peerstack", storage.BackendNFS, ""},
		{"NFS://srv/export", storage.BackendNFS, ""},
		{"nfsx://srv/export", "", "only nfs:// URLs"},
		{"nfs://srv:2049/export", "", "port"},
		{"nfs://srv", "", "export path is missing"},
		{"relative/dir", "", "absolute path"},
		{"", "", "absolute path"},
		{"file:///srv", "", "only nfs:// URLs"},
	}
	for _, tt := range tests {
		s, err := storage.NewVolumeStore(tt.backend, storage.VolumeOptions{})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewVolumeStore(%q) = %v; want an error about %q", tt.backend, err, tt.wantErr)
			}
			continue
		}
		if err != nil || s.Type() != tt.typ {
			t.Errorf("NewVolumeStore(%q) = %v; want type %s", tt.backend, err, tt.typ)
		}
	}
}

func TestVolumePath(t *testing.T) {
	s, dir := localStore(t)
	n, err := storage.NewVolumeStore("nfs://10.0.0.1/export/vols/", storage.VolumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		s            *storage.VolumeStore
		name, format string
		want         string
	}{
		{s, "vol-1", "qcow2", filepath.Join(dir, "vol-1.qcow2")},
		{s, "vol-1", "raw", filepath.Join(dir, "vol-1.raw")},
		{n, "vol-1", "qcow2", "nfs://10.0.0.1/export/vols/vol-1.qcow2"},
		{s, "../etc/passwd", "qcow2", ""},
		{s, "a/b", "qcow2", ""},
		{s, ".hidden", "qcow2", ""},
		{s, "", "qcow2", ""},
		{s, "vol-1", "vmdk", ""},
	}
	for _, tt := range tests {
		got, err := tt.s.Path(tt.name, tt.format)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("Path(%q, %q) = %q, %v; want %q", tt.name, tt.format, got, err, tt.want)
		}
	}
}

// TestLocalVolumeLifecycle: create → the file has the requested virtual
// size; extend; shrink refused; delete removes it.
func TestLocalVolumeLifecycle(t *testing.T) {
	ctx := t.Context()
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			s, dir := localStore(t)
			p, err := s.Create(ctx, "vol-a", 1, format, "")
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if p != filepath.Join(dir, "vol-a."+format) {
				t.Fatalf("Create path = %q", p)
			}
			checkSize(t, s, p, format, 1)
			if _, err := s.Create(ctx, "vol-a", 2, format, ""); !errors.Is(err, storage.ErrVolumeExists) {
				t.Fatalf("Create over an existing file = %v; want ErrVolumeExists", err)
			}
			checkSize(t, s, p, format, 1)
			if err := s.Extend(ctx, p, 3); err != nil {
				t.Fatalf("Extend: %v", err)
			}
			checkSize(t, s, p, format, 3)
			if err := s.Extend(ctx, p, 3); err != nil {
				t.Fatalf("Extend to the same size (a retry) = %v; want nil", err)
			}
			if err := s.Extend(ctx, p, 2); !errors.Is(err, storage.ErrVolumeShrink) {
				t.Fatalf("Extend to a smaller size = %v; want ErrVolumeShrink", err)
			}
			if ok, err := s.Exists(ctx, p); !ok || err != nil {
				t.Fatalf("Exists = %v, %v; want true", ok, err)
			}
			if err := s.Delete(ctx, p); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("file after Delete: %v; want gone", err)
			}
			if ok, err := s.Exists(ctx, p); ok || err != nil {
				t.Fatalf("Exists after Delete = %v, %v; want false", ok, err)
			}
			if err := s.Delete(ctx, p); err != nil {
				t.Fatalf("Delete of a missing file = %v; want nil", err)
			}
		})
	}
}

func checkSize(t *testing.T, s *storage.VolumeStore, p, format string, gb int64) {
	t.Helper()
	info, err := s.Info(t.Context(), p)
	if err != nil {
		t.Fatalf("Info(%s): %v", p, err)
	}
	if info.VirtualSize != gb*storage.GiB || info.Format != format {
		t.Fatalf("Info(%s) = %+v; want %s of %d GiB", p, info, format, gb)
	}
}

func TestVolumeOutsideStoreRefused(t *testing.T) {
	s, dir := localStore(t)
	outside := filepath.Join(t.TempDir(), "vol-x.qcow2")
	if err := os.WriteFile(outside, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{outside, filepath.Join(dir, "notavolume"), filepath.Join(dir, "vol-x.vmdk"),
		filepath.Join(dir, "sub", "vol-x.qcow2"), "nfs://srv/export/vol-x.qcow2"} {
		if err := s.Delete(t.Context(), p); !errors.Is(err, storage.ErrNotVolumePath) {
			t.Errorf("Delete(%s) = %v; want ErrNotVolumePath", p, err)
		}
		if err := s.Extend(t.Context(), p, 2); !errors.Is(err, storage.ErrNotVolumePath) {
			t.Errorf("Extend(%s) = %v; want ErrNotVolumePath", p, err)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Fatalf("outside file touched: %q, %v", b, err)
	}
}

// makeImage writes a 64 MiB raw image with a marker at 1 MiB and returns
// its path and the marker.
func makeImage(t testing.TB, format string) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "img.raw")
	marker := []byte("PEERSTACK-BOOTABLE-VOLUME-MARKER")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(marker, 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if format == "raw" {
		return raw, marker
	}
	img := filepath.Join(dir, "img."+format)
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", format, raw, img).CombinedOutput(); err != nil {
		t.Fatalf("make image: %v: %s", err, out)
	}
	return img, marker
}

// readAt reads n bytes at off of a volume through qemu-img dd... using
// qemu-img convert to raw into a temp file (works for local and, with the
// prefix, NFS).
func readAt(t *testing.T, prefix []string, p, format string, off int64, n int) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	argv := append(append([]string(nil), prefix...), "qemu-img", "convert", "-U", "-f", format, "-O", "raw", p, out)
	if b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("read back %s: %v: %s", p, err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestLocalVolumeFromImage(t *testing.T) {
	ctx := t.Context()
	s, _ := localStore(t)
	for _, imgFormat := range []string{"raw", "qcow2"} {
		img, marker := makeImage(t, imgFormat)
		p, err := s.Create(ctx, "vol-img-"+imgFormat, 1, "qcow2", img)
		if err != nil {
			t.Fatalf("Create from %s image: %v", imgFormat, err)
		}
		checkSize(t, s, p, "qcow2", 1)
		if got := readAt(t, nil, p, "qcow2", 1<<20, len(marker)); !bytes.Equal(got, marker) {
			t.Fatalf("volume from %s image reads %q at 1 MiB; want the image's marker", imgFormat, got)
		}
	}
}

func TestLocalVolumeBadImages(t *testing.T) {
	ctx := t.Context()
	s, dir := localStore(t)
	big := filepath.Join(t.TempDir(), "big.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", big, "2G").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	overlay := filepath.Join(t.TempDir(), "overlay.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", big, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	tests := []struct {
		name, img, wantErr string
		is                 error
	}{
		{"too large", big, "larger than the volume", storage.ErrImageTooLarge},
		{"backing file", overlay, "backing file", nil},
		{"missing", "/nonexistent/img.qcow2", "no such file", nil},
		{"relative", "img.qcow2", "absolute", nil},
	}
	for _, tt := range tests {
		_, err := s.Create(ctx, "vol-bad", 1, "qcow2", tt.img)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || (tt.is != nil && !errors.Is(err, tt.is)) {
			t.Errorf("Create from %s image = %v; want an error about %q", tt.name, err, tt.wantErr)
		}
		if _, err := os.Stat(filepath.Join(dir, "vol-bad.qcow2")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: failed Create left a file behind (%v)", tt.name, err)
		}
	}
}

func TestVolumeStoreErrors(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	// A qemu-img that hangs: the context deadline ends it.
	slow := filepath.Join(dir, "slow-qemu-img")
	if err := os.WriteFile(slow, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := storage.NewVolumeStore(filepath.Join(dir, "v"), storage.VolumeOptions{QemuImg: slow, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Create(t.Context(), "vol-slow", 1, "qcow2", "")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "vol-slow.qcow2") {
		t.Fatalf("Create with a hanging qemu-img = %v; want a deadline error naming the path", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Create took %v; the deadline did not stop it", d)
	}
	// A failing qemu-img: its message is in the error.
	s, err = storage.NewVolumeStore(filepath.Join(dir, "v"), storage.VolumeOptions{QemuImg: "/bin/false"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(t.Context(), "vol-f", 1, "qcow2", ""); err == nil || !strings.Contains(err.Error(), "qemu-img create") {
		t.Fatalf("Create with a failing qemu-img = %v", err)
	}
	if _, err := s.Create(t.Context(), "vol-z", 0, "qcow2", ""); err == nil {
		t.Fatal("Create of 0 GB succeeded")
	}
}

func BenchmarkVolumeCreateLocal(b *testing.B) {
	s, _ := localStore(b)
	benchCreate(b, s)
}
