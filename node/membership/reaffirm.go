package membership

import (
	"context"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Reaffirm proposes this host's member record again each time another
// member's version rises in the state (that host was upgraded) from what
// it was in from, until ctx ends or this host has left. changed returns a
// channel closed at the state's next change.
//
// Why: during a rolling upgrade a member of the previous release applies
// a newer host's registration without the version field it does not
// know, and a Raft snapshot it takes then keeps the record without it.
// Once that member runs the new release, its state, restored from that
// snapshot, shows the newer host as "no version reported" — and its
// version gate refuses every gated command — while the other members'
// states show the version. A record proposed again after each upgrade is
// applied by members that all know the field, so every state ends with
// every member's version.
func Reaffirm(ctx context.Context, r Raft, changed func() <-chan struct{}, from *statedb.Snapshot, self statedb.Member, left func() bool, now func() time.Time, log *slog.Logger) {
	seen, mark := otherVersions(from, self.ID), from.MembersMark()
	for {
		ch := changed()
		sn := r.State()
		if !sn.MembersChangedSince(mark) {
			// Most changes touch no member record: listing every member
			// at each of them would cost O(members) per commit.
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			continue
		}
		mark = sn.MembersMark()
		cur := otherVersions(sn, self.ID)
		rose := false
		for id, v := range cur {
			if old, ok := seen[id]; ok && statedb.CompareVersions(v, old) > 0 {
				rose = true
			}
		}
		seen = cur
		if rose && !left() {
			log.Info("a member was upgraded; registering this host again", "version", self.Version)
			propose(ctx, r, self, now, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// otherVersions is each member's version but self's.
func otherVersions(sn *statedb.Snapshot, self string) map[string]string {
	out := map[string]string{}
	for _, m := range sn.Members() {
		if m.ID != self {
			out[m.ID] = m.Version
		}
	}
	return out
}

// propose proposes self (JoinedAt kept from the existing record, else
// now) until it commits or ctx ends.
func propose(ctx context.Context, r Raft, self statedb.Member, now func() time.Time, log *slog.Logger) {
	for {
		rec := self
		if m, ok := r.State().Member(self.ID); ok {
			rec.JoinedAt = m.JoinedAt
		} else {
			rec.JoinedAt = now()
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := r.Propose(actx, statedb.CmdRegisterMember, rec)
		cancel()
		if err == nil {
			return
		}
		log.Debug("register member again: retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// MemberRecord keeps this host's member record in step with its
// addresses and version (Register), and registers it again whenever
// another member is upgraded (Reaffirm says why).
type MemberRecord struct {
	Raft Raft
	// Changed returns a channel closed at the state's next change.
	Changed func() <-chan struct{}
	// Self is the record this host wants (JoinedAt is filled in).
	Self statedb.Member
	// Left reports whether this host has left: it registers no more.
	Left   func() bool
	Now    func() time.Time
	Logger *slog.Logger
}

// Run registers this host if needed, then reaffirms its record after
// upgrades until ctx ends.
func (r *MemberRecord) Run(ctx context.Context) {
	from := r.Raft.State()
	Register(ctx, r.Raft, r.Self, r.Left, r.Now, r.Logger)
	Reaffirm(ctx, r.Raft, r.Changed, from, r.Self, r.Left, r.Now, r.Logger)
}
