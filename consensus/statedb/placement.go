package statedb

import (
	"math"
	"slices"
	"sort"
)

// Placement: the one rule that decides whether an instance (or a volume on
// local storage) may go on a host. The leader's scheduler (node/scheduler)
// chooses among the hosts this rule allows, and the state machine re-checks
// every claim of a plan with the same rule against the state the plan is
// applied to (applyPlaceInstances, applyPlaceVolume), so a stale plan can
// never over-commit a host or break a constraint, and a plan made from the
// current state is never refused. The scheduler cannot be imported here;
// it imports this.
//
// The rule has two parts:
//   - capacity: for vCPU, RAM and disk, used + requested ≤ ⌊total × ratio⌋
//     under the cluster's over-commit Ratios (Fits, Headroom, Room.Holds);
//   - constraints: a host pin (the host an instance's local boot volume
//     lives on; later migration and evacuation targets), the hard
//     server-group policies with anti-affinity's max_server_per_host rule
//     (Constraints.Allows, GroupAllows) and the
//     physical networks its ports sit on directly, each of which the host
//     must map to an interface (MapsPhysnets). Soft policies are
//     preferences of the scheduler's weighing, never a reason to refuse.

// NoValidHost is Nova's fault message when no host fits an instance.
const NoValidHost = "No valid host was found. There are not enough hosts available."

// Server-group policies.
const (
	PolicyAffinity         = "affinity"
	PolicyAntiAffinity     = "anti-affinity"
	PolicySoftAffinity     = "soft-affinity"
	PolicySoftAntiAffinity = "soft-anti-affinity"
)

// ValidPolicy reports whether p is a server-group policy.
func ValidPolicy(p string) bool {
	switch p {
	case PolicyAffinity, PolicyAntiAffinity, PolicySoftAffinity, PolicySoftAntiAffinity:
		return true
	}
	return false
}

// DefaultRatios returns Nova's default allocation ratios: 4 vCPUs per core,
// no over-commit of RAM or disk.
func DefaultRatios() Ratios { return Ratios{CPU: 4, RAM: 1, Disk: 1} }

// WithDefaults fills a ratio that is zero, negative, NaN or infinite from
// DefaultRatios.
func (r Ratios) WithDefaults() Ratios {
	d := DefaultRatios()
	fix := func(v, def float64) float64 {
		if v > 0 && !math.IsInf(v, 0) {
			return v
		}
		return def
	}
	return Ratios{CPU: fix(r.CPU, d.CPU), RAM: fix(r.RAM, d.RAM), Disk: fix(r.Disk, d.Disk)}
}

// Resource dimensions of a Room.
const (
	DimCPU = iota
	DimRAM
	DimDisk
)

// Room is an amount per resource dimension (vCPU, RAM MB, disk GB): what a
// host can still accept (negative when over-committed), or what a claim
// needs.
type Room [3]int64

// maxLimit caps capacities so that sums of claims cannot overflow.
const maxLimit = 1 << 62

// limit is ⌊total × ratio⌋, the most that may be claimed.
func limit(total int, ratio float64) int64 {
	if total <= 0 {
		return 0
	}
	v := math.Floor(float64(total) * ratio)
	if v >= maxLimit {
		return maxLimit
	}
	return int64(v)
}

// Headroom is what a host with physical totals total and committed claims
// used can still accept under r (defaults filled in); negative used counts
// as 0.
func Headroom(total, used HostCap, r Ratios) Room {
	r = r.WithDefaults()
	u := func(v int) int64 { return int64(max(v, 0)) }
	return Room{
		DimCPU:  limit(total.VCPUs, r.CPU) - u(used.VCPUs),
		DimRAM:  limit(total.RAMMB, r.RAM) - u(used.RAMMB),
		DimDisk: limit(total.DiskGB, r.Disk) - u(used.DiskGB),
	}
}

// Demand is what claim c needs; ok is false when a size is negative, which
// never fits.
func (c HostCap) Demand() (need Room, ok bool) {
	if c.VCPUs < 0 || c.RAMMB < 0 || c.DiskGB < 0 {
		return need, false
	}
	return Room{int64(c.VCPUs), int64(c.RAMMB), int64(c.DiskGB)}, true
}

// Holds reports whether need fits in room on every dimension.
func (room Room) Holds(need Room) bool {
	return need[DimCPU] <= room[DimCPU] && need[DimRAM] <= room[DimRAM] && need[DimDisk] <= room[DimDisk]
}

// Fits is the capacity rule: need fits a host with totals total and claims
// used under r.
func Fits(total, used, need HostCap, r Ratios) bool {
	n, ok := need.Demand()
	return ok && Headroom(total, used, r).Holds(n)
}

// GroupAllows is the hard server-group rule: members counts the group's
// other members per host (any key type: host ids, or a scheduler's host
// indexes). Affinity allows a host only while every member runs there (or
// none runs anywhere); anti-affinity only a host with fewer than
// maxPerHost members (its max_server_per_host rule; below 1, as without
// the rule, means 1: no member there). Other policies, soft ones included,
// allow every host, and ignore maxPerHost.
func GroupAllows[K comparable](policy string, maxPerHost int, members map[K]int, host K) bool {
	switch policy {
	case PolicyAffinity:
		for k, n := range members {
			if n > 0 && k != host {
				return false
			}
		}
	case PolicyAntiAffinity:
		return members[host] < max(maxPerHost, 1)
	}
	return true
}

// Constraints are where an instance may go, beyond capacity.
type Constraints struct {
	// Pin is the only host the instance may go on, "" for any: the host
	// its boot volume's file lives on (local storage).
	Pin string
	// Group is the instance's server group ("" for none), Policy its
	// policy, MaxPerHost its max_server_per_host rule (0 for none) and
	// Members where its other members run: host id → count.
	Group, Policy string
	MaxPerHost    int
	Members       map[string]int
	// NoGroup is set when the instance names a group that does not exist:
	// no host is allowed.
	NoGroup bool
	// Physnets are the physical networks the instance's ports sit on
	// directly (PlacementPhysnets); hostPhysnets looks up what a host maps
	// (physical network → interface) in the same state, one host at a
	// time: an apply over thousands of hosts asks only about the host it
	// places on. Set only when Physnets is not empty.
	Physnets     []string
	hostPhysnets func(host string) map[string]string
}

// Allows reports whether the constraints let the instance go on host.
func (c *Constraints) Allows(host string) bool {
	if c.NoGroup || c.Pin != "" && c.Pin != host || !GroupAllows(c.Policy, c.MaxPerHost, c.Members, host) {
		return false
	}
	if len(c.Physnets) == 0 {
		return true
	}
	var mapped map[string]string
	if c.hostPhysnets != nil {
		mapped = c.hostPhysnets(host)
	}
	return MapsPhysnets(mapped, c.Physnets)
}

// MapsPhysnets is the physical-network rule: a host whose mapping is mapped
// (physical network → interface, as its agent reported it in
// HostNetworks) may take an instance whose ports need the physical networks
// need only if it maps every one of them. A host without the mapping could
// not plug the port: its agent gives it no external ports.
func MapsPhysnets(mapped map[string]string, need []string) bool {
	for _, p := range need {
		if mapped[p] == "" {
			return false
		}
	}
	return true
}

// PlacementPhysnets lists, sorted and without repeats, the physical
// networks inst's ports sit on directly: those of its ports' flat or vlan
// (provider) networks. Ports on VXLAN networks need nothing of a host,
// so only a port straight on a provider network constrains placement.
// (Provider networks and host mappings came with the release that added
// this rule, so no earlier log entry places such a port.)
func (sn *Snapshot) PlacementPhysnets(inst *Instance) []string {
	var out []string
	for _, id := range inst.PortIDs {
		p, ok := sn.Port(id)
		if !ok {
			continue
		}
		if n, ok := sn.Network(p.NetworkID); ok && n.PhysicalNetwork != "" && !slices.Contains(out, n.PhysicalNetwork) {
			out = append(out, n.PhysicalNetwork)
		}
	}
	sort.Strings(out)
	return out
}

// PlacementConstraints returns inst's constraints in this state. Members
// not placed in the state but in ahead (instance id → host of a plan
// still in flight) count on that host.
func (sn *Snapshot) PlacementConstraints(inst *Instance, ahead map[string]string) Constraints {
	c := Constraints{Pin: sn.PlacementPin(inst), Physnets: sn.PlacementPhysnets(inst)}
	if len(c.Physnets) > 0 {
		c.hostPhysnets = func(host string) map[string]string {
			if h, ok := sn.HostNetworks(host); ok {
				return h.Physnets
			}
			return nil
		}
	}
	if inst.GroupID == "" {
		return c
	}
	c.Group = inst.GroupID
	g, members, ok := sn.GroupPlacement(inst.GroupID, inst.ID, ahead)
	if !ok {
		c.NoGroup = true
		return c
	}
	c.Policy, c.MaxPerHost, c.Members = g.Policy, g.MaxServerPerHost, members
	return c
}

// PlacementPin is the host inst must go on, "" for any: where its boot
// volume's file lives on local storage. Only a reserved boot volume (one
// with inst's boot attachment) pins: an entry from before reservations
// placed such servers anywhere, and replay must reach the same state
// (docs/checklist-command.md).
//
// A host an admin requested at create (Instance.RequestedHost) pins the
// first placement only (a failover or evacuation goes anywhere); when it
// differs from the boot volume's host the pin is NoHostPin, which no host
// matches.
func (sn *Snapshot) PlacementPin(inst *Instance) string {
	pin := ""
	if v, ok := sn.Volume(inst.RootVolume); ok && bootAttachment(v, inst) != nil {
		pin = sn.BootVolumeHost(inst)
	}
	if inst.RequestedHost != "" && inst.Host == "" {
		if pin != "" && pin != inst.RequestedHost {
			return NoHostPin
		}
		return inst.RequestedHost
	}
	return pin
}

// PlacementNeed is what placing inst takes of a host under the capacity
// rule: its claim, and while its boot volume is to be made with it (local
// storage, no host yet: CreateInstancesPlacedBoot) that volume's disk too,
// since the volume's file goes on the same host. (Otherwise placing an
// instance does not count volumes, see below.)
func (sn *Snapshot) PlacementNeed(inst *Instance) HostCap {
	need := inst.Claim()
	if v, ok := sn.Volume(inst.RootVolume); ok && v.Host == "" && v.Status == VolumeCreating && bootAttachment(v, inst) != nil {
		need.DiskGB += max(v.SizeGB, 0)
	}
	return need
}

// NoHostPin is a pin no host matches: the requested host and the boot
// volume's host differ.
const NoHostPin = "(no host: the requested host is not the boot volume's)"

// GroupPlacement returns server group id (its policy and rule) and where
// its members other than except run: host id → count, members placed only
// in ahead (a plan in flight) counting on that host. ok is false when the
// group does not exist.
func (sn *Snapshot) GroupPlacement(id, except string, ahead map[string]string) (g *ServerGroup, members map[string]int, ok bool) {
	g, ok = sn.ServerGroup(id)
	if !ok {
		return nil, nil, false
	}
	members = map[string]int{}
	for _, m := range g.Members {
		if m == except {
			continue
		}
		host := ahead[m]
		if i, ok := sn.Instance(m); ok && i.Host != "" {
			host = i.Host
		}
		if host != "" {
			members[host]++
		}
	}
	return g, members, true
}

// Volumes on local storage are placed by the same capacity rule, on disk
// only: a volume of SizeGB fits a host whose disk holds it beside the
// claims of the instances placed there and the local volumes it already
// has. (Instance placement does not count volumes: their files are not the
// instances' disks.)

// Unplaced reports whether v waits for the leader to choose its host: it is
// creating on local storage and has none. A boot volume made with its
// server (reserved by the server's attachment) is not: it goes where the
// server is placed.
func Unplaced(sn *Snapshot, v *Volume) bool {
	return v.Status == VolumeCreating && v.Host == "" && len(v.Attachments) == 0 && !sn.VolumeShared(v)
}

// UnplacedVolumes lists the volumes waiting for a host, oldest first. (An
// empty Host is not indexed: this scans the volumes.)
func (sn *Snapshot) UnplacedVolumes() []*Volume {
	var out []*Volume
	for _, v := range sn.Volumes() {
		if Unplaced(sn, v) {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.Before(out[b].CreatedAt)
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// VolumeClaimOn is what the volumes on host's local storage take of it.
func (sn *Snapshot) VolumeClaimOn(host string) HostCap {
	var c HostCap
	for _, v := range sn.VolumesOnHost(host) {
		if !sn.VolumeShared(v) {
			c.DiskGB += max(v.SizeGB, 0)
		}
	}
	return c
}

// VolumeNeed is what volume v claims of its host's resources.
func VolumeNeed(v *Volume) HostCap { return HostCap{DiskGB: v.SizeGB} }

// VolumeFits is the placement rule for a volume on local storage: host is
// an enabled member and v fits beside its instances' claims and its local
// volumes, with total its physical totals.
func (sn *Snapshot) VolumeFits(v *Volume, host string, total HostCap, r Ratios) bool {
	if m, ok := sn.Member(host); !ok || m.Disabled {
		return false
	}
	used := sn.ClaimsOn(host).Add(sn.VolumeClaimOn(host))
	return Fits(total, used, VolumeNeed(v), r)
}
