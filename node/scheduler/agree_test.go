package scheduler

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// The scheduler and the state machine apply one placement rule
// (statedb/placement.go). These tests hold them to it from both sides on
// random clusters: whatever Plan places, the PlaceInstances apply accepts
// when nothing changed in between; and a placement the state machine is
// handed directly is accepted exactly when a reference written out here
// (capacity under ratios, boot-volume pin, the host an admin requested,
// hard group policy with anti-affinity's max_server_per_host rule,
// physical networks of ports on provider networks) allows it.

// agreeEnv is a state store with an auto-incrementing index.
type agreeEnv struct {
	t   *testing.T
	s   *statedb.Store
	idx uint64
}

func (e *agreeEnv) apply(typ statedb.CmdType, payload any) error {
	e.t.Helper()
	e.idx++
	c, err := statedb.NewCommand(typ, fmt.Sprint("r", e.idx), time.Unix(int64(e.idx), 0).UTC(), payload)
	if err != nil {
		e.t.Fatal(err)
	}
	raw, _ := c.Encode()
	return e.s.Apply(e.idx, raw).Err
}

func (e *agreeEnv) must(typ statedb.CmdType, payload any) {
	e.t.Helper()
	if err := e.apply(typ, payload); err != nil {
		e.t.Fatalf("apply %d: %v", typ, err)
	}
}

// agreeScenario is a random cluster: members (some disabled), what the
// host source reports for them, groups of each policy, instances already
// placed, and pending ones, some booting from a volume on a host's local
// storage.
type agreeScenario struct {
	env    *agreeEnv
	live   []Live
	caps   map[string]statedb.HostCap
	ratios statedb.Ratios
}

// agreeSeeds is how many random clusters each test runs.
func agreeSeeds() int64 {
	if testing.Short() {
		return 30
	}
	return 150
}

var agreeRatios = []statedb.Ratios{{}, {CPU: 1, RAM: 1.5, Disk: 2}, {CPU: 16, RAM: 0.9, Disk: 1}}

// newAgreeScenario builds the scenario of seed; the same seed builds the
// same state.
func newAgreeScenario(t *testing.T, seed int64) *agreeScenario {
	rng := rand.New(rand.NewSource(seed))
	e := &agreeEnv{t: t, s: statedb.NewStore()}
	sc := &agreeScenario{env: e, caps: map[string]statedb.HostCap{}, ratios: agreeRatios[rng.Intn(len(agreeRatios))]}
	nHosts := 1 + rng.Intn(8)
	hostID := func(i int) string { return fmt.Sprintf("h%d", i) }
	e.must(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:     statedb.ClusterConfig{ClusterID: "c", Settings: statedb.Settings{Ratios: sc.ratios}},
		Member:     statedb.Member{ID: hostID(0), Name: "name-" + hostID(0)},
		Project:    statedb.Project{ID: "p", Name: "admin"},
		Admin:      statedb.User{ID: "u", Name: "admin"},
		Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k"},
	})
	e.must(statedb.CmdCreateImage, statedb.Image{ID: "img", Name: "img", ProjectID: "p", Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"})
	e.must(statedb.CmdCreateNetwork, statedb.Network{ID: "ext", ProjectID: "p", External: true, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	e.must(statedb.CmdCreateNetwork, statedb.Network{ID: "ext2", ProjectID: "p", External: true, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet2"})
	for i := range nHosts {
		id := hostID(i)
		if i > 0 {
			e.must(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: "name-" + id})
		}
		if m := randomMapping(rng); m != nil { // some hosts map physnet1, some physnet2, some both, some none
			e.must(statedb.CmdSetHostNetworks, statedb.HostNetworks{ID: id, Physnets: m})
		}
		if rng.Intn(8) == 0 {
			e.must(statedb.CmdSetHostEnabled, statedb.SetHostEnabledCmd{ID: id, Disabled: true, Reason: "test"})
		}
		l := Live{ID: id, Alive: rng.Intn(8) != 0, VCPUs: 1 << rng.Intn(4), RAMMB: 1024 << rng.Intn(4), DiskGB: 10 * (1 + rng.Intn(10))}
		if rng.Intn(6) != 0 { // some members are unknown to the host source
			sc.live = append(sc.live, l)
		}
		sc.caps[id] = statedb.HostCap{VCPUs: l.VCPUs, RAMMB: l.RAMMB, DiskGB: l.DiskGB}
	}
	policies := []string{statedb.PolicyAffinity, statedb.PolicyAntiAffinity, statedb.PolicySoftAffinity, statedb.PolicySoftAntiAffinity}
	nGroups := rng.Intn(4)
	for g := range nGroups {
		sg := statedb.ServerGroup{ID: fmt.Sprint("g", g), Name: "g", ProjectID: "p", Policy: policies[rng.Intn(len(policies))]}
		if sg.Policy == statedb.PolicyAntiAffinity && rng.Intn(4) != 0 { // max_server_per_host 1..3
			sg.MaxServerPerHost = 1 + rng.Intn(3)
			e.must(statedb.CmdCreateGroupWithRules, sg)
			continue
		}
		e.must(statedb.CmdCreateServerGroup, sg)
	}
	flavors := []statedb.Flavor{
		{ID: "1", VCPUs: 1, RAMMB: 512, DiskGB: 1},
		{ID: "2", VCPUs: 1, RAMMB: 1024, DiskGB: 10},
		{ID: "3", VCPUs: 2, RAMMB: 2048, DiskGB: 20, EphemeralGB: 5, SwapMB: 512},
		{ID: "4", VCPUs: 4, RAMMB: 4096, DiskGB: 40},
	}
	for i := range 1 + rng.Intn(30) {
		id := fmt.Sprint("i", i)
		ic := statedb.InstanceCreate{Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p",
			Flavor: flavors[rng.Intn(len(flavors))], ImageID: "img"}}
		if nGroups > 0 && rng.Intn(2) == 0 {
			ic.Instance.GroupID = fmt.Sprint("g", rng.Intn(nGroups))
		}
		ic.NICs = randomNICs(rng, id)
		if rng.Intn(4) == 0 { // boots from a new volume on a host's local storage: pinned there
			h := hostID(rng.Intn(nHosts))
			ic.Instance.ImageID = ""
			ic.Root = &statedb.RootDisk{AttachmentID: "a-" + id, New: &statedb.Volume{ID: "v-" + id, SizeGB: 1, Format: "qcow2",
				ImageID: "img", Host: h, Path: "/var/lib/peerstack/volumes/vol-v-" + id + ".qcow2"}}
		}
		typ := statedb.CmdCreateInstances
		if rng.Intn(5) == 0 { // an admin named its host
			typ, ic.Instance.RequestedHost = statedb.CmdCreateInstancesOnHost, hostID(rng.Intn(nHosts))
		} else if ic.Root != nil && rng.Intn(2) == 0 { // the volume goes where the server is placed
			typ, ic.Root.New.Host, ic.Root.New.Path = statedb.CmdCreateInstancesPlacedBoot, "", ""
			ic.Root.New.SizeGB = 1 + i*13%60 // its disk counts where it is placed
		}
		e.must(typ, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{ic}})
		if rng.Intn(3) == 0 { // already placed, wherever the state machine lets it
			h := hostID(rng.Intn(nHosts))
			e.must(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{{InstanceID: id, HostID: h}},
				HostCaps: map[string]statedb.HostCap{h: sc.caps[h]}, Ratios: sc.ratios})
		}
	}
	return sc
}

// randomMapping is what a host might report: physnet1, physnet2, both or
// nothing (nil).
func randomMapping(rng *rand.Rand) map[string]string {
	switch rng.Intn(4) {
	case 0:
		return map[string]string{"physnet1": "eth0"}
	case 1:
		return map[string]string{"physnet2": "eth0"}
	case 2:
		return map[string]string{"physnet1": "eth0", "physnet2": "eth1"}
	}
	return nil
}

// randomNICs gives a server a port straight on flat network ext (physnet1)
// one time in four, and then one on ext2 (physnet2) one time in three.
func randomNICs(rng *rand.Rand, id string) []statedb.NICRequest {
	if rng.Intn(4) != 0 {
		return nil
	}
	nics := []statedb.NICRequest{{Create: &statedb.PortRequest{ID: "port-" + id, NetworkID: "ext"}}}
	if rng.Intn(3) == 0 {
		nics = append(nics, statedb.NICRequest{Create: &statedb.PortRequest{ID: "port2-" + id, NetworkID: "ext2"}})
	}
	return nics
}

// refMapsPorts: host reported a mapping to an interface for the physical
// network of every port of inst on a provider network.
func refMapsPorts(sn *statedb.Snapshot, inst *statedb.Instance, host string) bool {
	for _, id := range inst.PortIDs {
		p, _ := sn.Port(id)
		if n, _ := sn.Network(p.NetworkID); n.PhysicalNetwork != "" {
			if hn, ok := sn.HostNetworks(host); !ok || hn.Physnets[n.PhysicalNetwork] == "" {
				return false
			}
		}
	}
	return true
}

// refAllows is the placement rule written out independently: the host is
// a member and enabled, the claims fit under the ratios (floating point),
// the boot volume's local host is the host, the hard group policy holds
// against where the other members run now, and the host maps the physical
// network of every port on a provider network.
func refAllows(sn *statedb.Snapshot, inst *statedb.Instance, host string, total statedb.HostCap, r statedb.Ratios) bool {
	if m, ok := sn.Member(host); !ok || m.Disabled {
		return false
	}
	d := statedb.DefaultRatios()
	ratio := func(v, def float64) float64 {
		if v > 0 && !math.IsInf(v, 0) {
			return v
		}
		return def
	}
	used := statedb.HostCap{}
	for _, o := range sn.Instances() {
		if o.Host == host {
			used = used.Add(o.Claim())
		}
	}
	need := inst.Claim()
	if v, ok := sn.Volume(inst.RootVolume); ok && v.Host == "" && v.Status == statedb.VolumeCreating {
		if a := v.Attachment(); a != nil && a.ServerID == inst.ID {
			need.DiskGB += v.SizeGB // its boot volume is made with it, on the same disk
		}
	}
	fits := func(t, u, n int, rt float64) bool {
		return n >= 0 && float64(max(u, 0)+n) <= math.Floor(float64(max(t, 0))*rt)
	}
	if !fits(total.VCPUs, used.VCPUs, need.VCPUs, ratio(r.CPU, d.CPU)) ||
		!fits(total.RAMMB, used.RAMMB, need.RAMMB, ratio(r.RAM, d.RAM)) ||
		!fits(total.DiskGB, used.DiskGB, need.DiskGB, ratio(r.Disk, d.Disk)) {
		return false
	}
	if v, ok := sn.Volume(inst.RootVolume); ok {
		if a := v.Attachment(); a != nil && a.ServerID == inst.ID && !sn.VolumeShared(v) && v.Host != "" && v.Host != host { // a volume made with its server has no host yet
			return false
		}
	}
	if inst.RequestedHost != "" && inst.Host == "" && inst.RequestedHost != host {
		return false
	}
	if !refMapsPorts(sn, inst, host) {
		return false
	}
	if inst.GroupID != "" {
		g, ok := sn.ServerGroup(inst.GroupID)
		if !ok {
			return false
		}
		here := 0 // other members on host
		for _, id := range g.Members {
			o, ok := sn.Instance(id)
			if !ok || id == inst.ID || o.Host == "" {
				continue
			}
			if g.Policy == statedb.PolicyAffinity && o.Host != host {
				return false
			}
			if o.Host == host {
				here++
			}
		}
		limit := 1
		if g.MaxServerPerHost > 1 {
			limit = g.MaxServerPerHost
		}
		if g.Policy == statedb.PolicyAntiAffinity && here >= limit {
			return false
		}
	}
	return true
}

// TestPlanAgreesWithStateMachine: every placement of a plan made from the
// current state is accepted, every failure recorded, nothing left pending
// that the plan covered.
func TestPlanAgreesWithStateMachine(t *testing.T) {
	pinned, grouped, external, stacked := 0, 0, 0, 0
	for seed := range agreeSeeds() {
		sc := newAgreeScenario(t, seed)
		sn := sc.env.s.Snapshot()
		batch := sn.PendingInstances()
		cmd := Plan(sn, sc.live, batch, nil)
		// The plan obeys the reference rule, placement by placement, on
		// a twin of the state that takes them one at a time.
		twin := newAgreeScenario(t, seed)
		for _, p := range cmd.Placements {
			tsn := twin.env.s.Snapshot()
			inst, _ := tsn.Instance(p.InstanceID)
			if !refAllows(tsn, inst, p.HostID, cmd.HostCaps[p.HostID], cmd.Ratios) {
				t.Fatalf("seed %d: plan puts %s on %s, which the rule forbids", seed, p.InstanceID, p.HostID)
			}
			twin.env.must(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{p},
				HostCaps: map[string]statedb.HostCap{p.HostID: cmd.HostCaps[p.HostID]}, Ratios: cmd.Ratios})
			if tsn.PlacementConstraints(inst, nil).Pin != "" {
				pinned++
			}
			if inst.GroupID != "" {
				grouped++
				if g, members, _ := tsn.GroupPlacement(inst.GroupID, inst.ID, nil); g.MaxServerPerHost > 1 && members[p.HostID] > 0 {
					stacked++ // anti-affinity beside another member, under the rule
				}
			}
			if len(tsn.PlacementPhysnets(inst)) > 0 {
				external++
			}
		}
		sc.env.must(statedb.CmdPlaceInstances, cmd)
		after := sc.env.s.Snapshot()
		for _, p := range cmd.Placements {
			if inst, _ := after.Instance(p.InstanceID); inst.Host != p.HostID {
				t.Fatalf("seed %d: the state machine refused %s on %s from a plan of the current state (plan %+v)", seed, p.InstanceID, p.HostID, cmd)
			}
		}
		for _, f := range cmd.Failures {
			if inst, _ := after.Instance(f.InstanceID); inst.VMState != statedb.VMError {
				t.Fatalf("seed %d: failure %+v not recorded: %+v", seed, f, inst)
			}
		}
		if n := len(cmd.Placements) + len(cmd.Failures); n != len(batch) {
			t.Fatalf("seed %d: plan covers %d of %d pending instances", seed, n, len(batch))
		}
	}
	// Spreading stacks members only where other hosts cannot take them:
	// the short run's few clusters may show none.
	if pinned == 0 || grouped == 0 || external == 0 || stacked == 0 && !testing.Short() {
		t.Fatalf("scenarios placed %d pinned, %d grouped (%d beside a member under max_server_per_host) and %d external instances; want some of each",
			pinned, grouped, stacked, external)
	}
}

// TestStateMachineEnforcesRule: single placements of random pending
// instances on random hosts (often a member of a group on a host where
// another member runs) are accepted exactly when the reference rule
// allows them.
func TestStateMachineEnforcesRule(t *testing.T) {
	accepted, refused := 0, 0
	ruled := map[bool]int{} // probes beside a member of a group with max_server_per_host > 1
	for seed := range agreeSeeds() {
		sc := newAgreeScenario(t, seed)
		rng := rand.New(rand.NewSource(-seed))
		for range 20 {
			sn := sc.env.s.Snapshot()
			pending := sn.PendingInstances()
			if len(pending) == 0 {
				break
			}
			var beside []*statedb.Instance // pending members of groups with members placed
			for _, i := range pending {
				if _, m, ok := sn.GroupPlacement(i.GroupID, i.ID, nil); ok && len(m) > 0 {
					beside = append(beside, i)
				}
			}
			var underRule []*statedb.Instance // those of them under max_server_per_host > 1
			for _, i := range beside {
				if g, _, _ := sn.GroupPlacement(i.GroupID, i.ID, nil); g.MaxServerPerHost > 1 {
					underRule = append(underRule, i)
				}
			}
			inst := pending[rng.Intn(len(pending))]
			switch {
			case len(underRule) > 0 && rng.Intn(3) == 0:
				inst = underRule[rng.Intn(len(underRule))]
			case len(beside) > 0 && rng.Intn(2) == 0:
				inst = beside[rng.Intn(len(beside))]
			}
			host := fmt.Sprint("h", rng.Intn(len(sc.caps)+1)) // sometimes not a member
			g, members, grouped := sn.GroupPlacement(inst.GroupID, inst.ID, nil)
			if grouped && len(members) > 0 && rng.Intn(3) != 0 { // often beside a member
				hosts := make([]string, 0, len(members))
				for h, n := range members {
					// Under max_server_per_host, half the time only hosts
					// with room left under the rule: such probes are
					// otherwise rare beside the refusals of capacity and
					// physical networks.
					if g.MaxServerPerHost > 1 && n >= g.MaxServerPerHost && rng.Intn(2) == 0 {
						continue
					}
					hosts = append(hosts, h)
				}
				if len(hosts) == 0 {
					for h := range members {
						hosts = append(hosts, h)
					}
				}
				slices.Sort(hosts)
				host = hosts[rng.Intn(len(hosts))]
			}
			total := sc.caps[host]
			want := refAllows(sn, inst, host, total, sc.ratios)
			if grouped && g.MaxServerPerHost > 1 && members[host] > 0 {
				ruled[want]++
			}
			sc.env.must(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Placements: []statedb.PlacementRec{{InstanceID: inst.ID, HostID: host}},
				HostCaps: map[string]statedb.HostCap{host: total}, Ratios: sc.ratios})
			got, _ := sc.env.s.Snapshot().Instance(inst.ID)
			if (got.Host == host) != want {
				t.Fatalf("seed %d: %s on %s: state machine accepted=%v; the rule says %v", seed, inst.ID, host, got.Host == host, want)
			}
			if want {
				accepted++
			} else {
				refused++
			}
		}
	}
	if accepted < 30 || refused < 30 || !testing.Short() && (ruled[true] == 0 || ruled[false] == 0) {
		t.Fatalf("%d accepted and %d refused probes (beside a member under max_server_per_host: %d allowed, %d refused); want plenty of both, some of each",
			accepted, refused, ruled[true], ruled[false])
	}
}

// TestPlanAgreesAcrossPhysnetChanges: between scheduling rounds, hosts
// change what they map, leave (still reported alive, as gossip may lag),
// join and report, or rejoin without reporting again (their old report
// stands). Each round's plan, made from the state after the changes, puts
// every server with ports on provider networks on a host mapping them, is
// accepted whole by the state machine, and fails a server needing
// physical networks only when no live, enabled member maps them all and
// stays empty.
func TestPlanAgreesAcrossPhysnetChanges(t *testing.T) {
	external, refusedNeed := 0, 0
	for seed := range agreeSeeds() {
		sc := newAgreeScenario(t, seed)
		e := sc.env
		rng := rand.New(rand.NewSource(seed + 1<<20))
		next := len(sc.caps)
		var removed []string
		for round := range 4 {
			for range 1 + rng.Intn(3) {
				switch rng.Intn(4) {
				case 0: // a member changes what it maps
					id := fmt.Sprint("h", rng.Intn(next))
					if _, ok := e.s.Snapshot().Member(id); ok {
						e.must(statedb.CmdSetHostNetworks, statedb.HostNetworks{ID: id, Physnets: randomMapping(rng)})
					}
				case 1: // a member leaves
					id := fmt.Sprint("h", 1+rng.Intn(next))
					if _, ok := e.s.Snapshot().Member(id); ok {
						e.must(statedb.CmdRemoveMember, statedb.RemoveMemberCmd{ID: id})
						removed = append(removed, id)
					}
				case 2: // a new host joins and reports
					id := fmt.Sprint("h", next)
					next++
					e.must(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: "name-" + id})
					if m := randomMapping(rng); m != nil {
						e.must(statedb.CmdSetHostNetworks, statedb.HostNetworks{ID: id, Physnets: m})
					}
					l := Live{ID: id, Alive: true, VCPUs: 4, RAMMB: 8192, DiskGB: 100}
					sc.live = append(sc.live, l)
					sc.caps[id] = statedb.HostCap{VCPUs: l.VCPUs, RAMMB: l.RAMMB, DiskGB: l.DiskGB}
				case 3: // a host that left rejoins, not reported yet
					if len(removed) > 0 {
						id := removed[len(removed)-1]
						removed = removed[:len(removed)-1]
						e.must(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: "name-" + id})
					}
				}
			}
			for j := range 1 + rng.Intn(6) {
				id := fmt.Sprintf("r%d-%d", round, j)
				e.must(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
					Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p", ImageID: "img",
						Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 512, DiskGB: 1}},
					NICs: randomNICs(rng, id)}}})
			}
			sn := e.s.Snapshot()
			batch := sn.PendingInstances()
			cmd := Plan(sn, sc.live, batch, nil)
			for _, p := range cmd.Placements {
				inst, _ := sn.Instance(p.InstanceID)
				if _, ok := sn.Member(p.HostID); !ok {
					t.Fatalf("seed %d round %d: %s placed on %s, not a member", seed, round, p.InstanceID, p.HostID)
				}
				if !refMapsPorts(sn, inst, p.HostID) {
					t.Fatalf("seed %d round %d: %s placed on %s, which does not map its physical networks", seed, round, p.InstanceID, p.HostID)
				}
				if len(sn.PlacementPhysnets(inst)) > 0 {
					external++
				}
			}
			used := map[string]bool{} // hosts this plan places on
			for _, p := range cmd.Placements {
				used[p.HostID] = true
			}
			for _, f := range cmd.Failures {
				inst, _ := sn.Instance(f.InstanceID)
				if len(sn.PlacementPhysnets(inst)) == 0 || inst.Flavor.ID != "1" || sn.PlacementPin(inst) != "" || inst.GroupID != "" {
					continue
				}
				refusedNeed++
				// Any host holds the smallest flavor when empty.
				for _, l := range sc.live {
					m, ok := sn.Member(l.ID)
					if ok && l.Alive && !m.Disabled && refMapsPorts(sn, inst, l.ID) && sn.Claims()[l.ID] == (statedb.HostCap{}) && !used[l.ID] {
						t.Fatalf("seed %d round %d: %s failed (%s) though empty member %s maps its physical networks", seed, round, f.InstanceID, f.Reason, l.ID)
					}
				}
			}
			e.must(statedb.CmdPlaceInstances, cmd)
			after := e.s.Snapshot()
			for _, p := range cmd.Placements {
				if inst, _ := after.Instance(p.InstanceID); inst.Host != p.HostID {
					t.Fatalf("seed %d round %d: the state machine refused %s on %s from a plan of the current state", seed, round, p.InstanceID, p.HostID)
				}
			}
			for _, f := range cmd.Failures {
				if inst, _ := after.Instance(f.InstanceID); inst.VMState != statedb.VMError {
					t.Fatalf("seed %d round %d: failure %+v not recorded", seed, round, f)
				}
			}
		}
	}
	if external < 20 || refusedNeed == 0 {
		t.Fatalf("rounds placed %d servers needing physical networks and failed %d; want plenty placed and some failed", external, refusedNeed)
	}
}
