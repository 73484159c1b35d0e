package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Live is what the host source (gossip) says about a member: liveness and
// physical totals. Plan takes the disabled flag from the member record.
type Live struct {
	ID                   string
	Alive                bool // alive and not leaving
	Arch                 string
	VCPUs, RAMMB, DiskGB int
}

// Plan is a scheduling round as the leader runs it: it places batch (the
// oldest pending instances) on the members of sn that live reports, with
// claims and groups from sn plus the placements of the plans still in
// flight (inflight: instance id → host, "" for a failure), and returns the
// plan to commit. Each instance's constraints come from the state as
// statedb.Snapshot.PlacementConstraints, which the state machine applies,
// reads them.
func Plan(sn *statedb.Snapshot, live []Live, batch []*statedb.Instance, inflight map[string]string) statedb.PlaceInstancesCmd {
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
	opts := Options{Ratios: settings.Ratios}
	if settings.Weigher == "pack" {
		opts.Weigher = Pack
	}
	byID := make(map[string]Live, len(live))
	for _, l := range live {
		byID[l.ID] = l
	}
	groups := map[string]Group{}
	reqs := make([]Request, 0, len(batch))
	pins := map[string]string{}    // instance id → its pin
	needs := map[string][]string{} // instance id → its physical networks
	for _, i := range batch {
		// statedb.Snapshot.PlacementConstraints, with each group's members
		// counted once per batch (the batch's own are pending, so none is
		// placed or ahead).
		pin := sn.PlacementPin(i)
		if _, done := groups[i.GroupID]; i.GroupID != "" && !done {
			if g, members, ok := sn.GroupPlacement(i.GroupID, "", ahead); ok {
				groups[i.GroupID] = Group{ID: i.GroupID, Policy: g.Policy, MaxPerHost: g.MaxServerPerHost, Hosts: members}
			}
		}
		if pin != "" {
			pins[i.ID] = pin
		}
		physnets := sn.PlacementPhysnets(i)
		if len(physnets) > 0 {
			needs[i.ID] = physnets
		}
		c := sn.PlacementNeed(i)
		az := i.AZ
		if az == DefaultAZ {
			az = ""
		}
		reqs = append(reqs, Request{InstanceID: i.ID, VCPUs: c.VCPUs, RAMMB: c.RAMMB, DiskGB: c.DiskGB,
			AZ: az, Arch: i.Arch, Group: i.GroupID, Pin: pin, Physnets: physnets})
	}
	// What the hosts map matters only for the physical networks the batch
	// needs: only the hosts mapping one of them are read (through the
	// state's index), the rest get none, which MapsPhysnets treats alike.
	mapped := map[string]map[string]string{}
	for _, name := range neededPhysnets(needs) {
		for _, hn := range sn.HostsMapping([]string{name}) {
			mapped[hn.ID] = hn.Physnets
		}
	}
	claims := sn.Claims()
	members := sn.MembersByID()
	hosts := make([]Host, 0, len(members))
	caps := make(map[string]statedb.HostCap, len(members))
	for _, m := range members {
		l, ok := byID[m.ID]
		if !ok {
			continue
		}
		used := claims[m.ID].Add(extra[m.ID])
		hosts = append(hosts, Host{
			ID: m.ID, Name: m.Name, Alive: l.Alive, Enabled: !m.Disabled,
			Arch: l.Arch, VCPUs: l.VCPUs, RAMMB: l.RAMMB, DiskGB: l.DiskGB,
			UsedVCPUs: used.VCPUs, UsedRAMMB: used.RAMMB, UsedDiskGB: used.DiskGB,
			Physnets: mapped[m.ID],
		})
		caps[m.ID] = statedb.HostCap{VCPUs: l.VCPUs, RAMMB: l.RAMMB, DiskGB: l.DiskGB}
	}
	placements, failures := Place(hosts, groups, reqs, opts)
	cmd := statedb.PlaceInstancesCmd{PlanIndex: sn.Index, HostCaps: map[string]statedb.HostCap{}, Ratios: settings.Ratios}
	for _, p := range placements {
		cmd.Placements = append(cmd.Placements, statedb.PlacementRec{InstanceID: p.InstanceID, HostID: p.HostID})
		cmd.HostCaps[p.HostID] = caps[p.HostID]
	}
	for _, f := range failures {
		reason := f.Reason
		if pin, ok := pins[f.InstanceID]; ok && reason == statedb.NoValidHost {
			if i, ok := sn.Instance(f.InstanceID); ok {
				reason = PinnedNoHost(sn, i, pin)
				if need, ok := needs[f.InstanceID]; ok {
					reason += fmt.Sprintf(" Its ports also need physical networks %s there (--physnet).", strings.Join(need, ", "))
				}
			}
		} else if need, ok := needs[f.InstanceID]; ok && reason == statedb.NoValidHost {
			reason = PhysnetNoHost(need)
		}
		cmd.Failures = append(cmd.Failures, statedb.PlacementFailure{InstanceID: f.InstanceID, Reason: reason})
	}
	return cmd
}

// neededPhysnets lists, sorted without repeats, the physical networks of
// needs.
func neededPhysnets(needs map[string][]string) []string {
	var out []string
	for _, need := range needs {
		out = append(out, need...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// PinnedNoHost is the fault of a server pinned to a host that cannot take
// it: the host an admin requested, or its boot volume's (local storage).
func PinnedNoHost(sn *statedb.Snapshot, i *statedb.Instance, pin string) string {
	name := pin
	if m, ok := sn.Member(pin); ok {
		name = m.Name
	}
	switch {
	case pin == statedb.NoHostPin:
		return fmt.Sprintf("%s The requested host is not the host of boot volume %s (local storage).", statedb.NoValidHost, i.RootVolume)
	case pin == i.RequestedHost && i.Host == "":
		return fmt.Sprintf("%s The requested host %s cannot take the server.", statedb.NoValidHost, name)
	}
	return fmt.Sprintf("%s Boot volume %s is on host %s's local storage, and that host cannot take the server.",
		statedb.NoValidHost, i.RootVolume, name)
}

// PhysnetNoHost is the fault of a server whose ports sit directly on
// provider networks when no host that maps their physical networks can
// take it.
func PhysnetNoHost(need []string) string {
	return fmt.Sprintf("%s Its ports need physical networks %s, and no host that maps them (--physnet) can take it.",
		statedb.NoValidHost, strings.Join(need, ", "))
}

// PlanVolumes chooses the hosts of the volumes waiting for one on local
// storage (statedb.UnplacedVolumes), oldest first: with Place, among the
// live, enabled members, by free disk beside the claims of their instances
// and local volumes (statedb.Snapshot.VolumeFits is the rule the state
// machine re-checks). A volume no host has room for gets a Failure.
func PlanVolumes(sn *statedb.Snapshot, live []Live) []statedb.PlaceVolumeCmd {
	vols := sn.UnplacedVolumes()
	if len(vols) == 0 {
		return nil
	}
	var settings statedb.Settings
	if cfg, ok := sn.Cluster(); ok {
		settings = cfg.Settings
	}
	opts := Options{Ratios: settings.Ratios}
	if settings.Weigher == "pack" {
		opts.Weigher = Pack
	}
	byID := make(map[string]Live, len(live))
	for _, l := range live {
		byID[l.ID] = l
	}
	claims := sn.Claims()
	var hosts []Host
	caps := map[string]statedb.HostCap{}
	for _, m := range sn.MembersByID() {
		l, ok := byID[m.ID]
		if !ok {
			continue
		}
		used := claims[m.ID].Add(sn.VolumeClaimOn(m.ID))
		hosts = append(hosts, Host{ID: m.ID, Name: m.Name, Alive: l.Alive, Enabled: !m.Disabled,
			VCPUs: l.VCPUs, RAMMB: l.RAMMB, DiskGB: l.DiskGB,
			UsedVCPUs: used.VCPUs, UsedRAMMB: used.RAMMB, UsedDiskGB: used.DiskGB})
		caps[m.ID] = statedb.HostCap{VCPUs: l.VCPUs, RAMMB: l.RAMMB, DiskGB: l.DiskGB}
	}
	reqs := make([]Request, len(vols))
	for i, v := range vols {
		n := statedb.VolumeNeed(v)
		reqs[i] = Request{InstanceID: v.ID, VCPUs: n.VCPUs, RAMMB: n.RAMMB, DiskGB: n.DiskGB}
	}
	placed, failed := Place(hosts, nil, reqs, opts)
	out := make([]statedb.PlaceVolumeCmd, 0, len(vols))
	for _, p := range placed {
		out = append(out, statedb.PlaceVolumeCmd{VolumeID: p.InstanceID, HostID: p.HostID, HostCap: caps[p.HostID], Ratios: settings.Ratios})
	}
	for _, f := range failed {
		v, _ := sn.Volume(f.InstanceID)
		out = append(out, statedb.PlaceVolumeCmd{VolumeID: f.InstanceID,
			Failure: fmt.Sprintf("%s No host has room for a volume of %d GB on its local storage.", statedb.NoValidHost, v.SizeGB)})
	}
	return out
}
