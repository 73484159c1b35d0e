package faults

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	got, err := parseAgentCounters([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := (agentCounters{FullResyncs: 12, Operations: 7, HostWrites: 1234567}); got != want {
		t.Fatalf("parsed %+v; want %+v", got, want)
	}
	_, err = parseAgentCounters([]byte("peerstack_raft_term 3\npeerstack_agent_operations_total 7\n"))
	if err == nil || !strings.Contains(err.Error(), "1 of 4") {
		t.Fatalf("metrics without the agent's counters: err %v; want one naming 1 of 4 found", err)
	}
}

// fakeAgentHost serves the state digest and the agent's counters: each
// /metrics read counts one more full resync, and the host writes and the
// digest follow the test's functions of the number of reads so far.
func fakeAgentHost(t *testing.T, writes func(n int64) int64, digest func(n int64) byte, fail func(n int64) bool) *hostClient {
	var reads atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := reads.Load()
		if fail(n) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/cluster/v1/status":
			fmt.Fprintf(w, `{"status": {"applied_index": %d, "state_digest": %q, "state_index": %d}}`, n, digestOf(digest(n)), n)
		case "/metrics":
			n = reads.Add(1)
			fmt.Fprintf(w, "peerstack_agent_full_resyncs_total %d\npeerstack_agent_operations_total 3\npeerstack_agent_host_writes_total %d\npeerstack_agent_repairs_total 0\n", n, writes(n))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return &hostClient{name: "h1", base: srv.URL, hc: srv.Client()}
}

// A host is quiet once a window over one state digest sees no host write
// or operation; a host whose agent writes in every window fails with the
// count; a state that moves, or reads that fail, only postpone the
// verdict.
func TestQuietWindow(t *testing.T) {
	ctx := context.Background()
	never := func(int64) bool { return false }
	same := func(int64) byte { return 'a' }
	c := fakeAgentHost(t, func(int64) int64 { return 40 }, same, never)
	if n, seen, err := quietWindow(ctx, c, time.Now().Add(20*time.Second)); err != nil || n != 1 || seen.HostWrites != 40 || seen.Operations != 3 {
		t.Fatalf("steady host: window %d, counters %+v, err %v; want quiet in window 1 with 40 host writes and 3 operations", n, seen, err)
	}
	c = fakeAgentHost(t, func(n int64) int64 { return 40 + n }, same, never)
	_, _, err := quietWindow(ctx, c, time.Now().Add(3*time.Second))
	if err == nil || !strings.Contains(err.Error(), "attempted 2 host writes") {
		t.Fatalf("host writing at every resync: err %v; want no quiet window, naming 2 host writes", err)
	}
	// The state moves during the first window (reads 1–3), then holds.
	c = fakeAgentHost(t, func(int64) int64 { return 40 }, func(n int64) byte { return byte('a' + min(n, 3)) }, never)
	if n, _, err := quietWindow(ctx, c, time.Now().Add(20*time.Second)); err != nil || n != 2 {
		t.Fatalf("state moving at first: window %d, err %v; want quiet in window 2", n, err)
	}
	// The first reads fail.
	var failed atomic.Int64
	c = fakeAgentHost(t, func(int64) int64 { return 40 }, same, func(int64) bool { return failed.Add(1) <= 2 })
	if n, _, err := quietWindow(ctx, c, time.Now().Add(20*time.Second)); err != nil || n != 3 {
		t.Fatalf("failed reads at first: window %d, err %v; want quiet in window 3", n, err)
	}
}
