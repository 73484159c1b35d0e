package imagecache

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Leader-side defaults.
const (
	// defaultCopyInterval is how often a running Copier looks again
	// without a state change (gossip health changes show only there).
	defaultCopyInterval = time.Second
	// savingGrace is how long an upload may stay saving after its host
	// stopped answering gossip before it is killed.
	savingGrace = 5 * time.Minute
	// formerShareTimeout bounds a blob removal on a share the storage
	// setting moved away from.
	formerShareTimeout = 10 * time.Second
)

// CopierConfig configures a Copier.
type CopierConfig struct {
	State    State    // required
	Proposer Proposer // required
	// Alive returns the hosts alive in gossip; nil: every member.
	Alive func() map[string]bool
	// OpenShare opens a shared storage; nil: NFSShare.
	OpenShare OpenShare
	// Interval is Run's period without state changes; default 1 s.
	Interval time.Duration
	Logger   *slog.Logger
	Now      func() time.Time // the proposer clock; default time.Now
}

// Copier is the leader's image routine. It holds no state between ticks:
// any leader, old or new, decides the same from the same snapshot.
type Copier struct {
	cfg CopierConfig
	log *slog.Logger
}

// NewCopier returns a Copier; it does nothing until Tick or Run.
func NewCopier(cfg CopierConfig) (*Copier, error) {
	if cfg.State == nil || cfg.Proposer == nil {
		return nil, errors.New("image copier: state and proposer are required")
	}
	if cfg.OpenShare == nil {
		cfg.OpenShare = NFSShare
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultCopyInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Copier{cfg: cfg, log: cfg.Logger.With("component", "imagecopier")}, nil
}

// Run ticks every Interval and soon after state changes (a burst of
// changes settles for up to 100 ms first) until ctx ends. Only the leader
// runs it, in a goroutine of its own.
func (c *Copier) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	settle := min(c.cfg.Interval/10, 100*time.Millisecond)
	for {
		changed := c.cfg.State.Changed()
		c.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			select {
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
		}
	}
}

// Tick does the leader's image work once: it records which hosts should
// hold each active image (DesiredCopies), forgets holders that left the
// cluster, removes deleted images from the shared storage and kills
// uploads whose host is gone. A nil Copier does nothing.
func (c *Copier) Tick(ctx context.Context) {
	if c == nil {
		return
	}
	sn := c.cfg.State.Snapshot()
	copies := statedb.DefaultImageCopies
	if cfg, ok := sn.Cluster(); ok {
		copies = cfg.Settings.EffectiveImageCopies()
	}
	alive := c.alive(sn)
	members := map[string]bool{}
	for _, m := range sn.Members() {
		members[m.ID] = true
	}
	for _, img := range sn.Images() {
		if ctx.Err() != nil {
			return
		}
		for _, h := range img.Holders {
			if h != statedb.ImageHolderShared && !members[h] {
				c.propose(ctx, img.ID, statedb.CmdReportImageHolder, statedb.ReportImageHolderCmd{ImageID: img.ID, HostID: h, Drop: true})
			}
		}
		switch img.Status {
		case statedb.ImageActive:
			if want, ok := DesiredCopies(sn, img, alive, copies); ok && !slices.Equal(want, img.DesiredHolders) {
				c.propose(ctx, img.ID, statedb.CmdSetImageCopies, statedb.SetImageCopiesCmd{ImageID: img.ID, Hosts: want})
			}
		case statedb.ImageDeleted:
			c.releaseShared(ctx, sn, img)
		case statedb.ImageSaving:
			// The host receiving the upload died: the upload cannot finish.
			if img.UploadHost != "" && !alive[img.UploadHost] && c.cfg.Now().Sub(img.UpdatedAt) > savingGrace {
				c.propose(ctx, img.ID, statedb.CmdKillImage, statedb.ImageUploadCmd{ID: img.ID, HostID: img.UploadHost})
			}
		}
	}
}

func (c *Copier) alive(sn *statedb.Snapshot) map[string]bool {
	if c.cfg.Alive != nil {
		return c.cfg.Alive()
	}
	out := map[string]bool{}
	for _, m := range sn.Members() {
		out[m.ID] = true
	}
	return out
}

func (c *Copier) propose(ctx context.Context, imageID string, t statedb.CmdType, payload any) {
	err := c.cfg.Proposer.Propose(ctx, t, payload)
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, statedb.ErrConflict), errors.Is(err, statedb.ErrNotFound):
		// The image changed since the snapshot; the next tick decides again.
		c.log.Debug("image command refused", "image", imageID, "cmd", t, "err", err)
	default:
		c.log.Warn("image command failed", "image", imageID, "cmd", t, "err", err)
	}
}

// DesiredCopies decides which hosts should hold an active image's blob:
// copies hosts that are members alive in gossip, preferring, in order,
// the wanted hosts that already hold it, the other wanted hosts (a fetch
// may be under way), the other holders, then the rest in an order spread
// by a hash of (image, host) so images do not all land on one host. An
// image on the shared storage wants no host copy. ok is false when the
// wanted hosts should stay as they are: the image is not active, or no
// holder is alive to copy from (a down holder that comes back must still
// count as wanted).
func DesiredCopies(sn *statedb.Snapshot, img *statedb.Image, alive map[string]bool, copies int) (hosts []string, ok bool) {
	if img.Status != statedb.ImageActive {
		return nil, false
	}
	if img.HasHolder(statedb.ImageHolderShared) {
		return nil, true
	}
	members := sn.Members()
	isMember := map[string]bool{}
	for _, m := range members {
		isMember[m.ID] = true
	}
	up := func(h string) bool { return isMember[h] && alive[h] }
	if !slices.ContainsFunc(img.Holders, up) {
		return nil, false
	}
	out := []string{}
	add := func(h string) {
		if len(out) < copies && up(h) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	for _, h := range img.DesiredHolders {
		if img.HasHolder(h) {
			add(h)
		}
	}
	for _, h := range img.DesiredHolders {
		add(h)
	}
	for _, h := range img.Holders {
		add(h)
	}
	rest := make([]string, 0, len(members))
	for _, m := range members {
		rest = append(rest, m.ID)
	}
	score := func(h string) uint64 {
		f := fnv.New64a()
		f.Write([]byte(img.ID + "/" + h))
		return f.Sum64()
	}
	sort.Slice(rest, func(i, j int) bool { return score(rest[i]) < score(rest[j]) })
	for _, h := range rest {
		add(h)
	}
	return out, true
}

// releaseShared drops the shared storage's copy of a deleted image: the
// blob goes from the shares once no live image on the shared storage has
// the same bytes, then the holder is dropped. Host copies are released by
// each host's Cache.
func (c *Copier) releaseShared(ctx context.Context, sn *statedb.Snapshot, img *statedb.Image) {
	if !img.HasHolder(statedb.ImageHolderShared) {
		return
	}
	live := slices.ContainsFunc(sn.ImagesWithBlob(img.SHA256), func(o *statedb.Image) bool {
		return o.Status != statedb.ImageDeleted && o.HasHolder(statedb.ImageHolderShared)
	})
	if !live {
		if err := c.removeShared(ctx, sn, img.SHA256); err != nil {
			c.log.Warn("remove image blob from the share", "image", img.ID, "err", err)
			return
		}
	}
	c.propose(ctx, img.ID, statedb.CmdReportImageHolder,
		statedb.ReportImageHolderCmd{ImageID: img.ID, HostID: statedb.ImageHolderShared, Drop: true})
}

// removeShared removes a blob from the current share (a failure is
// returned: the next tick retries) and from the former ones (a failure
// there is only logged, and bounded by formerShareTimeout: a share taken
// out of service must not hold deletes up).
func (c *Copier) removeShared(ctx context.Context, sn *statedb.Snapshot, sum string) error {
	current := currentShare(sn)
	for _, u := range shareURLs(sn) {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if u != current {
			rctx, cancel = context.WithTimeout(ctx, formerShareTimeout)
		}
		share, err := c.cfg.OpenShare(u)
		if err == nil {
			err = share.Remove(rctx, sum)
		}
		cancel()
		switch {
		case err != nil && u == current:
			return err
		case err != nil:
			c.log.Warn("remove image blob from a former share", "share", u, "sha256", sum, "err", err)
		}
	}
	// A former share that does not answer is most likely retired; retrying
	// it on every tick would hold the tick up for every deleted image, for
	// ever. The blob may stay behind there (logged above).
	return nil
}
