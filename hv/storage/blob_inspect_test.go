package storage

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// blobQemuImg runs qemu-img create in dir and returns the file's path.
func blobQemuImg(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	out, err := exec.Command("qemu-img", append(append([]string{"create", "-q"}, args[:len(args)-1]...), p, args[len(args)-1])...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create %v: %v\n%s", args, err, out)
	}
	return p
}

func TestBlobInspect(t *testing.T) {
	dir := t.TempDir()
	iso := filepath.Join(dir, "x.iso")
	isoBytes := make([]byte, 0x9000)
	copy(isoBytes[0x8000:], "\x01CD001\x01")
	if err := os.WriteFile(iso, isoBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	rawFile := filepath.Join(dir, "text.raw")
	os.WriteFile(rawFile, bytes.Repeat([]byte("hello"), 100), 0o644)
	base := blobQemuImg(t, dir, "base.raw", "-f", "raw", "1M")
	cases := []struct {
		name    string
		path    string
		format  string
		vsize   int64
		unsafe  bool
		backing string
	}{
		{"qcow2 v3", blobQemuImg(t, dir, "v3.qcow2", "-f", "qcow2", "64M"), "qcow2", 64 << 20, false, ""},
		{"qcow2 v2", blobQemuImg(t, dir, "v2.qcow2", "-f", "qcow2", "-o", "compat=0.10", "3G"), "qcow2", 3 << 30, false, ""},
		{"qcow2 backing /etc/passwd", blobQemuImg(t, dir, "b.qcow2", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", "1M"), "qcow2", 1 << 20, true, "/etc/passwd"},
		{"qcow2 backing base", blobQemuImg(t, dir, "b2.qcow2", "-f", "qcow2", "-b", base, "-F", "raw", "1M"), "qcow2", 1 << 20, true, base},
		{"qcow2 data file", blobQemuImg(t, dir, "d.qcow2", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "d.data"), "1M"), "qcow2", 1 << 20, true, ""},
		{"raw zeros", blobQemuImg(t, dir, "r.raw", "-f", "raw", "1M"), "raw", 1 << 20, false, ""},
		{"raw text", rawFile, "raw", 500, false, ""},
		{"iso", iso, "iso", 0x9000, false, ""},
		{"vmdk", blobQemuImg(t, dir, "x.vmdk", "-f", "vmdk", "1M"), "vmdk", -1, false, ""},
		{"vhdx", blobQemuImg(t, dir, "x.vhdx", "-f", "vhdx", "1M"), "vhdx", -1, false, ""},
		{"vdi", blobQemuImg(t, dir, "x.vdi", "-f", "vdi", "1M"), "vdi", -1, false, ""},
		{"vpc", blobQemuImg(t, dir, "x.vhd", "-f", "vpc", "1M"), "vpc", -1, false, ""},
		{"vpc fixed", blobQemuImg(t, dir, "xf.vhd", "-f", "vpc", "-o", "subformat=fixed", "1M"), "vpc", -1, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := BlobInspectFile(tc.path)
			if err != nil {
				t.Fatalf("BlobInspectFile = %v", err)
			}
			if f.Format != tc.format || (tc.vsize >= 0 && f.VirtualSize != tc.vsize) || f.BackingFile != tc.backing {
				t.Errorf("BlobInspectFile(%s) = %+v; want format %s, virtual size %d, backing %q", tc.name, f, tc.format, tc.vsize, tc.backing)
			}
			if err := f.Unsafe(); (err != nil) != tc.unsafe || (err != nil && !errors.Is(err, ErrBlobUnsafe)) {
				t.Errorf("Unsafe() = %v; want unsafe=%v", err, tc.unsafe)
			}
		})
	}
}

func TestBlobInspectBrokenQcow2(t *testing.T) {
	good, err := os.ReadFile(blobQemuImg(t, t.TempDir(), "g.qcow2", "-f", "qcow2", "1M"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:40] }},
		{"version 9", func(b []byte) []byte { b[7] = 9; return b }},
		{"cluster bits 40", func(b []byte) []byte { b[23] = 40; return b }},
		{"header length huge", func(b []byte) []byte { b[100], b[101] = 0x7f, 0xff; return b }},
		{"extension overrun", func(b []byte) []byte {
			// First extension (right after the 112-byte header) claims 1 GiB.
			b[112+4], b[112+5] = 0x40, 0
			return b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(bytes.Clone(good))
			if f, err := BlobInspect(bytes.NewReader(b), int64(len(b))); err == nil {
				t.Errorf("BlobInspect(%s) = %+v, nil; want an error", tc.name, f)
			}
		})
	}
}

// FuzzBlobInspect: any bytes give an answer or an error, never a panic or
// an endless loop.
func FuzzBlobInspect(f *testing.F) {
	good, err := os.ReadFile(blobQemuImg(f, f.TempDir(), "g.qcow2", "-f", "qcow2", "1M"))
	if err == nil {
		f.Add(good[:4096])
	}
	f.Add([]byte("QFI\xfb"))
	f.Add([]byte("KDMV"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = BlobInspect(bytes.NewReader(b), int64(len(b)))
	})
}
