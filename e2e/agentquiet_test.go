package e2e

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestParseAgentCounters: the agent's counters are read from Prometheus
// text (large values in exponent form too); a host without them is an
// error, not zeros.
func TestParseAgentCounters(t *testing.T) {
	text := `# HELP peerstack_agent_full_resyncs_total Full resyncs the agent started.
# TYPE peerstack_agent_full_resyncs_total counter
peerstack_agent_full_resyncs_total 12
peerstack_agent_host_writes_total 1.234567e+06
peerstack_agent_operations_total 7
peerstack_agent_repairs_total 0
peerstack_raft_term 3
`
	got, err := ParseAgentCounters([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := (AgentCounters{FullResyncs: 12, Operations: 7, HostWrites: 1234567}); got != want {
		t.Fatalf("parsed %+v; want %+v", got, want)
	}
	_, err = ParseAgentCounters([]byte("peerstack_raft_term 3\npeerstack_agent_operations_total 7\n"))
	if err == nil || !strings.Contains(err.Error(), "1 of 4") {
		t.Fatalf("metrics without the agent's counters: err %v; want one naming 1 of 4 found", err)
	}
}

// fakeAgentHost: each counters read counts one more full resync; the
// host writes and the digest follow the test's functions of the number
// of counters reads so far; fail makes the n-th read of either kind fail.
type fakeAgentHost struct {
	reads, calls atomic.Int64
	writes       func(n int64) int64
	digest       func(n int64) string
	fail         func(call int64) bool
}

func (f *fakeAgentHost) AgentCounters(context.Context) (AgentCounters, error) {
	if f.fail(f.calls.Add(1)) {
		return AgentCounters{}, errors.New("503 busy")
	}
	n := f.reads.Add(1)
	return AgentCounters{FullResyncs: n, Operations: 3, HostWrites: f.writes(n)}, nil
}

func (f *fakeAgentHost) StateDigest(context.Context) (string, uint64, error) {
	if f.fail(f.calls.Add(1)) {
		return "", 0, errors.New("503 busy")
	}
	n := f.reads.Load()
	return f.digest(n), uint64(n), nil
}

// A host is quiet once a window over one state digest sees no host write
// or operation; a host whose agent writes in every window fails with the
// count; a state that moves, or reads that fail, only postpone the
// verdict.
func TestQuietWindow(t *testing.T) {
	ctx := context.Background()
	never := func(int64) bool { return false }
	same := func(int64) string { return "a" }
	steady := func(int64) int64 { return 40 }
	h := &fakeAgentHost{writes: steady, digest: same, fail: never}
	if n, seen, err := QuietWindow(ctx, h, time.Now().Add(20*time.Second)); err != nil || n != 1 || seen.HostWrites != 40 || seen.Operations != 3 {
		t.Fatalf("steady host: window %d, counters %+v, err %v; want quiet in window 1 with 40 host writes and 3 operations", n, seen, err)
	}
	h = &fakeAgentHost{writes: func(n int64) int64 { return 40 + n }, digest: same, fail: never}
	_, _, err := QuietWindow(ctx, h, time.Now().Add(3*time.Second))
	if err == nil || !strings.Contains(err.Error(), "attempted 2 host writes") {
		t.Fatalf("host writing at every resync: err %v; want no quiet window, naming 2 host writes", err)
	}
	// The state moves during the first window (reads 1–3), then holds.
	h = &fakeAgentHost{writes: steady, digest: func(n int64) string { return string(rune('a' + min(n, 3))) }, fail: never}
	if n, _, err := QuietWindow(ctx, h, time.Now().Add(20*time.Second)); err != nil || n != 2 {
		t.Fatalf("state moving at first: window %d, err %v; want quiet in window 2", n, err)
	}
	// The first two reads fail (each ends its window).
	h = &fakeAgentHost{writes: steady, digest: same, fail: func(call int64) bool { return call <= 2 }}
	if n, _, err := QuietWindow(ctx, h, time.Now().Add(20*time.Second)); err != nil || n != 3 {
		t.Fatalf("failed reads at first: window %d, err %v; want quiet in window 3", n, err)
	}
	// A daemon that restarts mid-window (its counters go back) starts
	// a new window rather than waiting out the deadline.
	var restarted atomic.Bool
	h = &fakeAgentHost{writes: steady, digest: same, fail: never}
	r := &restarting{fakeAgentHost: h, once: &restarted}
	if n, _, err := QuietWindow(ctx, r, time.Now().Add(20*time.Second)); err != nil || n != 2 {
		t.Fatalf("daemon restarted in the first window: window %d, err %v; want quiet in window 2", n, err)
	}
	// An agent that never resyncs has no window.
	h = &fakeAgentHost{writes: steady, digest: same, fail: never}
	_, _, err = QuietWindow(ctx, &frozen{h}, time.Now().Add(2*time.Second))
	if err == nil || !strings.Contains(err.Error(), "started 0 of two full resyncs") {
		t.Fatalf("agent without resyncs: err %v; want no quiet window, naming 0 of two full resyncs", err)
	}
}

// frozen is an agent whose full resyncs do not move.
type frozen struct{ *fakeAgentHost }

func (f *frozen) AgentCounters(ctx context.Context) (AgentCounters, error) {
	c, err := f.fakeAgentHost.AgentCounters(ctx)
	c.FullResyncs = 5
	return c, err
}

// restarting is an agent whose daemon restarts once, at its second
// counters read: the counters start again from zero.
type restarting struct {
	*fakeAgentHost
	once *atomic.Bool
}

func (r *restarting) AgentCounters(ctx context.Context) (AgentCounters, error) {
	c, err := r.fakeAgentHost.AgentCounters(ctx)
	if c.FullResyncs == 2 && r.once.CompareAndSwap(false, true) {
		r.fakeAgentHost.reads.Store(0)
		c.FullResyncs = 0
	}
	return c, err
}
