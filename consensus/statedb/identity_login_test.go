package statedb

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// applyAt applies one command with the given proposer time.
func applyAt(t *testing.T, s *Store, idx uint64, at time.Time, typ CmdType, payload any) Result {
	t.Helper()
	c, err := NewCommand(typ, fmt.Sprintf("req-%d", idx), at, payload)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Encode()
	return s.Apply(idx, b)
}

// TestApplyLoginAttemptReserves: attempts are counted in apply, so however
// many are proposed from the same stale snapshot, only LockoutAttempts are
// granted; a lock expires after LockoutDuration; success resets the count.
func TestApplyLoginAttemptReserves(t *testing.T) {
	e := newSettingsEnv(t, Settings{LockoutAttempts: 6, LockoutDuration: 5 * time.Minute})
	granted := 0
	for range 60 {
		e.idx++
		r := applyAt(t, e.s, e.idx, t0, CmdLoginAttempt, LoginCmd{UserID: "u1"})
		switch {
		case r.Err == nil:
			granted++
		case errors.Is(r.Err, ErrForbidden):
			if r.Err.Error() != ErrAccountLocked {
				t.Fatalf("locked error %q names more than the lock", r.Err)
			}
		default:
			t.Fatalf("attempt: %v", r.Err)
		}
	}
	if granted != 6 {
		t.Fatalf("granted %d attempts; want 6", granted)
	}
	u, _ := e.s.Snapshot().User("u1")
	if u.FailedLogins != 6 {
		t.Fatalf("failed logins %d; want 6", u.FailedLogins)
	}

	// Still locked just before the duration, free again after it.
	e.idx++
	if r := applyAt(t, e.s, e.idx, t0.Add(5*time.Minute-time.Second), CmdLoginAttempt, LoginCmd{UserID: "u1"}); !errors.Is(r.Err, ErrForbidden) {
		t.Fatalf("attempt inside the lock: %v; want locked", r.Err)
	}
	e.idx++
	if r := applyAt(t, e.s, e.idx, t0.Add(5*time.Minute), CmdLoginAttempt, LoginCmd{UserID: "u1"}); r.Err != nil {
		t.Fatalf("attempt after the lock: %v", r.Err)
	}
	if u, _ := e.s.Snapshot().User("u1"); u.FailedLogins != 1 {
		t.Fatalf("failed logins after an expired lock %d; want 1", u.FailedLogins)
	}
	e.idx++
	if r := applyAt(t, e.s, e.idx, t0.Add(5*time.Minute), CmdLoginSucceeded, LoginCmd{UserID: "u1"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if u, _ := e.s.Snapshot().User("u1"); u.FailedLogins != 0 {
		t.Fatalf("failed logins after success %d; want 0", u.FailedLogins)
	}

	// Unknown users and lockout off reserve nothing and refuse nothing.
	e.idx++
	if r := applyAt(t, e.s, e.idx, t0, CmdLoginAttempt, LoginCmd{UserID: "nobody"}); r.Err != nil {
		t.Fatalf("unknown user: %v", r.Err)
	}
	off := newSettingsEnv(t, Settings{})
	for range 10 {
		off.idx++
		if r := applyAt(t, off.s, off.idx, t0, CmdLoginAttempt, LoginCmd{UserID: "u1"}); r.Err != nil {
			t.Fatalf("lockout off: %v", r.Err)
		}
	}
}
