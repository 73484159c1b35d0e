package leader

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

func failoverSetup(t *testing.T) (*pinState, *fakeGossip, *Failover, *time.Time, *applyProposer) {
	p := haState(t)
	now := time.Unix(5000, 0)
	clock := func() time.Time { return now }
	g := &fakeGossip{}
	prop := &applyProposer{p: p}
	f := &Failover{SelfID: "h2", State: pinSource{p}, Gossip: g, Contacts: NewContacts(clock), Proposer: prop, Now: clock,
		Logger: slog.New(slog.DiscardHandler)}
	return p, g, f, &now, prop
}

func aliveMember(id string, probed time.Time) gossip.Member {
	return gossip.Member{Name: id, State: gossip.StateAlive, ClockMeasuredAt: probed,
		Meta: gossip.Meta{VCPUs: 8, RAMMB: 16384, DiskGB: 100}}
}

// A new term's first tick must not lift a fenced verdict on a probe time
// answered long before the term.
func TestFailoverNewTermKeepsFenceOnStaleProbe(t *testing.T) {
	p, g, f, now, _ := failoverSetup(t)
	stale := now.Add(-time.Hour)
	p.apply(statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	*now = now.Add(time.Hour)
	w := &watch{start: *now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	g.members = []gossip.Member{aliveMember("h1", stale), aliveMember("h3", time.Time{})}
	f.tick(context.Background(), w)
	if !p.s.Snapshot().HostFenced("h1") {
		t.Errorf("new term's first tick lifted h1's fenced verdict on a probe answered an hour ago")
	}
}

// A member that rejoined gossip (its probe time reset) but that the
// leader never reaches is not sighted for that: with no lease renewal it
// is fenced.
func TestFailoverRejoinedUnprobedHostIsFenced(t *testing.T) {
	p, g, f, now, _ := failoverSetup(t)
	t0 := *now
	w := &watch{start: t0, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	for i := 1; i <= 60; i++ {
		*now = t0.Add(time.Duration(i) * time.Second)
		f.Contacts.Heard("h3", 0, 0)
		g.members = []gossip.Member{aliveMember("h1", time.Time{}), aliveMember("h3", time.Time{})}
		f.tick(context.Background(), w)
	}
	if !p.s.Snapshot().HostFenced("h1") {
		t.Errorf("h1 (no lease, no answered probe for 60 s) not fenced")
	}
}
