package statedb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/peerstack/peerstack/node/scheduler"
)

// cstore is a store with an auto-incrementing index for compute tests.
type cstore struct {
	t   *testing.T
	s   *Store
	idx uint64
}

func newCStore(t *testing.T, hosts ...string) *cstore {
	t.Helper()
	cs := &cstore{t: t, s: NewStore()}
	for _, h := range hosts {
		cs.must(CmdRegisterMember, Member{ID: h, Name: "name-" + h})
	}
	return cs
}

func (cs *cstore) do(typ CmdType, payload any) error {
	cs.t.Helper()
	cs.idx++
	c, err := NewCommand(typ, fmt.Sprintf("req-%d", cs.idx), t0.Add(time.Duration(cs.idx)*time.Second), payload)
	if err != nil {
		cs.t.Fatal(err)
	}
	b, _ := c.Encode()
	return cs.s.Apply(cs.idx, b).Err
}

func (cs *cstore) must(typ CmdType, payload any) {
	cs.t.Helper()
	if err := cs.do(typ, payload); err != nil {
		cs.t.Fatalf("apply %d: %v", typ, err)
	}
}

func (cs *cstore) inst(id string) *Instance {
	cs.t.Helper()
	i, ok := cs.s.Snapshot().Instance(id)
	if !ok {
		cs.t.Fatalf("instance %s missing", id)
	}
	return i
}

var tiny = Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 512, DiskGB: 1, Public: true}

func newInst(id, project string, f Flavor) InstanceCreate {
	return InstanceCreate{Instance: Instance{ID: id, Name: "vm-" + id, ProjectID: project, UserID: "u1", Flavor: f}}
}

func (cs *cstore) create(f Flavor, ids ...string) {
	cs.t.Helper()
	var cmd CreateInstancesCmd
	for _, id := range ids {
		cmd.Instances = append(cmd.Instances, newInst(id, "p1", f))
	}
	cs.must(CmdCreateInstances, cmd)
}

func TestFlavorCommands(t *testing.T) {
	cs := newCStore(t)
	cs.must(CmdCreateFlavor, tiny)
	priv := Flavor{ID: "p", Name: "private", VCPUs: 2, RAMMB: 1024, DiskGB: 10}
	cs.must(CmdCreateFlavor, priv)
	tests := []struct {
		name string
		typ  CmdType
		body any
		want error
	}{
		{"duplicate id", CmdCreateFlavor, Flavor{ID: "1", Name: "other", VCPUs: 1, RAMMB: 1}, ErrConflict},
		{"duplicate name", CmdCreateFlavor, Flavor{ID: "9", Name: "m1.tiny", VCPUs: 1, RAMMB: 1}, ErrConflict},
		{"zero vcpus", CmdCreateFlavor, Flavor{ID: "9", Name: "z", RAMMB: 1}, ErrInvalid},
		{"negative disk", CmdCreateFlavor, Flavor{ID: "9", Name: "z", VCPUs: 1, RAMMB: 1, DiskGB: -1}, ErrInvalid},
		{"access to public", CmdSetFlavorAccess, SetFlavorAccessCmd{FlavorID: "1", ProjectID: "p1"}, ErrConflict},
		{"access add", CmdSetFlavorAccess, SetFlavorAccessCmd{FlavorID: "p", ProjectID: "p1"}, nil},
		{"access add again", CmdSetFlavorAccess, SetFlavorAccessCmd{FlavorID: "p", ProjectID: "p1"}, ErrConflict},
		{"access remove missing", CmdSetFlavorAccess, SetFlavorAccessCmd{FlavorID: "p", ProjectID: "p2", Remove: true}, ErrNotFound},
		{"extra spec set", CmdSetFlavorExtraSpecs, SetFlavorExtraSpecsCmd{FlavorID: "p", Set: map[string]string{"hw:cpu_policy": "dedicated", "k": "v"}}, nil},
		{"extra spec unset", CmdSetFlavorExtraSpecs, SetFlavorExtraSpecsCmd{FlavorID: "p", Unset: []string{"k"}}, nil},
		{"extra spec unset missing", CmdSetFlavorExtraSpecs, SetFlavorExtraSpecsCmd{FlavorID: "p", Unset: []string{"k"}}, ErrNotFound},
		{"extra spec unknown flavor", CmdSetFlavorExtraSpecs, SetFlavorExtraSpecsCmd{FlavorID: "x", Set: map[string]string{"a": "b"}}, ErrNotFound},
		{"delete unknown", CmdDeleteFlavor, DeleteCmd{ID: "x"}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := cs.do(tt.typ, tt.body)
			if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("apply(%+v) = %v; want %v", tt.body, err, tt.want)
			}
		})
	}
	f, _ := cs.s.Snapshot().Flavor("p")
	if len(f.Projects) != 1 || f.Projects[0] != "p1" || f.ExtraSpecs["hw:cpu_policy"] != "dedicated" || len(f.ExtraSpecs) != 1 {
		t.Fatalf("flavor p = %+v; want access [p1] and one extra spec", f)
	}
	cs.must(CmdDeleteFlavor, DeleteCmd{ID: "p"})
	if _, ok := cs.s.Snapshot().Flavor("p"); ok {
		t.Fatal("flavor p still there after delete")
	}
}

func TestKeypairCommands(t *testing.T) {
	cs := newCStore(t)
	k := Keypair{Name: "k", UserID: "u1", PublicKey: "ssh-ed25519 AAAA", Fingerprint: "aa"}
	cs.must(CmdCreateKeypair, k)
	if err := cs.do(CmdCreateKeypair, k); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate keypair = %v; want conflict", err)
	}
	k.UserID = "u2" // same name, another user
	cs.must(CmdCreateKeypair, k)
	if got := cs.s.Snapshot().Keypairs("u1"); len(got) != 1 || got[0].ID != "u1/k" || got[0].Type != "ssh" {
		t.Fatalf("Keypairs(u1) = %+v", got)
	}
	cs.must(CmdDeleteKeypair, DeleteKeypairCmd{UserID: "u1", Name: "k"})
	if err := cs.do(CmdDeleteKeypair, DeleteKeypairCmd{UserID: "u1", Name: "k"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again = %v; want not found", err)
	}
	if _, ok := cs.s.Snapshot().Keypair("u2", "k"); !ok {
		t.Fatal("u2's keypair went with u1's")
	}
}

func TestCreateInstancesAllOrNothing(t *testing.T) {
	cs := newCStore(t)
	cs.create(tiny, "a")
	// The second instance collides: the first of the batch must not stay.
	err := cs.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{newInst("b", "p1", tiny), newInst("a", "p1", tiny)}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("create with duplicate = %v; want conflict", err)
	}
	if _, ok := cs.s.Snapshot().Instance("b"); ok {
		t.Fatal("half of a failed create stayed")
	}
	// A group that does not exist fails the whole command.
	bad := newInst("c", "p1", tiny)
	bad.Instance.GroupID = "nope"
	if err := cs.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{newInst("d", "p1", tiny), bad}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("create in unknown group = %v; want invalid", err)
	}
	if _, ok := cs.s.Snapshot().Instance("d"); ok {
		t.Fatal("half of a failed create stayed")
	}
	a := cs.inst("a")
	if a.VMState != VMBuilding || a.TaskState != TaskScheduling || a.Desired != DesiredRunning || a.Host != "" || !a.Pending() {
		t.Fatalf("new instance = %+v; want building/scheduling, unplaced", a)
	}
	if got := cs.s.Snapshot().PendingInstances(); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("PendingInstances = %v; want [a]", got)
	}
}

func TestPlaceInstances(t *testing.T) {
	caps := map[string]HostCap{"h1": {VCPUs: 2, RAMMB: 1024, DiskGB: 10}, "h2": {VCPUs: 2, RAMMB: 1024, DiskGB: 10}}
	cs := newCStore(t, "h1", "h2", "h3")
	cs.create(tiny, "a", "b", "c", "d", "gone")
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "gone"}) // never placed: removed at once
	if _, ok := cs.s.Snapshot().Instance("gone"); ok {
		t.Fatal("an unplaced instance survived delete")
	}
	cs.must(CmdSetHostEnabled, SetHostEnabledCmd{ID: "h2", Disabled: true})
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{
		HostCaps: caps,
		Placements: []PlacementRec{
			{"a", "h1"}, {"b", "h1"}, // fill h1's RAM (2 × 512)
			{"c", "h1"},    // over capacity: rejected, stays pending
			{"d", "h2"},    // disabled host: rejected
			{"gone", "h1"}, // deleted meanwhile: ignored
			{"a", "h1"},    // already placed: ignored
		},
	})
	want := map[string]string{"a": "h1", "b": "h1", "c": "", "d": ""}
	for id, host := range want {
		if got := cs.inst(id).Host; got != host {
			t.Errorf("host of %s = %q; want %q", id, got, host)
		}
	}
	if got := cs.s.Snapshot().ClaimsOn("h1"); got != (HostCap{VCPUs: 2, RAMMB: 1024, DiskGB: 2}) {
		t.Errorf("ClaimsOn(h1) = %+v; want 2 vCPU, 1024 MB, 2 GB", got)
	}
	if a := cs.inst("a"); a.TaskState != TaskSpawning || a.Pending() {
		t.Errorf("placed instance = %s/%s; want building/spawning", a.VMState, a.TaskState)
	}
	// A later plan that repeats a placement (leader failover) changes nothing.
	before := cs.inst("a").UpdatedAt
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"a", "h2"}}})
	if a := cs.inst("a"); a.Host != "h1" || !a.UpdatedAt.Equal(before) {
		t.Fatalf("replayed placement moved a to %s", a.Host)
	}
	// A host missing from HostCaps is never trusted.
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"c", "h3"}}})
	if cs.inst("c").Host != "" {
		t.Fatal("placed on a host the plan gave no capacity for")
	}
	// Failures put pending instances into ERROR with the fault.
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Failures: []PlacementFailure{{InstanceID: "c"}, {InstanceID: "a", Reason: "x"}}})
	c := cs.inst("c")
	if c.VMState != VMError || c.TaskState != "" || c.Fault == nil || c.Fault.Code != 500 || c.Fault.Message != NoValidHost || c.Fault.Created.IsZero() {
		t.Fatalf("failed instance = %+v fault %+v; want error with Nova's fault", c, c.Fault)
	}
	if a := cs.inst("a"); a.VMState == VMError {
		t.Fatal("a failure of a placed instance was applied")
	}
}

func TestPlaceInstancesRatios(t *testing.T) {
	cs := newCStore(t, "h1")
	big := Flavor{ID: "b", Name: "b", VCPUs: 4, RAMMB: 100, DiskGB: 1}
	cs.create(big, "a", "b", "c")
	caps := map[string]HostCap{"h1": {VCPUs: 2, RAMMB: 1000, DiskGB: 100}}
	// Default CPU ratio 4: 2 cores hold 8 vCPUs, so two of three fit.
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"a", "h1"}, {"b", "h1"}, {"c", "h1"}}})
	if n := len(cs.s.Snapshot().InstancesOnHost("h1")); n != 2 {
		t.Fatalf("placed %d at ratio 4; want 2", n)
	}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Ratios: Ratios{CPU: 6}, Placements: []PlacementRec{{"c", "h1"}}})
	if cs.inst("c").Host != "h1" {
		t.Fatal("ratio 6 did not admit the third")
	}
}

func TestPlaceInstancesGroupPolicy(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.must(CmdCreateServerGroup, ServerGroup{ID: "g", Name: "g", ProjectID: "p1", Policy: "anti-affinity"})
	a, b := newInst("a", "p1", tiny), newInst("b", "p1", tiny)
	a.Instance.GroupID, b.Instance.GroupID = "g", "g"
	cs.must(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{a, b}})
	if g, _ := cs.s.Snapshot().ServerGroup("g"); len(g.Members) != 2 {
		t.Fatalf("group members = %v; want a and b", g.Members)
	}
	caps := map[string]HostCap{"h1": {VCPUs: 8, RAMMB: 8192, DiskGB: 100}, "h2": {VCPUs: 8, RAMMB: 8192, DiskGB: 100}}
	// Two stale plans both chose h1: the second must be rejected.
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"a", "h1"}}})
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"b", "h1"}}})
	if cs.inst("b").Host != "" {
		t.Fatal("anti-affinity broken by a stale plan")
	}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"b", "h2"}}})
	if cs.inst("b").Host != "h2" {
		t.Fatal("b not placed on h2")
	}
	// Deleting the group frees its members.
	cs.must(CmdDeleteServerGroup, DeleteCmd{ID: "g"})
	if cs.inst("a").GroupID != "" {
		t.Fatal("member still points at a deleted group")
	}
}

func TestReportInstance(t *testing.T) {
	cs := newCStore(t, "h1", "h2")
	cs.create(tiny, "a")
	caps := map[string]HostCap{"h1": {VCPUs: 8, RAMMB: 8192, DiskGB: 100}}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: caps, Placements: []PlacementRec{{"a", "h1"}}})
	launched := t0.Add(time.Hour)
	// A report from a host that does not run it is ignored.
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h2", VMState: VMError})
	if cs.inst("a").VMState != VMBuilding {
		t.Fatal("report from the wrong host applied")
	}
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMActive, PowerState: PowerRunning, LaunchedAt: launched})
	a := cs.inst("a")
	if a.VMState != VMActive || a.TaskState != "" || a.PowerState != PowerRunning || !a.LaunchedAt.Equal(launched) {
		t.Fatalf("after report = %+v", a)
	}
	// Actions: stop, then stop again conflicts; start from active conflicts.
	cs.must(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionStop})
	if a := cs.inst("a"); a.Desired != DesiredStopped || a.TaskState != TaskPoweringOff {
		t.Fatalf("after stop = %s/%s", a.Desired, a.TaskState)
	}
	if err := cs.do(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionStop}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second stop = %v; want conflict", err)
	}
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMStopped, PowerState: PowerShutdown})
	if err := cs.do(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionStop}); !errors.Is(err, ErrConflict) {
		t.Fatalf("stop of stopped = %v; want conflict", err)
	}
	cs.must(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionStart})
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMActive, PowerState: PowerRunning})
	cs.must(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionReboot})
	cs.must(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionReboot, Hard: true}) // hard over soft
	if a := cs.inst("a"); a.RebootSeq != 2 || !a.RebootHard || a.TaskState != TaskRebootingHard {
		t.Fatalf("after reboots = seq %d hard %v task %s", a.RebootSeq, a.RebootHard, a.TaskState)
	}
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMActive, PowerState: PowerRunning, RebootDone: 2})
	// Metadata and rename.
	name := "renamed"
	cs.must(CmdUpdateInstance, UpdateInstanceCmd{ID: "a", Name: &name, Metadata: map[string]string{"k": "v", "x": "y"}})
	cs.must(CmdUpdateInstance, UpdateInstanceCmd{ID: "a", DeleteKeys: []string{"x"}})
	if err := cs.do(CmdUpdateInstance, UpdateInstanceCmd{ID: "a", DeleteKeys: []string{"x"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing key = %v; want not found", err)
	}
	if a := cs.inst("a"); a.Name != "renamed" || len(a.Metadata) != 1 || a.Metadata["k"] != "v" {
		t.Fatalf("after update = %q %v", a.Name, a.Metadata)
	}
	// Delete: the record stays until the host reports it gone.
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "a"})
	if a := cs.inst("a"); a.Desired != DesiredDeleted || a.TaskState != TaskDeleting {
		t.Fatalf("after delete = %s/%s; want deleted/deleting", a.Desired, a.TaskState)
	}
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMActive})
	if a := cs.inst("a"); a.TaskState != TaskDeleting {
		t.Fatal("a report overwrote the deleting task state")
	}
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h2", Gone: true})
	cs.inst("a") // wrong host: still there
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", Gone: true})
	if _, ok := cs.s.Snapshot().Instance("a"); ok {
		t.Fatal("Gone did not remove the record")
	}
	if c := cs.s.Snapshot().ClaimsOn("h1"); c != (HostCap{}) {
		t.Fatalf("claims left on h1: %+v", c)
	}
}

// TestPlansNeverOverCommit applies random, partly stale plans (instances
// planned twice, onto random hosts, with capacities that change between
// plans, deletions in between) and checks after each plan that every host
// that gained claims stays within the capacity that plan gave it, and that
// an instance, once placed, never moves.
func TestPlansNeverOverCommit(t *testing.T) {
	for seed := range uint64(25) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			hosts := []string{"h0", "h1", "h2", "h3"}
			cs := newCStore(t, hosts...)
			flavors := []Flavor{
				{ID: "s", Name: "s", VCPUs: 1, RAMMB: 256, DiskGB: 1},
				{ID: "m", Name: "m", VCPUs: 2, RAMMB: 1024, DiskGB: 5},
				{ID: "l", Name: "l", VCPUs: 4, RAMMB: 4096, DiskGB: 20, EphemeralGB: 2, SwapMB: 100},
			}
			var ids []string
			placedOn := map[string]string{}
			accepted := 0
			for step := range 80 {
				var cmd CreateInstancesCmd
				for j := range 1 + rng.IntN(4) {
					id := fmt.Sprintf("i%d-%d", step, j)
					ids = append(ids, id)
					cmd.Instances = append(cmd.Instances, newInst(id, "p1", flavors[rng.IntN(len(flavors))]))
				}
				cs.must(CmdCreateInstances, cmd)
				if rng.IntN(5) == 0 {
					_ = cs.do(CmdDeleteInstance, DeleteCmd{ID: ids[rng.IntN(len(ids))]})
				}
				caps := map[string]HostCap{}
				for _, h := range hosts {
					caps[h] = HostCap{VCPUs: 2 + rng.IntN(6), RAMMB: 2048 + rng.IntN(6144), DiskGB: 20 + rng.IntN(60)}
				}
				plan := PlaceInstancesCmd{HostCaps: caps, Ratios: Ratios{CPU: 1, RAM: 1, Disk: 1}}
				for range 12 {
					plan.Placements = append(plan.Placements, PlacementRec{InstanceID: ids[rng.IntN(len(ids))], HostID: hosts[rng.IntN(len(hosts))]})
				}
				before := cs.s.Snapshot().Claims()
				cs.must(CmdPlaceInstances, plan)
				sn := cs.s.Snapshot()
				after := sn.Claims()
				for _, h := range hosts {
					got, was := after[h], before[h]
					if got == was {
						continue
					}
					if got.VCPUs > caps[h].VCPUs || got.RAMMB > caps[h].RAMMB || got.DiskGB > caps[h].DiskGB {
						t.Fatalf("step %d: host %s claims %+v exceed the plan's capacity %+v", step, h, got, caps[h])
					}
				}
				for _, i := range sn.Instances() {
					if i.Host == "" {
						continue
					}
					if prev, ok := placedOn[i.ID]; ok && prev != i.Host {
						t.Fatalf("instance %s moved from %s to %s", i.ID, prev, i.Host)
					} else if !ok {
						accepted++
					}
					placedOn[i.ID] = i.Host
					if i.Pending() || i.Placements != 1 {
						t.Fatalf("instance %s placed %d times, pending %v", i.ID, i.Placements, i.Pending())
					}
				}
			}
			if accepted == 0 {
				t.Fatal("no plan was ever accepted: the property was not exercised")
			}
		})
	}
}

// seed inserts objects straight into the store (tests only).
func (cs *cstore) seed(tbl string, objs ...any) {
	cs.t.Helper()
	txn := cs.s.db.Txn(true)
	for _, o := range objs {
		if err := txn.Insert(tbl, o); err != nil {
			cs.t.Fatal(err)
		}
	}
	txn.Commit()
}

func TestInstanceExistingPorts(t *testing.T) {
	cs := newCStore(t, "h1")
	cs.seed(tblPorts,
		&Port{ID: "port1", ProjectID: "p1", NetworkID: "n1", MAC: "fa:16:3e:00:00:01"},
		&Port{ID: "busy", ProjectID: "p1", NetworkID: "n1", DeviceID: "other"},
		&Port{ID: "foreign", ProjectID: "p2", NetworkID: "n1"})
	for _, tt := range []struct {
		port string
		want error
	}{{"busy", ErrConflict}, {"foreign", ErrInvalid}, {"missing", ErrInvalid}} {
		ic := newInst("x", "p1", tiny)
		ic.NICs = []NICRequest{{PortID: tt.port}}
		if err := cs.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{ic}}); !errors.Is(err, tt.want) {
			t.Errorf("create with port %s = %v; want %v", tt.port, err, tt.want)
		}
	}
	ic := newInst("a", "p1", tiny)
	ic.NICs = []NICRequest{{PortID: "port1"}}
	cs.must(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{ic}})
	sn := cs.s.Snapshot()
	if p, _ := sn.Port("port1"); p.DeviceID != "a" || p.DeviceOwner != "compute:nova" {
		t.Fatalf("port after create = %+v; want bound to a", p)
	}
	if a := cs.inst("a"); len(a.PortIDs) != 1 || len(a.CreatedPorts) != 0 {
		t.Fatalf("instance ports = %v created %v", a.PortIDs, a.CreatedPorts)
	}
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: map[string]HostCap{"h1": {VCPUs: 1, RAMMB: 1024, DiskGB: 10}},
		Placements: []PlacementRec{{"a", "h1"}}})
	if p, _ := cs.s.Snapshot().Port("port1"); p.HostID != "h1" {
		t.Fatalf("port host = %q; want h1 after placement", p.HostID)
	}
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "a"})
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", Gone: true})
	sn = cs.s.Snapshot()
	if p, ok := sn.Port("port1"); !ok || p.DeviceID != "" || p.HostID != "" {
		t.Fatalf("passed-in port after delete = %+v, %v; want kept and unbound", p, ok)
	}
}

// TestInstanceCreatesPorts needs the network engine's createPort: ports
// made by server create are created with it and deleted with the server.
func TestInstanceCreatesPorts(t *testing.T) {
	cs := newCStore(t, "h1")
	cs.seed(tblNetworks, &Network{ID: "n1", Name: "net1", ProjectID: "p1", AdminStateUp: true, VNI: 10})
	cs.seed(tblSubnets, &Subnet{ID: "s1", NetworkID: "n1", ProjectID: "p1", IPVersion: 4, CIDR: "10.0.0.0/24",
		GatewayIP: "10.0.0.1", AllocationPools: []IPRange{{Start: "10.0.0.2", End: "10.0.0.254"}}, EnableDHCP: true})
	var cmd CreateInstancesCmd
	for _, id := range []string{"a", "b"} {
		ic := newInst(id, "p1", tiny)
		ic.NICs = []NICRequest{{Create: &PortRequest{ID: "port-" + id, NetworkID: "n1"}}}
		cmd.Instances = append(cmd.Instances, ic)
	}
	cs.must(CmdCreateInstances, cmd)
	sn := cs.s.Snapshot()
	pa, oka := sn.Port("port-a")
	pb, okb := sn.Port("port-b")
	if !oka || !okb || pa.DeviceID != "a" || len(pa.FixedIPs) != 1 || len(pb.FixedIPs) != 1 || pa.FixedIPs[0].IP == pb.FixedIPs[0].IP {
		t.Fatalf("ports = %+v / %+v; want one distinct address each", pa, pb)
	}
	if a := cs.inst("a"); len(a.CreatedPorts) != 1 || a.CreatedPorts[0] != "port-a" {
		t.Fatalf("created ports = %v", a.CreatedPorts)
	}
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "a"}) // never placed: removed at once, with its port
	if _, ok := cs.s.Snapshot().Port("port-a"); ok {
		t.Fatal("server's own port survived the server")
	}
	// A create whose port cannot be made leaves nothing behind.
	bad := newInst("c", "p1", tiny)
	bad.NICs = []NICRequest{{Create: &PortRequest{ID: "port-c", NetworkID: "n1"}}, {Create: &PortRequest{ID: "port-c2", NetworkID: "nope"}}}
	if err := cs.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{bad}}); err == nil {
		t.Fatal("create on a missing network succeeded")
	}
	if _, ok := cs.s.Snapshot().Port("port-c"); ok {
		t.Fatal("a failed create left a port")
	}
}

// BenchmarkApplyPlaceInstances: the FSM side of a plan, per placement, for
// plans of 1,000 and 4,000 instances over 10,000 hosts.
func BenchmarkApplyPlaceInstances(b *testing.B) {
	for _, per := range []int{1000, 4000} {
		b.Run(fmt.Sprint(per), func(b *testing.B) {
			s := NewStore()
			idx := uint64(0)
			do := func(typ CmdType, payload any) {
				idx++
				c, err := NewCommand(typ, fmt.Sprint("r", idx), t0, payload)
				if err != nil {
					b.Fatal(err)
				}
				raw, _ := c.Encode()
				if res := s.Apply(idx, raw); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
			const hosts = 10000
			caps := map[string]HostCap{}
			for h := range hosts {
				id := fmt.Sprintf("h%05d", h)
				do(CmdRegisterMember, Member{ID: id, Name: id})
				caps[id] = HostCap{VCPUs: 64, RAMMB: 1 << 20, DiskGB: 1 << 16}
			}
			var spent time.Duration
			for n := range b.N {
				var cmd CreateInstancesCmd
				plan := PlaceInstancesCmd{HostCaps: map[string]HostCap{}}
				for j := range per {
					id := fmt.Sprintf("i%d-%d", n, j)
					cmd.Instances = append(cmd.Instances, newInst(id, "p1", tiny))
					h := fmt.Sprintf("h%05d", (n*per+j)%hosts)
					plan.Placements = append(plan.Placements, PlacementRec{InstanceID: id, HostID: h})
					plan.HostCaps[h] = caps[h]
				}
				do(CmdCreateInstances, cmd)
				c, _ := NewCommand(CmdPlaceInstances, fmt.Sprint("p", n), t0, plan)
				raw, _ := c.Encode()
				idx++
				start := time.Now()
				if res := s.Apply(idx, raw); res.Err != nil {
					b.Fatal(res.Err)
				}
				spent += time.Since(start)
			}
			b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N*per)/1000, "µs/placement")
		})
	}
}

// TestFitsCapMatchesScheduler holds the FSM's capacity rule to the
// scheduler's Fits on random inputs: if they disagreed, the FSM would
// reject plans the scheduler keeps making (or accept ones it never would).
func TestFitsCapMatchesScheduler(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ratios := []Ratios{{}, {CPU: 4, RAM: 1, Disk: 1}, {CPU: 1.5, RAM: 0.9, Disk: 2}, {CPU: -1, RAM: 16, Disk: 0.5}}
	for range 20000 {
		total := HostCap{VCPUs: rng.IntN(20) - 2, RAMMB: rng.IntN(5000) - 100, DiskGB: rng.IntN(100) - 5}
		used := HostCap{VCPUs: rng.IntN(30) - 3, RAMMB: rng.IntN(6000) - 100, DiskGB: rng.IntN(120) - 5}
		need := HostCap{VCPUs: rng.IntN(10) - 1, RAMMB: rng.IntN(3000) - 10, DiskGB: rng.IntN(50) - 1}
		r := ratios[rng.IntN(len(ratios))]
		h := scheduler.Host{VCPUs: total.VCPUs, RAMMB: total.RAMMB, DiskGB: total.DiskGB,
			UsedVCPUs: used.VCPUs, UsedRAMMB: used.RAMMB, UsedDiskGB: used.DiskGB}
		req := scheduler.Request{VCPUs: need.VCPUs, RAMMB: need.RAMMB, DiskGB: need.DiskGB}
		want := scheduler.Fits(h, req, scheduler.Ratios{CPU: r.CPU, RAM: r.RAM, Disk: r.Disk})
		if got := fitsCap(total, used, need, r); got != want {
			t.Fatalf("fitsCap(%+v, %+v, %+v, %+v) = %v; scheduler.Fits says %v", total, used, need, r, got, want)
		}
	}
}
