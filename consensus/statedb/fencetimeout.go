package statedb

import "time"

// Changing T_fence safely (docs/ha.md). A host applies a new fence
// timeout only at a lease renewal, where it tells the leader the timeout
// it fences on from then (it may be longer than the setting while the
// guard still holds an older, longer deadline). The leader waits, for
// each silent host, the longer of the setting and the last timeout that
// host reported to it. A new leader has heard no report yet: for it the
// state keeps Settings.FenceTimeoutBound, the longest timeout any host
// may still fence on, until the leader has heard every host report at
// most the current setting and settles it (CmdSettleFenceTimeout).
//
// The HA settings ride on CmdUpdateHASettings, gated at the release that
// has hosts report their timeout: an older host would apply a lowered
// timeout from its state at once, unknown to the leader.

// SettleFenceTimeoutCmd clears Settings.FenceTimeoutBound: the leader has
// heard every host not fenced report at most the fence timeout of
// generation Gen. Stale (the setting changed since) it is a no-op.
type SettleFenceTimeoutCmd struct {
	Gen uint64 `json:"gen"`
}

// CoverFenceTimeoutCmd makes the bound cover Timeout: a host reported, with
// a lease renewal, that it fences on Timeout, longer than the setting (it
// restarted on an older state, applies a change late, or its guard still
// holds an older deadline). The leader acknowledges that renewal only once
// this entry is committed, so any later leader waits at least as long for
// that host. The generation moves on even when the bound covered Timeout
// already: a settle decided before this entry (it may be in flight as the
// renewal is acknowledged) no longer applies.
type CoverFenceTimeoutCmd struct {
	Timeout time.Duration `json:"timeout_ns"`
}

// maxCoveredFenceTimeout bounds a reported timeout: the longest setting,
// and as long again for what an older guard deadline may still hold.
const maxCoveredFenceTimeout = 2 * MaxFenceTimeout

func applyCoverFenceTimeout(t *Txn, c *Command) error {
	r, err := decode[CoverFenceTimeoutCmd](c)
	if err != nil {
		return err
	}
	if r.Timeout <= 0 || r.Timeout > maxCoveredFenceTimeout {
		return Errorf(KindInvalid, "a fence timeout to cover must be between 0 and %s, not %s", maxCoveredFenceTimeout, r.Timeout)
	}
	old, ok := t.read().Cluster()
	if !ok {
		return Errorf(KindConflict, "the cluster is not bootstrapped")
	}
	if r.Timeout <= old.Settings.EffectiveFenceTimeout() {
		return nil // the setting covers it
	}
	cfg := *old
	cfg.Settings.FenceTimeoutBound = max(cfg.Settings.FenceTimeoutBound, r.Timeout)
	cfg.Settings.FenceGen++
	return t.insert(tblMeta, &cfg)
}

// applyUpdateHASettings is CmdUpdateHASettings: the same patch as
// CmdUpdateSettings, HA keys included.
func applyUpdateHASettings(t *Txn, c *Command) error { return applyUpdateSettings(t, c) }

func applySettleFenceTimeout(t *Txn, c *Command) error {
	r, err := decode[SettleFenceTimeoutCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Cluster()
	if !ok {
		return Errorf(KindConflict, "the cluster is not bootstrapped")
	}
	if r.Gen != old.Settings.FenceGen || old.Settings.FenceTimeoutBound == 0 {
		return nil
	}
	cfg := *old
	cfg.Settings.FenceTimeoutBound = 0
	return t.insert(tblMeta, &cfg)
}

// setFenceTimeout changes T_fence to d (0 = the default): the bound keeps
// the longest timeout hosts may still fence on, the generation moves on.
func setFenceTimeout(s *Settings, d time.Duration) {
	prev := s.EffectiveFenceTimeout()
	s.FenceTimeout = d
	if s.EffectiveFenceTimeout() == prev {
		return
	}
	s.FenceTimeoutBound = max(s.FenceTimeoutBound, prev, s.EffectiveFenceTimeout())
	s.FenceGen++
}

// FenceWait is how long, beyond the margin, the leader waits for a silent
// host it has no report from in this term: the setting, or the bound
// while hosts may still fence on a longer timeout.
func (s *Settings) FenceWait() time.Duration {
	return max(s.EffectiveFenceTimeout(), s.FenceTimeoutBound)
}
