package leader

import (
	"fmt"

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

// planPlacements is the pure part of a scheduling round: hosts from the
// member records (disabled flag) and the host source (liveness, totals),
// claims and groups from the state plus the placements of the plans still
// in flight (instance id → host).
func planPlacements(sn *statedb.Snapshot, live []gossip.Member, batch []*statedb.Instance, inflight map[string]string) statedb.PlaceInstancesCmd {
	// Placements in flight that the snapshot does not show yet.
	ahead := map[string]string{}
	extra := map[string]statedb.HostCap{}
	for id, host := range inflight {
		if i, ok := sn.Instance(id); ok && host != "" && i.Pending() {
			ahead[id] = host
			extra[host] = extra[host].Add(i.Claim())
		}
	}
	var settings statedb.Settings
	if cfg, ok := sn.Cluster(); ok {
		settings = cfg.Settings
	}
	ratios := scheduler.Ratios{CPU: settings.Ratios.CPU, RAM: settings.Ratios.RAM, Disk: settings.Ratios.Disk}
	opts := scheduler.Options{Ratios: ratios}
	if settings.Weigher == "pack" {
		opts.Weigher = scheduler.Pack
	}
	byID := make(map[string]gossip.Member, len(live))
	for _, m := range live {
		byID[m.Name] = m
	}
	claims := sn.Claims()
	members := sn.MembersByID()
	hosts := make([]scheduler.Host, 0, len(members))
	caps := make(map[string]statedb.HostCap, len(members))
	for _, m := range members {
		g, ok := byID[m.ID]
		if !ok {
			continue
		}
		used := claims[m.ID].Add(extra[m.ID])
		hosts = append(hosts, scheduler.Host{
			ID: m.ID, Name: m.Name, Alive: g.State == gossip.StateAlive && !g.Meta.Leaving, Enabled: !m.Disabled,
			Arch: g.Meta.Arch, VCPUs: g.Meta.VCPUs, RAMMB: g.Meta.RAMMB, DiskGB: g.Meta.DiskGB,
			UsedVCPUs: used.VCPUs, UsedRAMMB: used.RAMMB, UsedDiskGB: used.DiskGB,
		})
		caps[m.ID] = statedb.HostCap{VCPUs: g.Meta.VCPUs, RAMMB: g.Meta.RAMMB, DiskGB: g.Meta.DiskGB}
	}
	groups := map[string]scheduler.Group{}
	reqs := make([]scheduler.Request, 0, len(batch))
	pinned := map[string]string{} // instance id → the host its boot volume lives on
	var early []statedb.PlacementFailure
	for _, i := range batch {
		group := i.GroupID
		if pin := sn.BootVolumeHost(i); pin != "" {
			if !pinAllowedByGroup(sn, i, pin, ahead) {
				early = append(early, statedb.PlacementFailure{InstanceID: i.ID, Reason: pinnedNoHost(sn, i, pin)})
				continue
			}
			// An affinity group of one member on that host keeps the
			// scheduler's weighing and capacity checks.
			pinned[i.ID], group = pin, "boot-volume-host:"+pin
			groups[group] = scheduler.Group{ID: group, Policy: scheduler.Affinity, Hosts: map[string]int{pin: 1}}
		} else if i.GroupID != "" {
			if _, done := groups[i.GroupID]; !done {
				if g, ok := sn.ServerGroup(i.GroupID); ok {
					sg := scheduler.Group{ID: g.ID, Policy: g.Policy, Hosts: map[string]int{}}
					for _, id := range g.Members {
						if m, ok := sn.Instance(id); ok && m.Host != "" {
							sg.Hosts[m.Host]++
						} else if h, ok := ahead[id]; ok {
							sg.Hosts[h]++
						}
					}
					groups[g.ID] = sg
				}
			}
		}
		c := i.Claim()
		az := i.AZ
		if az == scheduler.DefaultAZ {
			az = ""
		}
		reqs = append(reqs, scheduler.Request{InstanceID: i.ID, VCPUs: c.VCPUs, RAMMB: c.RAMMB, DiskGB: c.DiskGB,
			AZ: az, Arch: i.Arch, Group: group})
	}
	placements, failures := scheduler.Place(hosts, groups, reqs, opts)
	cmd := statedb.PlaceInstancesCmd{PlanIndex: sn.Index, HostCaps: map[string]statedb.HostCap{},
		Ratios: statedb.Ratios{CPU: ratios.CPU, RAM: ratios.RAM, Disk: ratios.Disk}}
	for _, p := range placements {
		cmd.Placements = append(cmd.Placements, statedb.PlacementRec{InstanceID: p.InstanceID, HostID: p.HostID})
		cmd.HostCaps[p.HostID] = caps[p.HostID]
	}
	cmd.Failures = early
	for _, f := range failures {
		reason := f.Reason
		if pin, ok := pinned[f.InstanceID]; ok && reason == scheduler.NoValidHost {
			if i, ok := sn.Instance(f.InstanceID); ok {
				reason = pinnedNoHost(sn, i, pin)
			}
		}
		cmd.Failures = append(cmd.Failures, statedb.PlacementFailure{InstanceID: f.InstanceID, Reason: reason})
	}
	return cmd
}

// pinnedNoHost is the fault of a server whose boot volume's host (local
// storage) cannot take it.
func pinnedNoHost(sn *statedb.Snapshot, i *statedb.Instance, pin string) string {
	name := pin
	if m, ok := sn.Member(pin); ok {
		name = m.Name
	}
	return fmt.Sprintf("%s Boot volume %s is on host %s's local storage, and that host cannot take the server.",
		statedb.NoValidHost, i.RootVolume, name)
}

// pinAllowedByGroup reports whether placing i on pin keeps its server
// group's hard policy, counting members placed in plans still in flight
// (ahead). The state machine checks the same when it applies the plan.
func pinAllowedByGroup(sn *statedb.Snapshot, i *statedb.Instance, pin string, ahead map[string]string) bool {
	if i.GroupID == "" {
		return true
	}
	g, ok := sn.ServerGroup(i.GroupID)
	if !ok {
		return false
	}
	for _, id := range g.Members {
		if id == i.ID {
			continue
		}
		host := ahead[id]
		if m, ok := sn.Instance(id); ok && m.Host != "" {
			host = m.Host
		}
		switch {
		case host == "":
		case g.Policy == scheduler.AntiAffinity && host == pin, g.Policy == scheduler.Affinity && host != pin:
			return false
		}
	}
	return true
}
