package nodetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
)

func createProject(ctx context.Context, t *testing.T, n *node.Node, name string) string {
	t.Helper()
	id := strings.ReplaceAll(n.NewID(), "-", "")
	_, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdCreateProject, statedb.Project{ID: id, Name: name, Enabled: true, CreatedAt: n.Now()})
	if err != nil {
		t.Fatalf("create project %s through %s: %v", name, n.Name(), err)
	}
	return id
}

func roles(n *node.Node) map[string]string {
	out := map[string]string{}
	for _, m := range n.Members() {
		out[m.Name] = m.RaftRole
	}
	return out
}

func TestBootstrapAndJoin(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	// Join 4 more: 7 hosts, 3 voters.
	for range 4 {
		c.Join(ctx)
	}
	c.WaitMembers(7, 30*time.Second)
	voters := 0
	for _, r := range roles(c.Node(0)) {
		if r == "leader" || r == "voter" {
			voters++
		}
	}
	if voters != 3 {
		t.Fatalf("voters = %d; want 3 (roles %v)", voters, roles(c.Node(0)))
	}
	// The same data through every host, read-your-writes on the writer.
	for i, n := range c.Running() {
		name := fmt.Sprintf("p-%d", i)
		id := createProject(ctx, t, n, name)
		if p, ok := n.State().Project(id); !ok || p.Name != name {
			t.Fatalf("host %s: project %s not visible right after its own write", n.Name(), name)
		}
	}
	c.Eventually(10*time.Second, "every project on every host", func() bool {
		for _, n := range c.Running() {
			for i := range 7 {
				if _, ok := n.State().ProjectByName(fmt.Sprintf("p-%d", i)); !ok {
					return false
				}
			}
		}
		return true
	})
}

func TestLeaderLossAndRestart(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	l := c.Leader(10 * time.Second)
	oldID := c.Node(l).ID()
	c.Stop(l)
	start := time.Now()
	nl := c.Leader(10 * time.Second)
	if nl == l {
		t.Fatalf("leader did not change")
	}
	createProject(ctx, t, c.Node(c.Follower()), "after-failover")
	t.Logf("leader stopped -> follower write accepted after %v", time.Since(start))

	n := c.Restart(ctx, l)
	if n.ID() != oldID {
		t.Fatalf("restarted host id = %s; want %s", n.ID(), oldID)
	}
	c.WaitMembers(3, 20*time.Second)
	c.Eventually(10*time.Second, "restarted host catches up", func() bool {
		_, ok := n.State().ProjectByName("after-failover")
		return ok
	})
	createProject(ctx, t, n, "from-restarted")
}

func TestVoterReplacement(t *testing.T) {
	c := NewCluster(t, 5)
	count := func(n *node.Node) (v, nv int) {
		for _, r := range roles(n) {
			switch r {
			case "leader", "voter":
				v++
			case "nonvoter":
				nv++
			}
		}
		return
	}
	if v, nv := count(c.Node(0)); v != 3 || nv != 2 {
		t.Fatalf("roles = %v; want 3 voters + 2 nonvoters", roles(c.Node(0)))
	}
	// Kill a voter that is not the leader.
	l := c.Leader(10 * time.Second)
	victim := -1
	for i, n := range c.Running() {
		r := roles(c.Node(l))[n.Name()]
		if i != l && r == "voter" {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatalf("no follower voter in %v", roles(c.Node(l)))
	}
	victimName := c.Node(victim).Name()
	c.Stop(victim)
	lastRoles := ""
	defer func() {
		if t.Failed() {
			t.Logf("last members: %s", lastRoles)
		}
	}()
	c.Eventually(30*time.Second, "a nonvoter promoted", func() bool {
		ln := c.Node(c.Leader(10 * time.Second))
		r := roles(ln)
		healthyVoters := 0
		for _, m := range ln.Members() {
			if (m.RaftRole == "voter" || m.RaftRole == "leader") && m.GossipState == "alive" {
				healthyVoters++
			}
		}
		if healthyVoters == 3 && r[victimName] != "voter" {
			return true
		}
		lastRoles = fmt.Sprintf("%+v", ln.Members())
		return false
	})
}

func TestJoinTokenRules(t *testing.T) {
	c := NewCluster(t, 1, Options{Voters: 3})
	ctx := t.Context()
	tok := c.Token(ctx)
	c.add(ctx, tok)
	c.WaitMembers(2, 20*time.Second)

	try := func(token string) error {
		dir := t.TempDir()
		cfg := c.config(dir, "intruder", token)
		n, err := node.Start(ctx, cfg)
		if err == nil {
			n.Stop()
			return nil
		}
		return err
	}
	// Reused token.
	if err := try(tok); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reused token: err = %v; want 'already used'", err)
	}
	// Malformed token.
	if err := try("PSJ1-garbage"); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed token: err = %v; want 'malformed'", err)
	}
	// Expired token.
	exp, _, err := c.Node(0).CreateJoinToken(adminContext(ctx, t, c.Node(0)), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // let the 1 ms token expire
	if err := try(exp); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: err = %v; want 'expired'", err)
	}
	// A token of another cluster: the CA fingerprint does not match.
	other := NewCluster(t, 1)
	foreign := other.Token(ctx)
	// Point the foreign token at our cluster's address: the pin must fail.
	if err := try(retarget(t, foreign, c.Node(0).APIAddr())); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("foreign token: err = %v; want a fingerprint mismatch", err)
	}
	// Unreachable seed: every address in the token is closed.
	if err := try(retarget(t, c.Token(ctx), "127.0.0.1:1")); err == nil || !strings.Contains(err.Error(), "no member in the token is reachable") {
		t.Fatalf("unreachable seed: err = %v", err)
	}
	// Nothing half-joined: still 2 members.
	if got := len(c.Node(0).Members()); got != 2 {
		t.Fatalf("members = %d after refused joins; want 2", got)
	}
	// A data dir that already belongs to a cluster refuses a join.
	if _, err := node.Start(ctx, c.config(c.Dir(1), "host1", c.Token(ctx))); err == nil || !strings.Contains(err.Error(), "already belongs") {
		t.Fatalf("join into a used data dir: err = %v", err)
	}
}

func TestForwardedWriteErrors(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	f := c.Node(c.Follower())
	createProject(ctx, t, f, "dup")
	_, err := rest.Propose(adminContext(ctx, t, f), f, statedb.CmdCreateProject, statedb.Project{ID: "x1", Name: "dup", Enabled: true})
	if !errors.Is(err, statedb.ErrConflict) {
		t.Fatalf("duplicate through a follower: err = %v; want a conflict", err)
	}
}

func TestExactlyOnceRetry(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	f := c.Node(c.Follower())
	cmd, err := statedb.NewCommand(statedb.CmdCreateProject, "fixed-request-id", f.Now(),
		statedb.Project{ID: "once", Name: "once", Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	i1, err := f.Apply(adminContext(ctx, t, f), cmd)
	if err != nil {
		t.Fatal(err)
	}
	// The same request again (as after a leader change) is not applied
	// twice. With the caller's token: under load the host asked may have
	// lost the leadership meanwhile and forward it.
	l := c.Node(c.Leader(time.Second))
	i2, err := l.Apply(adminContext(ctx, t, l), cmd)
	if err != nil || i2 != i1 {
		t.Fatalf("retry: index %d err %v; want index %d and no error", i2, err, i1)
	}
}
