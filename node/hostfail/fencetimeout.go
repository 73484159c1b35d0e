package hostfail

import (
	"context"
	"sync"
	"time"
)

// FenceTimeouts is this host's side of a change of T_fence (docs/ha.md):
// the fence takes a new timeout from the state only at a lease renewal,
// and the renewal tells the leader the timeout this host fences on from
// then on, so the leader, which waits at least that long for a silent
// host, never restarts a server whose VM may still run here.
//
// The report covers every way the VMs may still be killed late: the
// timeout the daemon's fence counts from this renewal (the setting now),
// the one it counted until now (this check's heartbeat still carries it)
// and whatever remains of the deadline the guard holds (a heartbeat write
// that failed leaves the previous one in force). It is never shorter
// than any of them, so the leader's "renewal heard + reported timeout"
// is past every deadline here.
type FenceTimeouts struct {
	setting func() time.Duration // T_fence in the state
	clock   func() time.Duration // the guard's clock (CLOCK_BOOTTIME)

	mu      sync.Mutex
	adopted time.Duration // what the fence counts (Timeout)
	guard   time.Duration // the deadline in the guard's heartbeat on disk (0: none)
}

// NewFenceTimeouts starts from the setting as the state has it now and
// the deadline the guard holds (0: none).
func NewFenceTimeouts(setting, clock func() time.Duration, guardDeadline time.Duration) *FenceTimeouts {
	return &FenceTimeouts{setting: setting, clock: clock, adopted: setting(), guard: guardDeadline}
}

// Timeout is the T_fence the fence counts: the setting as of the last
// acknowledged renewal.
func (t *FenceTimeouts) Timeout() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.adopted
}

// Renew wraps a lease renewal (Lease.Renew): it reports the timeout this
// host fences on and, once the leader acknowledged it, adopts the
// setting.
func (t *FenceTimeouts) Renew(renew func(context.Context, FenceReport) (uint64, error)) func(context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) {
		report, next := t.report()
		commit, err := renew(ctx, report)
		if err == nil {
			t.mu.Lock()
			t.adopted = next
			t.mu.Unlock()
		}
		return commit, err
	}
}

// report is the report of a renewal sent now, and the setting to adopt
// once it is acknowledged.
func (t *FenceTimeouts) report() (FenceReport, time.Duration) {
	next := t.setting()
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	return FenceReport{Timeout: max(next, t.adopted, t.guard-now), Sent: now}, next
}

// Wrote records that the guard's heartbeat now holds deadline.
func (t *FenceTimeouts) Wrote(deadline time.Duration) {
	t.mu.Lock()
	t.guard = deadline
	t.mu.Unlock()
}
