package leader

import (
	"context"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// fenceTimeoutSetup is the failover rig on a bootstrapped cluster whose
// T_fence is 30 s, with h1 running the HA server "ha".
func fenceTimeoutSetup(t *testing.T) (*pinState, *fakeGossip, *Failover, *time.Time, *applyProposer) {
	return fenceTimeoutSetupH1(t, "0.2.0")
}

// fenceTimeoutSetupH1 is fenceTimeoutSetup with h1 reporting version
// h1Version ("": a release before leases).
func fenceTimeoutSetupH1(t *testing.T, h1Version string) (*pinState, *fakeGossip, *Failover, *time.Time, *applyProposer) {
	p, g, f, now, prop := failoverSetup(t)
	p.s = statedb.NewStore()
	p.idx = 0
	p.apply(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:  statedb.ClusterConfig{ClusterID: "c", Settings: statedb.Settings{FenceTimeout: 30 * time.Second}},
		Member:  statedb.Member{ID: "h2", Name: "name-h2", Version: "0.2.0"},
		Project: statedb.Project{ID: "p", Name: "admin"}, Admin: statedb.User{ID: "u", Name: "admin"},
		Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"}, SigningKey: statedb.SigningKey{ID: "k"},
	})
	p.apply(statedb.CmdRegisterMember, statedb.Member{ID: "h1", Name: "name-h1", Version: h1Version})
	p.apply(statedb.CmdRegisterMember, statedb.Member{ID: "h3", Name: "name-h3", Version: "0.2.0"})
	p.apply(statedb.CmdCreateImage, statedb.Image{ID: "img", Name: "img", ProjectID: "p", Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"})
	ic := statedb.InstanceCreate{Instance: statedb.Instance{ID: "ha", Name: "ha", ProjectID: "p",
		Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 128, DiskGB: 1}}}
	ic.Root = &statedb.RootDisk{AttachmentID: "a-ha", New: &statedb.Volume{ID: "v-ha", SizeGB: 1, Format: "qcow2",
		ImageID: "img", Host: "h1", Path: "nfs://nas/export/volume-v-ha.qcow2"}}
	p.apply(statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{ic}})
	p.apply(statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{HostCaps: map[string]statedb.HostCap{"h1": {VCPUs: 8, RAMMB: 16384, DiskGB: 100}},
		Placements: []statedb.PlacementRec{{InstanceID: "ha", HostID: "h1"}}})
	return p, g, f, now, prop
}

func (p *pinState) fenceTimeout(d time.Duration) {
	p.t.Helper()
	p.apply(statedb.CmdUpdateHASettings, statedb.UpdateSettingsCmd{FenceTimeout: &d})
}

// fencedAfter ticks every second from now on, h3 and h2 renewing with
// report, h1 silent, and returns how long after the first tick h1 was
// declared fenced (0: not within limit).
func fencedAfter(p *pinState, g *fakeGossip, f *Failover, now *time.Time, w *watch, report time.Duration, limit int) time.Duration {
	t0 := *now
	for i := 1; i <= limit; i++ {
		*now = t0.Add(time.Duration(i) * time.Second)
		f.Contacts.Heard("h3", report, 0)
		f.Contacts.Heard("h2", report, 0)
		g.members = []gossip.Member{aliveMember("h2", time.Time{}), aliveMember("h3", time.Time{})}
		f.tick(context.Background(), w)
		if p.s.Snapshot().HostFenced("h1") {
			return now.Sub(t0)
		}
	}
	return 0
}

// T_fence lowered from 30 s to 5 s while h1 is cut off: h1 last reported
// 30 s (the value it fences on until its next renewal, which never
// comes), so the leader must not declare it fenced — nor restart its HA
// server — before 30 s plus the margin, although the setting now says 5 s.
func TestFailoverWaitsTheFenceTimeoutTheHostReported(t *testing.T) {
	p, g, f, now, _ := fenceTimeoutSetup(t)
	t0 := *now
	w := &watch{start: t0, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	f.Contacts.Heard("h1", 30*time.Second, 0) // h1's last renewal
	p.fenceTimeout(5 * time.Second)
	got := fencedAfter(p, g, f, now, w, 5*time.Second, 60)
	want := 30*time.Second + statedb.FenceMargin(30*time.Second) // 33.5 s: the first tick past it is 34 s
	if got <= want || got > want+time.Second {
		t.Fatalf("h1 (reported 30 s, setting now 5 s) fenced after %v; want the first tick past %v", got, want)
	}
	if i, _ := p.s.Snapshot().Instance("ha"); i.Host == "h1" {
		t.Fatalf("HA server still on h1 after h1 was fenced")
	}
}

// A new leader has heard no report: it waits the state's bound (30 s
// after the lowering) until it has heard every host report the new value
// and settled it; after that a silent host is fenced on the setting.
func TestFailoverNewLeaderWaitsTheBoundUntilSettled(t *testing.T) {
	p, g, f, now, prop := fenceTimeoutSetup(t)
	p.fenceTimeout(5 * time.Second)
	w := &watch{start: *now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	// h1 is silent from the term's start: the bound holds, and no settle
	// is proposed while h1 has not reported.
	got := fencedAfter(p, g, f, now, w, 5*time.Second, 60)
	if want := 30*time.Second + statedb.FenceMargin(30*time.Second); got <= want || got > want+time.Second {
		t.Fatalf("h1 silent in a new term fenced after %v; want the first tick past %v (the bound)", got, want)
	}
	// Settled only once h1 is fenced (a fenced host no longer counts).
	for _, typ := range prop.types {
		if typ == statedb.CmdFailoverInstance {
			break
		}
		if typ == statedb.CmdSettleFenceTimeout {
			t.Fatalf("settled while h1 had not reported and was not fenced: %v", prop.types)
		}
	}
	if cfg, _ := p.s.Snapshot().Cluster(); cfg.Settings.FenceTimeoutBound != 0 {
		t.Fatalf("bound %v once h1 is fenced and the others reported 5 s; want it settled", cfg.Settings.FenceTimeoutBound)
	}

	// Every host reports 5 s: settled; a silent host then waits 5 s.
	p2, g2, f2, now2, _ := fenceTimeoutSetup(t)
	p2.fenceTimeout(5 * time.Second)
	w2 := &watch{start: *now2, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	for i := 0; i < 3; i++ {
		*now2 = now2.Add(time.Second)
		for _, h := range []string{"h1", "h2", "h3"} {
			f2.Contacts.Heard(h, 5*time.Second, 0)
		}
		f2.tick(context.Background(), w2)
	}
	if cfg, _ := p2.s.Snapshot().Cluster(); cfg.Settings.FenceTimeoutBound != 0 {
		t.Fatalf("bound %v after every host reported 5 s; want it settled", cfg.Settings.FenceTimeoutBound)
	}
	w3 := &watch{start: *now2, seen: map[string]time.Time{}, probed: map[string]time.Time{}} // yet another term
	got = fencedAfter(p2, g2, f2, now2, w3, 5*time.Second, 60)
	if want := 5*time.Second + statedb.FenceMargin(5*time.Second); got <= want || got > want+time.Second {
		t.Fatalf("h1 silent after the settle fenced after %v; want the first tick past %v", got, want)
	}
}

// Raising T_fence: the leader waits the new, longer value at once, even
// for a host that last reported the old one (it applies the longer one
// at its next renewal, and fencing earlier is safe).
func TestFailoverRaisedFenceTimeoutWaitsTheLonger(t *testing.T) {
	p, g, f, now, _ := fenceTimeoutSetup(t)
	w := &watch{start: *now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	f.Contacts.Heard("h1", 30*time.Second, 0)
	p.fenceTimeout(60 * time.Second)
	got := fencedAfter(p, g, f, now, w, 60*time.Second, 120)
	if want := 60*time.Second + statedb.FenceMargin(60*time.Second); got <= want || got > want+time.Second {
		t.Fatalf("h1 (reported 30 s, setting raised to 60 s) fenced after %v; want the first tick past %v", got, want)
	}
}

// A fenced host that comes back still fencing on a timeout longer than
// a new leader would wait for it is not declared back until its report
// is down to that.
func TestFailoverReturningHostBackOnlyOnCurrentTimeout(t *testing.T) {
	p, g, f, now, _ := fenceTimeoutSetup(t)
	p.fenceTimeout(5 * time.Second)
	p.apply(statedb.CmdSettleFenceTimeout, statedb.SettleFenceTimeoutCmd{Gen: 1})
	p.apply(statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	w := &watch{start: *now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	tick := func(h1 time.Duration) {
		*now = now.Add(time.Second)
		for _, h := range []string{"h2", "h3"} {
			f.Contacts.Heard(h, 5*time.Second, 0)
		}
		f.Contacts.Heard("h1", h1, 0)
		g.members = []gossip.Member{aliveMember("h1", time.Time{}), aliveMember("h2", time.Time{}), aliveMember("h3", time.Time{})}
		f.tick(context.Background(), w)
	}
	tick(30 * time.Second)
	tick(29 * time.Second)
	if !p.s.Snapshot().HostFenced("h1") {
		t.Fatalf("h1 declared back while it reports 29 s and the setting is 5 s")
	}
	tick(5 * time.Second)
	if p.s.Snapshot().HostDown("h1") {
		t.Fatalf("h1 reporting 5 s not declared back")
	}
}

// While the bound is not settled (h3 still reports the old 30 s), a host
// that reported the lowered 5 s in this term fences on 5 s: the leader
// waits 5 s plus the margin for it, not the bound.
func TestFailoverReportedShorterTimeoutBeatsTheBound(t *testing.T) {
	p, g, f, now, _ := fenceTimeoutSetup(t)
	p.fenceTimeout(5 * time.Second)
	t0 := *now
	w := &watch{start: t0, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	f.Contacts.Heard("h1", 5*time.Second, 0) // h1's last renewal, on the new value
	var got time.Duration
	for i := 1; i <= 40 && got == 0; i++ {
		*now = t0.Add(time.Duration(i) * time.Second)
		f.Contacts.Heard("h2", 5*time.Second, 0)
		f.Contacts.Heard("h3", 30*time.Second, 0)
		g.members = []gossip.Member{aliveMember("h2", time.Time{}), aliveMember("h3", time.Time{})}
		f.tick(context.Background(), w)
		if p.s.Snapshot().HostFenced("h1") {
			got = now.Sub(t0)
		}
	}
	if cfg, _ := p.s.Snapshot().Cluster(); cfg.Settings.FenceTimeoutBound != 30*time.Second {
		t.Fatalf("bound %v; want 30 s kept while h3 reports 30 s", cfg.Settings.FenceTimeoutBound)
	}
	if want := 5*time.Second + statedb.FenceMargin(5*time.Second); got <= want || got > want+time.Second {
		t.Fatalf("h1 (reported 5 s) fenced after %v; want the first tick past %v", got, want)
	}
}

// A renewal that arrives after a newer one (sent earlier) must not
// replace the newer report with a shorter one; the next in order does.
func TestContactsLateRenewalKeepsTheLongerReport(t *testing.T) {
	now := time.Unix(100, 0)
	c := NewContacts(func() time.Time { return now })
	c.Heard("h1", 60*time.Second, 20*time.Second) // newer, after a raise
	now = now.Add(time.Second)
	c.Heard("h1", 5*time.Second, 19*time.Second) // late, from before it
	if r, at, ok := c.Reported("h1"); !ok || r != 60*time.Second || !at.Equal(now) {
		t.Fatalf("after a late renewal: %v at %v (%v); want 60 s, heard now", r, at, ok)
	}
	c.Heard("h1", 5*time.Second, 21*time.Second)
	if r, _, _ := c.Reported("h1"); r != 5*time.Second {
		t.Fatalf("after the next renewal in order: %v; want 5 s", r)
	}
}

// A host of a release before leases (it reports no version) renews
// nothing and runs no fence guard: a leader of this release must never
// judge it fenced — its HA server would then run on two hosts. Once it
// reports a version it has restarted on a release that renews, and it has
// a whole T_fence from then, not from the term's start, to renew.
func TestFailoverNeverFencesAHostOfAReleaseBeforeLeases(t *testing.T) {
	p, g, f, now, _ := fenceTimeoutSetupH1(t, "")
	w := &watch{start: *now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	if got := fencedAfter(p, g, f, now, w, 30*time.Second, 120); got != 0 {
		t.Fatalf("h1 (no version, so no lease to renew) fenced after %v; want never", got)
	}
	if i, _ := p.s.Snapshot().Instance("ha"); i.Host != "h1" {
		t.Fatalf("HA server moved to %s from a host that was never fenced", i.Host)
	}
	// h1 restarts on this release and reports its version, 120 s into the
	// term, without a renewal yet.
	p.apply(statedb.CmdRegisterMember, statedb.Member{ID: "h1", Name: "name-h1", Version: "0.2.0"})
	// The leader sees the version at its next tick, 1 s later.
	got := fencedAfter(p, g, f, now, w, 30*time.Second, 60)
	want := time.Second + 30*time.Second + statedb.FenceMargin(30*time.Second)
	if got <= want || got > want+time.Second {
		t.Fatalf("h1, silent since it first reported a version, fenced after %v; want the first tick past %v", got, want)
	}
}
