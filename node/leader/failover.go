package leader

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/scheduler"
)

// Host failure (docs/ha.md): the leader watches when it last heard from
// each host, on its own monotonic clock, through the hosts' lease
// renewals (Contacts) and the gossip probes they answered. Silent for half of T_fence: the host is down
// (its compute service shows "down"). Silent for T_fence plus the margin:
// the host has fenced itself, so the leader declares it fenced and
// restarts its HA servers elsewhere through the placement rule.

// Contacts records when this host, as leader, last received a lease
// renewal from each host, and the fence timeout the host reported with
// it: the one it fences on from that renewal on. Times are from time.Now
// (monotonic).
type Contacts struct {
	mu   sync.Mutex
	last map[string]contact
	now  func() time.Time
}

type contact struct {
	at           time.Time
	fenceTimeout time.Duration // 0: not reported (a host of an older release)
	sent         time.Duration // the host's send time of the report
}

// NewContacts returns an empty record; now is the clock (nil: time.Now).
func NewContacts(now func() time.Time) *Contacts {
	if now == nil {
		now = time.Now
	}
	return &Contacts{last: map[string]contact{}, now: now}
}

// Heard records a renewal from host id, received now, with the fence
// timeout it reported and the host's send time of it (0, 0: none). A
// renewal sent before the last one recorded (late, or the host's clock
// restarted with a reboot) keeps the longer of the two reports: either
// may be the one the host fences on.
func (c *Contacts) Heard(id string, fenceTimeout, sent time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := contact{at: c.now(), fenceTimeout: fenceTimeout, sent: sent}
	if prev, ok := c.last[id]; ok && sent < prev.sent && prev.fenceTimeout > 0 && fenceTimeout > 0 {
		l.fenceTimeout = max(fenceTimeout, prev.fenceTimeout)
	}
	c.last[id] = l
}

// Last returns when host id was last heard from.
func (c *Contacts) Last(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.last[id]
	return l.at, ok
}

// Reported returns the fence timeout host id reported with its last
// renewal and when that was; ok is false when it reported none.
func (c *Contacts) Reported(id string) (fenceTimeout time.Duration, at time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.last[id]
	return l.fenceTimeout, l.at, ok && l.fenceTimeout > 0
}

// Failover is the leader's host-failure routine.
type Failover struct {
	SelfID   string
	State    StateSource
	Gossip   HostSource
	Contacts *Contacts
	Proposer Proposer
	// Now is the leader's monotonic clock (nil: time.Now).
	Now      func() time.Time
	Interval time.Duration
	Logger   *slog.Logger
}

// Routine is the failover as a leader routine. A new leader counts every
// host's silence from its own election at the earliest: it cannot know
// what the previous leader heard.
func (f Failover) Routine() Routine {
	return Routine{Name: "failover", Run: func(ctx context.Context, hints <-chan struct{}) error {
		now := f.now()
		w := &watch{start: now, seen: map[string]time.Time{}, probed: map[string]time.Time{}}
		return Every("failover", f.Interval, func(ctx context.Context) { f.tick(ctx, w) }).Run(ctx, hints)
	}}
}

func (f Failover) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// watch is one leadership term's view of the hosts.
type watch struct {
	start  time.Time            // when this host started leading
	seen   map[string]time.Time // when gossip last showed that each host spoke
	probed map[string]time.Time // each host's last answered probe, as gossip reported it
	// settled is the fence timeout generation plus one that this term
	// settled (0: none).
	settled uint64
	// unleased holds the hosts seen reporting no version this term (a
	// release before leases); leased, when each such host was first seen
	// reporting one: its lease silence counts from then.
	unleased map[string]bool
	leased   map[string]time.Time
}

// leaseStart is when the leader began to expect lease renewals from m this
// term, and whether it may at all. A host of a release before leases
// reports no version and renews nothing, nor runs a fence guard: it is
// never judged fenced (its VMs would run twice). Once it reports a version
// it has restarted on a release that renews; it gets a whole T_fence from
// then, not from the term's start, before its first renewal is missed.
func (w *watch) leaseStart(m *statedb.Member, now time.Time) (time.Time, bool) {
	if w.unleased == nil {
		w.unleased, w.leased = map[string]bool{}, map[string]time.Time{}
	}
	if m.Version == "" {
		w.unleased[m.ID] = true
		return time.Time{}, false
	}
	if w.unleased[m.ID] {
		delete(w.unleased, m.ID)
		w.leased[m.ID] = now
	}
	return w.leased[m.ID], true
}

// Verdict is what the leader concludes from a host's silence.
type Verdict struct {
	Down, Fenced bool
}

// Judge is the liveness rule: down after half of T_fence of silence,
// fenced after T_fence plus the margin.
func Judge(silent, tFence time.Duration) Verdict {
	return Verdict{Down: silent > tFence/2, Fenced: silent > tFence+statedb.FenceMargin(tFence)}
}

// Silence is how long the leader has not heard from a host: since the
// latest of the term's start, the last answered gossip probe and the last
// lease renewal.
func Silence(now, start time.Time, sightings ...time.Time) time.Duration {
	last := start
	for _, t := range sightings {
		if t.After(last) {
			last = t
		}
	}
	return now.Sub(last)
}

func (f Failover) tick(ctx context.Context, w *watch) {
	now := f.now()
	sn := f.State.State()
	var sets statedb.Settings
	if cfg, ok := sn.Cluster(); ok {
		sets = cfg.Settings
	}
	tFence := sets.EffectiveFenceTimeout()
	live := f.Gossip.Members()
	for _, g := range live {
		if sighted(w, g) {
			w.seen[g.Name] = now
		}
	}
	for _, m := range sn.MembersByID() {
		if m.ID == f.SelfID {
			continue
		}
		var sightings, renewals []time.Time
		if t, ok := w.seen[m.ID]; ok {
			sightings = append(sightings, t)
		}
		if t, ok := f.Contacts.Last(m.ID); ok {
			sightings, renewals = append(sightings, t), append(renewals, t)
		}
		v := Judge(Silence(now, w.start, sightings...), tFence)
		// The fenced verdict rests on lease renewals alone, as the host's
		// own fence does: a host that answers gossip but cannot renew (its
		// lease path broken, its agent hung) has killed its HA servers'
		// VMs at T_fence, and they must run again elsewhere. T_fence
		// there is the one the host fences on (FenceWait), which may be
		// longer than the setting just after it was lowered.
		wait := FenceWait(f.Contacts, w.start, &sets, m.ID)
		from, leases := w.leaseStart(m, now)
		if !from.IsZero() {
			renewals = append(renewals, from)
		}
		v.Fenced = leases && Judge(Silence(now, w.start, renewals...), wait).Fenced
		v.Down = v.Down || v.Fenced
		h, had := sn.HostHealth(m.ID)
		// A host is back only on evidence: a young term's silence is
		// short because the term is, not because the host spoke. Nor
		// while it still fences on a timeout longer than a new leader
		// would wait for it (a fenced host returning after the bound
		// was settled without it).
		// Its timeout must come from a report of this term: one from an
		// earlier term of this host's leadership may be out of date, and
		// the settle that leaves later leaders the setting alone does not
		// wait for fenced hosts. (A host of an older release reports
		// none.)
		rep, repAt, reported := f.Contacts.Reported(m.ID)
		fresh := !reported || (!repAt.Before(w.start) && rep <= sets.EffectiveFenceTimeout())
		back := !v.Down && !Judge(Silence(now, time.Time{}, sightings...), tFence).Down &&
			!Judge(Silence(now, time.Time{}, renewals...), wait).Fenced && wait <= sets.FenceWait() && fresh
		switch {
		case had && h.Draining:
			// the host drains itself to leave: its word, not silence, counts
		case back && had:
			f.propose(ctx, statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: m.ID}, "host is back", m.Name)
		case v.Down && (!had || (v.Fenced && !h.Fenced)):
			what := "host is down"
			if v.Fenced {
				what = "host is fenced: silent past T_fence and the margin"
			}
			f.propose(ctx, statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: m.ID, Down: true, Fenced: v.Fenced}, what, m.Name)
		}
		if !v.Fenced && !(had && h.Draining) {
			continue
		}
		sn = f.State.State()
		if !sn.HostFenced(m.ID) {
			continue
		}
		if cmd, ok := PlanFailover(sn, live, m.ID); ok {
			f.propose(ctx, statedb.CmdFailoverInstance, cmd,
				fmt.Sprintf("failover: %d moved, %d stranded, %d deleted", len(cmd.Moves), len(cmd.Stranded), len(cmd.Deleted)), m.Name)
		}
	}
	f.settle(ctx, w, f.State.State())
}

// FenceWait is the T_fence the leader counts for host id: the timeout
// the host reported with its last renewal in this term (start) — the
// one it fences on — or, without one, the longest it may still fence on
// (Settings.FenceWait); never shorter than the setting (a longer one is
// applied by the host at its next renewal).
func FenceWait(c *Contacts, start time.Time, sets *statedb.Settings, id string) time.Duration {
	if r, at, ok := c.Reported(id); ok && !at.Before(start) {
		return max(r, sets.EffectiveFenceTimeout())
	}
	return sets.FenceWait()
}

// settle clears the state's fence timeout bound once every member not
// fenced (this host included) reported, in this term, at most the
// current setting: a later leader may then wait the setting alone.
func (f Failover) settle(ctx context.Context, w *watch, sn *statedb.Snapshot) {
	cfg, ok := sn.Cluster()
	if !ok {
		return
	}
	sets := &cfg.Settings
	if sets.FenceTimeoutBound == 0 || w.settled == sets.FenceGen+1 {
		return
	}
	for _, m := range sn.MembersByID() {
		if sn.HostFenced(m.ID) {
			continue
		}
		r, at, ok := f.Contacts.Reported(m.ID)
		if !ok || at.Before(w.start) || r > sets.EffectiveFenceTimeout() {
			return
		}
	}
	if _, err := f.Proposer.Propose(ctx, statedb.CmdSettleFenceTimeout, statedb.SettleFenceTimeoutCmd{Gen: sets.FenceGen}); err != nil {
		if ctx.Err() == nil {
			f.Logger.Warn("host failure: settling the fence timeout failed", "err", err)
		}
		return
	}
	w.settled = sets.FenceGen + 1
	f.Logger.Info("host failure: every host fences on the current T_fence", "t_fence", sets.EffectiveFenceTimeout())
}

// sighted reports whether gossip shows that host g spoke since the last
// tick. Its "alive" state alone is no such evidence: memberlist keeps a
// dead host alive until its suspicion timeout ends (about 5 s here,
// which every failover would wait on top of T_fence and the margin), and
// keeps it alive for as long as other hosts answer indirect probes for
// it, even while this leader cannot reach it (that host fences itself
// for want of lease renewals, but its servers would never be restarted).
// Evidence is a direct probe of this host that g answered: its time
// (ClockMeasuredAt, on gossip's clock) changed since the last tick. It is
// counted at this tick, after the fact: up to a tick later than the
// answer, which errs towards a later verdict, the safe side. A member
// with no probe time (none answered since it rejoined) is not sighted;
// the first probe time a term sees is only recorded (it may be from
// before the term: a young term must not lift a verdict on it).
func sighted(w *watch, g gossip.Member) bool {
	if g.State != gossip.StateAlive || g.ClockMeasuredAt.IsZero() {
		return false
	}
	last, ok := w.probed[g.Name]
	w.probed[g.Name] = g.ClockMeasuredAt
	return ok && !last.Equal(g.ClockMeasuredAt)
}

func (f Failover) propose(ctx context.Context, t statedb.CmdType, payload any, what, host string) {
	if _, err := f.Proposer.Propose(ctx, t, payload); err != nil {
		if ctx.Err() == nil {
			f.Logger.Warn("host failure: proposal failed", "what", what, "host", host, "err", err)
		}
		return
	}
	f.Logger.Info("host failure: "+what, "host", host)
}

// PlanFailover decides what happens to the servers of fenced host from:
// deletes that waited for it finish; HA servers and servers an admin asked
// to evacuate are placed on live hosts through the scheduler (group
// policy and capacity as for a new server); the others, and those no host
// can take, stay in ERROR with a fault saying why. ok is false when there
// is nothing new to propose.
func PlanFailover(sn *statedb.Snapshot, live []gossip.Member, from string) (statedb.FailoverCmd, bool) {
	cmd := statedb.FailoverCmd{From: from, HostCaps: map[string]statedb.HostCap{}}
	if cfg, ok := sn.Cluster(); ok {
		cmd.Ratios = cfg.Settings.Ratios
	}
	hostName := from
	if m, ok := sn.Member(from); ok {
		hostName = m.Name
	}
	strand := func(i *statedb.Instance, reason string) {
		if i.VMState == statedb.VMError && i.Fault != nil && i.Fault.Message == reason {
			return // said already
		}
		cmd.Stranded = append(cmd.Stranded, statedb.PlacementFailure{InstanceID: i.ID, Reason: reason})
	}
	var free []*statedb.Instance                 // the scheduler chooses
	targeted := map[string][]*statedb.Instance{} // an admin named the host
	insts := sn.InstancesOnHost(from)
	sort.Slice(insts, func(a, b int) bool { return insts[a].ID < insts[b].ID })
	for _, i := range insts {
		ev, evacuate := sn.Evacuation(i.ID)
		switch {
		case i.Desired == statedb.DesiredDeleted:
			cmd.Deleted = append(cmd.Deleted, i.ID)
		case evacuate && ev.TargetHost != "":
			targeted[ev.TargetHost] = append(targeted[ev.TargetHost], i)
		case evacuate || sn.HA(i):
			free = append(free, i)
		default:
			strand(i, fmt.Sprintf("Host %s failed; the server was not restarted elsewhere: %s.", hostName, notHAReason(sn, i)))
		}
	}
	plan := func(batch []*statedb.Instance, hosts []gossip.Member) {
		if len(batch) == 0 {
			return
		}
		p := scheduler.Plan(sn, schedulerHosts(hosts), batch, nil)
		for _, pl := range p.Placements {
			cmd.Moves = append(cmd.Moves, pl)
			cmd.HostCaps[pl.HostID] = p.HostCaps[pl.HostID]
		}
		for _, fl := range p.Failures {
			if i, ok := sn.Instance(fl.InstanceID); ok {
				strand(i, fmt.Sprintf("Host %s failed and no other host can take the server: %s", hostName, fl.Reason))
			}
		}
	}
	var up []gossip.Member
	for _, g := range live {
		if g.Name != from && !sn.HostDown(g.Name) {
			up = append(up, g)
		}
	}
	plan(free, up)
	targets := make([]string, 0, len(targeted))
	for t := range targeted {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, t := range targets {
		var only []gossip.Member
		for _, g := range up {
			if g.Name == t {
				only = append(only, g)
			}
		}
		plan(targeted[t], only)
	}
	return cmd, len(cmd.Moves)+len(cmd.Stranded)+len(cmd.Deleted) > 0
}

// notHAReason says why a server is not restarted elsewhere.
func notHAReason(sn *statedb.Snapshot, i *statedb.Instance) string {
	if cfg, ok := sn.Cluster(); ok && cfg.Settings.HADisabled {
		return "high availability is off for the cluster (setting ha_disabled)"
	}
	if statedb.HAOptOut(i) {
		return "its metadata " + statedb.HAMetadataKey + " turns high availability off"
	}
	return sn.LocalDisks(i)
}
