package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	testKey  = []byte("peerstack-test-k") // 16 bytes
	otherKey = []byte("another-key-0123")
)

// testLogger discards unless GOSSIP_TEST_LOG is set. It never writes to t:
// memberlist goroutines may still log just after Shutdown returns.
func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testMeta(id string) Meta {
	return Meta{
		Version: MetaVersion, NodeID: id, Name: "host-" + id,
		APIAddr: "127.0.0.1:8470", RaftAddr: "127.0.0.1:8471", VTEPAddr: "127.0.0.1",
		VCPUs: 8, RAMMB: 16384, DiskGB: 100, Accel: "tcg", Arch: "x86_64", SWVersion: "test",
	}
}

// testTimers are tight timers for loopback: probe every 100ms, gossip
// every 20ms, push/pull every second, a short suspicion and TCP timeout.
var testTimers = Timers{
	ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, GossipInterval: 20 * time.Millisecond,
	SuspicionMult: 4, SuspicionMaxTimeoutMult: 4, PushPullInterval: time.Second, TCPTimeout: time.Second,
	GossipToTheDeadTime: 2 * time.Second,
	// Let a restarted test node take its name back on a new port.
	DeadNodeReclaimTime: 200 * time.Millisecond,
}

func testConfig(id string) Config {
	return Config{
		NodeID: id, BindAddr: "127.0.0.1", SecretKey: testKey,
		Meta: testMeta(id), Timers: testTimers, Logger: testLogger(),
	}
}

// startNode starts a node and shuts it down when the test ends.
func startNode(tb testing.TB, cfg Config) *Gossip {
	tb.Helper()
	g, err := New(cfg)
	if err != nil {
		tb.Fatalf("New(%s) error: %v", cfg.NodeID, err)
	}
	tb.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func addr(g *Gossip) string { return "127.0.0.1:" + strconv.Itoa(g.Port()) }

func nodeName(i int) string { return fmt.Sprintf("node-%02d", i) }

// startCluster starts n nodes, joins them through node 0 and waits until
// every node sees all n alive.
func startCluster(tb testing.TB, n int) []*Gossip {
	tb.Helper()
	nodes := make([]*Gossip, n)
	for i := range nodes {
		nodes[i] = startNode(tb, testConfig(nodeName(i)))
	}
	for i := 1; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := nodes[i].Join(ctx, []string{addr(nodes[0])}); err != nil {
			cancel()
			tb.Fatalf("%s Join: %v", nodeName(i), err)
		}
		cancel()
	}
	waitFor(tb, 30*time.Second, fmt.Sprintf("all %d nodes see %d alive", n, n), func() bool {
		for _, g := range nodes {
			if g.NumAlive() != n {
				return false
			}
		}
		return true
	})
	return nodes
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func memberOf(g *Gossip, name string) (Member, bool) {
	for _, m := range g.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func TestClusterJoinSeesMeta(t *testing.T) {
	nodes := startCluster(t, 3)
	for _, g := range nodes {
		ms := g.Members()
		if len(ms) != 3 {
			t.Fatalf("%s: Members() = %d members; want 3: %+v", g.nodeID, len(ms), ms)
		}
		for i, m := range ms {
			want := nodeName(i) // sorted by name
			if m.Name != want || m.State != StateAlive || m.Meta != testMeta(want) {
				t.Errorf("%s: Members()[%d] = %+v; want alive %s with %+v", g.nodeID, i, m, want, testMeta(want))
			}
			if m.Addr != addr(nodes[i]) {
				t.Errorf("%s: Members()[%d].Addr = %s; want %s", g.nodeID, i, m.Addr, addr(nodes[i]))
			}
		}
		if lm := g.LocalMember(); lm.Name != g.nodeID || lm.State != StateAlive || lm.Addr != addr(g) {
			t.Errorf("%s: LocalMember() = %+v", g.nodeID, lm)
		}
	}
	// Node 0 got join hints for the other two (and itself).
	seen := map[string]bool{}
	timeout := time.After(5 * time.Second)
	for len(seen) < 3 {
		select {
		case ev := <-nodes[0].Events():
			if ev.Kind == EventJoin {
				seen[ev.Member.Name] = true
			}
		case <-timeout:
			t.Fatalf("join events on node 0 = %v; want all 3", seen)
		}
	}
	if d := nodes[0].DroppedEvents(); d != 0 {
		t.Errorf("DroppedEvents() = %d; want 0", d)
	}
}

func TestUpdateMetaPropagates(t *testing.T) {
	nodes := startCluster(t, 3)
	want := testMeta(nodeName(1))
	want.UsedVCPUs, want.UsedRAMMB = 3, 4096
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[1].UpdateMeta(ctx, want); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	if got := nodes[1].LocalMember().Meta; got != want {
		t.Fatalf("LocalMember().Meta = %+v; want %+v", got, want)
	}
	waitFor(t, 10*time.Second, "every node sees the new meta", func() bool {
		for _, g := range nodes {
			if m, _ := memberOf(g, nodeName(1)); m.Meta != want {
				return false
			}
		}
		return true
	})
	// Node 0 got an update hint carrying the new meta.
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-nodes[0].Events():
			if ev.Kind == EventUpdate && ev.Member.Name == nodeName(1) && ev.Member.Meta == want {
				goto checked
			}
		case <-timeout:
			t.Fatal("no update event for node-01 on node 0")
		}
	}
checked:
	// Empty NodeID is filled in; a different NodeID is refused.
	noID := want
	noID.NodeID = ""
	if err := nodes[1].UpdateMeta(ctx, noID); err != nil {
		t.Errorf("UpdateMeta(no node id) = %v; want nil", err)
	}
	other := want
	other.NodeID = "someone-else"
	if err := nodes[1].UpdateMeta(ctx, other); err == nil {
		t.Error("UpdateMeta(other node id) = nil; want error")
	}
	big := want
	big.Name = strings.Repeat("x", 600)
	if err := nodes[1].UpdateMeta(ctx, big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta(600-byte name) = %v; want ErrMetaTooLarge", err)
	}
	if got := nodes[1].LocalMember().Meta; got != want {
		t.Errorf("after refused updates LocalMember().Meta = %+v; want %+v", got, want)
	}
}

// plainMemberlist starts a memberlist with no key, as a host without the
// cluster key would.
func plainMemberlist(t *testing.T) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "plain"
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("memberlist.Create: %v", err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

func TestWrongOrNoKeyIsRefused(t *testing.T) {
	nodes := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	wrongCfg := testConfig("intruder")
	wrongCfg.SecretKey = otherKey
	wrong := startNode(t, wrongCfg)
	if n, err := wrong.Join(ctx, []string{addr(nodes[0])}); !errors.Is(err, ErrNoPeers) {
		t.Errorf("Join with another key = %d, %v; want ErrNoPeers", n, err)
	}

	plain := plainMemberlist(t)
	if n, err := plain.Join([]string{addr(nodes[0])}); err == nil || n != 0 {
		t.Errorf("plaintext Join = %d, %v; want an error", n, err)
	}
	plainAddr := plain.LocalNode().Address()
	if n, err := nodes[1].Join(ctx, []string{plainAddr}); !errors.Is(err, ErrNoPeers) {
		t.Errorf("Join to a plaintext host = %d, %v; want ErrNoPeers", n, err)
	}

	// Let gossip run (a meta change goes round) and check nobody let them in.
	m := testMeta(nodeName(0))
	m.UsedVCPUs = 1
	if err := nodes[0].UpdateMeta(ctx, m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node 1 sees node 0's update", func() bool {
		got, _ := memberOf(nodes[1], nodeName(0))
		return got.Meta == m
	})
	for _, g := range nodes {
		for _, mem := range g.Members() {
			if mem.Name == "intruder" || mem.Name == "plain" {
				t.Errorf("%s lists %+v", g.nodeID, mem)
			}
		}
	}
	if ms := wrong.Members(); len(ms) != 1 {
		t.Errorf("intruder Members() = %+v; want only itself", ms)
	}
	if n := plain.NumMembers(); n != 1 {
		t.Errorf("plaintext NumMembers() = %d; want 1", n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }},
		{"no key", func(c *Config) { c.SecretKey = nil }},
		{"short key", func(c *Config) { c.SecretKey = testKey[:15] }},
		{"meta of another node", func(c *Config) { c.Meta.NodeID = "other" }},
		{"meta too large", func(c *Config) { c.Meta.Name = strings.Repeat("x", 600) }},
		{"bad bind addr", func(c *Config) { c.BindAddr = "not-an-ip" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("n")
			tt.mod(&cfg)
			g, err := New(cfg)
			if err == nil {
				_ = g.Shutdown()
				t.Fatalf("New(%s) = nil error; want error", tt.name)
			}
		})
	}
}

func TestLeaveShowsLeft(t *testing.T) {
	nodes := startCluster(t, 3)
	leaver := nodes[2]
	if err := leaver.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if lm := leaver.LocalMember(); lm.State != StateLeft {
		t.Errorf("LocalMember() after Leave = %+v; want left", lm)
	}
	if err := leaver.UpdateMeta(context.Background(), testMeta(nodeName(2))); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave = %v; want ErrLeft", err)
	}
	if err := leaver.Leave(time.Second); err != nil {
		t.Errorf("second Leave = %v; want nil", err)
	}
	if err := leaver.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, g := range nodes[:2] {
		waitFor(t, 10*time.Second, g.nodeID+" lists node-02 as left", func() bool {
			m, ok := memberOf(g, nodeName(2))
			return ok && m.State == StateLeft && m.Meta.Leaving
		})
		if n := g.NumAlive(); n != 2 {
			t.Errorf("%s NumAlive() = %d; want 2", g.nodeID, n)
		}
		if n := len(g.Members()); n != 3 {
			t.Errorf("%s len(Members()) = %d; want 3 (left kept)", g.nodeID, n)
		}
	}
}

func TestKilledNodeShowsDeadAndCanReturn(t *testing.T) {
	nodes := startCluster(t, 3)
	if err := nodes[2].Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, g := range nodes[:2] {
		waitFor(t, 15*time.Second, g.nodeID+" lists node-02 as dead", func() bool {
			m, ok := memberOf(g, nodeName(2))
			return ok && m.State == StateDead
		})
	}
	var sawLeave bool
	for len(nodes[0].Events()) > 0 {
		if ev := <-nodes[0].Events(); ev.Kind == EventLeave && ev.Member.Name == nodeName(2) {
			sawLeave = ev.Member.State == StateDead
		}
	}
	if !sawLeave {
		t.Error("node 0 got no leave event with state dead for node-02")
	}

	// The same host restarts on a new port and is alive again.
	back := startNode(t, testConfig(nodeName(2)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitFor(t, 10*time.Second, "restarted node-02 rejoins", func() bool {
		_, err := back.Join(ctx, []string{addr(nodes[0])})
		return err == nil
	})
	for _, g := range nodes[:2] {
		waitFor(t, 15*time.Second, g.nodeID+" lists node-02 alive at its new address", func() bool {
			m, _ := memberOf(g, nodeName(2))
			return m.State == StateAlive && m.Addr == addr(back)
		})
	}

	// Forget drops departed members only.
	if nodes[0].Forget(nodeName(1)) {
		t.Error("Forget(alive member) = true; want false")
	}
}

func TestForgetDeparted(t *testing.T) {
	nodes := startCluster(t, 2)
	if err := nodes[1].Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "node 0 lists node-01 as dead", func() bool {
		m, _ := memberOf(nodes[0], nodeName(1))
		return m.State == StateDead
	})
	if !nodes[0].Forget(nodeName(1)) {
		t.Fatal("Forget(dead member) = false; want true")
	}
	if _, ok := memberOf(nodes[0], nodeName(1)); ok {
		t.Error("forgotten member still listed")
	}
	if nodes[0].Forget("nobody") {
		t.Error("Forget(unknown) = true; want false")
	}
}

func TestReapDeparted(t *testing.T) {
	cfg := testConfig(nodeName(0))
	cfg.ReapAfter = 50 * time.Millisecond
	a := startNode(t, cfg)
	b := startNode(t, testConfig(nodeName(1)))
	if _, err := b.Join(context.Background(), []string{addr(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a sees b", func() bool { return a.NumAlive() == 2 })
	if err := b.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a reaps b", func() bool { return len(a.Members()) == 1 })
}

func TestEventsDropWhenFull(t *testing.T) {
	nodes := make([]*Gossip, 3)
	for i := range nodes {
		cfg := testConfig(nodeName(i))
		cfg.EventBuffer = 1
		nodes[i] = startNode(t, cfg)
	}
	for _, g := range nodes[1:] {
		if _, err := g.Join(context.Background(), []string{addr(nodes[0])}); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody reads Events; memberlist must not block and drops are counted.
	waitFor(t, 10*time.Second, "all see 3 alive", func() bool {
		for _, g := range nodes {
			if g.NumAlive() != 3 {
				return false
			}
		}
		return true
	})
	if d := nodes[0].DroppedEvents(); d == 0 {
		t.Errorf("DroppedEvents() = 0; want > 0 with a buffer of 1")
	}
}

func TestShutdownIdempotentAndAfterwards(t *testing.T) {
	g := startNode(t, testConfig("solo"))
	if err := g.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := g.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	for range g.Events() { // drains, then ends: Events is closed
	}
	ctx := context.Background()
	if _, err := g.Join(ctx, []string{"127.0.0.1:1"}); !errors.Is(err, ErrShutdown) {
		t.Errorf("Join after Shutdown = %v; want ErrShutdown", err)
	}
	if err := g.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown = %v; want ErrShutdown", err)
	}
	m := testMeta("solo")
	m.UsedVCPUs = 1
	if err := g.UpdateMeta(ctx, m); !errors.Is(err, ErrShutdown) {
		t.Errorf("UpdateMeta after Shutdown = %v; want ErrShutdown", err)
	}
}

func TestJoinErrors(t *testing.T) {
	g := startNode(t, testConfig("solo"))
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	ctx := context.Background()
	if _, err := g.Join(ctx, []string{dead}); !errors.Is(err, ErrNoPeers) || !strings.Contains(err.Error(), dead) {
		t.Errorf("Join(%s) = %v; want ErrNoPeers naming the peer", dead, err)
	}
	if _, err := g.Join(ctx, nil); !errors.Is(err, ErrNoPeers) {
		t.Errorf("Join(nil) = %v; want ErrNoPeers", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.Join(cctx, []string{dead}); !errors.Is(err, context.Canceled) {
		t.Errorf("Join(canceled ctx) = %v; want context.Canceled", err)
	}
}

func TestLogWriter(t *testing.T) {
	var got []string
	h := recordHandler{fn: func(r slog.Record) {
		level := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "memberlist_level" {
				level = a.Value.String()
			}
			return true
		})
		got = append(got, r.Level.String()+"|"+level+"|"+r.Message)
	}}
	l := log.New(&logWriter{log: slog.New(h)}, "", 0)
	l.Printf("[WARN] memberlist: Got ping for unexpected node %s", "x")
	l.Print("no tag")
	want := []string{"DEBUG|WARN|Got ping for unexpected node x", "DEBUG||no tag"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records = %q; want %q", got, want)
	}
}

type recordHandler struct{ fn func(slog.Record) }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.fn(r)
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func TestShutdownStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	nodes := make([]*Gossip, 3)
	for i := range nodes {
		g, err := New(testConfig(nodeName(i)))
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = g
	}
	for _, g := range nodes[1:] {
		if _, err := g.Join(context.Background(), []string{addr(nodes[0])}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "all see 3 alive", func() bool { return nodes[0].NumAlive() == 3 })
	if err := nodes[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	for _, g := range nodes {
		if err := g.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	// memberlist's handlers notice the shutdown asynchronously.
	waitFor(t, 10*time.Second, "goroutines return to the baseline", func() bool {
		return runtime.NumGoroutine() <= before
	})
}
