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

// fakeDigests serves GET /cluster/v1/status?digest=true with the digest
// and index answer(n) gives for the n-th request (from 0).
func fakeDigests(t *testing.T, name string, answer func(n int) (string, uint64)) *hostClient {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cluster/v1/status" || r.URL.Query().Get("digest") != "true" {
			http.NotFound(w, r)
			return
		}
		d, idx := answer(int(n.Add(1) - 1))
		fmt.Fprintf(w, `{"status": {"applied_index": %d, "state_digest": %q, "state_index": %d}}`, idx, d, idx)
	}))
	t.Cleanup(srv.Close)
	return &hostClient{name: name, base: srv.URL, hc: srv.Client()}
}

func digestOf(c byte) string { return strings.Repeat(string(c), 64) }

// The digest check passes once every host shows the same digest (the
// indexes may differ), fails at once on two hosts at one index with
// different digests, and fails when the hosts never agree.
func TestAgreeOnState(t *testing.T) {
	ctx := context.Background()
	// h2 catches up on its second answer; indexes differ (barriers).
	w := &workload{cl: []*hostClient{
		fakeDigests(t, "h1", func(int) (string, uint64) { return digestOf('a'), 50 }),
		fakeDigests(t, "h2", func(n int) (string, uint64) {
			if n == 0 {
				return digestOf('b'), 48
			}
			return digestOf('a'), 52
		}),
	}}
	if bad, sum := agreeOnState(ctx, w, 10*time.Second); len(bad) > 0 || !strings.Contains(sum, "all 2 hosts") || !strings.Contains(sum, "round 2") {
		t.Fatalf("catching up: %v %q; want agreement in round 2", bad, sum)
	}

	w = &workload{cl: []*hostClient{
		fakeDigests(t, "h1", func(int) (string, uint64) { return digestOf('a'), 50 }),
		fakeDigests(t, "h2", func(int) (string, uint64) { return digestOf('c'), 50 }),
	}}
	t0 := time.Now()
	if bad, _ := agreeOnState(ctx, w, 10*time.Second); len(bad) != 1 || !strings.Contains(bad[0], "diverged") || time.Since(t0) > 5*time.Second {
		t.Fatalf("same index, different state: %v after %v; want divergence at once", bad, time.Since(t0))
	}

	w = &workload{cl: []*hostClient{
		fakeDigests(t, "h1", func(n int) (string, uint64) { return digestOf('a'), uint64(100 + 2*n) }),
		fakeDigests(t, "h2", func(n int) (string, uint64) { return digestOf('d'), uint64(101 + 2*n) }),
	}}
	if bad, _ := agreeOnState(ctx, w, time.Second); len(bad) != 1 || !strings.Contains(bad[0], "never agreed") {
		t.Fatalf("never agreeing: %v; want a failure", bad)
	}
}
