// Package identity serves the Keystone v3 identity API under /identity:
// version discovery, token issue/validate/revoke (password, application
// credential and token methods), projects, users, roles and their
// assignments, the single Default domain and application credentials, in
// the shapes the openstack client 6.0 and gophercloud v2 expect.
//
// It owns decoding, policy checks and encoding only. It must not sign or
// verify tokens, hash passwords or keep state of its own beyond the
// in-memory throttle of failed logins of this host: the Backend does
// those, and every write is a statedb command proposed through
// rest.Propose, with IDs, hashes and timestamps computed here so apply
// stays deterministic.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Backend is what the identity API needs beyond rest.Backend; node
// implements it.
type Backend interface {
	rest.Backend
	rest.Authenticator                   // verifies tokens locally (X-Subject-Token)
	IssueToken(c Claims) (string, error) // signs with the active key from the state
	HashPassword(pw string) (string, error)
	// CheckPassword compares a password with a hash. It may refuse to
	// run (an error) when too many checks are queued.
	CheckPassword(ctx context.Context, hash, pw string) (bool, error)
}

// Claims is what an issued token asserts. Times are UTC, whole microseconds.
type Claims struct {
	UserID, ProjectID string // ProjectID "" = unscoped
	Roles             []RoleRef
	Methods           []string
	AppCredID         string
	IssuedAt          time.Time
	ExpiresAt         time.Time
	AuditID           string
}

// RoleRef is a role carried in a token.
type RoleRef struct{ ID, Name string }

// Token methods, as Keystone names them.
const (
	methodPassword = "password"
	methodToken    = "token"
	methodAppCred  = "application_credential"
)

// defaultLifetime applies when Settings.TokenLifetime is zero.
const defaultLifetime = time.Hour

// timeFormat is Keystone's token time format (RFC 3339, microseconds, Z).
const timeFormat = "2006-01-02T15:04:05.000000Z"

// timeFormatNoZ is Keystone's format for application credential expiry,
// which gophercloud parses without a zone.
const timeFormatNoZ = "2006-01-02T15:04:05.000000"

// Service returns the identity routes under /identity.
func Service(b Backend) rest.Service {
	s := &service{b: b, thr: rest.NewThrottle(throttleForget)}
	const (
		get, post, put, patch, del, head = http.MethodGet, http.MethodPost, http.MethodPut,
			http.MethodPatch, http.MethodDelete, http.MethodHead
		public, token = rest.Public, rest.Token
	)
	grant := "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
	appCreds := "/v3/users/{user_id}/application_credentials"
	return rest.Service{
		Prefix: "/identity",
		Errors: rest.KeystoneErrors,
		Routes: []rest.Route{
			{Method: get, Path: "", Auth: public, Handler: s.versions},
			{Method: get, Path: "/v3", Auth: public, Handler: s.version},

			{Method: post, Path: "/v3/auth/tokens", Auth: public, Handler: s.issueToken},
			{Method: get, Path: "/v3/auth/tokens", Auth: token, Handler: s.validateToken},
			{Method: head, Path: "/v3/auth/tokens", Auth: token, Handler: s.checkToken},
			{Method: del, Path: "/v3/auth/tokens", Auth: token, Handler: s.revokeToken},
			{Method: get, Path: "/v3/auth/catalog", Auth: token, Handler: s.authCatalog},
			{Method: get, Path: "/v3/services", Auth: token, Handler: s.listCatalogServices},
			{Method: get, Path: "/v3/services/{service_id}", Auth: token, Handler: s.getCatalogService},
			{Method: get, Path: "/v3/endpoints", Auth: token, Handler: s.listEndpoints},
			{Method: get, Path: "/v3/endpoints/{endpoint_id}", Auth: token, Handler: s.getEndpoint},
			{Method: get, Path: "/v3/regions", Auth: token, Handler: s.listRegions},
			{Method: get, Path: "/v3/regions/{region_id}", Auth: token, Handler: s.getRegion},
			{Method: get, Path: "/v3/auth/projects", Auth: token, Handler: s.authProjects},
			{Method: get, Path: "/v3/auth/domains", Auth: token, Handler: s.authDomains},

			{Method: get, Path: "/v3/projects", Auth: token, Handler: s.listProjects},
			{Method: post, Path: "/v3/projects", Auth: token, Handler: s.createProject},
			{Method: get, Path: "/v3/projects/{project_id}", Auth: token, Handler: s.getProject},
			{Method: patch, Path: "/v3/projects/{project_id}", Auth: token, Handler: s.updateProject},
			{Method: del, Path: "/v3/projects/{project_id}", Auth: token, Handler: s.deleteProject},
			{Method: get, Path: "/v3/projects/{project_id}/users/{user_id}/roles", Auth: token, Handler: s.listGrants},
			{Method: put, Path: grant, Auth: token, Handler: s.grant},
			{Method: head, Path: grant, Auth: token, Handler: s.checkGrant},
			{Method: del, Path: grant, Auth: token, Handler: s.revokeGrant},

			{Method: get, Path: "/v3/users", Auth: token, Handler: s.listUsers},
			{Method: post, Path: "/v3/users", Auth: token, Handler: s.createUser},
			{Method: get, Path: "/v3/users/{user_id}", Auth: token, Handler: s.getUser},
			{Method: patch, Path: "/v3/users/{user_id}", Auth: token, Handler: s.updateUser},
			{Method: del, Path: "/v3/users/{user_id}", Auth: token, Handler: s.deleteUser},
			{Method: post, Path: "/v3/users/{user_id}/password", Auth: token, Handler: s.changePassword},
			{Method: get, Path: "/v3/users/{user_id}/projects", Auth: token, Handler: s.userProjects},

			{Method: get, Path: appCreds, Auth: token, Handler: s.listAppCreds},
			{Method: post, Path: appCreds, Auth: token, Handler: s.createAppCred},
			{Method: get, Path: appCreds + "/{cred_id}", Auth: token, Handler: s.getAppCred},
			{Method: del, Path: appCreds + "/{cred_id}", Auth: token, Handler: s.deleteAppCred},

			{Method: get, Path: "/v3/roles", Auth: token, Handler: s.listRoles},
			{Method: post, Path: "/v3/roles", Auth: token, Handler: s.createRole},
			{Method: get, Path: "/v3/roles/{role_id}", Auth: token, Handler: s.getRole},
			{Method: patch, Path: "/v3/roles/{role_id}", Auth: token, Handler: s.updateRole},
			{Method: del, Path: "/v3/roles/{role_id}", Auth: token, Handler: s.deleteRole},
			{Method: get, Path: "/v3/role_assignments", Auth: token, Handler: s.listAssignments},

			{Method: get, Path: "/v3/domains", Auth: token, Handler: s.listDomains},
			{Method: get, Path: "/v3/domains/{domain_id}", Auth: token, Handler: s.getDomain},
		},
	}
}

type service struct {
	b   Backend
	thr *rest.Throttle // failed logins per source, user and credential

	dummyOnce sync.Once
	dummyHash string // compared against for unknown users, to even out timing
}

// newID returns a Keystone-style id: a UUID without dashes.
func (s *service) newID() string { return strings.ReplaceAll(s.b.NewID(), "-", "") }

// now is the backend clock in UTC at microsecond precision, the precision
// tokens carry.
func (s *service) now() time.Time { return s.b.Now().UTC().Truncate(time.Microsecond) }

// settings returns the cluster settings with defaults applied.
func settings(sn *statedb.Snapshot) statedb.Settings {
	var st statedb.Settings
	if cfg, ok := sn.Cluster(); ok {
		st = cfg.Settings
	}
	if st.TokenLifetime <= 0 {
		st.TokenLifetime = defaultLifetime
	}
	return st
}

// base is the URL clients reach us at: the configured public URL, else
// this host's own (never the request's Host header).
func base(c *rest.Ctx, sn *statedb.Snapshot) string {
	if u := settings(sn).PublicURL; u != "" {
		return strings.TrimRight(u, "/")
	}
	return rest.BaseURL(c.R)
}

// v3URL is the absolute URL of a v3 resource path such as "projects/<id>".
func v3URL(c *rest.Ctx, sn *statedb.Snapshot, path string) string {
	return base(c, sn) + "/identity/v3/" + path
}

// selfLink is {"self": url}.
type selfLink struct {
	Self string `json:"self"`
}

// listLinks is the links object of a collection; there is never a next
// page.
type listLinks struct {
	Self     string  `json:"self"`
	Previous *string `json:"previous"`
	Next     *string `json:"next"`
}

func collectionLinks(c *rest.Ctx, sn *statedb.Snapshot) listLinks {
	u := base(c, sn) + c.R.URL.Path
	if q := c.R.URL.RawQuery; q != "" {
		u += "?" + q
	}
	return listLinks{Self: u}
}

// emptyOptions renders Keystone's "options": {}.
func emptyOptions() map[string]any { return map[string]any{} }

// isAdmin reports whether the policy grants the caller identity
// administration (the admin role).
func (s *service) isAdmin(c *rest.Ctx) bool {
	return c.Cred != nil && s.b.Authorize(c.Cred, rest.Admin, "", false) == rest.Allow
}

// requireAdmin allows identity administration only.
func (s *service) requireAdmin(c *rest.Ctx, what string) error {
	return rest.Check(s.b, c, rest.Admin, "", false, what)
}

// selfOrAdmin allows the user userID acting on itself (any authenticated
// caller may read global identity data) or an administrator.
func (s *service) selfOrAdmin(c *rest.Ctx, userID, what string) error {
	if c.Cred != nil && c.Cred.UserID == userID {
		return rest.Check(s.b, c, rest.Read, "", false, what)
	}
	return s.requireAdmin(c, what)
}

// keystoneForms are the boolean attributes of each body. Keystone's
// schemas take JSON booleans only ("true" is refused), so these are
// checked, not converted.
var keystoneForms = map[string]rest.Spec{
	"user":                   {"enabled": rest.JSONBool},
	"project":                {"enabled": rest.JSONBool, "is_domain": rest.JSONBool},
	"application_credential": {"unrestricted": rest.JSONBool},
}

// decodeBody decodes a body of the form {"<key>": {...}} into v. A missing
// key or wrong types are 400s in Keystone's wording.
func decodeBody(c *rest.Ctx, key string, v any) error {
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		return err
	}
	raw, ok := env[key]
	if !ok || string(raw) == "null" {
		return expecting(key, "request body")
	}
	raw, err := rest.Normalize(raw, keystoneForms[key])
	if err != nil {
		var fe *rest.FormError
		if errors.As(err, &fe) {
			return rest.BadRequest("Invalid input for field '%s': %s", fe.Field, fe.Reason)
		}
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return invalidInput(key, err)
	}
	return nil
}

const clientError = " The server could not comply with the request since it is either malformed or otherwise incorrect. The client is assumed to be in error."

// expecting is Keystone's ValidationError for a missing attribute.
func expecting(attr, target string) error {
	return rest.BadRequest("Expecting to find %s in %s.%s", attr, target, clientError)
}

// invalidInput is a 400 for a body that has the right keys but wrong types.
func invalidInput(field string, err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "json: "); i >= 0 {
		msg = msg[i+len("json: "):]
	}
	return rest.BadRequest("Invalid input for field '%s': %s", field, msg)
}

// notFound is Keystone's "Could not find <kind>: <id>." 404.
func notFound(kind, id string) error {
	return rest.NotFoundf("Could not find %s: %s.", kind, id)
}

// queryBool parses a boolean query filter; present reports whether it was
// given. A bare "?flag" counts as true.
func queryBool(c *rest.Ctx, name string) (val, present bool, err error) {
	q := c.R.URL.Query()
	if !q.Has(name) {
		return false, false, nil
	}
	switch strings.ToLower(q.Get(name)) {
	case "", "1", "true", "yes", "on", "y", "t":
		return true, true, nil
	case "0", "false", "no", "off", "n", "f":
		return false, true, nil
	}
	return false, true, rest.BadRequest("Invalid value for query parameter %s: expected a boolean.", name)
}

// noContent is a 204 with an empty body.
func noContent() *rest.Response { return &rest.Response{Status: http.StatusNoContent} }

// created is a 201 with a JSON body.
func created(body any) *rest.Response { return &rest.Response{Status: http.StatusCreated, Body: body} }

// revokeUsers revokes every token of the given users issued until now (a
// role they held was removed), valid for one token lifetime.
func (s *service) revokeUsers(c *rest.Ctx, sn *statedb.Snapshot, userIDs ...string) error {
	until := s.b.Now().Add(settings(sn).TokenLifetime)
	for _, id := range userIDs {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRevokeToken,
			statedb.RevokeTokenCmd{UserID: id, ExpiresAt: until}); err != nil {
			return err
		}
	}
	return nil
}
