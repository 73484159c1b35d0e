package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestSingleNodeProposeUsesConfiguredClockAndIDs(t *testing.T) {
	c := newTestCluster(t)
	clock := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	ids := 0
	n := c.add("n1", func(cfg *Config) {
		cfg.Now = func() time.Time { return clock }
		cfg.NewID = func() string { mu.Lock(); defer mu.Unlock(); ids++; return "fixed" }
	})
	c.start()
	ctx := testCtx(t)

	// The token expires an hour after the configured clock: valid only if
	// Propose stamped the command with it, not with the wall clock.
	idx, err := n.Propose(ctx, statedb.CmdCreateJoinToken, statedb.JoinToken{ID: "t1", SecretHash: "h", ExpiresAt: clock.Add(time.Hour)})
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	if n.store.AppliedIndex() < idx {
		t.Fatalf("Propose returned before the local state applied index %d", idx)
	}
	if _, ok := n.State().JoinToken("t1"); !ok {
		t.Fatal("join token not in the state after Propose")
	}
	// Same request id again: the FSM answers the first outcome.
	again, err := n.Propose(ctx, statedb.CmdCreateJoinToken, statedb.JoinToken{ID: "t2", SecretHash: "h", ExpiresAt: clock.Add(time.Hour)})
	if err != nil || again != idx {
		t.Fatalf("retry with the same id = %d, %v; want deduplicated at %d", again, err, idx)
	}
	if _, ok := n.State().JoinToken("t2"); ok || ids != 2 {
		t.Fatalf("deduplicated proposal applied (ids drawn %d)", ids)
	}
}

func TestThreeNodesForwardToLeader(t *testing.T) {
	c := newTestCluster(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		c.add(id, nil)
	}
	leader := c.start()
	ctx := testCtx(t)

	follower := c.follower(leader)
	idx, err := follower.Propose(ctx, statedb.CmdCreateProject, project(1))
	if err != nil {
		t.Fatalf("propose on a follower: %v", err)
	}
	// Read-your-writes on the follower that proposed.
	if _, ok := follower.State().Project("p1"); !ok {
		t.Fatal("the proposing follower does not see its own write")
	}
	for _, n := range c.nodes {
		if err := n.WaitIndex(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if _, ok := n.State().Project("p1"); !ok {
			t.Fatalf("%s lacks the project at index %d", n.cfg.NodeID, idx)
		}
	}
	// A business error comes back through forwarding as a *statedb.Error.
	dup := project(2)
	dup.Name = "project-1"
	if _, err := follower.Propose(ctx, statedb.CmdCreateProject, dup); !errors.Is(err, statedb.ErrConflict) {
		t.Fatalf("duplicate name via a follower: err = %v; want conflict", err)
	}
	if n := follower.Halted(); n != nil {
		t.Fatalf("a business error stopped the state machine: %v", n)
	}
}

// TestLeaderRefusesUndecodablePayload: a payload that does not decode into
// its registered type never enters the log, from the leader or forwarded.
func TestLeaderRefusesUndecodablePayload(t *testing.T) {
	c := newTestCluster(t)
	c.add("n1", nil)
	c.add("n2", nil)
	leader := c.start()
	follower := c.follower(leader)
	ctx := testCtx(t)
	if _, err := leader.Propose(ctx, statedb.CmdCreateProject, project(1)); err != nil {
		t.Fatal(err)
	}
	last := leader.raft.LastIndex()

	bad := &statedb.Command{Type: statedb.CmdCreateProject, ReqID: "bad", Time: time.Now(), Data: json.RawMessage(`{"enabled":"yes"}`)}
	data, _ := bad.Encode()
	if _, err := leader.ApplyLeader(ctx, data); !errors.Is(err, statedb.ErrInvalid) {
		t.Fatalf("leader: err = %v; want invalid", err)
	}
	if _, err := follower.Apply(ctx, bad); !errors.Is(err, statedb.ErrInvalid) || !strings.Contains(err.Error(), "CreateProject") {
		t.Fatalf("forwarded: err = %v; want invalid naming the command", err)
	}
	unknown := &statedb.Command{Type: 9999, ReqID: "unknown", Time: time.Now(), Data: json.RawMessage(`{}`)}
	if _, err := follower.Apply(ctx, unknown); !errors.Is(err, statedb.ErrConflict) {
		t.Fatalf("unknown type forwarded: err = %v; want conflict", err)
	}
	if got := leader.raft.LastIndex(); got != last {
		t.Fatalf("refused commands reached the log: last index %d -> %d", last, got)
	}
	for _, n := range c.nodes {
		if err := n.Halted(); err != nil {
			t.Fatalf("%s halted: %v", n.cfg.NodeID, err)
		}
	}
}

// futureRegistry is a newer build's registry: it knows command 999.
func futureRegistry(t *testing.T, since string) *statedb.Registry {
	t.Helper()
	spec := statedb.Cmd[statedb.DeleteCmd](999, "Future", func(*statedb.Txn, *statedb.Command) error { return nil })
	if since != "" {
		spec = spec.Since(since)
	}
	reg, err := statedb.Commands().With(spec)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestUnknownCommandHaltsFSM: a leader on a newer build admits a command
// the older followers do not know (no version gate on it). The followers
// stop their state machines loudly at that entry instead of skipping it;
// the stop is observable and sticky.
func TestUnknownCommandHaltsFSM(t *testing.T) {
	c := newTestCluster(t)
	fatal := make(chan error, 4)
	c.add("n1", func(cfg *Config) { cfg.Commands = futureRegistry(t, "") })
	for _, id := range []string{"n2", "n3"} {
		c.add(id, func(cfg *Config) { cfg.OnFatal = func(err error) { fatal <- err } })
	}
	c.start()
	leader := c.nodes[0]
	c.makeLeader(leader)
	ctx := testCtx(t)
	if _, err := leader.Propose(ctx, statedb.CmdCreateProject, project(1)); err != nil {
		t.Fatal(err)
	}
	idx, err := leader.Propose(ctx, 999, statedb.DeleteCmd{ID: "x"})
	if err != nil {
		t.Fatalf("the newer leader refused its own command: %v", err)
	}
	for range 2 {
		select {
		case err := <-fatal:
			var fe *statedb.FatalError
			if !errors.As(err, &fe) || fe.Index != idx || !strings.Contains(fe.Msg, "unknown command type 999") {
				t.Fatalf("OnFatal got %v; want a FatalError at index %d", err, idx)
			}
		case <-ctx.Done():
			t.Fatal("no follower stopped at the unknown command")
		}
	}
	for _, n := range c.nodes[1:] {
		if n.Halted() == nil {
			t.Fatalf("%s: Halted() = nil after the stop", n.cfg.NodeID)
		}
		if n.store.AppliedIndex() >= idx {
			t.Fatalf("%s applied past the unknown entry", n.cfg.NodeID)
		}
		// It stays stopped: later entries are not applied, waits fail.
		if err := n.WaitIndex(ctx, idx); err == nil {
			t.Fatalf("%s: WaitIndex succeeded on a stopped state machine", n.cfg.NodeID)
		}
	}
	if _, err := leader.Propose(ctx, statedb.CmdCreateProject, project(2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes[1:] {
		if _, ok := n.State().Project("p2"); ok {
			t.Fatalf("%s applied an entry after stopping", n.cfg.NodeID)
		}
	}
	select {
	case err := <-fatal:
		t.Fatalf("OnFatal called twice: %v", err)
	default:
	}
}

// TestOnFatalDefaultPanics: without OnFatal the state machine panics, as
// the process must not run on with a state it cannot keep in step.
func TestOnFatalDefaultPanics(t *testing.T) {
	pki := newTestPKI(t)
	n, err := New(Config{NodeID: "p", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0", ServerTLS: pki.server, ClientTLS: pki.client})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on an unknown command")
		}
		if n.Halted() == nil {
			t.Fatal("Halted() = nil after the panic")
		}
	}()
	n.fsm.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: []byte(`{"type":9999,"data":{}}`)})
}

// TestVersionGateThroughLeader: with members at 0.2.0 and 0.3.0, a command
// gated at 0.3.0 is refused (409, from the leader or forwarded) until the
// old member re-registers with 0.3.0.
func TestVersionGateThroughLeader(t *testing.T) {
	c := newTestCluster(t)
	for _, id := range []string{"n1", "n2"} {
		c.add(id, func(cfg *Config) { cfg.Commands = futureRegistry(t, "0.3.0") })
	}
	leader := c.start()
	follower := c.follower(leader)
	ctx := testCtx(t)
	register := func(id, version string) {
		t.Helper()
		idx, err := leader.Propose(ctx, statedb.CmdRegisterMember, statedb.Member{ID: id, Name: id, Version: version})
		if err != nil {
			t.Fatal(err)
		}
		// Every host gates on its own state first: let the follower see it.
		if err := follower.WaitIndex(ctx, idx); err != nil {
			t.Fatal(err)
		}
	}
	register("n1", "0.3.0")
	register("n2", "0.2.0")
	for _, n := range []*Node{leader, follower} {
		_, err := n.Propose(ctx, 999, statedb.DeleteCmd{ID: "x"})
		if !errors.Is(err, statedb.ErrConflict) || !strings.Contains(err.Error(), "0.3.0") || !strings.Contains(err.Error(), "n2") {
			t.Fatalf("gated command via %s with n2 at 0.2.0: err = %v; want a conflict naming n2", n.cfg.NodeID, err)
		}
	}
	register("n2", "0.3.0")
	if _, err := follower.Propose(ctx, 999, statedb.DeleteCmd{ID: "x"}); err != nil {
		t.Fatalf("gated command with every member at 0.3.0: %v", err)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

// TestFSMSnapshotRestore persists the FSM's snapshot and restores it into a
// fresh FSM: same state, same index. (Every table's rows are covered by
// statedb's TestSnapshotRoundTripEveryTable; this is the Raft framing.)
func TestFSMSnapshotRestore(t *testing.T) {
	c := newTestCluster(t)
	n := c.add("n1", nil)
	c.start()
	ctx := testCtx(t)
	for i := range 5 {
		if _, err := n.Propose(ctx, statedb.CmdCreateProject, project(i)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := n.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil || sink.cancelled {
		t.Fatalf("persist: %v (cancelled %v)", err, sink.cancelled)
	}
	fresh := newFSM(statedb.NewStore(), func(err error) { t.Errorf("fatal: %v", err) }, n.log)
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got, want := fresh.store.AppliedIndex(), n.store.AppliedIndex(); got != want {
		t.Fatalf("restored index %d; want %d", got, want)
	}
	if got, want := dump(t, fresh.store), dump(t, n.store); got != want {
		t.Fatalf("restored state differs:\n%s\nwant\n%s", got, want)
	}
	// A snapshot of an unknown format is refused, not half-restored.
	if err := fresh.Restore(io.NopCloser(strings.NewReader(`{"version":99,"index":1}`))); err == nil {
		t.Fatal("restore accepted snapshot version 99")
	}
}

func dump(t *testing.T, s *statedb.Store) string {
	t.Helper()
	var b bytes.Buffer
	if err := s.Snapshot().Dump(json.NewEncoder(&b)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestTimersDefaultAndValidate(t *testing.T) {
	got := Timers{Heartbeat: time.Second}.withDefaults()
	want := DefaultTimers()
	want.Heartbeat = time.Second
	if got != want {
		t.Fatalf("withDefaults = %+v; want %+v", got, want)
	}
	pki := newTestPKI(t)
	_, err := New(Config{NodeID: "bad", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0", ServerTLS: pki.server, ClientTLS: pki.client,
		Timers: Timers{Heartbeat: 100 * time.Millisecond, LeaderLease: time.Second}})
	if err == nil {
		t.Fatal("New accepted a leader lease longer than the heartbeat timeout")
	}
}

// TestSoleVoterElectsSoonThenRestoresTimers: a node alone in its
// configuration (a new cluster, a one-host cluster restarting) waits only
// the leader lease before electing itself, then runs with its configured
// timers again, so later followers see the usual heartbeat timeout.
func TestSoleVoterElectsSoonThenRestoresTimers(t *testing.T) {
	c := newTestCluster(t)
	tm := Timers{Heartbeat: 2 * time.Second, Election: 2 * time.Second, LeaderLease: 50 * time.Millisecond}
	n := c.add("solo", func(cfg *Config) { cfg.Timers = tm })
	start := time.Now()
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	if hb := n.raft.ReloadableConfig().HeartbeatTimeout; !n.IsLeader() && hb != tm.LeaderLease {
		t.Fatalf("bootstrapped sole voter waits %v before its election; want the lease %v", hb, tm.LeaderLease)
	}
	waitFor(t, "the sole voter to lead", n.IsLeader)
	t.Logf("bootstrap -> leader in %v (heartbeat timeout %v)", time.Since(start), tm.Heartbeat)
	waitFor(t, "timers restored", func() bool {
		rc := n.raft.ReloadableConfig()
		return rc.HeartbeatTimeout == tm.Heartbeat && rc.ElectionTimeout == tm.Election
	})
	// Restart from the same data: still alone, it leads again and restores.
	dir := n.cfg.DataDir
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	m := c.add("solo", func(cfg *Config) { cfg.Timers = tm; cfg.DataDir = dir })
	if hb := m.raft.ReloadableConfig().HeartbeatTimeout; !m.IsLeader() && hb != tm.LeaderLease {
		t.Fatalf("restarted sole voter waits %v before its election; want the lease %v", hb, tm.LeaderLease)
	}
	waitFor(t, "the restarted sole voter to lead", m.IsLeader)
	waitFor(t, "timers restored after the restart", func() bool {
		return m.raft.ReloadableConfig().HeartbeatTimeout == tm.Heartbeat
	})
}

// TestFollowersElectSoonWhenLeaderConnectionsEnd: when the leader's
// process stops, its connections to the followers end and they elect a
// new leader after the leader lease rather than their (here long)
// heartbeat timeout; afterwards every survivor runs its configured timers.
func TestFollowersElectSoonWhenLeaderConnectionsEnd(t *testing.T) {
	c := newTestCluster(t)
	// The leader heartbeats every tenth of the heartbeat timeout, which
	// must stay under the lease or an idle leader steps down.
	tm := Timers{Heartbeat: 15 * time.Second, Election: 15 * time.Second, LeaderLease: 3 * time.Second}
	for _, id := range []string{"a", "b", "c"} {
		c.add(id, func(cfg *Config) { cfg.Timers = tm })
	}
	old := c.start()
	ctx := testCtx(t)
	if _, err := old.Propose(ctx, statedb.CmdCreateProject, project(1)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	var survivors []*Node
	for _, n := range c.nodes {
		if n != old {
			survivors = append(survivors, n)
		}
	}
	// Without the hint no survivor could start an election before its
	// heartbeat timeout.
	var nl *Node
	for nl == nil {
		for _, n := range survivors {
			if n.IsLeader() {
				nl = n
			}
		}
		if nl == nil && time.Since(start) > tm.Heartbeat-time.Second {
			t.Fatalf("no new leader %v after the old one stopped: the followers waited for their heartbeat timeout", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leader stopped -> new leader in %v (heartbeat timeout %v, lease %v)", time.Since(start), tm.Heartbeat, tm.LeaderLease)
	if _, err := nl.Propose(ctx, statedb.CmdCreateProject, project(2)); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	waitFor(t, "configured timers back on every survivor", func() bool {
		for _, n := range survivors {
			if n.raft.ReloadableConfig().HeartbeatTimeout != tm.Heartbeat {
				return false
			}
		}
		return true
	})
}

// TestCaughtUpAfterManyBarriers: leadership confirmations commit barrier
// entries, which never reach the state machine. After a command and 200
// confirmations (more than one scan's worth) every node must still read
// as caught up — its applied index at the commit index — or a restarted
// host would never be ready while the cluster idles.
func TestCaughtUpAfterManyBarriers(t *testing.T) {
	c := newTestCluster(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		c.add(id, nil)
	}
	leader := c.start()
	ctx := testCtx(t)
	if _, err := leader.Propose(ctx, statedb.CmdCreateProject, project(1)); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := leader.ConfirmLeader(ctx); err != nil {
			t.Fatalf("confirmation %d: %v", i, err)
		}
	}
	for _, n := range c.nodes {
		waitFor(t, n.cfg.NodeID+" caught up past the barriers", func() bool {
			st := n.Status()
			return st.CommitIndex > 200 && st.AppliedIndex == st.CommitIndex
		})
	}
	// A command after the barriers is still waited for.
	if _, err := leader.Propose(ctx, statedb.CmdCreateProject, project(2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitFor(t, n.cfg.NodeID+" applied the command after the barriers", func() bool {
			_, ok := n.State().Project("p2")
			st := n.Status()
			return ok && st.AppliedIndex == st.CommitIndex
		})
	}
}

// TestCaughtUpAfterCompaction: a snapshot followed by log compaction
// removes the barriers after the last command from the log; the node must
// still read as caught up (they are in the snapshot the state machine
// took), not wait for the next write.
func TestCaughtUpAfterCompaction(t *testing.T) {
	c := newTestCluster(t)
	c.add("solo", nil)
	n := c.start()
	ctx := testCtx(t)
	if _, err := n.Propose(ctx, statedb.CmdCreateProject, project(1)); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := n.ConfirmLeader(ctx); err != nil {
			t.Fatalf("confirmation %d: %v", i, err)
		}
	}
	rc := n.raft.ReloadableConfig()
	rc.TrailingLogs = 0
	if err := n.raft.ReloadConfig(rc); err != nil {
		t.Fatal(err)
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	var l raft.Log
	if err := n.logs.GetLog(n.store.AppliedIndex()+1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("the entry after the last command is still in the log after compaction (%v)", err)
	}
	waitFor(t, "caught up after compaction", func() bool {
		st := n.Status()
		return st.AppliedIndex == st.CommitIndex
	})
}
