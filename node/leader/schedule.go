package leader

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Store is the committed state and its change signal (statedb.Store).
type Store interface {
	Snapshot() *statedb.Snapshot
	// Changed returns a channel closed at the next applied change.
	Changed() <-chan struct{}
}

// Gate holds the scheduler back: Wait returns nil when it may plan, or
// ctx's error. A daemon runs without one; a benchmark that builds a
// backlog first closes it meanwhile.
type Gate interface {
	Wait(ctx context.Context) error
}

// Scheduler places pending instances on hosts.
type Scheduler struct {
	Store    Store
	Hosts    HostSource
	Proposer Proposer
	// Gate, when set, is waited on before each plan.
	Gate Gate
	// Interval is the longest wait between two plans when nothing
	// changes in the state (host capacity comes from the host source).
	Interval time.Duration
	Logger   *slog.Logger
}

// Routine is the scheduler as a leader routine.
func (s Scheduler) Routine() Routine {
	return Routine{Name: "scheduler", Run: func(ctx context.Context, _ <-chan struct{}) error {
		s.loop(ctx)
		return nil
	}}
}

// planDepth is how many plans may be in flight through Raft at once: the
// next batch is planned while the previous one commits.
const planDepth = 2

// loop plans pending instances whenever the state changes (new
// instances, freed capacity, a rejected plan) and at least every interval
// (host capacity changes). Up to planDepth plans are in flight; a plan
// counts the claims of the plans still in flight and skips their
// instances. The FSM re-checks every claim, so a stale plan is harmless.
func (s Scheduler) loop(ctx context.Context) {
	tick := time.NewTicker(s.Interval)
	defer tick.Stop()
	slots := make(chan struct{}, planDepth)
	var (
		mu       sync.Mutex
		inflight = map[string]string{} // instance id → host ("" for a failure) of plans in flight
		backoff  time.Duration         // set by a failed or useless plan
		wg       sync.WaitGroup
	)
	defer wg.Wait()
	for {
		if s.Gate != nil {
			if err := s.Gate.Wait(ctx); err != nil {
				return
			}
		}
		mu.Lock()
		wait := backoff
		backoff = 0
		mu.Unlock()
		if wait > 0 && !sleep(ctx, wait) {
			return
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		changed := s.Store.Changed()
		mu.Lock()
		sn := s.Store.Snapshot()
		skip := make(map[string]string, len(inflight))
		for id, h := range inflight {
			skip[id] = h
		}
		mu.Unlock()
		cmd, ids, more := planRound(sn, s.Hosts.Members(), skip)
		if len(ids) == 0 {
			<-slots
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-tick.C:
			}
			continue
		}
		mu.Lock()
		for _, p := range cmd.Placements {
			inflight[p.InstanceID] = p.HostID
		}
		for _, f := range cmd.Failures {
			inflight[f.InstanceID] = ""
		}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			_, err := s.Proposer.Propose(ctx, statedb.CmdPlaceInstances, cmd)
			progress := false
			after := s.Store.Snapshot()
			for _, id := range ids {
				if cur, ok := after.Instance(id); !ok || !cur.Pending() {
					progress = true
					break
				}
			}
			mu.Lock()
			for _, id := range ids {
				delete(inflight, id)
			}
			switch {
			case err != nil && ctx.Err() == nil:
				s.Logger.Warn("scheduler: plan not committed; retrying", "err", err)
				backoff = 200 * time.Millisecond
			case err == nil && !progress:
				backoff = 100 * time.Millisecond // the FSM rejected the whole plan: let the state settle
			}
			mu.Unlock()
		}()
		if !more {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-tick.C:
			}
		}
	}
}
