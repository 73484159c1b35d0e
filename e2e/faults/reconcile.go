package faults

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// agentCounters are what a host's agent reports on /metrics.
type agentCounters struct {
	FullResyncs, Operations, HostWrites, Repairs int64
}

// agentCounters reads the agent's counters from the host's /metrics.
func (c *hostClient) agentCounters(ctx context.Context) (agentCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := c.get(ctx, "/metrics")
	if err != nil {
		return agentCounters{}, err
	}
	return parseAgentCounters(b)
}

// parseAgentCounters picks the agent's counters out of Prometheus text.
func parseAgentCounters(b []byte) (agentCounters, error) {
	var out agentCounters
	fields := map[string]*int64{
		"peerstack_agent_full_resyncs_total": &out.FullResyncs,
		"peerstack_agent_operations_total":   &out.Operations,
		"peerstack_agent_host_writes_total":  &out.HostWrites,
		"peerstack_agent_repairs_total":      &out.Repairs,
	}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		p := fields[name]
		if !ok || p == nil {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return out, fmt.Errorf("metric %s: %w", name, err)
		}
		*p = int64(f)
		found++
	}
	if found != len(fields) {
		return out, fmt.Errorf("metrics lack the agent's counters (%d of %d found)", found, len(fields))
	}
	return out, sc.Err()
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
		last    agentCounters
		err     error
	}
	res := make([]result, len(w.cl))
	var wg sync.WaitGroup
	for i, c := range w.cl {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].windows, res[i].last, res[i].err = quietWindow(ctx, c, deadline)
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
		parts = append(parts, fmt.Sprintf("%s quiet in window %d (over the run: %d host writes, %d operations, %d repairs)",
			name, r.windows, r.last.HostWrites, r.last.Operations, r.last.Repairs))
	}
	if len(parts) > 0 {
		summary = "reconcile after the heal: " + strings.Join(parts, "; ") + "\n"
	}
	return bad, summary
}

// quietWindow looks for a window over an unchanged state, holding at
// least one whole full resync of c's agent, in which the agent changed
// nothing; it returns how many windows it took and the agent's counters
// last read. A failed read is retried until the deadline.
func quietWindow(ctx context.Context, c *hostClient, deadline time.Time) (int, agentCounters, error) {
	var last string
	var seen agentCounters
	for n := 1; ; n++ {
		if n > 1 {
			if time.Now().After(deadline) {
				return n - 1, seen, fmt.Errorf("no quiet window before the deadline; the last: %s", last)
			}
			select {
			case <-ctx.Done():
				return n - 1, seen, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		quiet, why, err := window(ctx, c, deadline, &seen)
		switch {
		case err != nil:
			last = err.Error()
		case quiet:
			return n, seen, nil
		default:
			last = why
		}
	}
}

// window reads the state digest and the agent's counters, waits until
// the agent started two more full resyncs (so the first of them ran from
// start to end in between), and reads them again: quiet when neither the
// state nor the host writes and operations moved; otherwise why not.
func window(ctx context.Context, c *hostClient, deadline time.Time, seen *agentCounters) (quiet bool, why string, err error) {
	d1, err := c.digest(ctx)
	if err != nil {
		return false, "", err
	}
	c1, err := c.agentCounters(ctx)
	if err != nil {
		return false, "", err
	}
	*seen = c1
	c2 := c1
	for c2.FullResyncs < c1.FullResyncs+2 {
		if time.Now().After(deadline) {
			return false, fmt.Sprintf("its agent started %d of two full resyncs in the window", c2.FullResyncs-c1.FullResyncs), nil
		}
		select {
		case <-ctx.Done():
			return false, "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if c2, err = c.agentCounters(ctx); err != nil {
			return false, "", err
		}
	}
	*seen = c2
	d2, err := c.digest(ctx)
	switch {
	case err != nil:
		return false, "", err
	case d2.StateDigest != d1.StateDigest:
		return false, fmt.Sprintf("the state changed (index %d → %d)", d1.StateIndex, d2.StateIndex), nil
	case c2.HostWrites == c1.HostWrites && c2.Operations == c1.Operations:
		return true, "", nil
	}
	return false, fmt.Sprintf("over an unchanged state the agent attempted %d host writes (%d of them repairs) and started %d operations",
		c2.HostWrites-c1.HostWrites, c2.Repairs-c1.Repairs, c2.Operations-c1.Operations), nil
}
