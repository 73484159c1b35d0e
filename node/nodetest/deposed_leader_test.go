package nodetest

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestDeposedLeaderRenewsNoLease: the leader (host0) runs an HA server
// and is cut off from the other voters, which elect a new leader; host0's
// Raft lease is long (8 s, against the others' 2 s heartbeat timeout), so
// for seconds it still reads itself as leader, as a stalled leader would.
// Its own lease renewals must not count as quorum contact then: the new
// leader counts host0's silence from its own election and restarts the
// server elsewhere after T_fence plus the margin. Acknowledged by Raft
// state alone, host0 kept its VM running past that. At no moment may two
// hosts run the server.
func TestDeposedLeaderRenewsNoLease(t *testing.T) {
	deposedLeaderScenario(t, 3, 0, [][]int{{0}, {1, 2}})
}

// TestDeposedLeaderRenewsNoLeaseOfANonVoter: as above with a fourth
// host, a non-voter (beyond --voters 3), that runs the HA server and
// still reaches the deposed leader host0 only. Its renewals must not be
// acknowledged either: Raft's VerifyLeader counted the non-voter's
// heartbeat answers toward the voters' quorum and confirmed host0. (Here
// host0's membership routine soon tries to promote the reachable
// non-voter, which makes it a voter of the uncommitted configuration and
// raises the quorum, so VerifyLeader fails too after a moment; the
// consensus test TestConfirmLeaderNotByNonVoters isolates Raft's rule.)
func TestDeposedLeaderRenewsNoLeaseOfANonVoter(t *testing.T) {
	deposedLeaderScenario(t, 4, 3, [][]int{{0, 3}, {1, 2}})
}

// deposedLeaderScenario runs hosts hosts, the HA server on host haHost,
// host0 the leader with a long Raft lease, then cuts them into groups
// (host0 away from the other voters).
func deposedLeaderScenario(t *testing.T, hosts, haHost int, groups [][]int) {
	e, fa := newPidlessEnv(t, hosts, func(i int) consensus.Timers {
		if i == 0 {
			return consensus.Timers{Heartbeat: 8 * time.Second, Election: 8 * time.Second,
				LeaderLease: 8 * time.Second, Commit: consensus.DefaultTimers().Commit}
		}
		return consensus.Timers{Heartbeat: 2 * time.Second, Election: 2 * time.Second,
			LeaderLease: time.Second, Commit: consensus.DefaultTimers().Commit}
	})
	if st, body := e.patchSettings(0, fmt.Sprintf(`{"fence_timeout":%g}`, hfTFence.Seconds())); st != http.StatusOK {
		t.Fatalf("set fence_timeout: %d %s", st, body)
	}
	// Every host fences on T_fence, and the state's wait for a silent host
	// is settled down to it: a new leader waits just T_fence plus the
	// margin from its election.
	e.c.Eventually(30*time.Second, "every host fencing on T_fence, the wait settled", func() bool {
		for _, n := range e.c.Running() {
			cfg, ok := n.State().Cluster()
			if n.FenceTimeout() != hfTFence || !ok || cfg.Settings.FenceWait() != hfTFence {
				return false
			}
		}
		return true
	})
	if l := e.c.Leader(10 * time.Second); l != 0 {
		t.Fatalf("leader is host%d; the scenario needs host0, which bootstrapped", l)
	}
	if hosts > 3 {
		servers, err := e.c.Node(0).Consensus().Configuration()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range servers {
			if s.ID == e.c.Node(haHost).ID() && s.Voter {
				t.Fatalf("host%d is a voter; the scenario needs a non-voter (%+v)", haHost, servers)
			}
		}
	}
	var ha string
	for k := 0; ha == ""; k++ {
		if k > 30 {
			t.Fatalf("could not place an HA server on host%d", haHost)
		}
		id := e.bfv(k%hosts, fmt.Sprintf("ha-%d", k), false)
		e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
		if e.hostOf(id) == haHost {
			ha = id
		}
	}

	e.c.Partition(groups...)
	t.Cleanup(e.c.Heal)
	cutAt := time.Now()
	var stoppedAt, twoLeadersAt time.Duration
	e.c.Eventually(90*time.Second, "HA server running on another host", func() bool {
		onOld := slices.Contains(fa.Hypervisor(haHost).Running(), ha)
		if !onOld && stoppedAt == 0 {
			stoppedAt = time.Since(cutAt)
		}
		if twoLeadersAt == 0 && e.c.Node(0).Consensus().IsLeader() &&
			(e.c.Node(1).Consensus().IsLeader() || e.c.Node(2).Consensus().IsLeader()) {
			twoLeadersAt = time.Since(cutAt)
		}
		for _, i := range []int{1, 2} {
			if slices.Contains(fa.Hypervisor(i).Running(), ha) {
				if onOld {
					t.Fatalf("%v after the cut the HA server runs on host%d and still on host%d, on the deposed leader's side", time.Since(cutAt), i, haHost)
				}
				t.Logf("host%d stopped the VM %v after the cut; two leaders seen %v after it; the server ran on host%d %v after it",
					haHost, stoppedAt, twoLeadersAt, i, time.Since(cutAt))
				return true
			}
		}
		return false
	})
	// The scenario held: host0 still read itself as leader while another
	// host led, so Raft's state alone would have acknowledged its renewals.
	if twoLeadersAt == 0 {
		t.Fatal("host0 never read itself as leader while another host led: the scenario did not happen")
	}
}
