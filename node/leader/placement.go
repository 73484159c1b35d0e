package leader

import (
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/scheduler"
)

// maxPlacementBatch is the most instances one PlaceInstances command
// carries.
const maxPlacementBatch = 1000

// planRound plans the oldest pending instances not in flight (at most
// maxPlacementBatch), counting the claims of in-flight placements the
// snapshot does not show yet. It returns the plan, the instances it
// covers and whether more were left for the next round.
func planRound(sn *statedb.Snapshot, live []gossip.Member, inflight map[string]string) (statedb.PlaceInstancesCmd, []string, bool) {
	var batch []*statedb.Instance
	more := false
	for _, i := range sn.PendingInstances() {
		if _, busy := inflight[i.ID]; busy {
			continue
		}
		if len(batch) == maxPlacementBatch {
			more = true
			break
		}
		batch = append(batch, i)
	}
	if len(batch) == 0 {
		return statedb.PlaceInstancesCmd{}, nil, false
	}
	ids := make([]string, len(batch))
	for k, i := range batch {
		ids[k] = i.ID
	}
	return planPlacements(sn, live, batch, inflight), ids, more
}

// planPlacements is the pure part of a scheduling round: scheduler.Plan
// with host liveness and totals from the host source.
func planPlacements(sn *statedb.Snapshot, live []gossip.Member, batch []*statedb.Instance, inflight map[string]string) statedb.PlaceInstancesCmd {
	return scheduler.Plan(sn, schedulerHosts(live), batch, inflight)
}

// schedulerHosts is what the host source says about each member.
func schedulerHosts(live []gossip.Member) []scheduler.Live {
	out := make([]scheduler.Live, 0, len(live))
	for _, g := range live {
		out = append(out, scheduler.Live{ID: g.Name, Alive: g.State == gossip.StateAlive && !g.Meta.Leaving,
			Arch: g.Meta.Arch, VCPUs: g.Meta.VCPUs, RAMMB: g.Meta.RAMMB, DiskGB: g.Meta.DiskGB})
	}
	return out
}
