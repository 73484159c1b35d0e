package agent_test

import (
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestAgentCountsHostWritesAndRepairs: plumbing a new server is a host
// write; once converged, full resyncs change nothing (no write, no
// operation); a host changed behind the agent's back is repaired by the
// next full resync and counted as a repair.
func TestAgentCountsHostWritesAndRepairs(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.settle()
	before := h.ag.Stats()
	if before.HostWrites == 0 {
		t.Fatalf("stats %+v: plumbing the server's port counted no host write", before)
	}
	h.settle()
	if st := h.ag.Stats(); st.HostWrites != before.HostWrites || st.Operations != before.Operations || st.Repairs != 0 {
		t.Fatalf("converged host: stats went from %+v to %+v over two full resyncs; want no write, operation or repair", before, st)
	}
	h.net.Drift()
	h.settle()
	st := h.ag.Stats()
	if st.Repairs != 1 || st.HostWrites != before.HostWrites+1 {
		t.Fatalf("after a drift: stats %+v (before %+v); want one repair and one more write", st, before)
	}
}
