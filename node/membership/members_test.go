package membership_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/node/membership"
)

func TestMemberListRolesAndGossip(t *testing.T) {
	members := []*statedb.Member{{ID: "a", Name: "ha"}, {ID: "b", Name: "hb"}, {ID: "c", Name: "hc", Disabled: true}, {ID: "d", Name: "hd"}}
	servers := []membership.RaftServer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "c"}}
	live := []gossip.Member{{Name: "a", State: gossip.StateAlive, Meta: gossip.Meta{VCPUs: 4, UsedVCPUs: 1, SWVersion: "v9"}}}
	got := membership.MemberList(members, servers, "b", live)
	want := map[string][2]string{"a": {"voter", "alive"}, "b": {"leader", "dead"}, "c": {"nonvoter", "dead"}, "d": {"none", "dead"}}
	if len(got) != 4 {
		t.Fatalf("%d members; want 4", len(got))
	}
	for _, m := range got {
		if w := want[m.ID]; m.RaftRole != w[0] || m.GossipState != w[1] {
			t.Errorf("member %s: role %s, gossip %s; want %v", m.ID, m.RaftRole, m.GossipState, w)
		}
	}
	if got[0].Capacity.VCPUs != 4 || got[0].Capacity.UsedVCPUs != 1 || got[0].Version != "v9" || !got[2].Disabled {
		t.Fatalf("metadata not carried: %+v / %+v", got[0], got[2])
	}
}

// raft is membership.Raft over an agenttest state: proposals apply at
// once.
type raft struct {
	st        *agenttest.State
	leader    bool
	transfers atomic.Int32
	proposals atomic.Int32
}

func (r *raft) State() *statedb.Snapshot { return r.st.Snapshot() }
func (r *raft) IsLeader() bool           { return r.leader }
func (r *raft) TransferLeadership() error {
	r.transfers.Add(1)
	return nil
}

func (r *raft) Propose(_ context.Context, t statedb.CmdType, payload any) (uint64, error) {
	r.proposals.Add(1)
	return 0, r.st.Apply(t, payload)
}

func twoMembers(t *testing.T) *raft {
	t.Helper()
	st := agenttest.NewState()
	if err := st.Apply(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config: statedb.ClusterConfig{ClusterID: "c1"}, Member: statedb.Member{ID: "m1", Name: "first"},
		Project: statedb.Project{ID: "p", Name: "admin"}, Admin: statedb.User{ID: "u", Name: "admin"},
		Roles: []statedb.Role{{ID: "r", Name: "admin"}}, Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k", Secret: []byte("k")},
	}); err != nil {
		t.Fatal(err)
	}
	return &raft{st: st, leader: true}
}

func TestRegisterThenLeave(t *testing.T) {
	r := twoMembers(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	self := statedb.Member{ID: "m2", Name: "second", APIAddr: "10.0.0.2:8470", Version: "v1"}
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	membership.Register(context.Background(), r, self, func() bool { return false }, func() time.Time { return now }, log)
	m, ok := r.State().Member("m2")
	if !ok || m.APIAddr != self.APIAddr || !m.JoinedAt.Equal(now) {
		t.Fatalf("registered member = %+v, %v", m, ok)
	}
	// In step: nothing more is proposed.
	before := r.proposals.Load()
	membership.Register(context.Background(), r, self, func() bool { return false }, time.Now, log)
	if r.proposals.Load() != before {
		t.Fatal("a member record already in step was proposed again")
	}

	// A host with servers cannot leave; nothing changes.
	busy := errors.New("runs servers")
	marked, bye := false, make(chan struct{})
	l := &membership.Leaver{HostID: "m2", Raft: r, CheckEmpty: func() error { return busy },
		MarkLeft: func() error { marked = true; return nil }, InRaft: func() (bool, error) { return false, nil },
		Goodbye: func() { close(bye) }}
	if err := l.Leave(context.Background()); !errors.Is(err, busy) || marked {
		t.Fatalf("leave with servers = %v (marked %v); want the refusal", err, marked)
	}
	if _, ok := r.State().Member("m2"); !ok {
		t.Fatal("refused leave removed the member")
	}
	l.CheckEmpty = func() error { return nil }
	if err := l.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bye:
	case <-time.After(10 * time.Second):
		t.Fatal("no goodbye after leaving")
	}
	if _, ok := r.State().Member("m2"); ok || !marked || r.transfers.Load() != 1 {
		t.Fatalf("after leave: member still there %v, marked %v, transfers %d", ok, marked, r.transfers.Load())
	}
	// The last host cannot leave.
	l.HostID = "m1"
	if err := l.Leave(context.Background()); err == nil || !strings.Contains(err.Error(), "last host") {
		t.Fatalf("last host leave = %v", err)
	}
}
