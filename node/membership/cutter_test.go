package membership_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/membership"
)

// fakeConn is one tracked connection of fakeConns.
type fakeConn struct {
	peer   string
	raft   bool
	closed bool
}

// fakeConns closes connections as Conns.CloseRevoked does, and records
// when it was asked.
type fakeConns struct {
	mu      sync.Mutex
	revoked func(id string) bool
	conns   []*fakeConn
	sweeps  []time.Time
}

func (c *fakeConns) CloseRevoked(inRaft func(string) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweeps = append(c.sweeps, time.Now())
	n := 0
	for _, fc := range c.conns {
		if fc.closed || (fc.raft && inRaft(fc.peer)) || !c.revoked(fc.peer) {
			continue
		}
		fc.closed = true
		n++
	}
	return n
}

func (c *fakeConns) state() (closed []bool, sweeps []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fc := range c.conns {
		closed = append(closed, fc.closed)
	}
	return closed, append([]time.Time(nil), c.sweeps...)
}

// configuration is a Raft configuration the test changes.
type configuration struct {
	mu  sync.Mutex
	ids []string
}

func (c *configuration) set(ids ...string) { c.mu.Lock(); c.ids = ids; c.mu.Unlock() }
func (c *configuration) servers() ([]membership.RaftServer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []membership.RaftServer
	for _, id := range c.ids {
		out = append(out, membership.RaftServer{ID: id, Voter: true})
	}
	return out, nil
}

// A revoked member's connections close as the revocation applies, but its
// Raft connection stays while it is in the Raft configuration; the cutter
// looks again each second until the configuration drops it, then stops.
func TestCutterClosesRevokedKeepingRaftWhileConfigured(t *testing.T) {
	r := twoMembers(t)
	for _, id := range []string{"m2", "m3"} {
		if err := r.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	conns := &fakeConns{
		revoked: func(id string) bool { _, ok := r.State().RevokedHost(id); return ok },
		conns:   []*fakeConn{{peer: "m2"}, {peer: "m2", raft: true}, {peer: "m3"}, {peer: "m3", raft: true}},
	}
	conf := &configuration{}
	conf.set("m1", "m2", "m3")
	c := &membership.Cutter{State: r.State, Changed: r.st.Changed, Servers: conf.servers, Conns: conns,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func(what string, cond func(closed []bool, sweeps []time.Time) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if cond(conns.state()) {
				return
			}
			if time.Now().After(deadline) {
				closed, sweeps := conns.state()
				t.Fatalf("%s: closed %v after %d sweeps", what, closed, len(sweeps))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("the sweep at start", func(_ []bool, s []time.Time) bool { return len(s) == 1 })
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m2"}); err != nil {
		t.Fatal(err)
	}
	wait("m2's API connection closed", func(c []bool, _ []time.Time) bool { return c[0] })
	closed, sweeps := conns.state()
	if closed[1] || closed[2] || closed[3] {
		t.Fatalf("closed %v; want only m2's API connection (its Raft one while m2 is configured)", closed)
	}
	// Nothing changes in the state: the cutter still looks again, a
	// second later.
	first := len(sweeps)
	wait("a second look", func(_ []bool, s []time.Time) bool { return len(s) > first })
	_, sweeps = conns.state()
	if gap := sweeps[first].Sub(sweeps[first-1]); gap < 900*time.Millisecond || gap > 3*time.Second {
		t.Fatalf("looked again after %v; want about a second", gap)
	}
	if c, _ := conns.state(); c[1] {
		t.Fatal("m2's Raft connection closed while m2 is still in the configuration")
	}
	conf.set("m1", "m3")
	wait("m2's Raft connection closed", func(c []bool, _ []time.Time) bool { return c[1] })
	// With no revoked member left in the configuration, it stops looking.
	_, sweeps = conns.state()
	time.Sleep(1500 * time.Millisecond)
	closed, after := conns.state()
	if len(after) != len(sweeps) {
		t.Fatalf("%d more sweeps with nothing left to cut; want none", len(after)-len(sweeps))
	}
	if closed[2] || closed[3] {
		t.Fatalf("closed %v; m3 was never revoked", closed)
	}
}

// A cluster with a member of a release without RemoveHost: leaving only
// removes the record; otherwise the removal also revokes, and without a
// TLS client it fails before proposing anything.
func TestHostRemoval(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	servers := func() ([]membership.RaftServer, error) {
		return []membership.RaftServer{{ID: "m1", Voter: true}, {ID: "m2", Voter: true}}, nil
	}
	register := func(r *raft, version string) {
		t.Helper()
		for _, m := range []statedb.Member{{ID: "m1", Name: "first", Version: version}, {ID: "m2", Name: "second", Version: version}} {
			if err := r.st.Apply(statedb.CmdRegisterMember, m); err != nil {
				t.Fatal(err)
			}
		}
	}

	old := twoMembers(t)
	register(old, "0.1.0")
	h := &membership.HostRemoval{HostID: "m2", Raft: old, Servers: servers, Logger: log}
	revoked, err := h.Remove(context.Background())
	if err != nil || revoked {
		t.Fatalf("remove among older members = %v, %v; want the record removed, not revoked", revoked, err)
	}
	if _, ok := old.State().Member("m2"); ok {
		t.Fatal("m2's record is still there")
	}
	if _, ok := old.State().RevokedHost("m2"); ok {
		t.Fatal("m2 was revoked by a cluster that cannot apply that")
	}

	cur := twoMembers(t)
	register(cur, "9.0.0")
	h = &membership.HostRemoval{HostID: "m2", Raft: cur, Servers: servers, Logger: log}
	before := cur.proposals.Load()
	if _, err := h.Remove(context.Background()); err == nil || cur.proposals.Load() != before {
		t.Fatalf("remove without a TLS client = %v after %d proposals; want an error and none", err, cur.proposals.Load()-before)
	}
	h.ClientTLS = &tls.Config{} // the leader answers: no voter is asked
	revoked, err = h.Remove(context.Background())
	if err != nil || !revoked {
		t.Fatalf("remove = %v, %v; want removed and revoked", revoked, err)
	}
	if _, ok := cur.State().RevokedHost("m2"); !ok {
		t.Fatal("m2 is not revoked")
	}
}
