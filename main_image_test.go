package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerstack/peerstack/node"
)

// TestImageCacheSizeFlag: --image-cache-size reaches node.Config in bytes,
// with the node's default when absent, and bad sizes are refused.
func TestImageCacheSizeFlag(t *testing.T) {
	tests := []struct {
		args    []string
		want    int64
		wantErr bool
	}{
		{nil, node.DefaultImageCacheSize, false},
		{[]string{"--image-cache-size", "512MiB"}, 512 << 20, false},
		{[]string{"--image-cache-size=20GiB"}, 20 << 30, false},
		{[]string{"--image-cache-size", "3G"}, 3 << 30, false},
		{[]string{"--image-cache-size", "1.5GB"}, 1_500_000_000, false},
		{[]string{"--image-cache-size", "1048576"}, 1 << 20, false},
		{[]string{"--image-cache-size", "-1GiB"}, 0, true},
		{[]string{"--image-cache-size", "lots"}, 0, true},
		{[]string{"--image-cache-size", "12XB"}, 0, true},
	}
	for _, c := range []*cobra.Command{agentCmd(), joinCmd()} {
		if c.Flags().Lookup("image-cache-size") == nil {
			t.Fatalf("peerstack %s has no --image-cache-size flag", c.Name())
		}
	}
	for _, tt := range tests {
		// agentCmd's flags are bound to its private agentFlags: a command
		// with the same flags bound to f shows what reaches node.Config.
		f := &agentFlags{}
		c := &cobra.Command{Use: "agent"}
		addAgentFlags(c, f)
		err := c.ParseFlags(tt.args)
		if (err != nil) != tt.wantErr {
			t.Fatalf("ParseFlags(%v) error = %v; want error %v", tt.args, err, tt.wantErr)
		}
		if err == nil && f.cfg.ImageCacheSize != tt.want {
			t.Errorf("ParseFlags(%v): ImageCacheSize = %d; want %d", tt.args, f.cfg.ImageCacheSize, tt.want)
		}
	}
}

// TestByteSizeString: the flag value prints sizes parseByteSize reads back.
func TestByteSizeString(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {20 << 30, "20GiB"}, {512 << 20, "512MiB"}, {3<<20 + 1, "3145729"}, {1 << 40, "1TiB"},
	}
	for _, tt := range tests {
		var v int64
		b := newByteSize(&v, tt.n)
		if got := b.String(); got != tt.want {
			t.Errorf("byteSize(%d).String() = %q; want %q", tt.n, got, tt.want)
		}
		var back int64
		if err := newByteSize(&back, 0).Set(b.String()); err != nil || back != tt.n {
			t.Errorf("Set(%q) = %d, %v; want %d", b.String(), back, err, tt.n)
		}
	}
	if got := (byteSize{}).String(); got != "0" {
		t.Errorf("zero byteSize.String() = %q; want 0", got)
	}
}

// pausingReader pauses once, after at bytes, so a throttled progress bar
// renders a mid-transfer state; reads return at most 256 KiB.
type pausingReader struct {
	r      io.Reader
	n, at  int64
	paused bool
	pause  time.Duration
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if !p.paused && p.n >= p.at {
		p.paused = true
		time.Sleep(p.pause)
	}
	if rest := p.at - p.n; !p.paused && int64(len(b)) > rest {
		b = b[:rest]
	}
	if len(b) > 256<<10 {
		b = b[:256<<10] // the read after the pause stays short of the end
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	return n, err
}

// TestProgressBarTerminal renders the interactive bar into a buffer: the
// bytes pass through unchanged and the bar shows the name, the sizes, the
// rate and the time left, and ends at 100% on a new line.
func TestProgressBarTerminal(t *testing.T) {
	const size = 6 << 20
	data := bytes.Repeat([]byte("peerstack"), size/9+1)[:size]
	var out bytes.Buffer
	src := &pausingReader{r: bytes.NewReader(data), at: size / 2, pause: 250 * time.Millisecond}
	r, done := progressReader(src, size, &out, "cirros", true)
	got, err := io.ReadAll(r)
	done(err == nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the bar: %d bytes, %v; want the %d bytes unchanged", len(got), err, size)
	}
	s := out.String()
	mid := regexp.MustCompile(`uploading cirros\s+([5-9]\d)% \|[^|]*\| \([0-9.]+/6\.0 MiB, [0-9.]+ [KMG]?i?B/s\) \[\d+s:\d+s\]`)
	if !mid.MatchString(s) {
		t.Errorf("the bar past the middle shows no sizes, rate and time left [elapsed:left] (want %s):\n%q", mid, s)
	}
	end := regexp.MustCompile(`uploading cirros\s+100% \|[^|]*\| \(6\.0/6\.0 MiB, [0-9.]+ [KMG]?i?B/s\)\n$`)
	if !end.MatchString(s) {
		t.Errorf("the bar does not end at 100%% on a new line (want %s):\n%q", end, s)
	}
	if strings.Contains(s, "uploaded ") {
		t.Errorf("a terminal got plain progress lines:\n%q", s)
	}

	// A failed transfer leaves the bar where it was and ends its line, so
	// the error goes on a line of its own.
	out.Reset()
	r, done = progressReader(io.LimitReader(bytes.NewReader(data), size/3), size, &out, "cirros", true)
	io.Copy(io.Discard, r)
	done(false)
	if strings.Contains(out.String(), "100%") || !strings.HasSuffix(out.String(), "\n") {
		t.Errorf("a failed transfer's bar = %q; want it short of 100%% and ending its line", out.String())
	}
}

// TestProgressLines: without a terminal, a plain line per 10% for files of
// 8 MiB and more, one line at the end for small files, none at the end of
// a failed transfer.
func TestProgressLines(t *testing.T) {
	line := regexp.MustCompile(`^uploaded [0-9.]+ (B|[KMG]iB) of [0-9.]+ (B|[KMG]iB) \(\d+%\), [0-9.]+ (B|[KMG]iB)/s(, \d+s left)?$`)
	tests := []struct {
		size    int64
		read    int64
		ok      bool
		wantPct []string
	}{
		{10 << 20, 10 << 20, true, []string{"10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "100%"}},
		{3<<20 + 7, 3<<20 + 7, true, []string{"100%"}},
		{0, 0, true, []string{"100%"}},
		{10 << 20, 3<<20 + 5, false, []string{"10%", "20%", "30%"}},
		{1 << 20, 1 << 19, false, nil},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		src := io.LimitReader(zeros{}, tt.read)
		r, done := progressReader(src, tt.size, &out, "x", false)
		// Reads of 1 MiB: a line per 10% of a 10 MiB file.
		var n int64
		buf := make([]byte, 1<<20)
		for {
			k, err := r.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		done(tt.ok)
		if n != tt.read {
			t.Fatalf("progressReader(%d) passed %d bytes; want %d", tt.size, n, tt.read)
		}
		var pcts []string
		for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if l == "" {
				continue
			}
			if !line.MatchString(l) {
				t.Errorf("progressReader(%d): line %q does not match %s", tt.size, l, line)
			}
			pcts = append(pcts, regexp.MustCompile(`\d+%`).FindString(l))
		}
		if strings.Join(pcts, " ") != strings.Join(tt.wantPct, " ") {
			t.Errorf("progressReader(%d, read %d, ok %v) printed %v; want %v\n%s", tt.size, tt.read, tt.ok, pcts, tt.wantPct, out.String())
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestAPIMessage: service errors become one line with the status.
func TestAPIMessage(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{413, "413 Request Entity Too Large\n\nImage exceeds the storage quota: 9 bytes is over the 8 byte limit.\n\n",
			"413 Request Entity Too Large: Image exceeds the storage quota: 9 bytes is over the 8 byte limit"},
		{400, `{"error": {"message": "Invalid disk format", "code": 400}}`, "400 Bad Request: Invalid disk format"},
		{409, `{"message": "busy"}`, "409 Conflict: busy"},
		{503, "", "status 503"},
		{500, "boom\n  twice ", "500 Internal Server Error: boom: twice"},
	}
	for _, tt := range tests {
		if got := apiMessage(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("apiMessage(%d, %q) = %q; want %q", tt.status, tt.body, got, tt.want)
		}
	}
}

// TestImageUploadRefusedLocally: flags and files that cannot work are
// refused before any call to the cloud (no cloud is configured here).
func TestImageUploadRefusedLocally(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	t.Setenv("OS_AUTH_URL", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(file, []byte("raw bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		f    imageUploadFlags
		want string
	}{
		{file, imageUploadFlags{diskFormat: "vhd", visibility: "private"}, "--disk-format vhd: want qcow2, raw, iso"},
		{file, imageUploadFlags{visibility: "everyone"}, "--visibility everyone: want private, shared, community, public"},
		{filepath.Join(dir, "missing.qcow2"), imageUploadFlags{visibility: "private"}, "no such file or directory"},
		{dir, imageUploadFlags{visibility: "private"}, "is not a regular file"},
		{file, imageUploadFlags{visibility: "private", props: []string{"novalue"}}, `--property "novalue": want KEY=VALUE`},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := runImageUpload(context.Background(), &out, &errOut, tt.path, &tt.f)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("runImageUpload(%s, %+v) = %v; want one line with %q", tt.path, tt.f, err, tt.want)
		}
		if out.Len()+errOut.Len() != 0 {
			t.Errorf("runImageUpload(%s, %+v) printed %q %q; want nothing", tt.path, tt.f, out.String(), errOut.String())
		}
	}
}

// TestSniffDiskFormat reads qcow2 and ISO headers; anything else is raw.
func TestSniffDiskFormat(t *testing.T) {
	dir := t.TempDir()
	iso := make([]byte, 0x8006)
	copy(iso[0x8001:], "CD001")
	tests := []struct {
		data []byte
		want string
	}{
		{[]byte("QFI\xfb\x00\x00\x00\x03"), "qcow2"},
		{iso, "iso"},
		{[]byte("QFI"), "raw"},
		{nil, "raw"},
		{bytes.Repeat([]byte{0xeb}, 4096), "raw"},
	}
	for i, tt := range tests {
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, tt.data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := sniffDiskFormat(f); got != tt.want {
			t.Errorf("sniffDiskFormat(%d bytes %q…) = %s; want %s", len(tt.data), tt.data[:min(len(tt.data), 4)], got, tt.want)
		}
		f.Close()
	}
}
