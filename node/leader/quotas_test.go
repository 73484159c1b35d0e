package leader

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// countingProposer applies through an agenttest state and counts calls.
type countingProposer struct {
	st    *agenttest.State
	calls int
}

func (p *countingProposer) Propose(_ context.Context, t statedb.CmdType, payload any) (uint64, error) {
	p.calls++
	return 0, p.st.Apply(t, payload)
}

func (p *countingProposer) State() *statedb.Snapshot { return p.st.Snapshot() }

func TestQuotasTurnsEnforcementOnOnce(t *testing.T) {
	st := agenttest.NewState()
	p := &countingProposer{st: st}
	q := Quotas{State: p, Proposer: p, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	q.tick(t.Context())
	if p.calls != 0 {
		t.Fatalf("proposed %d times before the cluster is bootstrapped; want 0", p.calls)
	}
	if err := st.Apply(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config: statedb.ClusterConfig{ClusterID: "c"}, Member: statedb.Member{ID: "m", Name: "m"},
		Project: statedb.Project{ID: "p", Name: "admin"}, Admin: statedb.User{ID: "u", Name: "admin"},
		Roles: []statedb.Role{{ID: "r", Name: "admin"}}, Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k", Secret: []byte("k")},
	}); err != nil {
		t.Fatal(err)
	}
	if st.Snapshot().QuotasEnforced() {
		t.Fatal("a cluster bootstrapped without the setting starts enforced")
	}
	q.tick(t.Context())
	q.tick(t.Context())
	if !st.Snapshot().QuotasEnforced() {
		t.Fatal("quotas not enforced after the leader's tick")
	}
	if p.calls != 1 {
		t.Fatalf("proposed %d times; want once, only while off", p.calls)
	}
}
