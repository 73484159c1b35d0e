package leader

import (
	"context"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/scheduler"
)

// Volumes is the leader's volume work: it chooses the hosts of new volumes
// on local storage (the placement rule, through the scheduler), releases
// attachments whose server is gone (deleted with the volume attached) and
// hands the volumes of hosts that left the cluster to this host (shared
// storage) or marks them lost (local storage). The state machine re-checks
// all three, so a stale view proposes nothing harmful.
type Volumes struct {
	SelfID   string
	Store    Store      // the state, and when it changes
	Hosts    HostSource // liveness and capacity (gossip)
	Proposer Proposer
	Interval time.Duration
	Logger   *slog.Logger
}

// Routine is the volume work as a leader routine: a full pass every
// Interval, and at once when the state changes while a volume waits for a
// host, so a new volume is placed within a Raft round trip.
func (v Volumes) Routine() Routine {
	return Routine{Name: "volumes", Run: func(ctx context.Context, hints <-chan struct{}) error {
		t := time.NewTicker(v.Interval)
		defer t.Stop()
		tried := map[string]bool{} // unplaced volumes the last pass planned for
		for {
			changed := v.Store.Changed()
			tried = v.tick(ctx)
		wait:
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-t.C:
					break wait
				case <-hints:
					break wait
				case <-changed:
					// Only a volume the last pass did not see yet takes the
					// fast path; one that could not be placed waits for the
					// next full pass, so a stuck volume cannot make every
					// applied entry cost a pass. Re-arm before looking, so
					// a volume created meanwhile still wakes us.
					changed = v.Store.Changed()
					if hasNew(v.Store.Snapshot().UnplacedVolumes(), tried) {
						break wait
					}
				}
			}
		}
	}}
}

// hasNew reports whether vols holds a volume not in seen.
func hasNew(vols []*statedb.Volume, seen map[string]bool) bool {
	for _, vol := range vols {
		if !seen[vol.ID] {
			return true
		}
	}
	return false
}

// tick does one pass and returns the ids of the volumes that were waiting
// for a host when it planned.
func (v Volumes) tick(ctx context.Context) map[string]bool {
	sn := v.Store.Snapshot()
	tried := map[string]bool{}
	if unplaced := sn.UnplacedVolumes(); len(unplaced) > 0 {
		for _, vol := range unplaced {
			tried[vol.ID] = true
		}
		for _, p := range scheduler.PlanVolumes(sn, schedulerHosts(v.Hosts.Members())) {
			v.propose(ctx, statedb.CmdPlaceVolume, p, "place a volume", p.VolumeID)
		}
		sn = v.Store.Snapshot()
	}
	goneHosts := map[string]bool{}
	for _, vol := range sn.Volumes() {
		if a := vol.Attachment(); a != nil {
			if _, ok := sn.Instance(a.ServerID); !ok {
				v.propose(ctx, statedb.CmdReleaseVolume, statedb.ReleaseVolumeCmd{VolumeID: vol.ID, AttachmentID: a.ID},
					"release the volume of a deleted server", vol.ID)
			}
		}
		if _, ok := sn.Member(vol.Host); !ok && vol.Host != "" {
			goneHosts[vol.Host] = true
		}
	}
	for host := range goneHosts {
		v.propose(ctx, statedb.CmdVolumeHostGone, statedb.VolumeHostGoneCmd{HostID: host, NewHostID: v.SelfID},
			"hand over the volumes of a host that left", host)
	}
	return tried
}

func (v Volumes) propose(ctx context.Context, t statedb.CmdType, payload any, what, id string) {
	if _, err := v.Proposer.Propose(ctx, t, payload); err != nil && ctx.Err() == nil {
		v.Logger.Warn("volumes: "+what, "id", id, "err", err)
	}
}
