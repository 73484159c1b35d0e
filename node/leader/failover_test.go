package leader

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

func TestJudgeTimers(t *testing.T) {
	const tf = 10 * time.Second
	margin := statedb.FenceMargin(tf)
	if margin != 2500*time.Millisecond {
		t.Fatalf("FenceMargin(10 s) = %v; want 2 s + 5 %%", margin)
	}
	for _, c := range []struct {
		silent       time.Duration
		down, fenced bool
	}{
		{tf / 2, false, false},
		{tf/2 + time.Millisecond, true, false},
		{tf + margin, true, false},
		{tf + margin + time.Millisecond, true, true},
	} {
		if v := Judge(c.silent, tf); v.Down != c.down || v.Fenced != c.fenced {
			t.Errorf("Judge(%v) = %+v; want down %v fenced %v", c.silent, v, c.down, c.fenced)
		}
	}
	now := time.Unix(1000, 0)
	// A new leader counts from its election at the earliest, even when it
	// last heard from the host long before.
	if s := Silence(now, now.Add(-time.Second), now.Add(-100*time.Second)); s != time.Second {
		t.Errorf("Silence from a term 1 s old = %v; want 1 s", s)
	}
	if s := Silence(now, now.Add(-time.Minute), now.Add(-3*time.Second), now.Add(-2*time.Second)); s != 2*time.Second {
		t.Errorf("Silence with sightings 3 s and 2 s ago = %v; want the latest, 2 s", s)
	}
}

// haState has hosts h1-h3 and, on h1, an HA server (boot volume on NFS),
// a server with an image overlay and a server being deleted.
func haState(t *testing.T) *pinState {
	p := newPinState(t)
	for _, id := range []string{"ha", "doomed"} {
		ic := statedb.InstanceCreate{Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p",
			Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 128, DiskGB: 1}}}
		ic.Root = &statedb.RootDisk{AttachmentID: "a-" + id, New: &statedb.Volume{ID: "v-" + id, SizeGB: 1, Format: "qcow2",
			ImageID: "img", Host: "h1", Path: "nfs://nas/export/volume-v-" + id + ".qcow2"}}
		p.apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{ic}})
	}
	p.server("local", "", "")
	caps := map[string]statedb.HostCap{"h1": {VCPUs: 8, RAMMB: 16384, DiskGB: 100}}
	p.apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: caps,
		Placements: []statedb.PlacementRec{{InstanceID: "ha", HostID: "h1"}, {InstanceID: "doomed", HostID: "h1"}, {InstanceID: "local", HostID: "h1"}}})
	p.apply(statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: "doomed"})
	return p
}

func TestPlanFailover(t *testing.T) {
	p := haState(t)
	sn := p.s.Snapshot()
	cmd, ok := PlanFailover(sn, liveHosts("h1", "h2", "h3"), "h1")
	if !ok || len(cmd.Moves) != 1 || cmd.Moves[0].InstanceID != "ha" || cmd.Moves[0].HostID == "h1" {
		t.Fatalf("moves = %+v; want ha moved off h1", cmd.Moves)
	}
	if len(cmd.Deleted) != 1 || cmd.Deleted[0] != "doomed" {
		t.Fatalf("deleted = %v; want the server being deleted", cmd.Deleted)
	}
	if len(cmd.Stranded) != 1 || cmd.Stranded[0].InstanceID != "local" || !strings.Contains(cmd.Stranded[0].Reason, "local disk") {
		t.Fatalf("stranded = %+v; want the image-booted server, naming its local disk", cmd.Stranded)
	}
	// Applied (host fenced), nothing is left to propose.
	p.apply(statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	p.apply(statedb.CmdFailoverInstance, cmd)
	if cmd, ok := PlanFailover(p.s.Snapshot(), liveHosts("h1", "h2", "h3"), "h1"); ok {
		t.Fatalf("second plan = %+v; want nothing new", cmd)
	}
	// No live host: the HA server is stranded with the scheduler's reason.
	p2 := haState(t)
	cmd, _ = PlanFailover(p2.s.Snapshot(), liveHosts("h1"), "h1")
	found := false
	for _, s := range cmd.Stranded {
		found = found || (s.InstanceID == "ha" && strings.Contains(s.Reason, "no other host"))
	}
	if len(cmd.Moves) != 0 || !found {
		t.Fatalf("plan with no other host = %+v; want ha stranded", cmd)
	}
}

// fakeGossip is a HostSource whose members a test sets.
type fakeGossip struct{ members []gossip.Member }

func (g *fakeGossip) Members() []gossip.Member { return g.members }

// applyProposer applies proposals to a pinState and records their types.
type applyProposer struct {
	p     *pinState
	types []statedb.CmdType
}

func (a *applyProposer) Propose(_ context.Context, t statedb.CmdType, payload any) (uint64, error) {
	a.p.apply(t, payload)
	a.types = append(a.types, t)
	return a.p.idx, nil
}

type pinSource struct{ p *pinState }

func (s pinSource) State() *statedb.Snapshot { return s.p.s.Snapshot() }

// TestFailoverCountsAnsweredProbesNotGossipState: gossip keeps a dead host
// "alive" for its suspicion timeout, and for as long as other hosts answer
// indirect probes for it. Only a direct probe the host answered (its probe
// time moves) is a sighting; so a host that stopped renewing its lease and
// answering probes is down after T_fence/2 and fenced after T_fence plus
// the margin, its HA server moved, although gossip still says alive. A host
// answering probes without renewing is not down, nor is an alive member
// that reports no probe time (an older build).
func TestFailoverCountsAnsweredProbesNotGossipState(t *testing.T) {
	p := haState(t)
	p.apply(statedb.CmdRegisterMember, statedb.Member{ID: "h4", Name: "name-h4", Version: "0.2.0"})
	t0 := time.Unix(5000, 0)
	now := t0
	clock := func() time.Time { return now }
	g := &fakeGossip{}
	contacts := NewContacts(clock)
	prop := &applyProposer{p: p}
	f := Failover{SelfID: "h2", State: pinSource{p}, Gossip: g, Contacts: contacts, Proposer: prop, Now: clock,
		Logger: slog.New(slog.DiscardHandler)}
	w := &watch{start: t0, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	member := func(id string, probed time.Time) gossip.Member {
		return gossip.Member{Name: id, State: gossip.StateAlive, ClockMeasuredAt: probed,
			Meta: gossip.Meta{VCPUs: 8, RAMMB: 16384, DiskGB: 100}}
	}
	dead := t0.Add(-time.Second) // h1's last answered probe
	var downAt, fencedAt, h4DownAt, h4FencedAt time.Duration
	for tick := 1; tick <= 16; tick++ {
		now = t0.Add(time.Duration(tick) * time.Second)
		// h1 is dead but gossip still lists it alive; h3 renews its lease;
		// h4 answers probes only; h2 is the leader.
		contacts.Heard("h3", 0, 0)
		g.members = []gossip.Member{member("h1", dead), member("h2", time.Time{}), member("h3", time.Time{}), member("h4", now.Add(-time.Hour))}
		f.tick(context.Background(), w)
		sn := p.s.Snapshot()
		if downAt == 0 && sn.HostDown("h1") {
			downAt = now.Sub(t0)
		}
		if fencedAt == 0 && sn.HostFenced("h1") {
			fencedAt = now.Sub(t0)
		}
		if sn.HostDown("h3") {
			t.Fatalf("tick %d: h3 is down; it renews its lease", tick)
		}
		if h4DownAt == 0 && sn.HostDown("h4") {
			h4DownAt = now.Sub(t0)
		}
		if h4FencedAt == 0 && sn.HostFenced("h4") {
			h4FencedAt = now.Sub(t0)
		}
	}
	// A probe time a term sees first is only recorded (it may be older
	// than the term), so h1 is silent from the term's start: down on the
	// first tick past T_fence/2 (5 s), fenced on the first past T_fence +
	// margin (12.5 s).
	if downAt != 6*time.Second || fencedAt != 13*time.Second {
		t.Errorf("h1 down after %v, fenced after %v; want 6 s and 13 s", downAt, fencedAt)
	}
	// h4 answers probes but never renews: not down while it answers, yet
	// fenced on lease silence as h1 (it has killed its HA servers' VMs by
	// its own fence, so they must run elsewhere).
	if h4DownAt != 13*time.Second || h4FencedAt != 13*time.Second {
		t.Errorf("h4 down after %v, fenced after %v; want both at 13 s (lease silence)", h4DownAt, h4FencedAt)
	}
	if i, ok := p.s.Snapshot().Instance("ha"); !ok || i.Host == "h1" || i.Host == "" {
		t.Fatalf("HA server after h1 was fenced: %+v; want it placed on another host", i)
	}
}
