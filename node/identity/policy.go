package identity

import (
	"slices"
	"strconv"
)

// Role names Authorize knows.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleReader = "reader"
)

// Credential is the authenticated caller: a verified token reduced to what
// authorization needs. An empty UserID means unauthenticated.
type Credential struct {
	UserID, ProjectID string
	Roles             []string // role names on ProjectID
	// AdminProjectID is the admin project: the admin role held there is
	// cloud-wide; held on any other project it rules that project only.
	AdminProjectID string
}

// IsAdmin reports whether c is a cloud administrator: the admin role on
// the admin project.
func (c Credential) IsAdmin() bool {
	return c.UserID != "" && c.ProjectID != "" && c.ProjectID == c.AdminProjectID && slices.Contains(c.Roles, RoleAdmin)
}

// Access is what a request does to an object. The zero value is invalid.
type Access int

const (
	Read  Access = iota + 1
	Write        // create, update, delete
	Admin        // admin-only operation
)

func (a Access) String() string {
	if a >= Read && a <= Admin {
		return [...]string{"Read", "Write", "Admin"}[a-1]
	}
	return "Access(" + strconv.Itoa(int(a)) + ")"
}

// Decision is Authorize's answer. The zero value is invalid; treat anything
// but Allow as a denial.
type Decision int

const (
	Allow     Decision = iota + 1
	NotFound           // deny and hide that the object exists
	Forbidden          // deny openly
)

func (d Decision) String() string {
	if d >= Allow && d <= Forbidden {
		return [...]string{"Allow", "NotFound", "Forbidden"}[d-1]
	}
	return "Decision(" + strconv.Itoa(int(d)) + ")"
}

// Authorize decides whether c may perform access on an object owned by
// ownerProject ("" for global objects such as flavors and hosts); public
// objects are readable by everyone. Rules, first match wins:
//   - unauthenticated or unknown access: Forbidden
//   - admin role on the admin project: Allow everything in every project
//   - Admin access: Forbidden
//   - admin role on another project: as member of that project
//   - global object: Read Allow, Write Forbidden
//   - public object: Read Allow
//   - another project's object: NotFound, so existence does not leak;
//     Forbidden for Write on a public one, whose existence is no secret
//   - own project: "member" Read/Write; "reader" Read (Write Forbidden);
//     no known role: Forbidden
//
// The caller must still answer NotFound for objects that do not exist.
func Authorize(c Credential, access Access, ownerProject string, public bool) Decision {
	switch {
	case c.UserID == "" || access < Read || access > Admin:
		return Forbidden
	case c.IsAdmin():
		return Allow
	case access == Admin:
		return Forbidden
	case ownerProject == "":
		return allowIf(access == Read)
	case public && access == Read:
		return Allow
	case ownerProject != c.ProjectID:
		if public {
			return Forbidden
		}
		return NotFound
	case slices.Contains(c.Roles, RoleMember), slices.Contains(c.Roles, RoleAdmin):
		return Allow
	case slices.Contains(c.Roles, RoleReader):
		return allowIf(access == Read)
	}
	return Forbidden
}

func allowIf(ok bool) Decision {
	if ok {
		return Allow
	}
	return Forbidden
}
