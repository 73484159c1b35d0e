package faults

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/e2e"
)

// AgentCounters reads the agent's counters from the host's /metrics
// (e2e.AgentHost).
func (c *hostClient) AgentCounters(ctx context.Context) (e2e.AgentCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := c.get(ctx, "/metrics")
	if err != nil {
		return e2e.AgentCounters{}, err
	}
	return e2e.ParseAgentCounters(b)
}

// StateDigest is the digest of the host's state and its index
// (e2e.AgentHost).
func (c *hostClient) StateDigest(ctx context.Context) (string, uint64, error) {
	st, err := c.digest(ctx)
	return st.StateDigest, st.StateIndex, err
}

// reconcileCheck checks, after the heal, that every host's agent finds
// nothing to change: in a window holding a whole full resync, during
// which the host's state holds still (the same digest before and after),
// no device, filter or route may be written and no operation (VM start
// or stop, volume change, report) started. A host gets windows until one
// is quiet or limit passes (it may still be retrying what failed during
// the faults); a host without a quiet window fails with what its last
// window changed. Repairs (writes by full resyncs although the desired
// state had not changed) are reported per host.
func reconcileCheck(ctx context.Context, w *workload, limit time.Duration) (bad []string, summary string) {
	deadline := time.Now().Add(limit)
	type result struct {
		windows int
		last    e2e.AgentCounters
		err     error
	}
	res := make([]result, len(w.cl))
	var wg sync.WaitGroup
	for i, c := range w.cl {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].windows, res[i].last, res[i].err = e2e.QuietWindow(ctx, c, deadline)
		}()
	}
	wg.Wait()
	var parts []string
	for i, r := range res {
		name := w.cl[i].name
		if r.err != nil {
			bad = append(bad, fmt.Sprintf("reconcile after the heal: %s: %v", name, r.err))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s quiet in window %d (since its daemon started: %d host writes, %d operations, %d repairs)",
			name, r.windows, r.last.HostWrites, r.last.Operations, r.last.Repairs))
	}
	if len(parts) > 0 {
		summary = "reconcile after the heal: " + strings.Join(parts, "; ") + "\n"
	}
	return bad, summary
}
