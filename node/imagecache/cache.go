// Package imagecache owns image blobs on a host and their copies across
// the cluster.
//
// On each host a Cache keeps the blobs in a local store (a cache of a
// configured size), fetches a missing one from the shared storage or a
// holder (sha256-verified, a corrupt source skipped and asked to check its
// copy), serves uploads and downloads, and runs a reconciler (Run): it
// fetches the blobs the leader recorded this host should hold
// (Image.DesiredHolders) and reports itself as holder, releases its copies
// of deleted images, reports copies it lost, and evicts least recently
// used blobs over the cache size. Eviction is the host's decision, and it
// never drops a blob this host is wanted to hold, one a local server boots
// from, or a copy no wanted host holds yet.
//
// On the leader a Copier decides, from a state snapshot and gossip health,
// which hosts should hold each active image (DesiredCopies, a pure
// function) and records it with CmdSetImageCopies; it also forgets holders
// that left the cluster, removes deleted images from the shared storage
// and kills uploads whose host is gone.
//
// The package imports consensus/statedb and hv/storage only. Other hosts
// are reached through Peers (HTTPPeers over the internal mTLS API), the
// state through State and Proposer. It must not serve HTTP, decide
// anything about servers, or write the state other than through Proposer.
package imagecache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
)

// DefaultCacheSize is the size a host's blob cache aims to stay under when
// Config.CacheSize is 0.
const DefaultCacheSize int64 = 20 << 30

// verifyTimeout bounds asking a holder to re-hash a corrupt copy.
const verifyTimeout = 5 * time.Minute

// State is the replicated state as this host sees it. *statedb.Store
// satisfies it.
type State interface {
	Snapshot() *statedb.Snapshot
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
}

// Proposer submits a command and returns once the local state applied it.
type Proposer interface {
	Propose(ctx context.Context, t statedb.CmdType, payload any) error
}

// Peers reaches the blob stores of other hosts.
type Peers interface {
	// OpenBlob streams a blob from host.
	OpenBlob(ctx context.Context, host, sum string) (io.ReadCloser, error)
	// VerifyBlob asks host to re-hash its copy of a blob that arrived
	// corrupt (it drops the copy if so).
	VerifyBlob(ctx context.Context, host, sum string) error
}

// Share is the blob area of a shared storage (storage.BlobShare).
type Share interface {
	Open(ctx context.Context, sum string) (io.ReadCloser, error)
	Put(ctx context.Context, localPath, sum string, size int64) error
	Remove(ctx context.Context, sum string) error
}

// OpenShare returns the blob area of a shared storage URL.
type OpenShare func(url string) (Share, error)

// NFSShare opens an nfs:// share with hv/storage (the default OpenShare).
func NFSShare(url string) (Share, error) {
	return storage.NewBlobShare(url, storage.BlobShareOptions{})
}

// Config configures a Cache.
type Config struct {
	HostID    string   // this host's member id; required
	Dir       string   // the store's root (<data-dir>/images); required
	CacheSize int64    // bytes; 0 = DefaultCacheSize
	State     State    // required
	Proposer  Proposer // required
	Peers     Peers    // required
	// Alive returns the hosts alive in gossip (this one included); nil:
	// every member.
	Alive func() map[string]bool
	// OpenShare opens a shared storage; nil: NFSShare.
	OpenShare OpenShare

	// ResyncInterval is the period of full reconciles (eviction, lost
	// copies). Default 10 s.
	ResyncInterval time.Duration
	// RetryMin and RetryMax bound the back-off of a failed fetch of a
	// wanted copy: it doubles from RetryMin up to RetryMax. Defaults 1 s
	// and 2 min.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
	Now                func() time.Time // default time.Now
}

// Cache is one host's image blobs. Its methods are safe for concurrent use.
type Cache struct {
	cfg   Config
	log   *slog.Logger
	store *storage.BlobStore

	bg sync.WaitGroup // verify requests to other hosts

	mu       sync.Mutex
	inflight map[string]bool    // reconciler operations by key
	retry    map[string]backoff // image id → when its fetch may be tried again

	// pinMu guards pins and is held through every eviction, so a blob is
	// either pinned before an eviction looks at it or gone before Acquire
	// checks for it (and fetched again).
	pinMu sync.Mutex
	pins  map[string]int // blob sum → local operations using it (Acquire)
}

// backoff is the retry state of one wanted copy.
type backoff struct {
	next  time.Time
	delay time.Duration
}

// New opens (creating) the store. Nothing is fetched until Run or Ensure.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.HostID == "":
		return nil, errors.New("image cache: no host id")
	case cfg.Dir == "":
		return nil, errors.New("image cache: no directory")
	case cfg.State == nil || cfg.Proposer == nil || cfg.Peers == nil:
		return nil, errors.New("image cache: state, proposer and peers are required")
	case cfg.CacheSize < 0:
		return nil, fmt.Errorf("image cache: size %d < 0", cfg.CacheSize)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.OpenShare == nil {
		cfg.OpenShare = NFSShare
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 10 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(2*time.Minute, cfg.RetryMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	store, err := storage.NewBlobStore(cfg.Dir, cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	return &Cache{cfg: cfg, log: cfg.Logger.With("component", "imagecache"), store: store,
		inflight: map[string]bool{}, retry: map[string]backoff{}, pins: map[string]int{}}, nil
}

func (c *Cache) snapshot() *statedb.Snapshot { return c.cfg.State.Snapshot() }

// Path is where the store keeps a blob (whether or not it is there).
func (c *Cache) Path(sum string) (string, error) { return c.store.Path(sum) }

// Has reports whether this host holds a blob.
func (c *Cache) Has(sum string) bool { return c.store.Has(sum) }

// OpenLocal opens a blob this host holds and returns its size;
// storage.ErrBlobNotFound when it has none.
func (c *Cache) OpenLocal(sum string) (*os.File, int64, error) {
	f, err := c.store.Open(sum)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blob %s: %w", sum, err)
	}
	return f, fi.Size(), nil
}

// Open opens an active image's bytes: this host's copy, else a stream
// from the shared storage or a holder (not stored here).
func (c *Cache) Open(ctx context.Context, img *statedb.Image) (io.ReadCloser, error) {
	if f, err := c.store.Open(img.SHA256); err == nil {
		return f, nil
	}
	var last error = fmt.Errorf("image %s: no reachable holder", img.ID)
	for _, src := range c.sources(c.snapshot(), img) {
		rc, err := c.openSource(ctx, src, img.SHA256)
		if err == nil {
			return rc, nil
		}
		last = err
	}
	return nil, last
}

// DropBlob removes this host's copy of a blob unless an image record that
// is not deleted or a local server still uses it; storage.ErrBlobBusy
// while EnsureImage's caller holds it.
func (c *Cache) DropBlob(sum string) error {
	sn := c.snapshot()
	for _, img := range sn.ImagesWithBlob(sum) {
		if img.Status != statedb.ImageDeleted {
			return nil
		}
	}
	if inUseOn(sn, c.cfg.HostID, sum) {
		return nil
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	if c.pins[sum] > 0 {
		// A local operation reads it: the release is tried again once
		// it is done (this host stays a holder until then).
		return fmt.Errorf("blob %s is in use here: %w", sum, storage.ErrBlobBusy)
	}
	return c.store.Remove(sum)
}

// Verify re-hashes a local blob a peer found corrupt; a corrupt copy goes
// (storage.ErrBlobCorrupt), and this host stops being a holder of its
// images.
func (c *Cache) Verify(ctx context.Context, sum string) error {
	err := c.store.Verify(ctx, sum)
	if errors.Is(err, storage.ErrBlobCorrupt) {
		c.log.Warn("removed a corrupt image blob", "sha256", sum)
		c.dropHolder(ctx, sum)
	}
	return err
}

// Ensure makes this host hold an active image's blob and be recorded as
// its holder, fetching it first if needed, and returns its path. Concurrent
// calls for one blob fetch it once; with wait false a call finding another
// fetch under way returns storage.ErrBlobBusy instead of waiting.
func (c *Cache) Ensure(ctx context.Context, img *statedb.Image, wait bool) (string, error) {
	err := c.store.Once(ctx, img.SHA256, wait, func(ctx context.Context) error { return c.fetch(ctx, img) })
	if err != nil {
		return "", err
	}
	c.store.Touch(img.SHA256)
	if !img.HasHolder(c.cfg.HostID) {
		err := c.cfg.Proposer.Propose(ctx, statedb.CmdReportImageHolder,
			statedb.ReportImageHolderCmd{ImageID: img.ID, HostID: c.cfg.HostID})
		if err != nil && !errors.Is(err, statedb.ErrConflict) {
			return "", fmt.Errorf("report holder: %w", err)
		}
	}
	return c.store.Path(img.SHA256)
}

// EnsureImage is Ensure by image id, waiting for another fetch of the
// blob; it also returns the disk format. The blob stays pinned, kept by
// eviction and by the release of a deleted image, until release is
// called: the host agent holds it while it builds a root disk, a rescue
// disk or a volume on the image (after that, a server placed here keeps
// the blob as long as its disk needs it).
func (c *Cache) EnsureImage(ctx context.Context, imageID string) (path, format string, release func(), err error) {
	img, ok := c.snapshot().Image(imageID)
	if !ok || img.Status != statedb.ImageActive {
		return "", "", nil, fmt.Errorf("ensure image %s: %w", imageID, statedb.Errorf(statedb.KindNotFound, "no active image %s", imageID))
	}
	release = c.pin(img.SHA256)
	p, err := c.Ensure(ctx, img, true)
	if err != nil {
		release()
		return "", "", nil, fmt.Errorf("ensure image %s: %w", imageID, err)
	}
	return p, img.DiskFormat, release, nil
}

// pin keeps blob sum from eviction until the returned func is called
// (once; later calls do nothing).
func (c *Cache) pin(sum string) func() {
	c.pinMu.Lock()
	c.pins[sum]++
	c.pinMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.pinMu.Lock()
			defer c.pinMu.Unlock()
			if c.pins[sum]--; c.pins[sum] <= 0 {
				delete(c.pins, sum)
			}
		})
	}
}

// pinned reports whether a local operation holds blob sum; pinMu held.
func (c *Cache) pinned(sum string) bool { return c.pins[sum] > 0 }

// Upload is an upload's blob being written on this host.
type Upload struct {
	c *Cache
	*storage.BlobWriter
}

// NewUpload starts an upload's blob, with the MD5 and SHA-512 Glance
// reports computed along.
func (c *Cache) NewUpload() (*Upload, error) {
	c.cleanTemp()
	w, err := c.store.Create(storage.BlobMD5 | storage.BlobSHA512)
	if err != nil {
		return nil, err
	}
	return &Upload{c: c, BlobWriter: w}, nil
}

// Commit stores the blob here, and on the current shared storage when
// the cluster has one, makes room in the cache for it, and returns its
// sums and the holders to record.
func (u *Upload) Commit(ctx context.Context) (storage.BlobSums, []string, error) {
	sums, err := u.BlobWriter.Commit("")
	if err != nil {
		return sums, nil, err
	}
	holders := []string{u.c.cfg.HostID}
	if url := currentShare(u.c.snapshot()); url != "" {
		share, err := u.c.cfg.OpenShare(url)
		if err == nil {
			p, _ := u.c.store.Path(sums.SHA256)
			err = share.Put(ctx, p, sums.SHA256, sums.Size)
		}
		if err != nil {
			return sums, holders, fmt.Errorf("shared storage %s: %w", url, err)
		}
		holders = append(holders, statedb.ImageHolderShared)
	}
	u.c.evict(ctx, 0, sums.SHA256)
	return sums, holders, nil
}

// cleanTemp removes temp files a crash left behind; a transfer under way
// keeps its file's mtime fresh.
func (c *Cache) cleanTemp() {
	if err := c.store.CleanTemp(time.Hour); err != nil {
		c.log.Warn("clean image temp files", "err", err)
	}
}

// dropHolder reports that this host no longer holds the images with blob
// sum.
func (c *Cache) dropHolder(ctx context.Context, sum string) {
	for _, img := range c.snapshot().ImagesWithBlob(sum) {
		if !img.HasHolder(c.cfg.HostID) {
			continue
		}
		err := c.cfg.Proposer.Propose(ctx, statedb.CmdReportImageHolder,
			statedb.ReportImageHolderCmd{ImageID: img.ID, HostID: c.cfg.HostID, Drop: true})
		if err != nil && ctx.Err() == nil {
			c.log.Warn("report dropped image copy", "image", img.ID, "err", err)
		}
	}
}

// inUseOn reports whether a server placed on host boots from an image
// whose bytes are the blob sum, or is rescued from one (its root or
// rescue disk is an overlay on it).
func inUseOn(sn *statedb.Snapshot, host, sum string) bool {
	for _, inst := range sn.InstancesOnHost(host) {
		for _, id := range []string{inst.ImageID, inst.RescueImage} {
			if id == "" {
				continue
			}
			if img, ok := sn.Image(id); ok && img.SHA256 == sum {
				return true
			}
		}
	}
	return false
}

// currentShare is the cluster's NFS share, "" with local storage.
func currentShare(sn *statedb.Snapshot) string {
	if cfg, ok := sn.Cluster(); ok && isNFS(cfg.Settings.Storage) {
		return cfg.Settings.Storage
	}
	return ""
}

// shareURLs lists every share a blob of the "shared" holder may be on:
// the current one first, then the ones the storage setting moved away
// from (Settings.FormerStorage), most recent first. Uploads made before a
// change stay on the share of their time.
func shareURLs(sn *statedb.Snapshot) []string {
	cfg, ok := sn.Cluster()
	if !ok {
		return nil
	}
	var out []string
	if isNFS(cfg.Settings.Storage) {
		out = append(out, cfg.Settings.Storage)
	}
	return append(out, cfg.Settings.FormerStorage...)
}

func isNFS(url string) bool { return strings.HasPrefix(url, "nfs://") }
