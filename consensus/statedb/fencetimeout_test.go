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
