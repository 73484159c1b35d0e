package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/imagecache"
	"github.com/peerstack/peerstack/node/readiness"
	"github.com/peerstack/peerstack/rest"
	restimage "github.com/peerstack/peerstack/rest/image"
)

// DefaultImageCacheSize is the size a host's image blob cache aims to stay
// under when Config.ImageCacheSize is 0 (--image-cache-size).
const DefaultImageCacheSize = imagecache.DefaultCacheSize

// images holds this host's image cache (node/imagecache) and the leader's
// image copier, made on first use: the API serves before the loops start.
type images struct {
	once   sync.Once
	cache  *imagecache.Cache
	copier *imagecache.Copier
	err    error
}

// imageParts makes the image cache and copier once. The copier needs
// nothing that can fail; the cache needs its directory.
func (n *Node) imageParts() (*imagecache.Cache, *imagecache.Copier, error) {
	n.img.once.Do(func() {
		resync := n.cfg.Agent.ResyncInterval // the agent's full-sync period; 0 = the cache's default
		log := n.log.With("sub", "images")
		cp, err := imagecache.NewCopier(imagecache.CopierConfig{
			State: n.raft.Store(), Proposer: nodeProposer{n}, Alive: n.imageAliveHosts, Logger: log, Now: n.Now,
		})
		if err != nil {
			log.Error("no image copier", "err", err) // a nil Copier does nothing
		}
		n.img.copier = cp
		n.img.cache, n.img.err = imagecache.New(imagecache.Config{
			HostID: n.id.NodeID, Dir: filepath.Join(n.cfg.DataDir, "images"), CacheSize: n.cfg.ImageCacheSize,
			State: n.raft.Store(), Proposer: nodeProposer{n}, Alive: n.imageAliveHosts,
			Peers:          imagecache.HTTPPeers{Client: &http.Client{Transport: n.client.Transport}, AddrOf: n.apiAddrOf},
			ResyncInterval: resync, Logger: log,
		})
		if n.img.err != nil {
			n.img.err = fmt.Errorf("image store: %w", n.img.err)
		}
	})
	return n.img.cache, n.img.copier, n.img.err
}

// imageCache is this host's image cache.
func (n *Node) imageCache() (*imagecache.Cache, error) {
	c, _, err := n.imageParts()
	return c, err
}

// imageCopier is the leader's image routine (imagecache.Copier): the
// leader runs its Tick, or its Run in a goroutine of its own.
func (n *Node) imageCopier() *imagecache.Copier {
	_, cp, _ := n.imageParts()
	return cp
}

// runImageCache runs this host's image reconciler until ctx ends, once the
// state has caught up.
func (n *Node) runImageCache(ctx context.Context) {
	log := n.log.With("sub", "images")
	c, err := n.imageCache()
	if err != nil {
		log.Error("image cache not started", "err", err)
		return
	}
	readiness.WaitCaughtUp(ctx, n.raft, log)
	if err := c.Run(ctx); err != nil {
		log.Error("image cache stopped", "err", err)
	}
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

// EnsureImage returns a local file with the bytes of an active image and
// its disk format, fetching it from the shared storage or a holder first
// if this host lacks it (sha256-verified; a corrupt source is skipped for
// the next). Concurrent calls for one image on one host fetch it once.
// The blob is kept on this host until release is called. The host agent
// calls it before it builds a disk on the image.
func (n *Node) EnsureImage(ctx context.Context, imageID string) (path, format string, release func(), err error) {
	c, err := n.imageCache()
	if err != nil {
		return "", "", nil, err
	}
	return c.EnsureImage(ctx, imageID)
}

// EvictImages runs one pass of this host's cache eviction now, as every
// full sync of the image reconciler does: least recently used blobs go
// while the cache is over its size, except those pinned by EnsureImage
// or needed here or by the cluster.
func (n *Node) EvictImages(ctx context.Context) error {
	c, err := n.imageCache()
	if err != nil {
		return err
	}
	c.Evict(ctx)
	return nil
}

// mountImages registers the images API.
func (n *Node) mountImages(srv *rest.Server) { srv.Mount(restimage.Service(newImageAPI(n))) }

// imageAPI is the node seen as rest/image's Backend: the state from the
// node, the bytes from the image cache.
type imageAPI struct {
	*Node
	imagecache.BlobAPI
}

func newImageAPI(n *Node) imageAPI {
	return imageAPI{Node: n, BlobAPI: imagecache.BlobAPI{Cache: n.imageCache}}
}

func (a imageAPI) HostID() string { return a.id.NodeID }

// MaxImageSize is the cluster's image size limit (settings API).
func (a imageAPI) MaxImageSize() int64 {
	if cfg, ok := a.State().Cluster(); ok {
		return cfg.Settings.EffectiveImageSizeLimit()
	}
	return statedb.DefaultImageSizeLimit
}

var _ agent.ImageSaver = nodeImages{}

// SaveImage implements agent.ImageSaver: the file becomes a blob of this
// host's image store (and the shared store's, when there is one).
func (im nodeImages) SaveImage(ctx context.Context, path string) (agent.SavedImage, error) {
	info, err := storage.BlobInspectFile(path)
	if err != nil {
		return agent.SavedImage{}, err
	}
	c, err := im.n.imageCache()
	if err != nil {
		return agent.SavedImage{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return agent.SavedImage{}, err
	}
	defer f.Close()
	u, err := c.NewUpload()
	if err != nil {
		return agent.SavedImage{}, err
	}
	if _, err := u.ReadFrom(f); err != nil {
		u.Abort()
		return agent.SavedImage{}, fmt.Errorf("copy %s into the image store: %w", path, err)
	}
	sums, holders, err := u.Commit(ctx)
	if err != nil && len(holders) == 0 {
		return agent.SavedImage{}, err
	}
	return agent.SavedImage{Size: sums.Size, VirtualSize: info.VirtualSize, MD5: sums.MD5, SHA256: sums.SHA256,
		SHA512: sums.SHA512, Holders: holders}, nil
}
