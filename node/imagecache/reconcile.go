package imagecache

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
)

// fetchParallel bounds the wanted copies fetched at once.
const fetchParallel = 2

// Run reconciles this host's copies with the state until ctx ends: on
// every state change, when a fetch's back-off runs out, and in full every
// ResyncInterval. It returns once every operation it started has ended.
func (c *Cache) Run(ctx context.Context) error {
	var ops sync.WaitGroup
	defer c.bg.Wait()
	defer ops.Wait()
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	sem := make(chan struct{}, fetchParallel)
	resync := time.NewTimer(c.cfg.ResyncInterval)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	full := true
	for {
		// Armed before the snapshot is read, so no change is missed.
		changed := c.cfg.State.Changed()
		c.sync(ctx, c.snapshot(), full, func(key string, op func(context.Context) error) {
			ops.Add(1)
			go func() {
				defer ops.Done()
				defer poke()
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					c.done(key)
					return
				}
				defer func() { <-sem }()
				c.finish(key, op(ctx))
			}()
		})
		full = false
		if d, ok := c.nextRetry(); ok {
			retry.Reset(d)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			full = true
			resync.Reset(c.cfg.ResyncInterval)
		case <-changed:
		case <-wake:
		case <-retry.C:
		}
	}
}

// launcher starts op under key in its own goroutine.
type launcher func(key string, op func(ctx context.Context) error)

// opKind is what the reconciler does about one image.
type opKind int

const (
	opFetch   opKind = iota + 1 // fetch a wanted copy and report it
	opRelease                   // drop the copy of a deleted image and report it
	opLost                      // report a recorded copy that is not on the disk
	opEvict                     // evict over the cache size (no image)
)

// op is one thing to do.
type op struct {
	kind  opKind
	image *statedb.Image
}

// diff compares what the snapshot asks of host with what it has (has
// tells whether a blob is in its store): the copies to fetch, the copies
// of deleted images to release, and, on a full sync, the recorded copies
// that are missing and an eviction pass. It is pure.
func diff(sn *statedb.Snapshot, host string, has func(sum string) bool, full bool) []op {
	var ops []op
	for _, img := range sn.Images() {
		holder := img.HasHolder(host)
		switch {
		case img.Status == statedb.ImageActive && img.WantsHolder(host):
			if !holder || !has(img.SHA256) {
				ops = append(ops, op{opFetch, img})
			}
		case img.Status == statedb.ImageDeleted && holder:
			if !inUseOn(sn, host, img.SHA256) {
				ops = append(ops, op{opRelease, img})
			}
		case full && holder && !has(img.SHA256):
			// The file went (removed by hand, or an eviction whose report
			// failed): stop counting as a copy.
			ops = append(ops, op{opLost, img})
		}
	}
	if full {
		ops = append(ops, op{kind: opEvict})
	}
	return ops
}

// sync starts what diff finds, each operation once at a time, and drops
// the back-off of fetches no longer wanted.
func (c *Cache) sync(ctx context.Context, sn *statedb.Snapshot, full bool, launch launcher) {
	if ctx.Err() != nil {
		return
	}
	fetching := map[string]bool{}
	for _, o := range diff(sn, c.cfg.HostID, c.store.Has, full) {
		img := o.image
		switch o.kind {
		case opFetch:
			fetching["fetch/"+img.ID] = true
			c.start(launch, "fetch/"+img.ID, func(ctx context.Context) error { return c.fetchWanted(ctx, img) })
		case opRelease:
			c.start(launch, "release/"+img.ID, func(ctx context.Context) error { return c.release(ctx, img) })
		case opLost:
			c.start(launch, "lost/"+img.ID, func(ctx context.Context) error { return c.reportDrop(ctx, img.ID) })
		case opEvict:
			c.start(launch, "evict", func(ctx context.Context) error {
				c.Evict(ctx)
				return nil
			})
		}
	}
	c.mu.Lock()
	for k := range c.retry {
		if strings.HasPrefix(k, "fetch/") && !fetching[k] {
			delete(c.retry, k)
		}
	}
	c.mu.Unlock()
}

// start launches op unless an operation of key is in flight or its
// back-off after a failure has not run out.
func (c *Cache) start(launch launcher, key string, op func(context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight[key] {
		return
	}
	if b, ok := c.retry[key]; ok && c.cfg.Now().Before(b.next) {
		return
	}
	c.inflight[key] = true
	launch(key, op)
}

// done ends an operation that did not run.
func (c *Cache) done(key string) {
	c.mu.Lock()
	delete(c.inflight, key)
	c.mu.Unlock()
}

// finish ends an operation; a failed one backs off, doubling from
// RetryMin up to RetryMax; a busy blob (another fetch of it under way)
// is tried again after RetryMin.
func (c *Cache) finish(key string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, key)
	switch {
	case err == nil:
		delete(c.retry, key)
	case errors.Is(err, storage.ErrBlobBusy):
		c.retry[key] = backoff{next: c.cfg.Now().Add(c.cfg.RetryMin), delay: c.retry[key].delay}
	default:
		d := c.cfg.RetryMin
		if prev := c.retry[key].delay; prev > 0 {
			d = min(2*prev, c.cfg.RetryMax)
		}
		c.retry[key] = backoff{next: c.cfg.Now().Add(d), delay: d}
	}
}

// nextRetry is how long until the earliest back-off still running runs
// out. A back-off that ran out long ago belongs to an operation no sync
// asked for again since: it goes.
func (c *Cache) nextRetry() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	var first time.Time
	for k, b := range c.retry {
		switch {
		case b.next.Before(now.Add(-2 * c.cfg.RetryMax)):
			delete(c.retry, k)
		case !b.next.After(now):
		case first.IsZero() || b.next.Before(first):
			first = b.next
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Sub(now), true
}

// fetchWanted fetches a copy the leader wants here and reports it.
func (c *Cache) fetchWanted(ctx context.Context, img *statedb.Image) error {
	_, err := c.Ensure(ctx, img, false)
	switch {
	case err == nil:
		c.log.Info("holding a wanted image copy", "image", img.ID)
	case errors.Is(err, storage.ErrBlobBusy), ctx.Err() != nil:
	default:
		c.log.Warn("fetch of a wanted image copy failed; will retry", "image", img.ID, "err", err)
	}
	return err
}

// release drops this host's copy of a deleted image (the file stays while
// another image record uses the same bytes) and reports the drop.
func (c *Cache) release(ctx context.Context, img *statedb.Image) error {
	if err := c.DropBlob(img.SHA256); err != nil {
		if !errors.Is(err, storage.ErrBlobBusy) {
			c.log.Warn("release a deleted image's copy", "image", img.ID, "err", err)
		}
		return err
	}
	return c.reportDrop(ctx, img.ID)
}

func (c *Cache) reportDrop(ctx context.Context, imageID string) error {
	err := c.cfg.Proposer.Propose(ctx, statedb.CmdReportImageHolder,
		statedb.ReportImageHolderCmd{ImageID: imageID, HostID: c.cfg.HostID, Drop: true})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("report dropped image copy; will retry", "image", imageID, "err", err)
	}
	return err
}

// Evict removes least recently used blobs while the store is over the
// cache size, keeping every pinned blob and every blob mustKeep names, and
// reports the dropped
// copies. Run calls it on every full sync.
func (c *Cache) Evict(ctx context.Context) { c.evict(ctx, 0, "") }

// evict makes room for need more bytes in the cache, keeping the blob
// keep, every pinned blob and every blob mustKeep names. Evicted copies
// are reported dropped.
func (c *Cache) evict(ctx context.Context, need int64, keep string) {
	sn := c.snapshot()
	c.pinMu.Lock()
	removed, err := c.store.Evict(need, func(sum string) bool {
		return sum == keep || c.pinned(sum) || mustKeep(sn, c.cfg.HostID, sum)
	})
	c.pinMu.Unlock()
	if err != nil {
		c.log.Warn("evict image blobs", "err", err)
	}
	for _, sum := range removed {
		c.log.Info("evicted image blob from the host cache", "sha256", sum)
		c.dropHolder(ctx, sum)
	}
}

// mustKeep reports whether host must keep the blob sum: a server placed
// on it boots from it, or an active image with these bytes that is not on
// the shared storage wants host as a holder, or has host as a holder and
// no other wanted host holding it yet (the copy may be the last one).
func mustKeep(sn *statedb.Snapshot, host, sum string) bool {
	if inUseOn(sn, host, sum) {
		return true
	}
	for _, img := range sn.ImagesWithBlob(sum) {
		if img.Status != statedb.ImageActive || img.HasHolder(statedb.ImageHolderShared) {
			continue
		}
		if img.WantsHolder(host) {
			return true
		}
		if img.HasHolder(host) && !heldElsewhere(img, host) {
			return true
		}
	}
	return false
}

// heldElsewhere reports whether a wanted holder other than host holds img.
func heldElsewhere(img *statedb.Image, host string) bool {
	for _, h := range img.DesiredHolders {
		if h != host && img.HasHolder(h) {
			return true
		}
	}
	return false
}
