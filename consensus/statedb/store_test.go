package statedb

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func apply(t *testing.T, s *Store, idx uint64, typ CmdType, req string, payload any) Result {
	t.Helper()
	c, err := NewCommand(typ, req, t0, payload)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Encode()
	return s.Apply(idx, b)
}

func TestApplyProjects(t *testing.T) {
	s := NewStore()
	if r := apply(t, s, 1, CmdCreateProject, "r1", Project{ID: "p1", Name: "demo", Enabled: true}); r.Err != nil {
		t.Fatalf("create: %v", r.Err)
	}
	if r := apply(t, s, 2, CmdCreateProject, "r2", Project{ID: "p2", Name: "demo"}); !errors.Is(r.Err, ErrConflict) {
		t.Fatalf("duplicate name: err = %v; want conflict", r.Err)
	}
	if r := apply(t, s, 3, CmdCreateProject, "r3", Project{ID: "p3", Name: " "}); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("blank name: err = %v; want invalid", r.Err)
	}
	sn := s.Snapshot()
	if p, ok := sn.Project("p1"); !ok || p.Name != "demo" || p.DomainID != DefaultDomainID {
		t.Fatalf("Project(p1) = %+v, %v", p, ok)
	}
	if _, ok := sn.Project("p2"); ok {
		t.Fatal("failed create left a record")
	}
	if s.AppliedIndex() != 3 {
		t.Fatalf("AppliedIndex = %d; want 3", s.AppliedIndex())
	}
}

func TestDedupe(t *testing.T) {
	s := NewStore()
	r1 := apply(t, s, 1, CmdCreateProject, "same", Project{ID: "p1", Name: "a"})
	r2 := apply(t, s, 2, CmdCreateProject, "same", Project{ID: "p1", Name: "a"})
	if r1.Err != nil || r2.Err != nil || !r2.Deduped || r2.Index != 1 {
		t.Fatalf("retry = %+v; want deduped at index 1", r2)
	}
	// A failed request is answered the same way on retry.
	f1 := apply(t, s, 3, CmdDeleteProject, "del", DeleteCmd{ID: "nope"})
	f2 := apply(t, s, 4, CmdDeleteProject, "del", DeleteCmd{ID: "nope"})
	if !errors.Is(f1.Err, ErrNotFound) || !errors.Is(f2.Err, ErrNotFound) || !f2.Deduped {
		t.Fatalf("failed retry = %+v / %+v", f1, f2)
	}
}

func TestGarbageCommand(t *testing.T) {
	s := NewStore()
	for i, b := range [][]byte{nil, []byte("{"), []byte(`{"type":9999}`), []byte(`{"type":20,"data":"x"}`)} {
		r := s.Apply(uint64(i+1), b)
		if r.Err == nil {
			t.Errorf("Apply(%q) = nil error; want one", b)
		}
	}
}

func TestJoinTokenRules(t *testing.T) {
	s := NewStore()
	exp := t0.Add(time.Hour)
	if r := apply(t, s, 1, CmdCreateJoinToken, "", JoinToken{ID: "t", SecretHash: "h", ExpiresAt: exp}); r.Err != nil {
		t.Fatal(r.Err)
	}
	cases := []struct {
		name string
		cmd  ConsumeJoinTokenCmd
		at   time.Time
		ok   bool
	}{
		{"wrong secret", ConsumeJoinTokenCmd{ID: "t", SecretHash: "x"}, t0, false},
		{"unknown", ConsumeJoinTokenCmd{ID: "u", SecretHash: "h"}, t0, false},
		{"expired", ConsumeJoinTokenCmd{ID: "t", SecretHash: "h"}, exp, false},
		{"good", ConsumeJoinTokenCmd{ID: "t", SecretHash: "h", NodeID: "n"}, t0, true},
		{"reused", ConsumeJoinTokenCmd{ID: "t", SecretHash: "h"}, t0, false},
	}
	for i, tc := range cases {
		c, _ := NewCommand(CmdConsumeJoinToken, "", tc.at, tc.cmd)
		b, _ := c.Encode()
		r := s.Apply(uint64(i+2), b)
		if (r.Err == nil) != tc.ok {
			t.Errorf("%s: err = %v; want ok=%v", tc.name, r.Err, tc.ok)
		}
	}
}

func TestSnapshotRestore(t *testing.T) {
	s := NewStore()
	apply(t, s, 1, CmdCreateProject, "a", Project{ID: "p1", Name: "one", Enabled: true, Tags: []string{"x"}})
	apply(t, s, 2, CmdCreateUser, "b", User{ID: "u1", Name: "bob", Enabled: true, DefaultProjectID: "p1"})
	apply(t, s, 3, CmdCreateRole, "c", Role{ID: "r1", Name: "member"})
	apply(t, s, 4, CmdGrantRole, "d", Assignment{ProjectID: "p1", UserID: "u1", RoleID: "r1"})
	var buf bytes.Buffer
	if err := s.Snapshot().Dump(json.NewEncoder(&buf)); err != nil {
		t.Fatal(err)
	}
	s2 := NewStore()
	if err := s2.Restore(json.NewDecoder(&buf), 4); err != nil {
		t.Fatal(err)
	}
	sn := s2.Snapshot()
	if rs := sn.UserRoles("u1", "p1"); len(rs) != 1 || rs[0].Name != "member" {
		t.Fatalf("restored UserRoles = %v", rs)
	}
	if p, _ := sn.Project("p1"); p == nil || p.Tags[0] != "x" {
		t.Fatalf("restored project = %+v", p)
	}
	// Requests are restored too: a retry after restore is still deduplicated.
	if r := apply(t, s2, 5, CmdCreateProject, "a", Project{ID: "p1", Name: "one"}); !r.Deduped {
		t.Fatalf("retry after restore not deduplicated: %+v", r)
	}
}

func TestRevocation(t *testing.T) {
	s := NewStore()
	apply(t, s, 1, CmdRevokeToken, "", RevokeTokenCmd{AuditID: "aud", ExpiresAt: t0.Add(time.Hour)})
	apply(t, s, 2, CmdRevokeToken, "", RevokeTokenCmd{UserID: "u", ExpiresAt: t0.Add(time.Hour)})
	sn := s.Snapshot()
	if !sn.TokenRevoked("aud", "x", t0) {
		t.Error("audit id revocation not seen")
	}
	if !sn.TokenRevoked("other", "u", t0.Add(-time.Minute)) {
		t.Error("user revocation not seen for an older token")
	}
	if sn.TokenRevoked("other", "u", t0.Add(time.Minute)) {
		t.Error("user revocation hit a newer token")
	}
}

func FuzzApply(f *testing.F) {
	c, _ := NewCommand(CmdCreateProject, "r", t0, Project{ID: "p", Name: "n"})
	b, _ := c.Encode()
	f.Add(b)
	f.Add([]byte(`{"type":28,"data":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewStore()
		s.Apply(1, data) // must not panic
		s.Apply(2, data)
	})
}

// TestMembersChangedSince: the cheap test loops use to skip listing
// members says "unchanged" only when no member record was written since
// the mark, in the same database.
func TestMembersChangedSince(t *testing.T) {
	s := NewStore()
	if r := apply(t, s, 1, CmdRegisterMember, "r1", Member{ID: "m1", Name: "one"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	a := s.Snapshot()
	if a.MembersChangedSince(a.MembersMark()) {
		t.Fatal("a view changed since its own mark")
	}
	if !a.MembersChangedSince(MembersMark{}) {
		t.Fatal("no mark: want changed")
	}
	ma := a.MembersMark()
	if r := apply(t, s, 2, CmdCreateProject, "r2", Project{ID: "p1", Name: "demo"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	b := s.Snapshot()
	if b.MembersChangedSince(ma) {
		t.Fatal("a project create reported as a member change")
	}
	mb := b.MembersMark()
	// A failed command writes nothing.
	if r := apply(t, s, 3, CmdRegisterMember, "r3", Member{ID: "", Name: "nameless"}); r.Err == nil {
		t.Fatal("a member without an id was registered")
	}
	if s.Snapshot().MembersChangedSince(mb) {
		t.Fatal("a refused registration reported as a member change")
	}
	// The same record written again (a re-registration) counts.
	if r := apply(t, s, 4, CmdRegisterMember, "r4", Member{ID: "m1", Name: "one", Version: "0.2.0"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	c := s.Snapshot()
	if !c.MembersChangedSince(mb) || !c.MembersChangedSince(ma) {
		t.Fatal("a member's new version not reported as a change")
	}
	mc := c.MembersMark()
	if c.MembersChangedSince(mc) {
		t.Fatal("the newest view changed since its own mark")
	}
	// A view inside Apply has no mark that matches.
	if (&Txn{txn: s.db.Txn(false)}).read().MembersMark() != (MembersMark{}) {
		t.Fatal("a view inside Apply gave a mark")
	}
	// A restore swaps the database: always a change.
	var buf bytes.Buffer
	if err := c.Dump(json.NewEncoder(&buf)); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(json.NewDecoder(&buf), 10); err != nil {
		t.Fatal(err)
	}
	if !s.Snapshot().MembersChangedSince(mc) {
		t.Fatal("a view after a restore reported unchanged")
	}
}
