package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentinel errors of VolumeStore.
var (
	// ErrVolumeExists: Create found a file at the volume's path.
	ErrVolumeExists = errors.New("volume file already exists")
	// ErrVolumeShrink: Extend was asked for a smaller size.
	ErrVolumeShrink = errors.New("volumes can only grow")
	// ErrImageTooLarge: the image to copy in is larger than the volume.
	ErrImageTooLarge = errors.New("image is larger than the volume")
	// ErrNotVolumePath: a path that is not a volume file of this store.
	ErrNotVolumePath = errors.New("not a volume file of this store")
)

// GiB is one gibibyte: volume sizes are whole GiB.
const GiB = 1 << 30

// Volume file formats.
const (
	FormatQCOW2 = "qcow2"
	FormatRaw   = "raw"
)

// Storage backend types.
const (
	BackendLocal = "local"
	BackendNFS   = "nfs"
)

// VolumeOptions tune a VolumeStore. The zero value is the production
// default.
type VolumeOptions struct {
	// CommandPrefix runs qemu-img under another command, e.g.
	// {"ip", "netns", "exec", "ns1"} when the NFS server is reachable only
	// inside a network namespace (tests, the e2e harness).
	CommandPrefix []string
	// Dial opens the NFS client's connections (default: net.Dialer, from
	// a reserved port as root). Pair it with CommandPrefix.
	Dial DialFunc
	// Timeout bounds each qemu-img run or NFS operation whose context has
	// no earlier deadline (default 5 minutes: copying an image in is the
	// slow case).
	Timeout time.Duration
	// QemuImg is the qemu-img binary (default "qemu-img" from PATH).
	QemuImg string
	// Logger gets one debug line per qemu-img run.
	Logger *slog.Logger
}

// VolumeStore makes, grows, inspects and deletes volume files on one
// backend: a local directory or an NFS export. It is safe for concurrent
// use; callers serialise operations on one volume.
type VolumeStore struct {
	backend string
	dir     string  // local directory (local backend)
	nfs     *NFSURL // NFS location (nfs backend)
	client  *NFSClient
	opts    VolumeOptions

	mu       sync.Mutex // guards dirReady
	dirReady bool
}

// NewVolumeStore returns a store on backend: an absolute local directory
// (made on first use), or "nfs://server/export[/path]" (see ParseNFSURL).
func NewVolumeStore(backend string, opts VolumeOptions) (*VolumeStore, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.QemuImg == "" {
		opts.QemuImg = "qemu-img"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &VolumeStore{backend: backend, opts: opts}
	switch {
	case strings.HasPrefix(strings.ToLower(backend), "nfs://"):
		u, err := ParseNFSURL(backend)
		if err != nil {
			return nil, fmt.Errorf("volume store: %w", err)
		}
		s.nfs, s.backend = &u, u.String()
		s.client = NewNFSClient(u.Server, opts.Dial)
	case strings.Contains(backend, "://"):
		return nil, fmt.Errorf("volume store %q: only nfs:// URLs and local directories are supported", backend)
	case !filepath.IsAbs(backend):
		return nil, fmt.Errorf("volume store %q: a local directory must be an absolute path", backend)
	default:
		s.dir = filepath.Clean(backend)
		s.backend = s.dir
	}
	return s, nil
}

// Type is BackendNFS or BackendLocal.
func (s *VolumeStore) Type() string {
	if s.nfs != nil {
		return BackendNFS
	}
	return BackendLocal
}

// Backend is the directory or URL the store was made with (cleaned).
func (s *VolumeStore) Backend() string { return s.backend }

// nameRE is what volume file base names may be.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`)

// Path returns where Create puts the volume name in format: a file path
// or an nfs:// URL. name is a base name without extension
// ("vol-<id>"): letters, digits, '.', '_' and '-'.
func (s *VolumeStore) Path(name, format string) (string, error) {
	if !nameRE.MatchString(name) {
		return "", fmt.Errorf("volume name %q: want letters, digits, '.', '_' or '-' (at most 200)", name)
	}
	if format != FormatQCOW2 && format != FormatRaw {
		return "", fmt.Errorf("volume format %q: want qcow2 or raw", format)
	}
	file := name + "." + format
	if s.nfs != nil {
		return s.nfs.File(file), nil
	}
	return filepath.Join(s.dir, file), nil
}

// parse checks that p is a volume file of this store and returns its
// format and, for NFS, its path on the server.
func (s *VolumeStore) parse(p string) (format, serverPath string, err error) {
	bad := fmt.Errorf("%q: %w %s", p, ErrNotVolumePath, s.backend)
	var dir, file string
	if s.nfs != nil {
		pre := s.nfs.String() + "/"
		if !strings.HasPrefix(p, pre) {
			return "", "", bad
		}
		dir, file = s.nfs.Dir(), strings.TrimPrefix(p, pre)
	} else {
		dir, file = filepath.Dir(p), filepath.Base(p)
		if dir != s.dir {
			return "", "", bad
		}
	}
	ext := path.Ext(file)
	format = strings.TrimPrefix(ext, ".")
	if want, err := s.Path(strings.TrimSuffix(file, ext), format); err != nil || want != p {
		return "", "", bad
	}
	return format, path.Join(dir, file), nil
}

// Check makes the backend directory if needed and so proves the backend
// reachable and writable enough to hold volumes.
func (s *VolumeStore) Check(ctx context.Context) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	if s.nfs != nil {
		if err := s.client.MkdirAll(ctx, s.nfs.Dir()); err != nil {
			return fmt.Errorf("volume store %s: %w", s.backend, err)
		}
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("volume store: %w", err)
	}
	s.mu.Lock()
	s.dirReady = true
	s.mu.Unlock()
	return nil
}

func (s *VolumeStore) ensureDir(ctx context.Context) error {
	s.mu.Lock()
	ready := s.dirReady
	s.mu.Unlock()
	if ready {
		return nil
	}
	return s.Check(ctx)
}

func (s *VolumeStore) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < s.opts.Timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.Timeout)
}

// Exists reports whether the volume file at p exists.
func (s *VolumeStore) Exists(ctx context.Context, p string) (bool, error) {
	_, sp, err := s.parse(p)
	if err != nil {
		return false, err
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	if s.nfs != nil {
		_, err = s.client.Stat(ctx, sp)
	} else {
		_, err = os.Stat(p)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("stat volume %s: %w", p, err)
}

// Create makes the volume file name ("vol-<id>") of sizeGB GiB in format
// and returns its path. With fromImage (a local image file) the image's
// contents are copied in, for bootable volumes: the image must fit and
// must not have a backing file. An existing file is never overwritten
// (ErrVolumeExists). On failure nothing is left behind.
func (s *VolumeStore) Create(ctx context.Context, name string, sizeGB int, format, fromImage string) (string, error) {
	p, err := s.Path(name, format)
	if err != nil {
		return "", err
	}
	if sizeGB <= 0 {
		return "", fmt.Errorf("create volume %s: size %d GB: must be positive", p, sizeGB)
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	if err := s.ensureDir(ctx); err != nil {
		return "", fmt.Errorf("create volume %s: %w", p, err)
	}
	switch ok, err := s.Exists(ctx, p); {
	case err != nil:
		return "", fmt.Errorf("create volume %s: %w", p, err)
	case ok:
		return "", fmt.Errorf("create volume %s: %w", p, ErrVolumeExists)
	}
	var srcFormat string
	if fromImage != "" {
		info, err := s.imageInfo(ctx, fromImage)
		if err != nil {
			return "", fmt.Errorf("create volume %s: %w", p, err)
		}
		if info.VirtualSize > int64(sizeGB)*GiB {
			return "", fmt.Errorf("create volume %s: image %s is %d bytes, volume %d GB: %w",
				p, fromImage, info.VirtualSize, sizeGB, ErrImageTooLarge)
		}
		srcFormat = info.Format
	}
	if _, err := s.qemuImg(ctx, "create", "-q", "-f", format, p, strconv.Itoa(sizeGB)+"G"); err != nil {
		s.removeQuietly(p)
		return "", fmt.Errorf("create volume %s: %w", p, err)
	}
	if fromImage != "" {
		if _, err := s.qemuImg(ctx, "convert", "-n", "-f", srcFormat, "-O", format, fromImage, p); err != nil {
			s.removeQuietly(p)
			return "", fmt.Errorf("create volume %s from image %s: %w", p, fromImage, err)
		}
	}
	return p, nil
}

// removeQuietly undoes a half-made file; a fresh context so an expired
// one still cleans up.
func (s *VolumeStore) removeQuietly(p string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Delete(ctx, p); err != nil {
		s.opts.Logger.Warn("could not remove a half-made volume file", "path", p, "err", err)
	}
}

// Delete removes the volume file at p; a missing file is not an error.
func (s *VolumeStore) Delete(ctx context.Context, p string) error {
	_, sp, err := s.parse(p)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	if s.nfs != nil {
		err = s.client.Remove(ctx, sp)
	} else {
		err = os.Remove(p)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete volume %s: %w", p, err)
	}
	return nil
}

// Extend grows the volume file at p to newSizeGB GiB. The same size again
// is a no-op (a retry); a smaller one is ErrVolumeShrink. The file must
// not be open in a running QEMU: resize attached volumes with QMP
// block_resize instead.
func (s *VolumeStore) Extend(ctx context.Context, p string, newSizeGB int) error {
	format, _, err := s.parse(p)
	if err != nil {
		return fmt.Errorf("extend volume: %w", err)
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	info, err := s.Info(ctx, p)
	if err != nil {
		return fmt.Errorf("extend volume: %w", err)
	}
	want := int64(newSizeGB) * GiB
	switch {
	case want < info.VirtualSize || newSizeGB <= 0:
		return fmt.Errorf("extend volume %s from %d bytes to %d GB: %w", p, info.VirtualSize, newSizeGB, ErrVolumeShrink)
	case want == info.VirtualSize:
		return nil
	}
	if _, err := s.qemuImg(ctx, "resize", "-q", "-f", format, p, strconv.Itoa(newSizeGB)+"G"); err != nil {
		return fmt.Errorf("extend volume %s to %d GB: %w", p, newSizeGB, err)
	}
	return nil
}

// VolumeInfo is what qemu-img tells about a volume file.
type VolumeInfo struct {
	Format      string // qcow2 or raw
	VirtualSize int64  // bytes the guest sees
	ActualSize  int64  // bytes allocated on the backend (may be 0 over NFS)
}

// Info reads the volume file at p.
func (s *VolumeStore) Info(ctx context.Context, p string) (VolumeInfo, error) {
	format, _, err := s.parse(p)
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("volume info: %w", err)
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	info, err := s.info(ctx, p, format)
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("volume info %s: %w", p, err)
	}
	return info, nil
}

// qemuInfo is the part of `qemu-img info --output=json` we read.
type qemuInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	ActualSize      int64  `json:"actual-size"`
	BackingFilename string `json:"backing-filename"`
}

func (s *VolumeStore) info(ctx context.Context, p, format string) (VolumeInfo, error) {
	args := []string{"info", "-U", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	out, err := s.qemuImg(ctx, append(args, p)...)
	if err != nil {
		return VolumeInfo{}, err
	}
	var qi qemuInfo
	if err := json.Unmarshal(out, &qi); err != nil {
		return VolumeInfo{}, fmt.Errorf("qemu-img info: %w", err)
	}
	if qi.BackingFilename != "" {
		return VolumeInfo{}, fmt.Errorf("%s has a backing file (%s); volumes and their images must stand alone", p, qi.BackingFilename)
	}
	return VolumeInfo{Format: qi.Format, VirtualSize: qi.VirtualSize, ActualSize: qi.ActualSize}, nil
}

// imageInfo probes a local image to copy into a volume.
func (s *VolumeStore) imageInfo(ctx context.Context, img string) (VolumeInfo, error) {
	if !filepath.IsAbs(img) {
		return VolumeInfo{}, fmt.Errorf("image %q: want an absolute local path", img)
	}
	if _, err := os.Stat(img); err != nil {
		return VolumeInfo{}, fmt.Errorf("image: %w", err)
	}
	info, err := s.info(ctx, img, "")
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("image %s: %w", img, err)
	}
	return info, nil
}

// qemuImg runs qemu-img (under the command prefix) and returns its
// stdout; errors carry its stderr.
func (s *VolumeStore) qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	argv := append(append(append([]string(nil), s.opts.CommandPrefix...), s.opts.QemuImg), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	s.opts.Logger.Debug("qemu-img", "args", args, "ms", time.Since(start).Milliseconds(), "err", err)
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu-img %s: gave up after %v: %w", args[0], time.Since(start).Round(time.Millisecond), ctx.Err())
		}
		if msg == "" {
			return nil, fmt.Errorf("qemu-img %s: %w", args[0], err)
		}
		return nil, fmt.Errorf("qemu-img %s: %s (%w)", args[0], lastLines(msg, 3), err)
	}
	return stdout.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// BlockdevArgs is the QMP blockdev-add argument that opens the volume at
// p (a local path or an nfs:// URL) in format as node nodeName: the format
// driver over a "file" or "nfs" protocol node. A malformed nfs:// URL gets
// the file driver, so QEMU's own error names it.
func BlockdevArgs(p, format, nodeName string) map[string]any {
	file := map[string]any{"driver": "file", "filename": p}
	if isNFSPath(p) {
		if u, err := ParseNFSURL(p); err == nil {
			file = map[string]any{
				"driver": "nfs",
				"server": map[string]any{"type": "inet", "host": u.Server},
				"path":   u.Dir(),
			}
		}
	}
	return map[string]any{"driver": format, "node-name": nodeName, "file": file}
}
