package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
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
			"the file (qcow2, iso, else raw) unless --disk-format says otherwise.\n\n" +
			"Progress goes to stderr: a progress bar (size, rate, ETA) on a terminal, plain lines\n" +
			"otherwise. Stdout gets a summary line starting with # and then the image ID alone on the\n" +
			"last line. If the upload fails, the image record it created is deleted again.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// After the first interrupt the default comes back, so a second
			// one ends the command even while it deletes the image.
			go func() { <-ctx.Done(); stop() }()
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

// imageDiskFormats are the disk formats the image service takes.
func imageDiskFormats() []string { return []string{"qcow2", "raw", "iso"} }

// imageVisibilities are the visibilities the image service takes.
func imageVisibilities() []string { return []string{"private", "shared", "community", "public"} }

// imageDeleteTimeout bounds the removal of the image record of a failed
// upload (also after an interrupt, when the command's context is done).
const imageDeleteTimeout = 30 * time.Second

func runImageUpload(ctx context.Context, out, errOut io.Writer, path string, f *imageUploadFlags) error {
	if f.diskFormat != "" && !slices.Contains(imageDiskFormats(), f.diskFormat) {
		return fmt.Errorf("--disk-format %s: want %s", f.diskFormat, strings.Join(imageDiskFormats(), ", "))
	}
	if !slices.Contains(imageVisibilities(), f.visibility) {
		return fmt.Errorf("--visibility %s: want %s", f.visibility, strings.Join(imageVisibilities(), ", "))
	}
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
	// The create is not cut short by an interrupt: the service may have
	// made the image already, and only with its id can it be deleted.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), imageDeleteTimeout)
	img, err := images.Create(cctx, sc, images.CreateOpts{Name: name, DiskFormat: format, ContainerFormat: "bare",
		Visibility: &vis, MinDisk: f.minDisk, MinRAM: f.minRAM, Properties: props}).Extract()
	cancel()
	if err != nil {
		return fmt.Errorf("create image %s: %s", name, apiError(err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("upload %s: %v; %s", path, err, deleteFailedImage(ctx, sc, img.ID))
	}
	fmt.Fprintf(errOut, "created image %s (%s, %s); uploading %s\n", img.ID, name, format, humanBytes(fi.Size()))

	body, done := progressReader(file, fi.Size(), errOut, name, isTerminal(errOut))
	err = putImageData(ctx, cl.Provider, sc.ResourceBaseURL()+"images/"+img.ID+"/file", body, fi.Size())
	done(err == nil)
	if err != nil {
		return fmt.Errorf("upload %s to image %s: %s; %s", path, img.ID, oneLine(err.Error()), deleteFailedImage(ctx, sc, img.ID))
	}
	got, err := images.Get(ctx, sc, img.ID).Extract()
	if err != nil {
		return fmt.Errorf("read image %s back: %s", img.ID, apiError(err))
	}
	if got.Status != images.ImageStatusActive {
		return fmt.Errorf("image %s is %s after its upload, not active; %s", got.ID, got.Status, deleteFailedImage(ctx, sc, got.ID))
	}
	fmt.Fprintf(out, "# image %s active: %d bytes, md5 %s\n%s\n", got.Name, got.SizeBytes, got.Checksum, got.ID)
	return nil
}

// deleteFailedImage deletes the image a failed upload created, so no
// queued or killed record stays behind, and says how that went. It runs
// even when ctx is done (an interrupt), bounded by imageDeleteTimeout.
func deleteFailedImage(ctx context.Context, sc *gophercloud.ServiceClient, id string) string {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), imageDeleteTimeout)
	defer cancel()
	if err := images.Delete(dctx, sc, id).ExtractErr(); err != nil {
		return fmt.Sprintf("the image record could not be deleted (%s): run `openstack image delete %s`", apiError(err), id)
	}
	return "the image record was deleted"
}

// apiError renders an error of a gophercloud call on one line: the
// status and the service's message when the service answered.
func apiError(err error) string {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return apiMessage(ue.Actual, ue.Body)
	}
	return oneLine(err.Error())
}

// apiMessage reads an error body of the image service on one line: Glance's
// plain text ("413 Request Entity Too Large\n\nmessage\n\n") or a JSON
// {"error": {"message": …}} / {"message": …}.
func apiMessage(status int, body []byte) string {
	var j struct {
		Message string `json:"message"`
		Error   struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &j) == nil {
		msg = cmp.Or(j.Error.Message, j.Message, msg)
	}
	msg = strings.TrimSuffix(oneLine(msg), ".") // it goes inside a longer error
	code := strconv.Itoa(status)
	switch {
	case msg == "":
		return "status " + code
	case strings.HasPrefix(msg, code+" "):
		return msg
	}
	return code + " " + http.StatusText(status) + ": " + msg
}

// oneLine joins the lines of s, so an error stays on one line. A Glance
// status line ("413 Request Entity Too Large") is set off by a colon.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	if len(parts) > 1 {
		return parts[0] + ": " + strings.Join(parts[1:], " ")
	}
	return strings.Join(parts, "")
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
		return errors.New(apiMessage(resp.StatusCode, msg))
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

// progressReader wraps r to show progress on w: a progress bar (size,
// rate, ETA) when tty, otherwise a plain line every 10% (and at least
// every 10 s) for files of 8 MiB and more, and one at the end.
// done ends the display.
func progressReader(r io.Reader, size int64, w io.Writer, name string, tty bool) (io.Reader, func(ok bool)) {
	if tty {
		bar := progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("uploading "+name),
			progressbar.OptionShowBytes(true), progressbar.OptionShowCount(), progressbar.OptionShowTotalBytes(true),
			progressbar.OptionUseIECUnits(true), progressbar.OptionFullWidth(),
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
	eta := ""
	if p.n < p.size && rate > 0 {
		eta = fmt.Sprintf(", %v left", time.Duration(float64(p.size-p.n)/rate*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintf(p.w, "uploaded %s of %s (%d%%), %s/s%s\n", humanBytes(p.n), humanBytes(p.size), pct, humanBytes(int64(rate)), eta)
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

// byteSize is a flag value of a size in bytes, written as parseByteSize
// reads it ("1073741824", "512MiB", "20GiB").
type byteSize struct{ p *int64 }

// newByteSize sets *p to def and returns a flag value that sets it.
func newByteSize(p *int64, def int64) byteSize {
	*p = def
	return byteSize{p}
}

func (b byteSize) String() string {
	if b.p == nil {
		return "0"
	}
	s := formatBytes(*b.p)
	if n, ok := strings.CutSuffix(s, " bytes"); ok {
		return n
	}
	return strings.ReplaceAll(s, " ", "")
}

func (b byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b.p = n
	return nil
}

func (b byteSize) Type() string { return "size" }
