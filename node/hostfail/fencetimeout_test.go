package hostfail

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The host fences on a new T_fence only once a renewal that reported it
// was acknowledged, and each report covers the timeout counted until
// then and what remains of the guard's deadline.
func TestFenceTimeoutsReportAndAdopt(t *testing.T) {
	setting, mono := 30*time.Second, 100*time.Second
	ft := NewFenceTimeouts(func() time.Duration { return setting }, func() time.Duration { return mono }, 0)
	var reported []time.Duration
	fail := false
	renew := ft.Renew(func(_ context.Context, r FenceReport) (uint64, error) {
		if r.Sent != mono {
			t.Errorf("report sent at %v; want %v", r.Sent, mono)
		}
		reported = append(reported, r.Timeout)
		if fail {
			return 0, errors.New("cut off")
		}
		return 1, nil
	})
	step := func() {
		t.Helper()
		_, _ = renew(context.Background())
		mono += time.Second
	}
	step()
	ft.Wrote(100*time.Second + 30*time.Second) // the guard holds 130 s
	setting = 5 * time.Second                  // lowered in the state
	if ft.Timeout() != 30*time.Second {
		t.Fatalf("Timeout = %v before any renewal since the change; want 30 s", ft.Timeout())
	}
	fail = true
	step() // not acknowledged: still fencing on 30 s
	if ft.Timeout() != 30*time.Second || reported[1] != 30*time.Second {
		t.Fatalf("after an unacknowledged renewal: Timeout %v, reported %v; want 30 s, 30 s", ft.Timeout(), reported[1])
	}
	fail = false
	step() // at 102 s: acknowledged; reports the 30 s counted until now
	if ft.Timeout() != 5*time.Second || reported[2] != 30*time.Second {
		t.Fatalf("after the acknowledged renewal: Timeout %v, reported %v; want 5 s adopted, 30 s reported", ft.Timeout(), reported[2])
	}
	// The heartbeat write of that check failed: the guard still holds
	// 130 s, so at 103 s the report is 27 s, not 5 s.
	step()
	if reported[3] != 27*time.Second {
		t.Fatalf("report with the guard at 130 s, sent at 103 s = %v; want 27 s", reported[3])
	}
	ft.Wrote(103*time.Second + 5*time.Second)
	step()
	if reported[4] != 5*time.Second {
		t.Fatalf("report once the guard holds the new deadline = %v; want 5 s", reported[4])
	}
	setting = 60 * time.Second // raised: reported and adopted at the next renewal
	step()
	if reported[5] != 60*time.Second || ft.Timeout() != 60*time.Second {
		t.Fatalf("after raising: reported %v, Timeout %v; want 60 s, 60 s", reported[5], ft.Timeout())
	}
}
