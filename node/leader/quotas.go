package leader

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Quotas turns quota enforcement on in a cluster bootstrapped before
// quotas existed (new clusters start with it on). Entries applied before
// that one replay without checks, as they applied then. While a member
// runs a version older than the command, the leader waits for it.
type Quotas struct {
	State    StateSource
	Proposer Proposer
	Interval time.Duration
	Logger   *slog.Logger
}

// Routine is the quota switch as a leader routine.
func (q Quotas) Routine() Routine { return Every("quotas", q.Interval, q.tick) }

func (q Quotas) tick(ctx context.Context) {
	sn := q.State.State()
	if _, ok := sn.Cluster(); !ok || sn.QuotasEnforced() {
		return
	}
	_, err := q.Proposer.Propose(ctx, statedb.CmdEnableQuotas, struct{}{})
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, statedb.ErrConflict):
		q.Logger.Debug("quotas: enforcement waits for every host to be upgraded", "err", err)
	default:
		q.Logger.Warn("quotas: enable enforcement", "err", err)
	}
}
