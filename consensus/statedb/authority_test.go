package statedb

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// TestEveryCommandHasAuthority: every command of this build says who may
// propose it; a new command without a row would be admitted from any
// member's certificate.
func TestEveryCommandHasAuthority(t *testing.T) {
	for _, s := range Commands().All() {
		by, ok := s.Proposers()
		if !ok || by == 0 {
			t.Errorf("command %s has no row in authorities (authority.go): say who may propose it", s)
		}
	}
}

func callerCmd(t *testing.T, typ CmdType, caller *Caller, payload any) []byte {
	t.Helper()
	c, err := NewCommand(typ, rand.Text(), t0, payload)
	if err != nil {
		t.Fatal(err)
	}
	c.Caller = caller
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckForwarded: what a leader admits from another member.
func TestCheckForwarded(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdRegisterMember, Member{ID: "h2", Name: "host2"})
	ns.must(CmdCreateProject, Project{ID: "p2", Name: "other", Enabled: true})
	for id, host := range map[string]string{"img-h1": "h1", "img-h2": "h2", "img-queued": ""} {
		img := imgFixture(id)
		img.ProjectID = "p1"
		ns.must(CmdCreateImage, img)
		if host != "" {
			ns.must(CmdStartImageUpload, ImageUploadCmd{ID: id, HostID: host})
		}
	}
	sn := ns.s.Snapshot()
	mallory := &Caller{UserID: "u2", ProjectID: "p2", Writer: true}
	admin := &Caller{UserID: "u1", ProjectID: "p1", Admin: true, Writer: true}
	grant := Assignment{ID: AssignmentID("p1", "u2", "r1"), ProjectID: "p1", UserID: "u2", RoleID: "r1"}
	cases := []struct {
		name    string
		data    []byte
		from    Origin
		allowed bool
	}{
		{"grant with a host certificate only", callerCmd(t, CmdGrantRole, nil, grant), Origin{Host: "h2"}, false},
		{"grant claiming an admin caller without its token", callerCmd(t, CmdGrantRole, admin, grant), Origin{Host: "h2"}, false},
		{"grant claiming an admin caller with another caller's token", callerCmd(t, CmdGrantRole, admin, grant), Origin{Host: "h2", Caller: mallory}, false},
		{"grant by a non-admin caller with her own token", callerCmd(t, CmdGrantRole, mallory, grant), Origin{Host: "h2", Caller: mallory}, false},
		{"grant by the admin with the admin's token", callerCmd(t, CmdGrantRole, admin, grant), Origin{Host: "h2", Caller: admin}, true},
		{"a network in another project", callerCmd(t, CmdCreateNetwork, mallory, Network{ID: "n9", ProjectID: "p1"}), Origin{Host: "h2", Caller: mallory}, false},
		{"a network in the caller's project", callerCmd(t, CmdCreateNetwork, mallory, Network{ID: "n9", ProjectID: "p2"}), Origin{Host: "h2", Caller: mallory}, true},
		{"a reader's write", callerCmd(t, CmdCreateNetwork, &Caller{UserID: "u3", ProjectID: "p2"}, Network{ID: "n9", ProjectID: "p2"}),
			Origin{Host: "h2", Caller: &Caller{UserID: "u3", ProjectID: "p2"}}, false},
		{"a report for the sending host", callerCmd(t, CmdReportPort, nil, ReportPortCmd{PortID: "x", HostID: "h2"}), Origin{Host: "h2"}, true},
		{"a report for another host", callerCmd(t, CmdReportPort, nil, ReportPortCmd{PortID: "x", HostID: "h1"}), Origin{Host: "h2"}, false},
		{"a user command with a caller the host made up", callerCmd(t, CmdReportPort, mallory, ReportPortCmd{PortID: "x", HostID: "h2"}), Origin{Host: "h2", Caller: mallory}, false},
		{"registering a new member (join)", callerCmd(t, CmdRegisterMember, nil, Member{ID: "h3"}), Origin{Host: "h2"}, true},
		{"re-registering another member", callerCmd(t, CmdRegisterMember, nil, Member{ID: "h1", APIAddr: "evil:1"}), Origin{Host: "h2"}, false},
		{"leaving itself", callerCmd(t, CmdRemoveMember, nil, RemoveMemberCmd{ID: "h2"}), Origin{Host: "h2"}, true},
		{"removing another member", callerCmd(t, CmdRemoveMember, nil, RemoveMemberCmd{ID: "h1"}), Origin{Host: "h2"}, false},
		{"a leader's command from a follower", callerCmd(t, CmdRotateSigningKeys, nil, RotateSigningKeysCmd{}), Origin{Host: "h2"}, false},
		{"settings by a host", callerCmd(t, CmdUpdateSettings, nil, UpdateSettingsCmd{}), Origin{Host: "h2"}, false},
		{"finishing the upload it holds", callerCmd(t, CmdFinishImageUpload, nil, FinishImageUploadCmd{ID: "img-h2"}), Origin{Host: "h2"}, true},
		{"finishing another host's upload", callerCmd(t, CmdFinishImageUpload, nil, FinishImageUploadCmd{ID: "img-h1"}), Origin{Host: "h2"}, false},
		{"finishing an image nobody uploads", callerCmd(t, CmdFinishImageUpload, nil, FinishImageUploadCmd{ID: "img-queued"}), Origin{Host: "h2"}, false},
		{"killing the upload it holds", callerCmd(t, CmdKillImage, nil, ImageUploadCmd{ID: "img-h2", HostID: "h2"}), Origin{Host: "h2"}, true},
		{"killing another host's upload", callerCmd(t, CmdKillImage, nil, ImageUploadCmd{ID: "img-h1", HostID: "h2"}), Origin{Host: "h2"}, false},
		{"finishing with the owner's token", callerCmd(t, CmdFinishImageUpload, admin, FinishImageUploadCmd{ID: "img-h1"}), Origin{Host: "h2", Caller: admin}, true},
	}
	for _, tc := range cases {
		err := Commands().CheckForwarded(sn, tc.data, tc.from)
		switch {
		case tc.allowed && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case !tc.allowed && err == nil:
			t.Errorf("%s: admitted", tc.name)
		case !tc.allowed && !errors.Is(err, ErrForbidden):
			t.Errorf("%s: %v; want a forbidden error", tc.name, err)
		}
	}
}

// TestApplyRechecksCaller: apply checks a user command's caller against
// the state as it is when the command applies, not as the API saw it: a
// port on a network that stopped being shared, a delete of an object that
// changed hands.
func TestApplyRechecksCaller(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateProject, Project{ID: "p2", Name: "other", Enabled: true})
	ns.must(CmdCreateNetwork, Network{ID: "n1", ProjectID: "p1", Shared: true})
	ns.must(CmdCreateNetwork, Network{ID: "n2", ProjectID: "p2"})
	bob := &Caller{UserID: "u2", ProjectID: "p2", Writer: true}
	do := func(typ CmdType, caller *Caller, payload any) error {
		t.Helper()
		ns.idx++
		return ns.s.Apply(ns.idx, callerCmd(t, typ, caller, payload)).Err
	}
	ns.must(CmdCreateNetwork, Network{ID: "n3", ProjectID: "p1", Shared: true})
	if err := do(CmdCreatePort, bob, CreatePortCmd{PortRequest: PortRequest{ID: "pt1", ProjectID: "p2", NetworkID: "n3", NoFixedIPs: true}}); err != nil {
		t.Fatalf("port on a shared network: %v", err)
	}
	// The API saw n1 shared and let bob's port through; meanwhile the
	// owner unshared it: the port fails in apply.
	f := false
	ns.must(CmdUpdateNetwork, UpdateNetworkCmd{ID: "n1", Shared: &f})
	err := do(CmdCreatePort, bob, CreatePortCmd{PortRequest: PortRequest{ID: "pt2", ProjectID: "p2", NetworkID: "n1", NoFixedIPs: true}})
	if err == nil {
		t.Fatal("port on a network no longer shared applied")
	}
	if _, ok := ns.s.Snapshot().Port("pt2"); ok {
		t.Fatal("refused port is in the state")
	}
	// Bob cannot delete another project's network, nor grant himself a role.
	if err := do(CmdDeleteNetwork, bob, DeleteCmd{ID: "n1"}); err == nil {
		t.Fatal("bob deleted p1's network")
	}
	if err := do(CmdGrantRole, bob, Assignment{ID: AssignmentID("p1", "u2", "r1"), ProjectID: "p1", UserID: "u2", RoleID: "r1"}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("bob's grant = %v; want forbidden", err)
	}
	// His own network he deletes; the admin deletes any.
	if err := do(CmdDeleteNetwork, bob, DeleteCmd{ID: "n2"}); err != nil {
		t.Fatalf("bob's own network: %v", err)
	}
	if err := do(CmdDeleteNetwork, &Caller{UserID: "u1", ProjectID: "p1", Admin: true, Writer: true}, DeleteCmd{ID: "n1"}); err != nil {
		t.Fatalf("admin's delete: %v", err)
	}
}

// TestForLogKeepsCallerOnlyWhenAllHostsCheck: during an upgrade from a
// release without the caller check the leader logs user commands without
// a caller, so old and new hosts apply them alike.
func TestForLogKeepsCallerOnlyWhenAllHostsCheck(t *testing.T) {
	ns := newNetStore(t, 1450)
	data := callerCmd(t, CmdCreateNetwork, &Caller{UserID: "u1", ProjectID: "p1", Admin: true}, Network{ID: "n", ProjectID: "p1"})
	// h1 reports no version: it may be older.
	if out := Commands().ForLog(ns.s.Snapshot(), data); string(out) == string(data) {
		t.Fatal("caller kept while a host may not check it")
	}
	ns.must(CmdRegisterMember, Member{ID: "h1", Name: "host1", Version: wave2})
	if out := Commands().ForLog(ns.s.Snapshot(), data); string(out) != string(data) {
		t.Fatalf("caller dropped with every host at %s", wave2)
	}
}

// TestRemoveHostRevokes: RemoveHost drops the member and records its id
// as revoked in the same entry; again it is a no-op, and an id never seen
// is not found.
func TestRemoveHostRevokes(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdRegisterMember, Member{ID: "h2", Name: "host2"})
	ns.must(CmdRemoveHost, RemoveHostCmd{ID: "h2", Reason: "compromised"})
	sn := ns.s.Snapshot()
	if _, ok := sn.Member("h2"); ok {
		t.Fatal("h2 is still a member")
	}
	if r, ok := sn.RevokedHost("h2"); !ok || r.Name != "host2" || r.Reason != "compromised" || !r.RevokedAt.Equal(t0) {
		t.Fatalf("revocation = %+v, %v", r, ok)
	}
	ns.must(CmdRemoveHost, RemoveHostCmd{ID: "h2"})
	if err := ns.do(CmdRemoveHost, RemoveHostCmd{ID: "h9"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown host: %v; want not found", err)
	}
	if err := ns.do(CmdRemoveHost, RemoveHostCmd{ID: "h1"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("the last member: %v; want a conflict", err)
	}
}

// TestRoleChangesRevokeTokensInOneEntry: revoking a grant, deleting a
// role and renaming one revoke the affected users' earlier tokens in the
// same entry that changes the role.
func TestRoleChangesRevokeTokensInOneEntry(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateUser, User{ID: "u2", Name: "bob", Enabled: true})
	ns.must(CmdCreateUser, User{ID: "u3", Name: "cy", Enabled: true})
	ns.must(CmdCreateRole, Role{ID: "r2", Name: "member"})
	ns.must(CmdCreateRole, Role{ID: "r3", Name: "reader"})
	ns.must(CmdGrantRole, Assignment{ID: AssignmentID("p1", "u2", "r2"), ProjectID: "p1", UserID: "u2", RoleID: "r2"})
	ns.must(CmdGrantRole, Assignment{ID: AssignmentID("p1", "u3", "r3"), ProjectID: "p1", UserID: "u3", RoleID: "r3"})
	issued := t0.Add(-time.Minute)
	until := t0.Add(time.Hour)

	before := ns.s.AppliedIndex()
	ns.must(CmdRevokeRoleTokens, RevokeRoleCmd{Assignment: Assignment{ProjectID: "p1", UserID: "u2", RoleID: "r2"}, TokensExpireAt: until})
	sn := ns.s.Snapshot()
	if ns.s.AppliedIndex() != before+1 || !sn.TokenRevoked("a", "u2", issued) || len(sn.Assignments()) != 2 {
		t.Fatalf("after revoke: index %d->%d, bob revoked %v, %d assignments", before, ns.s.AppliedIndex(), sn.TokenRevoked("a", "u2", issued), len(sn.Assignments()))
	}
	if sn.TokenRevoked("a", "u3", issued) {
		t.Fatal("cy's tokens revoked by bob's grant")
	}
	ns.must(CmdUpdateRoleTokens, UpdateRoleCmd{Role: Role{ID: "r3", Name: "reader", Description: "same name"}, TokensExpireAt: until})
	if ns.s.Snapshot().TokenRevoked("a", "u3", issued) {
		t.Fatal("a role update without a rename revoked tokens")
	}
	ns.must(CmdUpdateRoleTokens, UpdateRoleCmd{Role: Role{ID: "r3", Name: "viewer"}, TokensExpireAt: until})
	if !ns.s.Snapshot().TokenRevoked("a", "u3", issued) {
		t.Fatal("renaming cy's role left her tokens")
	}
	ns.must(CmdGrantRole, Assignment{ID: AssignmentID("p1", "u2", "r2"), ProjectID: "p1", UserID: "u2", RoleID: "r2"})
	ns.must(CmdDeleteRoleTokens, DeleteRoleCmd{ID: "r2", TokensExpireAt: until})
	sn = ns.s.Snapshot()
	if _, ok := sn.Role("r2"); ok {
		t.Fatal("role r2 still there")
	}
	for _, a := range sn.Assignments() {
		if a.RoleID == "r2" {
			t.Fatal("a grant of the deleted role is left")
		}
	}
	if err := ns.do(CmdRevokeRoleTokens, RevokeRoleCmd{Assignment: Assignment{ProjectID: "p1", UserID: "u2", RoleID: "r2"}, TokensExpireAt: until}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking a grant that is gone: %v; want not found", err)
	}
}

// FuzzCheckForwarded: whatever bytes a member sends to the internal apply
// endpoint, the leader's origin check neither panics nor admits a user
// command without the caller's identity.
func FuzzCheckForwarded(f *testing.F) {
	sn := NewStore().Snapshot()
	f.Add([]byte(`{"type":28,"req":"r","time":"2026-01-01T00:00:00Z","data":{"project_id":"p1","user_id":"u2","role_id":"r1"}}`))
	f.Add([]byte(`{"type":136,"req":"r","caller":{"user":"u2","project":"p2","writer":true},"data":{"network_id":"n1","project_id":"p2"}}`))
	f.Add([]byte(`{"type":56,"data":{"instances":[{"instance":{"project_id":"p9"},"nics":[null]}]}}`))
	f.Add([]byte(`{"type":61,"data":{"host_id":"h1"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Commands().CheckForwarded(sn, data, Origin{Host: "h2"})
		c, spec, perr := Commands().parse(data)
		if perr != nil || err != nil {
			return
		}
		if by, _ := spec.Proposers(); c.Caller != nil || by&ByHost == 0 {
			t.Fatalf("admitted %s (caller %+v) from a host without a token", spec, c.Caller)
		}
	})
}
