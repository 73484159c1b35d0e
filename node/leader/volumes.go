package leader

import (
	"context"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Volumes is the leader's volume work: it releases attachments whose
// server is gone (deleted with the volume attached) and hands the volumes
// of hosts that left the cluster to this host (shared storage) or marks
// them lost (local storage). The state machine re-checks both, so a stale
// view proposes nothing harmful.
type Volumes struct {
	SelfID   string
	State    StateSource
	Proposer Proposer
	Interval time.Duration
	Logger   *slog.Logger
}

// Routine is the volume work as a leader routine.
func (v Volumes) Routine() Routine { return Every("volumes", v.Interval, v.tick) }

func (v Volumes) tick(ctx context.Context) {
	sn := v.State.State()
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
}

func (v Volumes) propose(ctx context.Context, t statedb.CmdType, payload any, what, id string) {
	if _, err := v.Proposer.Propose(ctx, t, payload); err != nil && ctx.Err() == nil {
		v.Logger.Warn("volumes: "+what, "id", id, "err", err)
	}
}
