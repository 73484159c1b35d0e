package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AgentCounters are what a host's agent reports on /metrics.
type AgentCounters struct {
	FullResyncs, Operations, HostWrites, Repairs int64
}

// ParseAgentCounters picks the agent's counters out of Prometheus text.
func ParseAgentCounters(b []byte) (AgentCounters, error) {
	var out AgentCounters
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

// AgentHost is how QuietWindow reads one host: its agent's counters (from
// its /metrics) and the digest of its replicated state with the index it
// was taken at (GET /cluster/v1/status?digest=true).
type AgentHost interface {
	AgentCounters(ctx context.Context) (AgentCounters, error)
	StateDigest(ctx context.Context) (digest string, index uint64, err error)
}

// QuietWindow looks for a window over an unchanged state (the same
// digest before and after), holding at least one whole full resync of
// h's agent, in which the agent changed nothing on the host: no device,
// filter or route written, no operation (VM start or stop, volume
// change, report) started — a full reconcile found nothing to do. It
// tries windows until one is quiet or deadline passes (the host may
// still be retrying what failed), retrying failed reads, and returns how
// many windows it took and the counters last read; with none quiet, the
// error says what the last window saw.
func QuietWindow(ctx context.Context, h AgentHost, deadline time.Time) (int, AgentCounters, error) {
	var last string
	var seen AgentCounters
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
		quiet, why, cut, err := window(ctx, h, deadline, &seen)
		switch {
		case err != nil:
			last = err.Error()
		case quiet:
			return n, seen, nil
		case cut && last != "":
			// The deadline cut this window short: the last whole
			// window says more.
		default:
			last = why
		}
	}
}

// window reads the state digest and the agent's counters, waits until
// the agent started two more full resyncs (so the first of them ran from
// start to end in between), and reads them again: quiet when neither the
// state nor the host writes and operations moved; otherwise why not, and
// cut when the deadline ended the window before that.
func window(ctx context.Context, h AgentHost, deadline time.Time, seen *AgentCounters) (quiet bool, why string, cut bool, err error) {
	d1, i1, err := h.StateDigest(ctx)
	if err != nil {
		return false, "", false, err
	}
	c1, err := h.AgentCounters(ctx)
	if err != nil {
		return false, "", false, err
	}
	*seen = c1
	c2 := c1
	for c2.FullResyncs < c1.FullResyncs+2 {
		if c2.FullResyncs < c1.FullResyncs {
			return false, "its daemon restarted during the window (its counters went back)", false, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Sprintf("its agent started %d of two full resyncs in the window", c2.FullResyncs-c1.FullResyncs), true, nil
		}
		select {
		case <-ctx.Done():
			return false, "", false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if c2, err = h.AgentCounters(ctx); err != nil {
			return false, "", false, err
		}
	}
	*seen = c2
	d2, i2, err := h.StateDigest(ctx)
	switch {
	case err != nil:
		return false, "", false, err
	case d2 != d1:
		return false, fmt.Sprintf("the state changed (index %d → %d)", i1, i2), false, nil
	case c2.HostWrites == c1.HostWrites && c2.Operations == c1.Operations:
		return true, "", false, nil
	}
	return false, fmt.Sprintf("over an unchanged state the agent attempted %d host writes (%d of them repairs) and started %d operations",
		c2.HostWrites-c1.HostWrites, c2.Repairs-c1.Repairs, c2.Operations-c1.Operations), false, nil
}
