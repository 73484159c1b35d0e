package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fenceClock is a hand-driven monotonic clock.
type fenceClock struct {
	mu  sync.Mutex
	now time.Duration
}

func (c *fenceClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fenceClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now += d
	c.mu.Unlock()
}

// fenceRig is a Fence over a fake leader link.
type fenceRig struct {
	clock   *fenceClock
	up      bool
	commit  uint64
	applied uint64
	killed  []GuardVM
	beats   []time.Duration
	f       *Fence
}

func newFenceRig() *fenceRig {
	r := &fenceRig{clock: &fenceClock{now: time.Hour}, up: true, commit: 10, applied: 10}
	r.f = NewFence(FenceConfig{
		Renew: func(context.Context) (uint64, error) {
			if !r.up {
				return 0, errors.New("no leader")
			}
			return r.commit, nil
		},
		Applied: func() uint64 { return r.applied },
		Timeout: func() time.Duration { return 10 * time.Second },
		Clock:   r.clock.Now,
		Heartbeat: func(deadline, _ time.Duration, _ []GuardVM) error {
			r.beats = append(r.beats, deadline)
			return nil
		},
	})
	return r
}

func (r *fenceRig) check() {
	r.f.Check(context.Background(), func(_ context.Context, vms []GuardVM) { r.killed = append(r.killed, vms...) })
}

func TestFenceKillsHAVMsAfterTFence(t *testing.T) {
	r := newFenceRig()
	r.check()
	if !r.f.CaughtUp() {
		t.Fatal("in contact and applied up to the leader's commit: not caught up")
	}
	r.f.setHA([]GuardVM{{ID: "a", PID: 0}})
	r.up = false
	r.clock.Add(9 * time.Second)
	r.check()
	if len(r.killed) != 0 {
		t.Fatalf("killed %v after 9 s of silence with T_fence 10 s", r.killed)
	}
	if len(r.beats) != 1 || r.beats[0] != time.Hour+10*time.Second {
		t.Fatalf("heartbeats = %v; want one, with the deadline of the first contact", r.beats)
	}
	r.clock.Add(2 * time.Second)
	r.check()
	if len(r.killed) != 1 || r.killed[0].ID != "a" || !r.f.Fenced() || r.f.CaughtUp() {
		t.Fatalf("after 11 s: killed %v fenced %v caught up %v; want a killed and fenced", r.killed, r.f.Fenced(), r.f.CaughtUp())
	}
	// Contact is back, but the state lags the leader: still held back.
	r.up, r.commit, r.applied = true, 20, 15
	r.clock.Add(time.Second)
	r.check()
	if r.f.CaughtUp() || !r.f.Fenced() {
		t.Fatal("caught up before applying the leader's commit index")
	}
	r.applied = 20
	r.check()
	if !r.f.CaughtUp() || r.f.Fenced() {
		t.Fatal("not caught up after contact and applying the leader's commit")
	}
	if !r.f.wasKilled("a", false) {
		t.Fatal("the fence forgot it killed a")
	}
}

func TestFenceRestartKeepsVMsWithinTFence(t *testing.T) {
	r := newFenceRig()
	r.up = false
	r.f.setHA([]GuardVM{{ID: "a"}})
	r.clock.Add(5 * time.Second)
	r.check()
	if len(r.killed) != 0 || r.f.CaughtUp() {
		t.Fatalf("a fresh daemon without contact for 5 s: killed %v caught up %v; want nothing killed, not caught up",
			r.killed, r.f.CaughtUp())
	}
	r.up = true
	r.check()
	if !r.f.CaughtUp() || len(r.killed) != 0 {
		t.Fatal("contact within T_fence of the start: want caught up with the VMs kept")
	}
}

func TestFenceStoppedDaemonFencesOnResume(t *testing.T) {
	r := newFenceRig()
	r.check()
	r.f.setHA([]GuardVM{{ID: "a", PID: 0}})
	// SIGSTOP for 30 s: the monotonic clock runs on; the first check after
	// SIGCONT sees the deadline passed even though the leader answers.
	r.clock.Add(30 * time.Second)
	r.commit, r.applied = 50, 40
	r.check()
	if len(r.killed) != 1 || !r.f.Fenced() {
		t.Fatalf("first check after a 30 s stop: killed %v fenced %v; want a killed even though the leader answers", r.killed, r.f.Fenced())
	}
	if r.f.CaughtUp() {
		t.Fatal("caught up without applying what the leader committed during the stop")
	}
	r.applied = 50
	r.check()
	if !r.f.CaughtUp() {
		t.Fatal("not caught up after applying the leader's commit")
	}
}

func TestGuardKillsOnlyPastDeadlineAndOwnedPids(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hb.json")
	clock := &fenceClock{now: time.Hour}
	var killed []int
	cfg := GuardConfig{File: file, Clock: clock.Now, Kill: func(pid int) error { killed = append(killed, pid); return nil },
		Owns: func(pid int, id string) bool { return pid != 13 }, Logger: slog.New(slog.DiscardHandler)}
	marks := map[int]bool{}
	guardOnce(cfg, marks) // no file: nothing
	if err := WriteHeartbeat(file, time.Hour+10*time.Second, 0, []GuardVM{{ID: "a", PID: 11}, {ID: "b", PID: 13}}); err != nil {
		t.Fatal(err)
	}
	clock.Add(9 * time.Second)
	guardOnce(cfg, marks)
	if len(killed) != 0 {
		t.Fatalf("killed %v before the deadline", killed)
	}
	clock.Add(2 * time.Second)
	guardOnce(cfg, marks)
	guardOnce(cfg, marks)
	if len(killed) != 1 || killed[0] != 11 {
		t.Fatalf("killed %v past the deadline; want [11] once (13 is no longer that VM)", killed)
	}
	if err := os.WriteFile(file, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	guardOnce(cfg, marks) // unreadable: no panic, no kill
	if len(killed) != 1 {
		t.Fatalf("killed %v on an unreadable heartbeat", killed)
	}
}

// TestFenceKeepsPreviousVMsUntilFirstSync: a restarted daemon's
// heartbeats list the previous run's HA VMs until the agent's first sync
// (never an empty list the guard would kill nothing from), then the sync's.
func TestFenceKeepsPreviousVMsUntilFirstSync(t *testing.T) {
	clock := &fenceClock{now: time.Hour}
	prev := []GuardVM{{ID: "a", PID: 11}}
	var beats [][]GuardVM
	f := NewFence(FenceConfig{
		Renew:   func(context.Context) (uint64, error) { return 1, nil },
		Applied: func() uint64 { return 1 },
		Timeout: func() time.Duration { return 10 * time.Second },
		Clock:   clock.Now,
		Heartbeat: func(_, _ time.Duration, vms []GuardVM) error {
			beats = append(beats, vms)
			return nil
		},
		Initial: prev,
	})
	f.Check(context.Background(), func(context.Context, []GuardVM) {})
	if len(beats) != 1 || len(beats[0]) != 1 || beats[0][0] != prev[0] {
		t.Fatalf("heartbeat before the first sync = %v; want the previous run's %v", beats, prev)
	}
	f.setHA(nil) // the first sync: no HA VM runs here any more
	f.Check(context.Background(), func(context.Context, []GuardVM) {})
	if len(beats) != 2 || len(beats[1]) != 0 {
		t.Fatalf("heartbeat after the first sync = %v; want the sync's (none)", beats)
	}
}

// TestFenceCatchesUpWhileEveryRenewalCommitsABarrier: each renewal's
// answer names a commit index this host learns of a moment later (the
// leader's confirmation barrier), so the target moves on with every
// renewal; the fence must still read as caught up on a quiet cluster.
func TestFenceCatchesUpWhileEveryRenewalCommitsABarrier(t *testing.T) {
	clock := &fenceClock{now: time.Hour}
	var mu sync.Mutex
	commit, applied := uint64(10), uint64(10)
	f := NewFence(FenceConfig{
		Renew: func(context.Context) (uint64, error) {
			mu.Lock()
			commit++
			c := commit
			mu.Unlock()
			go func() { // the leader's next message, a moment later
				time.Sleep(3 * time.Millisecond)
				mu.Lock()
				applied = max(applied, c)
				mu.Unlock()
			}()
			return c, nil
		},
		Applied:  func() uint64 { mu.Lock(); defer mu.Unlock(); return applied },
		Timeout:  func() time.Duration { return 10 * time.Second },
		Interval: 200 * time.Millisecond,
		Clock:    clock.Now,
	})
	for range 5 {
		f.Check(context.Background(), func(context.Context, []GuardVM) {})
		clock.now += 200 * time.Millisecond
		if f.CaughtUp() {
			return
		}
	}
	t.Fatal("the fence never read as caught up: it chased a commit index every renewal moved on")
}

// The host suspended between the deadline check and the renewal's send
// (the check read the clock, the send time is read after the resume): the
// renewal, answered at once, must not stretch the lease that lapsed while
// the host slept. The fence kills first and catches up, as after a check
// that saw the deadline passed.
func TestFenceSuspendBetweenCheckAndSendFences(t *testing.T) {
	r := newFenceRig()
	r.check()
	r.f.setHA([]GuardVM{{ID: "a", PID: 0}})
	calls, jumpAt := 0, 0
	r.f.cfg.Clock = func() time.Duration {
		calls++
		if calls == jumpAt {
			r.clock.Add(30 * time.Second)
		}
		return r.clock.Now()
	}
	r.clock.Add(time.Second)
	calls, jumpAt = 0, 2 // the check's read, then the send's
	r.commit, r.applied = 50, 40
	r.check()
	if calls < 2 || len(r.killed) != 1 || r.killed[0].ID != "a" || !r.f.Fenced() || r.f.CaughtUp() {
		t.Fatalf("renewal sent 30 s after the check: clock read %d times, killed %v fenced %v caught up %v; want a killed, fenced, not caught up",
			calls, r.killed, r.f.Fenced(), r.f.CaughtUp())
	}
	if last := r.beats[len(r.beats)-1]; last != r.clock.Now()+10*time.Second {
		t.Fatalf("heartbeat deadline %v; want the new renewal's send time plus T_fence (%v)", last, r.clock.Now()+10*time.Second)
	}
	r.applied = 50
	jumpAt = 0
	r.check()
	if !r.f.CaughtUp() || len(r.killed) != 1 {
		t.Fatalf("after catching up: caught up %v, killed %v; want caught up, a killed once", r.f.CaughtUp(), r.killed)
	}
}
