package membership_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/membership"
)

// A member of the previous release dropped m1's version (its snapshot
// kept m1's record without it); m1 proposes its record again when another
// member's version rises, and only then.
func TestReaffirmWhenAnotherMemberIsUpgraded(t *testing.T) {
	r := twoMembers(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	register := func(m statedb.Member) {
		t.Helper()
		if err := r.st.Apply(statedb.CmdRegisterMember, m); err != nil {
			t.Fatal(err)
		}
	}
	// The state as a member of the previous release left it: m1 without
	// its version, m2 on the previous release.
	register(statedb.Member{ID: "m1", Name: "first"})
	register(statedb.Member{ID: "m2", Name: "second", Version: "0.1.0"})
	self := statedb.Member{ID: "m1", Name: "first", Version: "0.2.0"}
	from := r.State()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		membership.Reaffirm(ctx, r, r.st.Changed, from, self, func() bool { return false }, time.Now, log)
	}()
	defer func() { cancel(); <-done }()

	// Another change that raises no version: nothing is proposed.
	register(statedb.Member{ID: "m2", Name: "second", APIAddr: "10.0.0.2:8470", Version: "0.1.0"})
	time.Sleep(50 * time.Millisecond) // time to propose, were it wrong
	if n := r.proposals.Load(); n != 0 {
		t.Fatalf("%d proposals after a change that upgraded nobody; want none", n)
	}
	// m2 is upgraded: m1 registers again, with its version.
	register(statedb.Member{ID: "m2", Name: "second", APIAddr: "10.0.0.2:8470", Version: "0.2.0"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, ok := r.State().Member("m1"); ok && m.Version == "0.2.0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("m1 did not register again when m2 was upgraded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.proposals.Load(); n != 1 {
		t.Fatalf("%d proposals; want one (after the upgrade only)", n)
	}
}
