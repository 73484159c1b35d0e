package leader

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// mem is a member record joined at second t.
func mem(id string, t int) *statedb.Member {
	return &statedb.Member{ID: id, Name: "name-" + id, RaftAddr: id + ":8471", JoinedAt: time.Unix(int64(t), 0)}
}

func voter(id string) consensus.Server {
	return consensus.Server{ID: id, Address: id + ":8471", Voter: true}
}
func nonvoter(id string) consensus.Server { return consensus.Server{ID: id, Address: id + ":8471"} }

func ids(ss []consensus.Server) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func set(ids ...string) func(string) bool {
	return func(id string) bool { return slices.Contains(ids, id) }
}

func TestPlanMembership(t *testing.T) {
	all := func(string) bool { return true }
	none := func(string) bool { return false }
	for _, tc := range []struct {
		name    string
		members []*statedb.Member
		conf    []consensus.Server
		healthy func(string) bool
		dead    func(string) bool
		voters  int
		// want: ids per operation
		addVoters, addNonvoters, promote, demote, remove []string
	}{
		{
			name:    "new hosts join as voters up to the target, oldest first",
			members: []*statedb.Member{mem("a", 1), mem("d", 4), mem("c", 3), mem("b", 2)},
			conf:    []consensus.Server{voter("a")},
			healthy: all, dead: none, voters: 3,
			addVoters: []string{"b", "c"}, addNonvoters: []string{"d"},
		},
		{
			name:    "voters capped at the target: the rest join as nonvoters",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), mem("c", 3), mem("d", 4), mem("e", 5)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("c")},
			healthy: all, dead: none, voters: 3,
			addNonvoters: []string{"d", "e"},
		},
		{
			name:    "a host not alive in gossip or without a Raft address waits",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), {ID: "c", JoinedAt: time.Unix(3, 0)}},
			conf:    []consensus.Server{voter("a")},
			healthy: set("a", "c"), dead: none, voters: 3,
		},
		{
			name:    "a dead voter is demoted and the oldest healthy nonvoter promoted",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), mem("c", 3), mem("e", 5), mem("d", 4)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("c"), nonvoter("e"), nonvoter("d")},
			healthy: set("a", "c", "d", "e"), dead: set("b"), voters: 3,
			promote: []string{"d"}, demote: []string{"b"},
		},
		{
			name:    "a dead voter stays when no healthy nonvoter can take its vote",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), mem("c", 3), mem("d", 4)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")},
			healthy: set("a", "c"), dead: set("b"), voters: 3,
		},
		{
			name:    "a voter only unhealthy, not yet dead, keeps its vote",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), mem("c", 3), mem("d", 4)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")},
			healthy: set("a", "c", "d"), dead: none, voters: 3,
		},
		{
			name:    "the leader itself is never demoted or removed",
			members: []*statedb.Member{mem("b", 2), mem("c", 3), mem("d", 4)},
			conf:    []consensus.Server{voter("self"), voter("b"), voter("c"), nonvoter("d")},
			healthy: set("b", "c", "d"), dead: set("self"), voters: 3,
			promote: []string{"d"},
		},
		{
			name:    "voters stay capped when a new host takes a dead voter's place",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), mem("c", 3), mem("d", 4), mem("e", 5)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")},
			healthy: set("a", "c", "d", "e"), dead: set("b"), voters: 3,
			addVoters: []string{"e"}, demote: []string{"b"},
		},
		{
			name:    "a server whose member record is gone leaves Raft",
			members: []*statedb.Member{mem("a", 1), mem("b", 2)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("gone"), nonvoter("gone2")},
			healthy: all, dead: none, voters: 3,
			remove: []string{"gone", "gone2"},
		},
		{
			name:    "a raised target promotes healthy nonvoters",
			members: []*statedb.Member{mem("a", 1), mem("b", 2), mem("c", 3), mem("d", 4), mem("e", 5)},
			conf:    []consensus.Server{voter("a"), voter("b"), voter("c"), nonvoter("d"), nonvoter("e")},
			healthy: all, dead: none, voters: 5,
			promote: []string{"d", "e"},
		},
		{
			name:    "a host back on a new address is re-added with its suffrage",
			members: []*statedb.Member{mem("a", 1), {ID: "b", RaftAddr: "b:9999", JoinedAt: time.Unix(2, 0)}, {ID: "c", RaftAddr: "c:9999", JoinedAt: time.Unix(3, 0)}},
			conf:    []consensus.Server{voter("a"), voter("b"), nonvoter("c")},
			healthy: all, dead: none, voters: 2,
			addVoters: []string{"b"}, addNonvoters: []string{"c"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planMembership("self", tc.members, tc.conf, tc.healthy, tc.dead, tc.voters)
			for _, c := range []struct {
				op        string
				got, want []string
			}{
				{"add voters", ids(p.addVoters), tc.addVoters}, {"add nonvoters", ids(p.addNonvoters), tc.addNonvoters},
				{"promote", ids(p.promote), tc.promote}, {"demote", ids(p.demote), tc.demote}, {"remove", ids(p.remove), tc.remove},
			} {
				if c.want == nil {
					c.want = []string{}
				}
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.op, c.got, c.want)
				}
			}
		})
	}
}

func TestPlanMembershipReAddKeepsNewAddress(t *testing.T) {
	p := planMembership("a", []*statedb.Member{mem("a", 1), {ID: "b", RaftAddr: "b:9999", JoinedAt: time.Unix(2, 0)}},
		[]consensus.Server{voter("a"), voter("b")}, func(string) bool { return true }, func(string) bool { return false }, 3)
	if len(p.addVoters) != 1 || p.addVoters[0].Address != "b:9999" || !p.addVoters[0].Voter {
		t.Fatalf("addVoters = %+v, want b at b:9999 as a voter", p.addVoters)
	}
}

// fakeRaftMembers records membership changes.
type fakeRaftMembers struct {
	mu   sync.Mutex
	conf []consensus.Server
	ops  []string
}

func (f *fakeRaftMembers) Configuration() ([]consensus.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.conf), nil
}

func (f *fakeRaftMembers) op(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, s)
	return nil
}
func (f *fakeRaftMembers) AddVoter(id, _ string) error    { return f.op("voter " + id) }
func (f *fakeRaftMembers) AddNonvoter(id, _ string) error { return f.op("nonvoter " + id) }
func (f *fakeRaftMembers) DemoteVoter(id string) error    { return f.op("demote " + id) }
func (f *fakeRaftMembers) RemoveServer(id string) error   { return f.op("remove " + id) }

func (f *fakeRaftMembers) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.ops)
	sort.Strings(out)
	return out
}

type gossipList []gossip.Member

func (g gossipList) Members() []gossip.Member { return g }

// stateOf is a committed state with the given member records.
type stateOf struct{ s *statedb.Store }

func (s stateOf) State() *statedb.Snapshot { return s.s.Snapshot() }

func newState(t *testing.T, members ...*statedb.Member) stateOf {
	t.Helper()
	st := statedb.NewStore()
	for i, m := range members {
		c, err := statedb.NewCommand(statedb.CmdRegisterMember, m.ID, time.Unix(int64(i), 0).UTC(), *m)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := c.Encode()
		if res := st.Apply(uint64(i+1), b); res.Err != nil {
			t.Fatalf("register %s: %v", m.ID, res.Err)
		}
	}
	return stateOf{st}
}

// TestMembershipReconcile: the routine turns gossip health and time into
// the plan and carries it out; a voter gone from gossip loses its vote
// only after the grace period.
func TestMembershipReconcile(t *testing.T) {
	rm := &fakeRaftMembers{conf: []consensus.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")}}
	live := gossipList{{Name: "a", State: gossip.StateAlive}, {Name: "c", State: gossip.StateAlive},
		{Name: "d", State: gossip.StateAlive}, {Name: "e", State: gossip.StateAlive}}
	m := Membership{SelfID: "a", Raft: rm, Gossip: live, Voters: 3, DeadGrace: 50 * time.Millisecond,
		State: newState(t, mem("a", 1), mem("b", 2), mem("c", 3), mem("d", 4), mem("e", 5)), Logger: slog.New(slog.DiscardHandler)}
	deadSince := map[string]time.Time{}
	m.reconcile(context.Background(), deadSince)
	if got, want := rm.Ops(), []string{"nonvoter e"}; !slices.Equal(got, want) {
		t.Fatalf("first pass: ops %v, want %v (b is not dead yet)", got, want)
	}
	if _, ok := deadSince["b"]; !ok {
		t.Fatal("b, gone from gossip, is not being timed")
	}
	deadSince["b"] = time.Now().Add(-time.Second) // gone longer than the grace
	m.reconcile(context.Background(), deadSince)
	// b no longer counts: e takes the free vote and b is demoted; d
	// stays a nonvoter, as three voters are enough.
	if got, want := rm.Ops(), []string{"demote b", "nonvoter e", "voter e"}; !slices.Equal(got, want) {
		t.Fatalf("after the grace: ops %v, want %v", got, want)
	}
}
