package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/peerstack/peerstack/rest/client"
)

// imageCmd is `peerstack image …`.
func imageCmd() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Upload images to the cluster's image service"}
	c.AddCommand(imageUploadCmd())
	return c
}

type imageUploadFlags struct {
	name, diskFormat, visibility string
	minDisk, minRAM              int
	props                        []string
}

func imageUploadCmd() *cobra.Command {
	f := &imageUploadFlags{}
	c := &cobra.Command{
		Use:   "upload FILE",
		Short: "Create an image from FILE and upload it, with progress",
		Long: "Create an image and upload FILE's bytes to it through the image API, authenticating like the\n" +
			"openstack client (OS_CLOUD and clouds.yaml, or OS_* variables). The disk format is read from\n" +
			"the file (qcow2, iso, else raw) unless --disk-format says otherwise.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runImageUpload(ctx, c.OutOrStdout(), c.ErrOrStderr(), args[0], f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.name, "name", "", "image name (default: the file name without its extension)")
	fl.StringVar(&f.diskFormat, "disk-format", "", "qcow2, raw or iso (default: read from the file)")
	fl.StringVar(&f.visibility, "visibility", "private", "private, shared, community or public (admin)")
	fl.IntVar(&f.minDisk, "min-disk", 0, "minimum root disk size in GB")
	fl.IntVar(&f.minRAM, "min-ram", 0, "minimum RAM in MB")
	fl.StringArrayVar(&f.props, "property", nil, "extra property KEY=VALUE (repeatable)")
	return c
}

// sniffDiskFormat reads the format from a file's header: qcow2 magic,
// ISO 9660 "CD001" at sector 16, else raw.
func sniffDiskFormat(f *os.File) string {
	head := make([]byte, 4)
	if n, _ := f.ReadAt(head, 0); n == 4 && bytes.Equal(head, []byte("QFI\xfb")) {
		return "qcow2"
	}
	id := make([]byte, 5)
	if n, _ := f.ReadAt(id, 0x8001); n == 5 && string(id) == "CD001" {
		return "iso"
	}
	return "raw"
}

func runImageUpload(ctx context.Context, out, errOut io.Writer, path string, f *imageUploadFlags) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	name := f.name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	format := f.diskFormat
	if format == "" {
		format = sniffDiskFormat(file)
	}
	props := map[string]string{}
	for _, p := range f.props {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return fmt.Errorf("--property %q: want KEY=VALUE", p)
		}
		props[k] = v
	}

	cl, err := client.FromEnv(ctx, client.Options{})
	if err != nil {
		return err
	}
	sc, err := openstack.NewImageV2(cl.Provider, gophercloud.EndpointOpts{Region: os.Getenv("OS_REGION_NAME")})
	if err != nil {
		return fmt.Errorf("find the image endpoint: %w", err)
	}
	vis := images.ImageVisibility(f.visibility)
	img, err := images.Create(ctx, sc, images.CreateOpts{Name: name, DiskFormat: format, ContainerFormat: "bare",
		Visibility: &vis, MinDisk: f.minDisk, MinRAM: f.minRAM, Properties: props}).Extract()
	if err != nil {
		return fmt.Errorf("create image %s: %w", name, err)
	}
	fmt.Fprintf(errOut, "created image %s (%s, %s); uploading %s\n", img.ID, name, format, humanBytes(fi.Size()))

	body, done := progressReader(file, fi.Size(), errOut, name)
	err = putImageData(ctx, cl.Provider, sc.ResourceBaseURL()+"images/"+img.ID+"/file", body, fi.Size())
	done(err == nil)
	if err != nil {
		return fmt.Errorf("upload %s to image %s: %w", path, img.ID, err)
	}
	got, err := images.Get(ctx, sc, img.ID).Extract()
	if err != nil {
		return fmt.Errorf("read image %s back: %w", img.ID, err)
	}
	fmt.Fprintf(out, "%s\t%s\t%s\t%d bytes\tmd5 %s\n", got.ID, got.Name, got.Status, got.SizeBytes, got.Checksum)
	return nil
}

// putImageData streams body to the image's file URL. The provider's HTTP
// client (and TLS settings) is reused without its overall timeout: the
// context bounds the transfer instead.
func putImageData(ctx context.Context, pc *gophercloud.ProviderClient, url string, body io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Auth-Token", pc.Token())
	hc := pc.HTTPClient
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}

// isTerminal reports whether w is an interactive terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressReader wraps r to show progress on w: a progress bar on a
// terminal, otherwise a plain line every 10% (and at least every 10 s)
// for files of 8 MiB and more, and one at the end.
// done ends the display.
func progressReader(r io.Reader, size int64, w io.Writer, name string) (io.Reader, func(ok bool)) {
	if isTerminal(w) {
		bar := progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("uploading "+name),
			progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true), progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
		pr := progressbar.NewReader(r, bar)
		return &pr, func(ok bool) {
			if ok {
				_ = bar.Finish()
			} else {
				_ = bar.Exit()
			}
		}
	}
	lp := &lineProgress{r: r, w: w, size: size, start: time.Now(), last: time.Now()}
	return lp, func(ok bool) {
		if ok {
			lp.line()
		}
	}
}

// lineProgress prints plain progress lines for logs and pipes.
type lineProgress struct {
	r         io.Reader
	w         io.Writer
	size, n   int64
	nextPct   int64
	start     time.Time
	last      time.Time
	mu        sync.Mutex
	lastPrint int64
}

func (p *lineProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	p.n += int64(n)
	pct := int64(100)
	if p.size > 0 {
		pct = p.n * 100 / p.size
	}
	if p.size >= 8<<20 && (pct >= p.nextPct+10 || time.Since(p.last) >= 10*time.Second) {
		p.nextPct = pct / 10 * 10
		p.last = time.Now()
		p.mu.Unlock()
		p.line()
	} else {
		p.mu.Unlock()
	}
	return n, err
}

func (p *lineProgress) line() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == p.lastPrint && p.n != 0 {
		return
	}
	p.lastPrint = p.n
	pct := int64(100)
	if p.size > 0 {
		pct = p.n * 100 / p.size
	}
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.n) / el
	}
	fmt.Fprintf(p.w, "uploaded %s of %s (%d%%), %s/s\n", humanBytes(p.n), humanBytes(p.size), pct, humanBytes(int64(rate)))
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
