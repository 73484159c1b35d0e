package identity

import (
	"fmt"
	"testing"
)

func TestAuthorize(t *testing.T) {
	const (
		A = Allow
		N = NotFound
		F = Forbidden
	)
	cred := func(project string, roles ...string) Credential {
		return Credential{UserID: "u1", ProjectID: project, Roles: roles, AdminProjectID: "p1"}
	}
	type where struct {
		owner  string
		public bool
	}
	var (
		own       = where{"p1", false}
		ownPub    = where{"p1", true}
		foreign   = where{"p2", false}
		foreignPb = where{"p2", true}
		global    = where{"", false}
		globalPub = where{"", true}
	)
	all := func(d Decision) map[where][3]Decision {
		return map[where][3]Decision{own: {d, d, d}, ownPub: {d, d, d}, foreign: {d, d, d},
			foreignPb: {d, d, d}, global: {d, d, d}, globalPub: {d, d, d}}
	}
	// want[where] holds the decisions for Read, Write, Admin.
	projectRole := func(ownRW [3]Decision) map[where][3]Decision {
		return map[where][3]Decision{
			own:       ownRW,
			ownPub:    {A, ownRW[1], F},
			foreign:   {N, N, F},
			foreignPb: {A, F, F},
			global:    {A, F, F},
			globalPub: {A, F, F},
		}
	}
	for _, tc := range []struct {
		name string
		c    Credential
		want map[where][3]Decision
	}{
		{"admin", cred("p1", "admin"), all(A)},
		{"admin of the admin project", cred("p1", "reader", "admin"), all(A)},
		// The admin role on another project rules that project only.
		{"admin of another project", cred("p2", "admin"), map[where][3]Decision{
			own: {N, N, F}, ownPub: {A, F, F}, foreign: {A, A, F},
			foreignPb: {A, A, F}, global: {A, F, F}, globalPub: {A, F, F}}},
		{"admin unscoped", cred("", "admin"), map[where][3]Decision{
			own: {N, N, F}, ownPub: {A, F, F}, foreign: {N, N, F},
			foreignPb: {A, F, F}, global: {A, F, F}, globalPub: {A, F, F}}},
		{"member", cred("p1", "member"), projectRole([3]Decision{A, A, F})},
		{"reader", cred("p1", "reader"), projectRole([3]Decision{A, F, F})},
		{"reader+member", cred("p1", "reader", "member"), projectRole([3]Decision{A, A, F})},
		{"no roles", cred("p1"), projectRole([3]Decision{F, F, F})},
		{"unknown role", cred("p1", "heat_stack_owner", "Admin"), projectRole([3]Decision{F, F, F})},
		{"unscoped", cred("", "member"), map[where][3]Decision{
			own: {N, N, F}, ownPub: {A, F, F}, foreign: {N, N, F},
			foreignPb: {A, F, F}, global: {A, F, F}, globalPub: {A, F, F}}},
		{"unauthenticated", Credential{ProjectID: "p1", Roles: []string{"admin", "member"}}, all(F)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.want) != 6 {
				t.Fatalf("table row covers %d places; want 6", len(tc.want))
			}
			for w, wants := range tc.want {
				for i, access := range []Access{Read, Write, Admin} {
					args := fmt.Sprintf("%+v, %v, %q, public=%v", tc.c, access, w.owner, w.public)
					if got := Authorize(tc.c, access, w.owner, w.public); got != wants[i] {
						t.Errorf("Authorize(%s) = %v; want %v", args, got, wants[i])
					}
				}
			}
		})
	}
}

func TestAuthorizeInvalidAccess(t *testing.T) {
	admin := Credential{UserID: "u1", ProjectID: "p1", Roles: []string{RoleAdmin}, AdminProjectID: "p1"}
	for _, a := range []Access{0, -1, Admin + 1} {
		if got := Authorize(admin, a, "p1", false); got != Forbidden {
			t.Errorf("Authorize(admin, %v) = %v; want %v", a, got, Forbidden)
		}
	}
}

func TestIsAdmin(t *testing.T) {
	for _, tc := range []struct {
		c    Credential
		want bool
	}{
		{Credential{UserID: "u", ProjectID: "a", AdminProjectID: "a", Roles: []string{"admin"}}, true},
		{Credential{UserID: "u", ProjectID: "a", AdminProjectID: "a", Roles: []string{"member", "admin"}}, true},
		{Credential{UserID: "u", ProjectID: "p", AdminProjectID: "a", Roles: []string{"member", "admin"}}, false},
		{Credential{UserID: "u", Roles: []string{"admin"}}, false},
		{Credential{UserID: "u", Roles: []string{"Admin", "administrator", "member"}}, false},
		{Credential{UserID: "u"}, false},
		{Credential{Roles: []string{"admin"}}, false},
	} {
		if got := tc.c.IsAdmin(); got != tc.want {
			t.Errorf("%+v.IsAdmin() = %v; want %v", tc.c, got, tc.want)
		}
	}
}

func TestEnumStrings(t *testing.T) {
	for _, tc := range []struct {
		v    fmt.Stringer
		want string
	}{
		{Read, "Read"}, {Write, "Write"}, {Admin, "Admin"}, {Access(0), "Access(0)"},
		{Allow, "Allow"}, {NotFound, "NotFound"}, {Forbidden, "Forbidden"}, {Decision(0), "Decision(0)"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("String() = %q; want %q", got, tc.want)
		}
	}
}
