package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestWatchdogPeriod(t *testing.T) {
	for _, c := range []struct{ t, limit, want time.Duration }{
		{10 * time.Second, 0, 0},
		{10 * time.Second, 10 * time.Second, 5 * time.Second},
		{10 * time.Second, 3 * time.Second, 3 * time.Second},
		{10 * time.Second, 2500 * time.Millisecond, 2 * time.Second},
		{3 * time.Second, 10 * time.Second, time.Second},
		{2 * time.Second, 10 * time.Second, MinWatchdog},
		{10 * time.Minute, 10 * time.Second, 10 * time.Second},
	} {
		if got := WatchdogPeriod(c.t, c.limit); got != c.want {
			t.Errorf("WatchdogPeriod(%v, %v) = %v; want %v", c.t, c.limit, got, c.want)
		}
	}
}

// With a watchdog the fence counts T_fence minus its timeout, and tells
// the guard which timeout that was: the guard's last pet is then at that
// deadline at the latest, and a guard that dies has the host rebooted by
// T_fence after the renewal.
func TestFenceCountsTheWatchdogPeriod(t *testing.T) {
	clock := &fenceClock{now: time.Hour}
	var deadline, watchdog time.Duration
	up := true
	f := NewFence(FenceConfig{
		Renew: func(context.Context) (uint64, error) {
			if !up {
				return 0, errors.New("cut off")
			}
			return 1, nil
		},
		Applied:  func() uint64 { return 1 },
		Timeout:  func() time.Duration { return 10 * time.Second },
		Watchdog: 4 * time.Second,
		Clock:    clock.Now,
		Heartbeat: func(d, w, _ time.Duration, _ []GuardVM) error {
			deadline, watchdog = d, w
			return nil
		},
	})
	var killed int
	kill := func(context.Context, []GuardVM) { killed++ }
	f.setHA([]GuardVM{{ID: "a", PID: 11}})
	f.Check(context.Background(), kill)
	if deadline != time.Hour+6*time.Second || watchdog != 4*time.Second {
		t.Fatalf("heartbeat deadline %v watchdog %v; want 1h6s and 4s", deadline, watchdog)
	}
	up = false
	clock.Add(6 * time.Second)
	f.Check(context.Background(), kill)
	if killed != 0 {
		t.Fatal("fenced at T_fence − W exactly")
	}
	clock.Add(time.Millisecond)
	f.Check(context.Background(), kill)
	if killed != 1 || !f.Fenced() {
		t.Fatalf("past T_fence − W: killed %d fenced %v; want the VMs killed", killed, f.Fenced())
	}
}

// fakeWatchdog records what the guard did to its device.
type fakeWatchdog struct {
	mu       sync.Mutex
	ops      []string
	pets     int
	timeouts []time.Duration
	take     time.Duration // the timeout the device takes (0: as asked)
	disarmed bool
}

func (w *fakeWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timeouts = append(w.timeouts, d)
	w.ops = append(w.ops, "timeout "+d.String())
	if w.take > 0 {
		return w.take, nil
	}
	return d, nil
}

func (w *fakeWatchdog) Pet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pets++
	if n := len(w.ops); n == 0 || w.ops[n-1] != "pet" {
		w.ops = append(w.ops, "pet")
	}
	return nil
}

func (w *fakeWatchdog) Disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.disarmed = true
	w.ops = append(w.ops, "disarm")
	return nil
}

// guardRig drives the guard's checks by hand: a heartbeat file, a clock,
// VMs that die when killed (or not, when stuck).
type guardRig struct {
	t      *testing.T
	clock  *fenceClock
	file   string
	alive  map[int]bool
	stuck  map[int]bool
	cfg    GuardConfig
	killed map[int]bool
	dying  []int // killed, gone at the next check
	tender *watchdogTender
}

func newGuardRig(t *testing.T, wd Watchdog) *guardRig {
	r := &guardRig{t: t, clock: &fenceClock{now: time.Hour}, file: filepath.Join(t.TempDir(), "hb.json"),
		alive: map[int]bool{11: true, 12: true}, stuck: map[int]bool{}, killed: map[int]bool{}}
	r.cfg = GuardConfig{File: r.file, Clock: r.clock.Now, Logger: slog.New(slog.DiscardHandler),
		Owns: func(pid int, _ string) bool { return r.alive[pid] },
		Kill: func(pid int) error {
			if r.stuck[pid] {
				return nil // a QEMU stuck in the kernel: SIGKILL is pending, it does not exit
			}
			// The process exits a moment later: gone at the next check.
			r.dying = append(r.dying, pid)
			return nil
		}}
	r.tender = &watchdogTender{dev: wd, log: r.cfg.Logger, pet: true}
	return r
}

// check is one tick of the guard.
func (r *guardRig) check() {
	for _, pid := range r.dying {
		delete(r.alive, pid)
	}
	r.dying = nil
	r.tender.tend(guardOnce(r.cfg, r.killed))
}

func (r *guardRig) beat(deadline, watchdog time.Duration) {
	r.t.Helper()
	if err := WriteHeartbeat(r.file, deadline, watchdog, []GuardVM{{ID: "a", PID: 11}, {ID: "b", PID: 12}}); err != nil {
		r.t.Fatal(err)
	}
}

// The guard pets while the lease is valid, setting first the timeout the
// heartbeat names; past the deadline it stops until the VMs it killed are
// gone (a cut-off host loses its HA VMs but does not reboot); a VM that
// does not die keeps it from petting, so the host reboots.
func TestGuardPetsWhileLeaseValidAndVMsAlive(t *testing.T) {
	wd := &fakeWatchdog{}
	r := newGuardRig(t, wd)
	r.check() // no heartbeat yet: nothing to guard
	if wd.pets != 1 || len(wd.timeouts) != 0 {
		t.Fatalf("no heartbeat: pets %d timeouts %v; want a pet and the device's own timeout", wd.pets, wd.timeouts)
	}
	r.beat(time.Hour+6*time.Second, 4*time.Second)
	r.check()
	r.clock.Add(6 * time.Second)
	r.check()
	if got := strings.Join(wd.ops, ", "); got != "pet, timeout 4s, pet" {
		t.Fatalf("ops = %s; want the timeout set before the first pet against its deadline", got)
	}
	pets := wd.pets
	r.clock.Add(time.Millisecond)
	r.check() // past the deadline: both killed, not gone yet
	if wd.pets != pets {
		t.Fatal("petted past the deadline with the VMs alive")
	}
	r.check() // gone: nothing left to fence, petting again
	if wd.pets != pets+1 {
		t.Fatalf("pets %d after the VMs died; want petting again", wd.pets-pets)
	}

	// A fresh renewal, then a lapse with a VM that does not die.
	r.alive = map[int]bool{11: true, 12: true}
	r.stuck[12] = true
	r.beat(r.clock.Now()+6*time.Second, 4*time.Second)
	r.check()
	r.clock.Add(7 * time.Second)
	pets = wd.pets
	for range 5 {
		r.check()
	}
	if wd.pets != pets || r.alive[11] || !r.alive[12] {
		t.Fatalf("stuck VM: %d pets, alive %v; want no pet (the host reboots)", wd.pets-pets, r.alive)
	}
	// An unreadable heartbeat keeps the verdict.
	if err := os.WriteFile(r.file, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.check()
	if wd.pets != pets {
		t.Fatal("an unreadable heartbeat let the guard pet")
	}
	if len(wd.timeouts) != 1 {
		t.Fatalf("timeouts set %v; want it set once, for the first heartbeat naming it", wd.timeouts)
	}
}

// A clean end of the guard disarms the device; the guard loop pets it
// while it runs.
func TestGuardDisarmsOnCleanExit(t *testing.T) {
	wd := &fakeWatchdog{}
	file := filepath.Join(t.TempDir(), "hb.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Guard(ctx, GuardConfig{File: file, Watchdog: wd, Interval: time.Millisecond})
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		wd.mu.Lock()
		n := wd.pets
		wd.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guard did not pet its watchdog within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if !wd.disarmed || wd.ops[len(wd.ops)-1] != "disarm" {
		t.Fatalf("ops %v; want the watchdog disarmed last", wd.ops)
	}
}

// The device driver over a regular file: what it writes. A pet is one
// byte that is not 'V'; the clean close writes 'V' (the magic close) and
// closes. A regular file refuses the watchdog ioctls (ENOTTY): this
// machine has no watchdog device and cannot load softdog, so the ioctls
// are not exercised against a real device here.
func TestDeviceWatchdogWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wd, err := OpenWatchdog(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wd.SetTimeout(4 * time.Second); !errors.Is(err, syscall.ENOTTY) {
		t.Fatalf("SetTimeout on a regular file = %v; want ENOTTY", err)
	}
	// The guard's checks against this "device": pets while valid, none
	// after the lapse while a VM lives, 'V' at the end.
	r := newGuardRig(t, wd)
	r.stuck[11], r.stuck[12] = true, true
	r.beat(time.Hour+6*time.Second, 4*time.Second)
	r.check()
	r.clock.Add(3 * time.Second)
	r.check()
	r.clock.Add(4 * time.Second)
	for range 3 {
		r.check()
	}
	r.tender.disarm()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "..V" {
		t.Fatalf("device got %q; want two pets, none past the deadline, then the magic 'V'", b)
	}
	if err := wd.Pet(); err == nil {
		t.Fatal("pet after the close succeeded")
	}
	if _, err := OpenWatchdog(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("opened a missing device")
	}
}

// A device that takes a longer timeout than asked: the guard publishes
// the one it took, and the fence counts T_fence minus that one from its
// next renewal, naming it in the heartbeat (so a guard that dies still
// has the host rebooted by T_fence after the renewal).
func TestFenceCountsTheWatchdogTimeoutTaken(t *testing.T) {
	dev := &fakeWatchdog{take: 5 * time.Second}
	var published time.Duration
	tender := &watchdogTender{dev: dev, log: slog.New(slog.DiscardHandler), pet: true,
		inEffect: func(d time.Duration) { published = d }}
	tender.tend(guardVerdict{read: true, safe: true, watchdog: 2 * time.Second})
	if published != 5*time.Second {
		t.Fatalf("published %v; want the 5s the device took", published)
	}

	clock := &fenceClock{now: time.Hour}
	var deadline, watchdog time.Duration
	f := NewFence(FenceConfig{
		Renew:            func(context.Context) (uint64, error) { return 1, nil },
		Applied:          func() uint64 { return 1 },
		Timeout:          func() time.Duration { return 10 * time.Second },
		Watchdog:         2 * time.Second,
		WatchdogInEffect: func() time.Duration { return published },
		Clock:            clock.Now,
		Heartbeat: func(d, w, _ time.Duration, _ []GuardVM) error {
			deadline, watchdog = d, w
			return nil
		},
	})
	f.Check(context.Background(), func(context.Context, []GuardVM) {})
	if deadline != time.Hour+5*time.Second || watchdog != 5*time.Second {
		t.Fatalf("heartbeat deadline %v watchdog %v; want 1h5s and 5s", deadline, watchdog)
	}
	// A shorter one than the fence's own changes nothing.
	published = time.Second
	f.Check(context.Background(), func(context.Context, []GuardVM) {})
	if deadline != time.Hour+8*time.Second || watchdog != 2*time.Second {
		t.Fatalf("heartbeat deadline %v watchdog %v; want 1h8s and 2s", deadline, watchdog)
	}
}

// Asked to stop (SIGTERM at shutdown), the guard goes on guarding while
// a VM it lists is alive, then disarms its watchdog and ends: SIGKILLed
// while armed, it would have the host reset during a slow shutdown.
func TestGuardStopsDisarmedOnceItsVMsAreGone(t *testing.T) {
	wd := &fakeWatchdog{}
	file := filepath.Join(t.TempDir(), "hb.json")
	if err := WriteHeartbeat(file, BootNow()+time.Hour, 0, []GuardVM{{ID: "a", PID: 11}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	alive := true
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		Guard(context.Background(), GuardConfig{File: file, Watchdog: wd, Interval: time.Millisecond, Stop: stop,
			Owns: func(int, string) bool { mu.Lock(); defer mu.Unlock(); return alive }})
		close(done)
	}()
	close(stop)
	pets := func() int { wd.mu.Lock(); defer wd.mu.Unlock(); return wd.pets }
	deadline := time.Now().Add(10 * time.Second)
	for p := pets(); pets() < p+20; {
		if time.Now().After(deadline) {
			t.Fatal("the guard stopped petting within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("the guard ended while a VM it lists is alive")
	default:
	}
	mu.Lock()
	alive = false
	mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the guard did not end within 10 s once its VMs were gone")
	}
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if !wd.disarmed || wd.ops[len(wd.ops)-1] != "disarm" {
		t.Fatalf("ops %v; want the watchdog disarmed last", wd.ops)
	}
}
