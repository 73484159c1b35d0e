package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Self-fencing (docs/ha.md). A host that has had no quorum contact for
// T_fence kills the VMs of its HA servers, so the leader, which waits
// T_fence plus a margin on its own clock before it restarts them elsewhere,
// never has one server running on two hosts. Quorum contact is a lease
// round trip with the leader (FenceConfig.Renew): its send time counts, so
// the leader, which records the renewal when it receives it, has always
// heard from this host at least as late as this host believes.

// FenceConfig configures a Fence.
type FenceConfig struct {
	// Renew makes one lease round trip with the Raft leader, which
	// records that it heard from this host, and returns the leader's
	// commit index at that moment.
	Renew func(ctx context.Context) (commit uint64, err error)
	// Applied is the index the local state has applied.
	Applied func() uint64
	// Timeout is T_fence, read on each check (a cluster setting).
	Timeout func() time.Duration
	// Clock reads the clock the guard process shares: the host's
	// CLOCK_BOOTTIME (default BootNow), which runs on while the host is
	// suspended.
	Clock func() time.Duration
	// Heartbeat, when set, is called after each fresh contact, and when
	// the HA VMs change under a lease, with the fence deadline (on
	// Clock), the watchdog timeout it was counted with, the start of the
	// current lease (Heartbeat.LeaseSince) and the pids of the HA
	// servers' VMs, for the guard that outlives the daemon (Guard) and
	// the sleep hook (SleepPre). Calls never overlap.
	Heartbeat func(deadline, watchdog, leaseSince time.Duration, vms []GuardVM) error
	// Watchdog is the longest timeout the guard's watchdog device may be
	// given (0: the guard has none). With one, the fence counts T_fence
	// minus the watchdog's timeout (WatchdogPeriod), so a guard that dies
	// has the host rebooted by T_fence after the renewal
	// (fence_watchdog.go).
	Watchdog time.Duration
	// WatchdogInEffect, when set, reads the timeout the guard's device
	// actually took (0: unknown). A device may round up or keep a fixed
	// timeout; the fence then counts T_fence minus that longer one, read
	// at each renewal.
	WatchdogInEffect func() time.Duration
	// Initial are the HA VMs the previous run's heartbeat listed
	// (ReadHeartbeat). Until the agent's first sync they are the VMs the
	// fence and the guard kill, so a heartbeat written before that sync
	// never drops them.
	Initial []GuardVM
	// Interval is the period of lease renewals; default 1 s. A renewal
	// waits at most Interval.
	Interval time.Duration
	Logger   *slog.Logger
}

// Fence tracks this host's quorum contact and fences its HA servers when
// it is lost. Its zero value is not usable; see NewFence.
type Fence struct {
	cfg FenceConfig
	log *slog.Logger

	mu       sync.Mutex
	lastAck  time.Duration   // Clock time of the send of the last acknowledged renewal
	haveAck  bool            // an ack arrived since the start or the last fence
	want     uint64          // the leader's commit index at that ack
	caughtUp bool            // contact since start/fence, and the state applied up to want
	fenced   bool            // HA VMs were killed and contact is not back yet
	killed   map[string]bool // HA servers this fence killed, restarted once caught up
	ha       []GuardVM       // HA VMs running here, from the last sync (Initial before it)
	started  time.Duration
	wdTaken  time.Duration // the timeout the guard's device took (WatchdogInEffect)
	// leaseSince is the send time of the first acknowledged renewal since
	// the start or the last lapse: the current lease is unbroken since.
	leaseSince time.Duration
	// hbDeadline and hbWatchdog are what the last heartbeat carried (0:
	// none written under the current lease), for a rewrite when the HA
	// VMs change (setHA).
	hbDeadline, hbWatchdog time.Duration
	// hbVMs is the VM list the last heartbeat write under the current
	// lease carried (or tried to).
	hbVMs []GuardVM

	hbMu sync.Mutex // serializes heartbeat writes: the newest state lands last
}

// GuardVM is a QEMU process the guard kills when the fence deadline
// passes.
type GuardVM struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
}

// NewFence returns a Fence; the agent runs it (Config.Fence).
func NewFence(cfg FenceConfig) *Fence {
	if cfg.Clock == nil {
		cfg.Clock = BootNow
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fence{cfg: cfg, log: cfg.Logger, killed: map[string]bool{}, ha: cfg.Initial}
	// A restarted daemon counts from its start: a restart within T_fence
	// keeps the VMs (the guard holds the deadline of the previous run).
	f.started = cfg.Clock()
	f.lastAck = f.started
	return f
}

// BootNow reads CLOCK_BOOTTIME, the fence's clock: the same clock in the
// daemon and in the guard; it runs on while a process is stopped and
// while the host is suspended (CLOCK_MONOTONIC, Go's own clock, stops
// then, so a host resuming from suspend would believe a lease valid that
// the leader has long given up on). It does not run while a hypervisor
// pauses the whole machine (docs/ha.md).
func BootNow() time.Duration { return clockNow(unix.CLOCK_BOOTTIME) }

// MonoNow reads CLOCK_MONOTONIC: only to read and write the deadline a
// guard of an older release counts on (Heartbeat).
func MonoNow() time.Duration { return clockNow(unix.CLOCK_MONOTONIC) }

func clockNow(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		panic(fmt.Sprintf("agent: clock %d: %v", id, err)) // cannot fail on Linux 2.6.39 or newer
	}
	return time.Duration(ts.Nano())
}

// CaughtUp reports whether this host may start and keep HA servers: it
// had contact with the leader since it started (or since it fenced) and
// its state has applied what the leader had committed then, and that
// contact is not older than T_fence.
func (f *Fence) CaughtUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, _ := f.timeout()
	return f.caughtUp && !f.fenced && f.cfg.Clock()-f.lastAck <= t
}

// timeout is what the fence counts from a renewal: T_fence less the
// watchdog's timeout w (0: none).
func (f *Fence) timeout() (t, w time.Duration) {
	t = f.cfg.Timeout()
	w = WatchdogPeriod(t, f.cfg.Watchdog)
	if w > 0 && f.wdTaken > w {
		w = f.wdTaken
	}
	return max(0, t-w), w
}

// Fenced reports whether the fence has killed the HA VMs and contact is
// not back yet.
func (f *Fence) Fenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fenced
}

// Check runs one renewal and one deadline check; Run calls it every
// Interval. Past the deadline, kill stops the VMs of HA servers as the
// last syncs saw them, on every check until contact is back.
func (f *Fence) Check(ctx context.Context, kill func(ctx context.Context, vms []GuardVM)) {
	// The deadline is checked before the renewal: a daemon that was
	// stopped past it (SIGSTOP, a hang) fences even if the leader answers
	// at once, and then has to catch up.
	var taken time.Duration
	if f.cfg.WatchdogInEffect != nil {
		taken = f.cfg.WatchdogInEffect()
	}
	f.mu.Lock()
	if taken != f.wdTaken && taken > WatchdogPeriod(f.cfg.Timeout(), f.cfg.Watchdog) && f.cfg.Watchdog > 0 {
		f.log.Warn("fence: the watchdog device took a longer timeout than asked; fencing that much before T_fence",
			"watchdog_timeout", taken, "t_fence", f.cfg.Timeout())
	}
	f.wdTaken = taken
	// One clock reading is both this check's time and the renewal's send
	// time: a renewal that the host's suspend (or this process's stop)
	// holds up is counted from before it, never from after.
	now := f.cfg.Clock()
	t, w := f.timeout()
	expired := now-f.lastAck > t
	justFenced := expired && !f.fenced
	var victims []GuardVM
	if expired {
		victims = f.lapseLocked()
	}
	f.mu.Unlock()
	if justFenced {
		f.log.Error("fence: no quorum contact for T_fence; killing the VMs of this host's HA servers",
			"t_fence", t, "vms", len(victims))
	}
	if len(victims) > 0 {
		kill(ctx, victims)
	}

	sent := now
	rctx, cancel := context.WithTimeout(ctx, f.cfg.Interval)
	commit, err := f.cfg.Renew(rctx)
	cancel()
	if err == nil && !expired {
		// The host may have been suspended (or this process stopped)
		// between the check above and the leader's answer: a renewal that
		// may have reached the leader past the deadline must not stretch a
		// lease that had lapsed — the leader may have counted this host
		// out meanwhile. It fences first, as the check would have; the
		// renewal does not count (when it was sent is unknown), the next
		// one starts the new lease. The timeout is the one read above: the
		// renewal may have adopted a new one (hostfail.FenceTimeouts),
		// which governs only the leases after it.
		f.mu.Lock()
		answered := f.cfg.Clock()
		lapsed := answered-f.lastAck > t
		if lapsed {
			victims = f.lapseLocked()
			err = errLapsedInRenewal
		}
		f.mu.Unlock()
		if lapsed {
			f.log.Error("fence: the lease lapsed before the renewal was answered (the host was suspended or the daemon stopped); killing the VMs of this host's HA servers",
				"t_fence", t, "vms", len(victims))
			if len(victims) > 0 {
				kill(ctx, victims)
			}
		}
	}
	if err == nil && !f.CaughtUp() {
		// Every renewal commits a barrier on the leader (its leadership
		// confirmation), so the commit index it answers is always newer
		// than anything this host has heard of: this host learns that the
		// barrier committed with the leader's next message, a few
		// milliseconds later. Checking at once would chase a target that
		// moves with every renewal and never catch up on a quiet cluster.
		waitApplied(ctx, f.cfg.Applied, commit, f.cfg.Interval/2)
	}
	f.mu.Lock()
	if err == nil && sent >= f.lastAck {
		if !f.haveAck {
			f.leaseSince = sent // a new lease
		}
		f.lastAck, f.haveAck = sent, true
		if !f.caughtUp {
			f.want = max(f.want, commit)
		}
	}
	if f.haveAck && !f.caughtUp && f.cfg.Applied() >= f.want {
		f.caughtUp, f.fenced = true, false
		f.log.Info("fence: in contact with the cluster and caught up; HA servers may run here", "applied", f.want)
	}
	write := err == nil && f.haveAck
	if write {
		f.hbDeadline, f.hbWatchdog = f.lastAck+t, w
	}
	f.mu.Unlock()
	if err != nil && err != errLapsedInRenewal && f.Fenced() {
		f.log.Debug("fence: still no quorum contact", "err", err)
	}
	if write {
		f.writeHeartbeat(false)
	}
}

// writeHeartbeat writes the heartbeat of the current lease and HA VMs
// (Config.Heartbeat), unless no lease holds. A renewal's write (rewrite
// false) lists the HA VMs of the last sync. A rewrite between renewals
// (a changed VM list) only adds to the list the last heartbeat carried:
// the guard kills what the file lists once the deadline passes, and a VM
// whose server moved away while this host was cut off (or asleep) must
// stay on that list until it is killed — the state that moved it may
// reach this host before the fence's next check sees the lapse.
func (f *Fence) writeHeartbeat(rewrite bool) {
	if f.cfg.Heartbeat == nil {
		return
	}
	f.hbMu.Lock()
	defer f.hbMu.Unlock()
	f.mu.Lock()
	deadline, w, since, ha, ok := f.hbDeadline, f.hbWatchdog, f.leaseSince, f.ha, f.haveAck && f.hbDeadline != 0
	if ok && rewrite {
		ha = unionVMs(f.hbVMs, ha)
	}
	if ok {
		f.hbVMs = ha
	}
	f.mu.Unlock()
	if !ok {
		return
	}
	if err := f.cfg.Heartbeat(deadline, w, since, ha); err != nil {
		f.log.Warn("fence: write the guard's heartbeat", "err", err)
	}
}

// unionVMs is a followed by the VMs of b that a does not hold (same id
// and pid).
func unionVMs(a, b []GuardVM) []GuardVM {
	out := slices.Clone(a)
	for _, v := range b {
		if !slices.ContainsFunc(a, func(o GuardVM) bool { return o.ID == v.ID && o.PID == v.PID }) {
			out = append(out, v)
		}
	}
	return out
}

// errLapsedInRenewal is a renewal answered past the deadline (Check).
var errLapsedInRenewal = errors.New("fence: the lease lapsed before the renewal was answered")

// lapseLocked marks the lease lapsed (f.mu held): the host must catch
// up again, and the HA VMs of the last sync are returned to be killed.
func (f *Fence) lapseLocked() []GuardVM {
	f.fenced, f.caughtUp, f.haveAck, f.want = true, false, false, 0
	f.leaseSince, f.hbDeadline, f.hbWatchdog = 0, 0, 0
	for _, v := range f.ha {
		f.killed[v.ID] = true
	}
	// The VMs the guard's file lists too: one whose server moved away
	// while this host was cut off has left the sync's list but may still
	// run (killing checks each pid is still that VM's QEMU). Only the
	// sync's are restarted here once caught up (killed).
	victims := unionVMs(f.ha, f.hbVMs)
	f.ha, f.hbVMs = nil, nil
	return victims
}

// runFence renews the lease every Interval until ctx ends, and wakes the
// reconcilers when the host has caught up.
func (a *Agent) runFence(ctx context.Context) {
	a.cfg.Fence.Run(ctx, a.killVMs, a.poke)
}

// Run renews the lease every Interval until ctx ends: kill stops the HA
// VMs past the deadline (nil: SIGKILL their pids) and changed, when set,
// is called when CaughtUp changes. The daemon runs it from the moment
// Raft is up, before its state caught up and before the agent recovered
// its VMs, so a restart renews within T_fence of the previous run's
// last renewal; the agent then runs it for the rest of its life.
func (f *Fence) Run(ctx context.Context, kill func(ctx context.Context, vms []GuardVM), changed func()) {
	if kill == nil {
		kill = func(_ context.Context, vms []GuardVM) { killPIDs(f.log, vms) }
	}
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		before := f.CaughtUp()
		f.Check(ctx, kill)
		if changed != nil && f.CaughtUp() != before {
			changed()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// setHA records the HA VMs running here (each sync). A change is written
// to the heartbeat at once, with the deadline it holds: the guard and the
// sleep hook (SleepPre) must know an HA VM started since the last
// renewal.
func (f *Fence) setHA(vms []GuardVM) {
	f.mu.Lock()
	changed := !slices.Equal(f.ha, vms)
	f.ha = vms
	f.mu.Unlock()
	if changed {
		f.writeHeartbeat(true)
	}
}

// wasKilled tells whether the fence killed server id; running again
// forgets it.
func (f *Fence) wasKilled(id string, running bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.killed[id]
	if running {
		delete(f.killed, id)
	}
	return k
}

// fenceView is what the instance reconciler may act on under the fence:
// before this host caught up, no HA server of it (nothing is started and
// nothing reported; running VMs are left as they are); after, an HA server
// the fence killed is asked to start again, as a start request would, but
// no HA server that does not run is started while the state has this host
// down, fenced or draining (the leader may be moving it elsewhere). It
// also records the HA VMs that run, for the fence and the guard, and
// returns the VMs that must go: servers placed on another host or gone
// from the state while this host was cut off.
func (a *Agent) fenceView(sn *statedb.Snapshot, insts []*statedb.Instance, actual map[string]VMStatus) (
	[]*statedb.Instance, []string) {
	f := a.cfg.Fence
	if f == nil {
		return insts, nil
	}
	caught := f.CaughtUp()
	// While the state says this host is down, fenced or draining, no HA
	// server is started (or restarted) here.
	held := false
	if h, ok := sn.HostHealth(a.cfg.HostID); ok && (h.Down || h.Fenced || h.Draining) {
		held = true
	}
	var out []*statedb.Instance
	var ha []GuardVM
	placed := map[string]bool{}
	for _, inst := range insts {
		placed[inst.ID] = true
		if !sn.HA(inst) {
			out = append(out, inst)
			continue
		}
		st, ok := actual[inst.ID]
		running := ok && (st.State == VMRunning || st.State == VMPaused)
		if running {
			ha = append(ha, GuardVM{ID: inst.ID, PID: st.PID})
		}
		if !caught {
			continue
		}
		if !running && held {
			// The leader may be failing it over right now: it starts here
			// again only after the leader's "back" verdict.
			continue
		}
		if f.wasKilled(inst.ID, running) && inst.Desired == statedb.DesiredRunning && !running {
			cp := *inst
			cp.TaskState = statedb.TaskPoweringOn // killed by the fence, not by its owner
			inst = &cp
		}
		out = append(out, inst)
	}
	f.setHA(ha)
	if !caught {
		return out, nil
	}
	var gone []string
	for id, st := range actual {
		if placed[id] || st.State == VMMissing {
			continue
		}
		if other, ok := sn.Instance(id); ok && other.Host == a.cfg.HostID {
			continue
		}
		gone = append(gone, id)
	}
	return out, gone
}

// killVMs SIGKILLs the QEMUs of vms; a VM without a pid (a hypervisor that
// reports none) is stopped through the hypervisor.
func (a *Agent) killVMs(ctx context.Context, vms []GuardVM) {
	killPIDs(a.log, vms)
	for _, v := range vms {
		if v.PID <= 0 {
			if err := a.cfg.Hypervisor.Stop(ctx, v.ID); err != nil {
				a.log.Error("fence: stop vm", "instance", v.ID, "err", err)
			}
		}
	}
	a.markDirty()
	a.poke()
}

// killPIDs SIGKILLs the QEMUs of vms that have a pid still owned by them.
func killPIDs(log *slog.Logger, vms []GuardVM) {
	for _, v := range vms {
		if v.PID <= 0 || !procOwns(v.PID, v.ID) {
			continue // no pid, gone already (the guard), or the pid is another process now
		}
		if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			log.Error("fence: kill vm", "instance", v.ID, "pid", v.PID, "err", err)
		}
	}
}

// removeMoved deletes the VMs of servers that run elsewhere now or were
// deleted while this host was cut off (their files on this host only:
// shared volumes are never touched).
func (a *Agent) removeMoved(ctx context.Context, seen uint64, ids []string) {
	for _, id := range ids {
		a.launch(ctx, seen, "remove-moved", []string{id}, func(ctx context.Context) error {
			a.log.Warn("vm of a server that is not placed on this host (moved or deleted while this host was cut off); removing it",
				"instance", id)
			return a.cfg.Hypervisor.Delete(ctx, id)
		})
	}
}

// waitApplied waits until applied() reaches idx, at most limit (or until ctx
// ends).
func waitApplied(ctx context.Context, applied func() uint64, idx uint64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for applied() < idx && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}
