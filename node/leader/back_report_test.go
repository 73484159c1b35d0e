package leader

import (
	"context"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// This node led before and heard fenced h1 report 30 s (it returned with a
// stale state); it lost and regained leadership 0.5 s later. h1's report is
// from the old term, so FenceWait falls back to the settled setting (5 s):
// h1 must not be declared back on it, since the last thing it said is that
// it fences on 30 s; it is back once it reports the setting in this term.
func TestFencedHostBackOnlyOnAReportOfThisTerm(t *testing.T) {
	p, g, f, now, _ := fenceTimeoutSetup(t)
	p.fenceTimeout(5 * time.Second)
	p.apply(statedb.CmdSettleFenceTimeout, statedb.SettleFenceTimeoutCmd{Gen: 1})
	p.apply(statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: "h1", Down: true, Fenced: true})
	f.Contacts.Heard("h1", 30*time.Second, 0) // previous term of this node
	for _, h := range []string{"h2", "h3"} {
		f.Contacts.Heard(h, 5*time.Second, 0)
	}
	*now = now.Add(500 * time.Millisecond)
	w := &watch{start: *now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
	*now = now.Add(500 * time.Millisecond)
	g.members = []gossip.Member{aliveMember("h1", time.Time{}), aliveMember("h2", time.Time{}), aliveMember("h3", time.Time{})}
	f.tick(context.Background(), w)
	if !p.s.Snapshot().HostFenced("h1") {
		t.Fatalf("h1 declared back; its only report (30 s, previous term) exceeds the 5 s a later leader waits")
	}
	f.Contacts.Heard("h1", 5*time.Second, time.Second) // this term, at the setting
	*now = now.Add(500 * time.Millisecond)
	f.tick(context.Background(), w)
	if p.s.Snapshot().HostFenced("h1") {
		t.Fatal("h1 still fenced after reporting the setting in this term")
	}
}
