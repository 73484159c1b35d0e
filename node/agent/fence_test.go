package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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

// newFenceRig builds the rig; opts change its config before the fence
// is made (a test that records the heartbeats its own way sets Heartbeat).
func newFenceRig(opts ...func(*FenceConfig)) *fenceRig {
	r := &fenceRig{clock: &fenceClock{now: time.Hour}, up: true, commit: 10, applied: 10}
	cfg := FenceConfig{
		Renew: func(context.Context) (uint64, error) {
			if !r.up {
				return 0, errors.New("no leader")
			}
			return r.commit, nil
		},
		Applied: func() uint64 { return r.applied },
		Timeout: func() time.Duration { return 10 * time.Second },
		Clock:   r.clock.Now,
		Heartbeat: func(deadline, _, _ time.Duration, _ []GuardVM) error {
			r.beats = append(r.beats, deadline)
			return nil
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	r.f = NewFence(cfg)
	return r
}

// withHeartbeat has the rig's fence write its heartbeats to hb.
func withHeartbeat(hb func(deadline, watchdog, since time.Duration, vms []GuardVM) error) func(*FenceConfig) {
	return func(c *FenceConfig) { c.Heartbeat = hb }
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
	// The first contact's, and its rewrite when a's VM appeared.
	if len(r.beats) != 2 || r.beats[0] != time.Hour+10*time.Second || r.beats[1] != r.beats[0] {
		t.Fatalf("heartbeats = %v; want two, with the deadline of the first contact", r.beats)
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
// (never an empty list the guard would kill nothing from), then, from the
// next renewal, the sync's (a rewrite between renewals only adds VMs).
func TestFenceKeepsPreviousVMsUntilFirstSync(t *testing.T) {
	clock := &fenceClock{now: time.Hour}
	prev := []GuardVM{{ID: "a", PID: 11}}
	var beats [][]GuardVM
	f := NewFence(FenceConfig{
		Renew:   func(context.Context) (uint64, error) { return 1, nil },
		Applied: func() uint64 { return 1 },
		Timeout: func() time.Duration { return 10 * time.Second },
		Clock:   clock.Now,
		Heartbeat: func(_, _, _ time.Duration, vms []GuardVM) error {
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
	if len(beats) != 2 || len(beats[1]) != 1 {
		t.Fatalf("heartbeat after the first sync = %v; want the previous run's VM kept until the next renewal", beats)
	}
	f.Check(context.Background(), func(context.Context, []GuardVM) {})
	if len(beats) != 3 || len(beats[2]) != 0 {
		t.Fatalf("heartbeat after the next renewal = %v; want the sync's (none)", beats)
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

// A renewal held up by a suspend (the host slept after the check, before
// the leader's answer came in) must not stretch the lease that lapsed
// while the host slept. The fence kills first and catches up, as after a
// check that saw the deadline passed.
func TestFenceSuspendDuringRenewalFences(t *testing.T) {
	r := newFenceRig()
	r.check()
	r.f.setHA([]GuardVM{{ID: "a", PID: 0}})
	renew := r.f.cfg.Renew
	sleep := 30 * time.Second
	r.f.cfg.Renew = func(ctx context.Context) (uint64, error) {
		r.clock.Add(sleep) // the host sleeps while the renewal is out
		sleep = 0
		return renew(ctx)
	}
	r.clock.Add(time.Second)
	r.commit, r.applied = 50, 40
	beats := len(r.beats)
	r.check()
	if len(r.killed) != 1 || r.killed[0].ID != "a" || !r.f.Fenced() || r.f.CaughtUp() {
		t.Fatalf("renewal answered 30 s after the check: killed %v fenced %v caught up %v; want a killed, fenced, not caught up",
			r.killed, r.f.Fenced(), r.f.CaughtUp())
	}
	if len(r.beats) != beats {
		t.Fatalf("heartbeats %v after the lapse; want none new (the renewal's send time is unknown)", r.beats[beats:])
	}
	r.applied = 50
	r.clock.Add(time.Second)
	r.check()
	if !r.f.CaughtUp() || len(r.killed) != 1 {
		t.Fatalf("after catching up: caught up %v, killed %v; want caught up, a killed once", r.f.CaughtUp(), r.killed)
	}
	if last := r.beats[len(r.beats)-1]; last != r.clock.Now()+10*time.Second {
		t.Fatalf("heartbeat deadline %v; want the new renewal's send time plus T_fence (%v)", last, r.clock.Now()+10*time.Second)
	}
}

// A renewal adopts a changed T_fence (hostfail.FenceTimeouts) only for
// the leases after it: whether the lease lapsed before its answer is
// counted with the timeout before it. A raised setting must not hide a
// lapse; a lowered one must not fence a host that never lapsed.
func TestFenceLapseCountsTheTimeoutBeforeTheRenewal(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after time.Duration
		wait, held    time.Duration // before the check; the renewal out
		kill          bool
	}{
		{"raised, lapsed during the renewal", 10 * time.Second, 60 * time.Second, time.Second, 29 * time.Second, true},
		{"lowered, no lapse", 60 * time.Second, 10 * time.Second, 15 * time.Second, 0, false},
		{"unchanged, lapsed during the renewal", 10 * time.Second, 10 * time.Second, time.Second, 29 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newFenceRig()
			cur := tc.before
			r.f.cfg.Timeout = func() time.Duration { return cur }
			r.check()
			r.f.setHA([]GuardVM{{ID: "a"}})
			renew := r.f.cfg.Renew
			r.f.cfg.Renew = func(ctx context.Context) (uint64, error) {
				r.clock.Add(tc.held)
				c, err := renew(ctx)
				if err == nil {
					cur = tc.after // adopted once acknowledged
				}
				return c, err
			}
			r.clock.Add(tc.wait)
			r.check()
			if killed := len(r.killed) > 0; killed != tc.kill {
				t.Fatalf("T_fence %v -> %v, %v since the last renewal, renewal out %v: killed %v; want killed %v",
					tc.before, tc.after, tc.wait, tc.held, r.killed, tc.kill)
			}
			if !tc.kill && (!r.f.CaughtUp() || r.f.Fenced()) {
				t.Fatalf("no lapse: caught up %v fenced %v; want caught up", r.f.CaughtUp(), r.f.Fenced())
			}
		})
	}
}

// The heartbeat follows the fence's HA VMs at once, with the deadline it
// holds (an HA VM started since the last renewal is in it before the
// next one: the sleep hook and the guard read it), and says when the
// lease began: at the first renewal after the start or after a lapse.
func TestFenceHeartbeatFollowsHAVMsAndLeaseStart(t *testing.T) {
	type beat struct {
		deadline, since time.Duration
		vms             []GuardVM
	}
	var beats []beat
	r := newFenceRig(withHeartbeat(func(d, _, since time.Duration, vms []GuardVM) error {
		beats = append(beats, beat{d, since, vms})
		return nil
	}))
	r.f.setHA(nil)
	if len(beats) != 0 {
		t.Fatalf("heartbeat %+v before any renewal; want none", beats)
	}
	r.check()
	r.clock.Add(2 * time.Second)
	r.check()
	r.clock.Add(time.Second)
	a := []GuardVM{{ID: "a", PID: 11}}
	r.f.setHA(a)
	last := beats[len(beats)-1]
	if len(beats) != 3 || !slices.Equal(last.vms, a) || last.deadline != time.Hour+12*time.Second || last.since != time.Hour {
		t.Fatalf("heartbeats %+v; want the third one listing a with the last renewal's deadline (1h0m12s) and the lease since 1h", beats)
	}
	r.f.setHA(slices.Clone(a))
	if len(beats) != 3 {
		t.Fatalf("heartbeats %+v; want no rewrite for the same VMs", beats)
	}
	// A lapse: the next lease begins at its first renewal.
	r.up = false
	r.clock.Add(20 * time.Second)
	r.check()
	r.up = true
	r.clock.Add(time.Second)
	r.check()
	if last := beats[len(beats)-1]; last.since != r.clock.Now() || last.deadline != r.clock.Now()+10*time.Second {
		t.Fatalf("heartbeat after the lapse %+v; want the lease since %v", last, r.clock.Now())
	}
}

// TestFenceRewriteNeverDropsAVMFromTheGuard: between renewals a changed
// VM list only adds to what the guard's file lists, so a VM whose server
// moved while this host was cut off stays on the list the guard kills by,
// and the daemon's own lapse kills it too.
func TestFenceRewriteNeverDropsAVMFromTheGuard(t *testing.T) {
	var last []GuardVM
	r := newFenceRig(withHeartbeat(func(_, _, _ time.Duration, vms []GuardVM) error {
		last = slices.Clone(vms)
		return nil
	}))
	a, b := GuardVM{ID: "a", PID: 11}, GuardVM{ID: "b", PID: 12}
	r.check()
	r.f.setHA([]GuardVM{a})
	if !slices.Equal(last, []GuardVM{a}) {
		t.Fatalf("heartbeat lists %v; want [a]", last)
	}
	// Server a moved (its VM still running here): the rewrite keeps it
	// and adds b.
	r.f.setHA([]GuardVM{b})
	if !slices.Equal(last, []GuardVM{a, b}) {
		t.Fatalf("rewrite lists %v; want a kept and b added", last)
	}
	// The next renewal writes the sync's list as it is.
	r.clock.Add(time.Second)
	r.check()
	if !slices.Equal(last, []GuardVM{b}) {
		t.Fatalf("renewal's heartbeat lists %v; want [b]", last)
	}
	// Cut off past the deadline, not yet checked: b's server moved (a
	// sync drops it), but the guard's file keeps it.
	r.up = false
	r.clock.Add(15 * time.Second)
	r.f.setHA(nil)
	if !slices.Equal(last, []GuardVM{b}) {
		t.Fatalf("after the deadline the heartbeat lists %v; want b still listed", last)
	}
	// Contact is back: the check sees the lapse first and kills b too,
	// though the sync no longer lists it.
	r.up = true
	r.check()
	if !slices.Contains(r.killed, b) {
		t.Fatalf("the lapse killed %v; want b, which the guard's file listed", r.killed)
	}
	if r.f.wasKilled(b.ID, false) {
		t.Fatal("b's server (moved away) is marked as killed by this fence, to be restarted here")
	}
}
