package imagecache

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
)

// alive is the set of hosts alive in gossip; without an Alive function,
// every member.
func (c *Cache) alive(sn *statedb.Snapshot) map[string]bool {
	if c.cfg.Alive != nil {
		return c.cfg.Alive()
	}
	out := map[string]bool{c.cfg.HostID: true}
	for _, m := range sn.Members() {
		out[m.ID] = true
	}
	return out
}

// sources lists where img's bytes may be fetched from, best first: the
// shared storage, then holders alive in gossip (in the order they got
// it), then the others.
func (c *Cache) sources(sn *statedb.Snapshot, img *statedb.Image) []string {
	alive := c.alive(sn)
	var first, others []string
	for _, h := range img.Holders {
		switch {
		case h == c.cfg.HostID:
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

// openSource opens a blob stream from the shared storage or a peer.
func (c *Cache) openSource(ctx context.Context, src, sum string) (io.ReadCloser, error) {
	if src == statedb.ImageHolderShared {
		return c.openShared(ctx, sum)
	}
	rc, err := c.cfg.Peers.OpenBlob(ctx, src, sum)
	if err != nil {
		return nil, fmt.Errorf("fetch blob from %s: %w", src, err)
	}
	return rc, nil
}

// openShared streams a blob from the first share that has it.
func (c *Cache) openShared(ctx context.Context, sum string) (io.ReadCloser, error) {
	urls := shareURLs(c.snapshot())
	if len(urls) == 0 {
		return nil, errors.New("shared storage: the cluster has no NFS share")
	}
	var errs []error
	for _, u := range urls {
		share, err := c.cfg.OpenShare(u)
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

// fetch copies img's blob into the store from the first source that
// delivers the right bytes. A holder whose bytes do not hash right is
// asked to check its copy (and drops it if corrupt). It runs under the
// blob's lock (Ensure).
func (c *Cache) fetch(ctx context.Context, img *statedb.Image) error {
	c.cleanTemp()
	c.evict(ctx, img.Size, "")
	sources := c.sources(c.snapshot(), img)
	if len(sources) == 0 {
		return fmt.Errorf("image %s has no holder to fetch from", img.ID)
	}
	var errs []error
	for _, src := range sources {
		err := c.fetchFrom(ctx, src, img)
		if err == nil {
			c.log.Debug("fetched image blob", "image", img.ID, "from", src)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, err)
		if !errors.Is(err, storage.ErrBlobCorrupt) {
			c.log.Info("image fetch failed; trying the next holder", "image", img.ID, "from", src, "err", err)
			continue
		}
		c.log.Warn("image bytes from a holder did not match; trying the next holder", "image", img.ID, "from", src, "err", err)
		if src != statedb.ImageHolderShared {
			c.askVerify(src, img.SHA256)
		}
	}
	return errors.Join(errs...)
}

// fetchFrom copies one source into the store, verifying size and sha256.
func (c *Cache) fetchFrom(ctx context.Context, src string, img *statedb.Image) error {
	rc, err := c.openSource(ctx, src, img.SHA256)
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := c.store.Create(0)
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

// askVerify tells a host that its copy of a blob arrived corrupt, so it
// re-hashes it and drops it if so. The caller does not wait for it; Run
// waits for it before it returns.
func (c *Cache) askVerify(host, sum string) {
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
		defer cancel()
		if err := c.cfg.Peers.VerifyBlob(ctx, host, sum); err != nil {
			c.log.Warn("a holder's image blob is corrupt or unreachable", "host", host, "sha256", sum, "err", err)
		}
	}()
}
