package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/rest"
	restimage "github.com/peerstack/peerstack/rest/image"
)

// DefaultImageCacheSize is the size a host's image blob cache aims to stay
// under when Config.ImageCacheSize is 0 (--image-cache-size).
const DefaultImageCacheSize int64 = 20 << 30

// Image storage on a host: blobs in <data-dir>/images (a cache of
// Config.ImageCacheSize bytes), and once on the NFS share when the cluster
// has one. Everything here is stateless between calls: the store is the
// directory, and concurrent fetches of one blob meet on the blob's file
// lock.
const (
	// maxImageSize is the largest image upload accepted when
	// Settings.ImageSizeLimit is 0 (the settings API changes it).
	maxImageSize = statedb.DefaultImageSizeLimit
	// defaultImageCopies applies when Settings.ImageCopies is 0.
	defaultImageCopies = statedb.DefaultImageCopies
	// imageCallTimeout bounds short internal calls (release, verify).
	imageCallTimeout = 5 * time.Minute
	// formerShareTimeout bounds a blob removal on a share the storage
	// setting moved away from.
	formerShareTimeout = 10 * time.Second
	// imageSavingGrace is how long an upload may stay saving after its
	// host stopped answering gossip before the leader kills it.
	imageSavingGrace = 5 * time.Minute
)

// mountImages registers the images API.
func (n *Node) mountImages(srv *rest.Server) { srv.Mount(restimage.Service(imageAPI{n})) }

// imageAPI is the node seen as rest/image's Backend.
type imageAPI struct{ *Node }

func (n *Node) blobStore() (*storage.BlobStore, error) {
	return storage.NewBlobStore(filepath.Join(n.cfg.DataDir, "images"), n.cfg.ImageCacheSize)
}

// blobShare is the cluster's NFS share, nil with local storage. New
// uploads go there.
func (n *Node) blobShare() (*storage.BlobShare, error) {
	cfg, ok := n.State().Cluster()
	if !ok || !strings.HasPrefix(cfg.Settings.Storage, "nfs://") {
		return nil, nil
	}
	return storage.NewBlobShare(cfg.Settings.Storage, storage.BlobShareOptions{})
}

// blobShareURLs lists every share a blob of the "shared" holder may be
// on: the current one first, then the ones the storage setting moved
// away from (Settings.FormerStorage), most recent first. Uploads made
// before a change stay on the share of their time.
func (n *Node) blobShareURLs() []string {
	cfg, ok := n.State().Cluster()
	if !ok {
		return nil
	}
	var out []string
	if strings.HasPrefix(cfg.Settings.Storage, "nfs://") {
		out = append(out, cfg.Settings.Storage)
	}
	return append(out, cfg.Settings.FormerStorage...)
}

// openSharedBlob streams a blob from the first share that has it.
func (n *Node) openSharedBlob(ctx context.Context, sum string) (io.ReadCloser, error) {
	urls := n.blobShareURLs()
	if len(urls) == 0 {
		return nil, errors.New("shared storage: the cluster has no NFS share")
	}
	var errs []error
	for _, u := range urls {
		share, err := storage.NewBlobShare(u, storage.BlobShareOptions{})
		if err == nil {
			var rc io.ReadCloser
			if rc, err = share.Open(ctx, sum); err == nil {
				return rc, nil
			}
		}
		errs = append(errs, fmt.Errorf("shared storage %s: %w", u, err))
	}
	return nil, errors.Join(errs...)
}

func (n *Node) imageCopies(sn *statedb.Snapshot) int {
	if cfg, ok := sn.Cluster(); ok {
		return cfg.Settings.EffectiveImageCopies()
	}
	return defaultImageCopies
}

// imageStreamClient is the mTLS client for long transfers: no overall timeout
// (the context bounds them), same connection pool as n.client.
func (n *Node) imageStreamClient() *http.Client { return &http.Client{Transport: n.client.Transport} }

// blobClient is an mTLS client for one blob stream over HTTP/1.1: a bulk
// transfer goes faster without HTTP/2's framing and flow control, and
// costs one TLS handshake, nothing next to the bytes.
func (n *Node) blobClient() *http.Client {
	tr, ok := n.client.Transport.(*http.Transport)
	if !ok {
		return n.imageStreamClient()
	}
	tr = tr.Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.NextProtos = nil
	tr.DisableKeepAlives = true
	return &http.Client{Transport: tr}
}

// imageAliveHosts is the set of members alive in gossip (this host included).
func (n *Node) imageAliveHosts() map[string]bool {
	alive := map[string]bool{n.id.NodeID: true}
	for _, m := range n.gossip.Members() {
		if m.State == gossip.StateAlive {
			alive[m.Name] = true
		}
	}
	return alive
}

// blobInUseOn reports whether an instance placed on host boots from an
// image whose bytes are the blob sum (its disk is an overlay on it).
func blobInUseOn(sn *statedb.Snapshot, host, sum string) bool {
	for _, inst := range sn.InstancesOnHost(host) {
		if inst.ImageID == "" {
			continue
		}
		if img, ok := sn.Image(inst.ImageID); ok && img.SHA256 == sum {
			return true
		}
	}
	return false
}

func (a imageAPI) HostID() string { return a.id.NodeID }

// MaxImageSize is the cluster's image size limit (settings API), else
// maxImageSize.
func (a imageAPI) MaxImageSize() int64 {
	if cfg, ok := a.State().Cluster(); ok {
		return cfg.Settings.EffectiveImageSizeLimit()
	}
	return maxImageSize
}

// NewBlob starts an upload's blob in this host's store.
func (a imageAPI) NewBlob(context.Context) (restimage.BlobWriter, error) {
	store, err := a.blobStore()
	if err != nil {
		return nil, err
	}
	a.cleanBlobTemp(store)
	w, err := store.Create(storage.BlobMD5 | storage.BlobSHA512)
	if err != nil {
		return nil, err
	}
	return &uploadBlob{n: a.Node, store: store, w: w}, nil
}

// uploadBlob adapts storage.BlobWriter to restimage.BlobWriter.
type uploadBlob struct {
	n     *Node
	store *storage.BlobStore
	w     *storage.BlobWriter
}

func (u *uploadBlob) Write(p []byte) (int, error)         { return u.w.Write(p) }
func (u *uploadBlob) ReadFrom(r io.Reader) (int64, error) { return u.w.ReadFrom(r) }
func (u *uploadBlob) Abort()                              { u.w.Abort() }

func (u *uploadBlob) Inspect() (restimage.Inspection, error) {
	f, err := storage.BlobInspectFile(u.w.TempPath())
	return restimage.Inspection{Format: f.Format, VirtualSize: f.VirtualSize, BackingFile: f.BackingFile, DataFile: f.DataFile}, err
}

// Commit stores the blob here (and on the share when there is one) and
// makes room in the cache for it.
func (u *uploadBlob) Commit(ctx context.Context) (restimage.BlobResult, error) {
	sums, err := u.w.Commit("")
	if err != nil {
		return restimage.BlobResult{}, err
	}
	res := restimage.BlobResult{Size: sums.Size, MD5: sums.MD5, SHA256: sums.SHA256, SHA512: sums.SHA512,
		Holders: []string{u.n.id.NodeID}}
	share, err := u.n.blobShare()
	if err != nil {
		return res, err
	}
	if share != nil {
		p, _ := u.store.Path(sums.SHA256)
		if err := share.Put(ctx, p, sums.SHA256, sums.Size); err != nil {
			return res, err
		}
		res.Holders = append(res.Holders, statedb.ImageHolderShared)
	}
	u.n.evictBlobs(ctx, u.store, 0, sums.SHA256)
	return res, nil
}

// OpenImage opens an image's bytes for download: the local copy, else the
// share, else a stream from a holder.
func (a imageAPI) OpenImage(ctx context.Context, img *statedb.Image) (io.ReadCloser, error) {
	store, err := a.blobStore()
	if err != nil {
		return nil, err
	}
	if f, err := store.Open(img.SHA256); err == nil {
		return f, nil
	}
	var last error = fmt.Errorf("image %s: no reachable holder", img.ID)
	for _, src := range a.imageSources(img) {
		rc, err := a.openImageSource(ctx, src, img.SHA256)
		if err == nil {
			return rc, nil
		}
		last = err
	}
	return nil, last
}

// DropBlob removes a local blob no image record and no local disk uses.
func (a imageAPI) DropBlob(_ context.Context, sum string) error {
	sn := a.State()
	for _, img := range sn.ImagesWithBlob(sum) {
		if img.Status != statedb.ImageDeleted {
			return nil
		}
	}
	if blobInUseOn(sn, a.id.NodeID, sum) {
		return nil
	}
	store, err := a.blobStore()
	if err != nil {
		return err
	}
	return store.Remove(sum)
}

func (a imageAPI) OpenLocalBlob(sum string) (io.ReadCloser, int64, error) {
	store, err := a.blobStore()
	if err != nil {
		return nil, 0, err
	}
	f, err := store.Open(sum)
	if errors.Is(err, storage.ErrBlobNotFound) {
		return nil, 0, fmt.Errorf("%w: %v", restimage.ErrNoBlob, err)
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

// PullImage fetches an image's blob for the leader's replication, without
// waiting behind another fetch of it.
func (a imageAPI) PullImage(ctx context.Context, imageID string) error {
	img, ok := a.State().Image(imageID)
	if !ok || img.Status != statedb.ImageActive {
		return rest.NotFoundf("No active image %s", imageID)
	}
	_, err := a.ensureImage(ctx, img, false)
	switch {
	case errors.Is(err, storage.ErrBlobBusy):
		return fmt.Errorf("%w: %v", restimage.ErrBusy, err)
	case err != nil && ctx.Err() == nil:
		// No source delivered; the leader asks again later.
		return rest.Conflictf("cannot pull image %s now: %v", imageID, err)
	}
	return err
}

// ReleaseImage drops this host's copy of a deleted image: the file goes
// unless another live image or a local disk uses the same bytes, then the
// holder drop is reported.
func (a imageAPI) ReleaseImage(ctx context.Context, imageID string) error {
	sn := a.State()
	img, ok := sn.Image(imageID)
	if !ok || !img.HasHolder(a.id.NodeID) {
		return nil
	}
	if img.Status != statedb.ImageDeleted {
		return rest.Conflictf("image %s is %s, not deleted", imageID, img.Status)
	}
	if blobInUseOn(sn, a.id.NodeID, img.SHA256) {
		return fmt.Errorf("image %s: %w", imageID, restimage.ErrInUse)
	}
	if err := a.DropBlob(ctx, img.SHA256); err != nil {
		return err
	}
	_, err := rest.Propose(ctx, a.Node, statedb.CmdReportImageHolder,
		statedb.ReportImageHolderCmd{ImageID: imageID, HostID: a.id.NodeID, Drop: true})
	return err
}

// VerifyBlob re-hashes a local blob a peer found corrupt; a corrupt copy
// goes, and this host stops being a holder of its images.
func (a imageAPI) VerifyBlob(ctx context.Context, sum string) error {
	store, err := a.blobStore()
	if err != nil {
		return err
	}
	err = store.Verify(ctx, sum)
	switch {
	case errors.Is(err, storage.ErrBlobNotFound):
		return fmt.Errorf("%w: %v", restimage.ErrNoBlob, err)
	case errors.Is(err, storage.ErrBlobCorrupt):
		a.log.Warn("removed a corrupt image blob", "sha256", sum)
		a.dropImageHolder(ctx, sum)
		return fmt.Errorf("%w: %v", restimage.ErrCorrupt, err)
	}
	return err
}

// cleanBlobTemp removes temp files a crash left behind; a transfer under
// way keeps its file's mtime fresh.
func (n *Node) cleanBlobTemp(store *storage.BlobStore) {
	if err := store.CleanTemp(time.Hour); err != nil {
		n.log.Warn("clean image temp files", "err", err)
	}
}

// dropImageHolder reports that this host no longer holds the images with blob sum.
func (n *Node) dropImageHolder(ctx context.Context, sum string) {
	for _, img := range n.State().ImagesWithBlob(sum) {
		if !img.HasHolder(n.id.NodeID) {
			continue
		}
		_, err := rest.Propose(ctx, n, statedb.CmdReportImageHolder,
			statedb.ReportImageHolderCmd{ImageID: img.ID, HostID: n.id.NodeID, Drop: true})
		if err != nil {
			n.log.Warn("report dropped image copy", "image", img.ID, "err", err)
		}
	}
}

// EnsureImage returns a local file with the bytes of an active image and
// its disk format, fetching it from the shared storage or a holder first
// if this host lacks it (sha256-verified; a corrupt source is skipped for
// the next). Concurrent calls for one image on one host fetch it once.
// The host agent calls it before it builds a root disk on the image.
func (n *Node) EnsureImage(ctx context.Context, imageID string) (path string, format string, err error) {
	img, ok := n.State().Image(imageID)
	if !ok || img.Status != statedb.ImageActive {
		return "", "", fmt.Errorf("ensure image %s: %w", imageID, statedb.Errorf(statedb.KindNotFound, "no active image %s", imageID))
	}
	p, err := n.ensureImage(ctx, img, true)
	if err != nil {
		return "", "", fmt.Errorf("ensure image %s: %w", imageID, err)
	}
	return p, img.DiskFormat, nil
}

// ensureImage makes this host hold img's blob and be recorded as holder.
func (n *Node) ensureImage(ctx context.Context, img *statedb.Image, wait bool) (string, error) {
	store, err := n.blobStore()
	if err != nil {
		return "", err
	}
	err = store.Once(ctx, img.SHA256, wait, func(ctx context.Context) error { return n.fetchBlob(ctx, store, img) })
	if err != nil {
		return "", err
	}
	store.Touch(img.SHA256)
	if !img.HasHolder(n.id.NodeID) {
		_, err := rest.Propose(ctx, n, statedb.CmdReportImageHolder,
			statedb.ReportImageHolderCmd{ImageID: img.ID, HostID: n.id.NodeID})
		if err != nil && !errors.Is(err, statedb.ErrConflict) {
			return "", fmt.Errorf("report holder: %w", err)
		}
	}
	return store.Path(img.SHA256)
}

// imageSources lists where img's bytes may be fetched from, best first:
// the share, then holders alive in gossip (in the order they got it),
// then the others.
func (n *Node) imageSources(img *statedb.Image) []string {
	alive := n.imageAliveHosts()
	var first, others []string
	for _, h := range img.Holders {
		switch {
		case h == n.id.NodeID:
		case h == statedb.ImageHolderShared:
			first = append([]string{h}, first...)
		case alive[h]:
			first = append(first, h)
		default:
			others = append(others, h)
		}
	}
	return append(first, others...)
}

// openImageSource opens a blob stream from the share or a peer host.
func (n *Node) openImageSource(ctx context.Context, src, sum string) (io.ReadCloser, error) {
	if src == statedb.ImageHolderShared {
		return n.openSharedBlob(ctx, sum)
	}
	addr := n.apiAddrOf(src)
	if addr == "" {
		return nil, fmt.Errorf("host %s: no address", src)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/internal/v1/blobs/"+sum, nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.blobClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch blob from %s: %w", src, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetch blob from %s: status %d", src, resp.StatusCode)
	}
	return resp.Body, nil
}

// fetchBlob copies img's blob into the store from the first source that
// delivers the right bytes. A source whose bytes do not hash right is
// asked to check its copy (and drops it if corrupt).
func (n *Node) fetchBlob(ctx context.Context, store *storage.BlobStore, img *statedb.Image) error {
	n.cleanBlobTemp(store)
	n.evictBlobs(ctx, store, img.Size, "")
	sources := n.imageSources(img)
	if len(sources) == 0 {
		return fmt.Errorf("image %s has no holder to fetch from", img.ID)
	}
	var errs []error
	for _, src := range sources {
		err := n.fetchImageFrom(ctx, store, src, img)
		if err == nil {
			n.log.Debug("fetched image blob", "image", img.ID, "from", src)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, err)
		if !errors.Is(err, storage.ErrBlobCorrupt) {
			n.log.Info("image fetch failed; trying the next holder", "image", img.ID, "from", src, "err", err)
			continue
		}
		n.log.Warn("image bytes from a holder did not match; trying the next holder", "image", img.ID, "from", src, "err", err)
		if src != statedb.ImageHolderShared {
			n.askBlobVerify(src, img.SHA256)
		}
	}
	return errors.Join(errs...)
}

// fetchImageFrom copies one source into the store, verifying size and sha256.
func (n *Node) fetchImageFrom(ctx context.Context, store *storage.BlobStore, src string, img *statedb.Image) error {
	rc, err := n.openImageSource(ctx, src, img.SHA256)
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := store.Create(0)
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := w.ReadFrom(rc); err != nil {
		return fmt.Errorf("from %s: %w", src, err)
	}
	if w.Size() != img.Size {
		return fmt.Errorf("from %s: %d bytes, want %d: %w", src, w.Size(), img.Size, storage.ErrBlobCorrupt)
	}
	if _, err := w.Commit(img.SHA256); err != nil {
		return fmt.Errorf("from %s: %w", src, err)
	}
	return nil
}

// askBlobVerify tells a host that its copy of a blob arrived corrupt, so it
// re-hashes it and drops it if so. It runs on its own goroutine, bounded
// by imageCallTimeout; the caller does not wait for it.
func (n *Node) askBlobVerify(host, sum string) {
	addr := n.apiAddrOf(host)
	if addr == "" {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), imageCallTimeout)
		defer cancel()
		if err := n.imageInternalPost(ctx, addr, "/internal/v1/blobs/"+sum+"/verify"); err != nil {
			n.log.Warn("a holder's image blob is corrupt or unreachable", "host", host, "sha256", sum, "err", err)
		}
	}()
}

// imageInternalPost sends an empty POST to another host's internal API and
// wants a 2xx.
func (n *Node) imageInternalPost(ctx context.Context, addr, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := n.imageStreamClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// evictBlobs makes room for need more bytes in the cache, keeping the
// blob keep, blobs local instances boot from, and copies the cluster
// still counts on (an image with no more than ImageCopies holders).
// Evicted copies are reported dropped.
func (n *Node) evictBlobs(ctx context.Context, store *storage.BlobStore, need int64, keep string) {
	sn := n.State()
	copies := n.imageCopies(sn)
	me := n.id.NodeID
	removed, err := store.Evict(need, func(sum string) bool {
		if sum == keep || blobInUseOn(sn, me, sum) {
			return true
		}
		for _, img := range sn.ImagesWithBlob(sum) {
			if img.Status == statedb.ImageActive && img.HasHolder(me) && !img.HasHolder(statedb.ImageHolderShared) &&
				len(img.Holders) <= copies {
				return true
			}
		}
		return false
	})
	if err != nil {
		n.log.Warn("evict image blobs", "err", err)
	}
	for _, sum := range removed {
		n.log.Info("evicted image blob from the host cache", "sha256", sum)
		n.dropImageHolder(ctx, sum)
	}
}

// imagesLeaderTick runs leader-only images work once per leader tick:
// it keeps ImageCopies holders of each active image among alive hosts
// (local storage), asks holders of deleted images to release their
// copies, forgets holders that left the cluster and kills uploads whose
// host is gone.
func (n *Node) imagesLeaderTick(ctx context.Context) {
	sn := n.State()
	copies := n.imageCopies(sn)
	alive := n.imageAliveHosts()
	members := map[string]bool{}
	for _, m := range sn.Members() {
		members[m.ID] = true
	}
	for _, img := range sn.Images() {
		for _, h := range img.Holders {
			if h != statedb.ImageHolderShared && !members[h] {
				n.proposeImageHolder(ctx, img.ID, h, true)
			}
		}
		switch img.Status {
		case statedb.ImageActive:
			n.replicateImage(ctx, sn, img, copies, alive)
		case statedb.ImageDeleted:
			n.releaseDeletedImage(ctx, sn, img, alive, members)
		case statedb.ImageSaving:
			// The host receiving the upload died: the upload cannot finish.
			if img.UploadHost != "" && !alive[img.UploadHost] && n.Now().Sub(img.UpdatedAt) > imageSavingGrace {
				_, err := rest.Propose(ctx, n, statedb.CmdKillImage, statedb.ImageUploadCmd{ID: img.ID, HostID: img.UploadHost})
				if err != nil && ctx.Err() == nil {
					n.log.Warn("kill an upload whose host is gone", "image", img.ID, "err", err)
				}
			}
		}
	}
}

func (n *Node) proposeImageHolder(ctx context.Context, imageID, host string, drop bool) {
	_, err := rest.Propose(ctx, n, statedb.CmdReportImageHolder, statedb.ReportImageHolderCmd{ImageID: imageID, HostID: host, Drop: drop})
	if err != nil && ctx.Err() == nil {
		n.log.Warn("update image holders", "image", imageID, "host", host, "drop", drop, "err", err)
	}
}

// imagePullTargets picks up to need alive non-holders for img, spread over the
// hosts by a hash of (image, host) so images do not all land on one host.
func imagePullTargets(sn *statedb.Snapshot, img *statedb.Image, alive map[string]bool, need int) []string {
	if need <= 0 {
		return nil
	}
	var cands []string
	for _, m := range sn.Members() {
		if alive[m.ID] && !img.HasHolder(m.ID) {
			cands = append(cands, m.ID)
		}
	}
	score := func(h string) uint64 {
		f := fnv.New64a()
		f.Write([]byte(img.ID + "/" + h))
		return f.Sum64()
	}
	sort.Slice(cands, func(i, j int) bool { return score(cands[i]) < score(cands[j]) })
	return cands[:min(need, len(cands))]
}

// replicateImage asks non-holders to pull until img has copies holders
// alive. With shared storage the share holds it once and no more are
// needed. The pull runs as long as the fetch on the target; a target
// already fetching answers at once.
func (n *Node) replicateImage(ctx context.Context, sn *statedb.Snapshot, img *statedb.Image, copies int, alive map[string]bool) {
	if img.HasHolder(statedb.ImageHolderShared) {
		return
	}
	have := 0
	for _, h := range img.Holders {
		if alive[h] {
			have++
		}
	}
	if have == 0 {
		return // nothing to copy from until a holder is back
	}
	for _, h := range imagePullTargets(sn, img, alive, copies-have) {
		addr := n.apiAddrOf(h)
		if addr == "" {
			continue
		}
		go func() {
			// Owned by the leader's context: leadership lost or the node
			// stopping cancels the request (the target then stops too).
			// Failures repeat every tick until a source is back: debug only.
			if err := n.imageInternalPost(ctx, addr, "/internal/v1/images/"+img.ID+"/pull"); err != nil && ctx.Err() == nil {
				n.log.Debug("ask a host to pull an image", "image", img.ID, "host", h, "err", err)
			}
		}()
	}
}

// releaseDeletedImage asks each holder of a deleted image to drop its copy, and
// drops the shared copy itself once no live image has the same bytes.
func (n *Node) releaseDeletedImage(ctx context.Context, sn *statedb.Snapshot, img *statedb.Image, alive, members map[string]bool) {
	for _, h := range img.Holders {
		switch {
		case h == statedb.ImageHolderShared:
			live := slices.ContainsFunc(sn.ImagesWithBlob(img.SHA256), func(o *statedb.Image) bool {
				return o.Status != statedb.ImageDeleted && o.HasHolder(statedb.ImageHolderShared)
			})
			if !live {
				if err := n.removeSharedBlob(ctx, img.SHA256); err != nil {
					n.log.Warn("remove image blob from the share", "image", img.ID, "err", err)
					continue
				}
			}
			n.proposeImageHolder(ctx, img.ID, h, true)
		case !members[h], !alive[h], blobInUseOn(sn, h, img.SHA256):
			// Gone hosts are dropped above; down hosts and copies in use
			// wait.
		default:
			addr := n.apiAddrOf(h)
			go func() {
				rctx, cancel := context.WithTimeout(ctx, imageCallTimeout)
				defer cancel()
				if err := n.imageInternalPost(rctx, addr, "/internal/v1/images/"+img.ID+"/release"); err != nil && ctx.Err() == nil {
					n.log.Debug("ask a host to release an image", "image", img.ID, "host", h, "err", err)
				}
			}()
		}
	}
}

// removeSharedBlob removes a blob from the current share (a failure is
// returned: the caller retries) and from the former ones (a failure there
// is only logged, and bounded by formerShareTimeout: a share taken out of
// service must not hold deletes up).
func (n *Node) removeSharedBlob(ctx context.Context, sum string) error {
	current := ""
	if cfg, ok := n.State().Cluster(); ok {
		current = cfg.Settings.Storage
	}
	for _, u := range n.blobShareURLs() {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if u != current {
			rctx, cancel = context.WithTimeout(ctx, formerShareTimeout)
		}
		share, err := storage.NewBlobShare(u, storage.BlobShareOptions{})
		if err == nil {
			err = share.Remove(rctx, sum)
		}
		cancel()
		switch {
		case err != nil && u == current:
			return err
		case err != nil:
			n.log.Warn("remove image blob from a former share", "share", u, "sha256", sum, "err", err)
		}
	}
	// A former share that does not answer is most likely retired; retrying
	// it on every leader tick would hold the tick up for every deleted
	// image, for ever. The blob may stay behind there (logged above).
	return nil
}
