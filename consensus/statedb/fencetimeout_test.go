package statedb

import (
	"fmt"
	"testing"
	"time"
)

// Lowering T_fence keeps the old timeout as the bound a new leader waits
// for until the leader settles it for the generation it saw; a settle of
// an older generation changes nothing; raising moves the bound up.
func TestFenceTimeoutBoundAndSettle(t *testing.T) {
	e := newSettingsEnv(t, Settings{FenceTimeout: 30 * time.Second})
	ha := func(p UpdateSettingsCmd) {
		t.Helper()
		e.idx++
		if r := apply(t, e.s, e.idx, CmdUpdateHASettings, fmt.Sprintf("ha-%d", e.idx), p); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	settle := func(gen uint64) {
		t.Helper()
		e.idx++
		if r := apply(t, e.s, e.idx, CmdSettleFenceTimeout, "", SettleFenceTimeoutCmd{Gen: gen}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	ha(UpdateSettingsCmd{FenceTimeout: ptr(5 * time.Second)})
	s := e.settings()
	if s.EffectiveFenceTimeout() != 5*time.Second || s.FenceTimeoutBound != 30*time.Second || s.FenceWait() != 30*time.Second || s.FenceGen != 1 {
		t.Fatalf("after lowering 30 s to 5 s: %+v; want T_fence 5 s, bound and wait 30 s, generation 1", s)
	}
	ha(UpdateSettingsCmd{HADisabled: ptr(true)}) // not a fence change
	if g := e.settings().FenceGen; g != 1 {
		t.Fatalf("ha_disabled moved the generation to %d", g)
	}
	ha(UpdateSettingsCmd{FenceTimeout: ptr(8 * time.Second)})
	settle(1) // heard at generation 1: stale
	if s := e.settings(); s.FenceTimeoutBound != 30*time.Second || s.FenceGen != 2 {
		t.Fatalf("after a stale settle: %+v; want the bound 30 s kept, generation 2", s)
	}
	settle(2)
	if s := e.settings(); s.FenceTimeoutBound != 0 || s.FenceWait() != 8*time.Second {
		t.Fatalf("after settling generation 2: %+v; want no bound, wait 8 s", s)
	}
	ha(UpdateSettingsCmd{FenceTimeout: ptr(60 * time.Second)})
	if s := e.settings(); s.FenceTimeoutBound != 60*time.Second || s.FenceWait() != 60*time.Second {
		t.Fatalf("after raising to 60 s: %+v; want bound and wait 60 s", s)
	}
	ha(UpdateSettingsCmd{FenceTimeout: ptr(time.Duration(0))}) // the default, 10 s
	if s := e.settings(); s.EffectiveFenceTimeout() != DefaultFenceTimeout || s.FenceWait() != 60*time.Second || s.FenceGen != 4 {
		t.Fatalf("after back to the default: %+v; want T_fence %s, wait 60 s, generation 4", s, DefaultFenceTimeout)
	}
}

// A host reporting a longer timeout than the state's wait (a restart on an
// old snapshot, a change applied late) gets it covered: the bound moves up
// and the generation on, so a settle decided before that is stale. A
// report already covered changes nothing; a wild one is refused.
func TestCoverFenceTimeout(t *testing.T) {
	e := newSettingsEnv(t, Settings{FenceTimeout: 5 * time.Second})
	do := func(typ CmdType, p any) error {
		t.Helper()
		e.idx++
		return apply(t, e.s, e.idx, typ, fmt.Sprintf("c-%d", e.idx), p).Err
	}
	gen := e.settings().FenceGen
	if err := do(CmdCoverFenceTimeout, CoverFenceTimeoutCmd{Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if s := e.settings(); s.FenceTimeoutBound != 0 || s.FenceGen != gen {
		t.Fatalf("covering the setting itself changed %+v", s)
	}
	if err := do(CmdCoverFenceTimeout, CoverFenceTimeoutCmd{Timeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	s := e.settings()
	if s.FenceWait() != 30*time.Second || s.FenceGen != gen+1 {
		t.Fatalf("after covering 30 s: %+v; want the wait 30 s, the generation moved on", s)
	}
	if err := do(CmdSettleFenceTimeout, SettleFenceTimeoutCmd{Gen: gen}); err != nil {
		t.Fatal(err)
	}
	if s := e.settings(); s.FenceWait() != 30*time.Second {
		t.Fatalf("a settle decided before the cover cleared it: %+v", s)
	}
	// Covered by the bound already: the generation still moves on, so a
	// settle decided before (in flight while the renewal was acknowledged)
	// is stale.
	if err := do(CmdCoverFenceTimeout, CoverFenceTimeoutCmd{Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if s := e.settings(); s.FenceWait() != 30*time.Second || s.FenceGen != gen+2 {
		t.Fatalf("after covering 20 s under a 30 s bound: %+v; want the wait 30 s, the generation moved on", s)
	}
	if err := do(CmdSettleFenceTimeout, SettleFenceTimeoutCmd{Gen: gen + 1}); err != nil {
		t.Fatal(err)
	}
	if s := e.settings(); s.FenceWait() != 30*time.Second {
		t.Fatalf("a settle in flight across a covered renewal cleared the bound: %+v", s)
	}
	if err := do(CmdCoverFenceTimeout, CoverFenceTimeoutCmd{Timeout: time.Hour}); err == nil {
		t.Fatal("an hour's fence timeout covered")
	}
	if err := do(CmdSettleFenceTimeout, SettleFenceTimeoutCmd{Gen: gen + 2}); err != nil {
		t.Fatal(err)
	}
	if s := e.settings(); s.FenceWait() != 5*time.Second {
		t.Fatalf("after settling the cover's generation: %+v; want the setting alone", s)
	}
}

// An UpdateSettings entry carrying fence_timeout (written before the HA
// settings had their own command) replays as it applied then: a plain
// assignment, no bound and no generation.
func TestOldUpdateSettingsFenceTimeoutReplaysPlain(t *testing.T) {
	e := newSettingsEnv(t, Settings{FenceTimeout: 30 * time.Second})
	e.idx++
	if r := apply(t, e.s, e.idx, CmdUpdateSettings, "old", UpdateSettingsCmd{FenceTimeout: ptr(5 * time.Second)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if s := e.settings(); s.EffectiveFenceTimeout() != 5*time.Second || s.FenceTimeoutBound != 0 || s.FenceGen != 0 {
		t.Fatalf("old entry applied as %+v; want T_fence 5 s, no bound, generation 0", s)
	}
}
