package faults

import (
	"strings"
	"testing"
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
