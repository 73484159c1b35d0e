package identity

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// errUnauthorized is Keystone's generic 401: it never says which check
// failed.
func errUnauthorized() error {
	return rest.Unauthorized("The request you have made requires authentication.")
}

// authResult is who authenticated and what the token will carry.
type authResult struct {
	user    *statedb.User
	project *statedb.Project // nil: unscoped
	roles   []RoleRef
	methods []string
	appCred *statedb.AppCredential
	expires time.Time // caps the token's expiry when not zero
}

// issueToken serves POST /v3/auth/tokens. Nothing is written except the
// failed-login counter of a password user (login.go).
func (s *service) issueToken(c *rest.Ctx) (any, error) {
	var raw json.RawMessage
	if err := c.Decode(&raw); err != nil {
		return nil, err
	}
	req, err := decodeAuthRequest(raw)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	var res *authResult
	switch req.method {
	case methodPassword:
		res, err = s.authPassword(c, sn, req)
	case methodAppCred:
		res, err = s.authAppCred(c, sn, req)
	case methodToken:
		res, err = s.authToken(c, sn, req)
	default:
		err = errUnsupportedMethod()
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	cl := Claims{UserID: res.user.ID, Roles: res.roles, Methods: res.methods, IssuedAt: now,
		ExpiresAt: now.Add(settings(sn).TokenLifetime), AuditID: s.auditID()}
	if !res.expires.IsZero() && res.expires.Before(cl.ExpiresAt) {
		cl.ExpiresAt = res.expires.UTC().Truncate(time.Microsecond)
	}
	if res.project != nil {
		cl.ProjectID = res.project.ID
	}
	if res.appCred != nil {
		cl.AppCredID = res.appCred.ID
	}
	tok, err := s.b.IssueToken(cl)
	if err != nil {
		return nil, err
	}
	_, nocat, _ := queryBool(c, "nocatalog")
	return &rest.Response{
		Status: http.StatusCreated,
		Header: http.Header{"X-Subject-Token": {tok}},
		Body:   s.tokenBody(c, sn, cl, res.user, res.project, res.appCred, !nocat),
	}, nil
}

// authToken rescopes an existing token. The new token expires no later
// than the old one.
func (s *service) authToken(c *rest.Ctx, sn *statedb.Snapshot, req *authRequest) (*authResult, error) {
	cred, err := s.b.Authenticate(c.Context(), req.tokenID)
	if err != nil {
		return nil, errUnauthorized()
	}
	sub, err := s.checkCred(sn, cred)
	if err != nil {
		return nil, errUnauthorized()
	}
	if sub.appCred != nil {
		return nil, rest.Forbiddenf("Application credential tokens cannot be rescoped.")
	}
	p, roles, err := resolveScope(sn, sub.user, req.scope)
	if err != nil {
		return nil, err
	}
	return &authResult{user: sub.user, project: p, roles: roles,
		methods: dedupe(append([]string{methodToken}, cred.Methods...)), expires: cred.ExpiresAt}, nil
}

// findUser resolves a user reference: by id, or by name in the Default
// domain (any other domain does not exist).
func findUser(sn *statedb.Snapshot, ref *userRef) (*statedb.User, bool) {
	if ref == nil {
		return nil, false
	}
	if ref.ID != "" {
		return sn.User(ref.ID)
	}
	if !isDefaultDomain(ref.Domain) {
		return nil, false
	}
	return sn.UserByName(ref.Name)
}

func findProject(sn *statedb.Snapshot, sc scopeReq) (*statedb.Project, bool) {
	if sc.projectID != "" {
		return sn.Project(sc.projectID)
	}
	if !isDefaultDomain(sc.domain) {
		return nil, false
	}
	return sn.ProjectByName(sc.projectName)
}

// resolveScope picks the token's project and roles. Asking for a project
// the user has no role on, or that is disabled, is a 401; with no scope
// asked, the user's default project is used when it would work, as in
// Keystone, else the token is unscoped.
func resolveScope(sn *statedb.Snapshot, u *statedb.User, sc scopeReq) (*statedb.Project, []RoleRef, error) {
	switch sc.kind {
	case scopeUnscoped:
		return nil, nil, nil
	case scopeDefault:
		if u.DefaultProjectID == "" {
			return nil, nil, nil
		}
		p, ok := sn.Project(u.DefaultProjectID)
		if !ok || !p.Enabled {
			return nil, nil, nil
		}
		roles := roleRefs(sn.UserRoles(u.ID, p.ID))
		if len(roles) == 0 {
			return nil, nil, nil
		}
		return p, roles, nil
	case scopeProject:
		p, ok := findProject(sn, sc)
		if !ok || !p.Enabled {
			return nil, nil, errUnauthorized()
		}
		roles := roleRefs(sn.UserRoles(u.ID, p.ID))
		if len(roles) == 0 {
			return nil, nil, errUnauthorized()
		}
		return p, roles, nil
	}
	return nil, nil, errUnauthorized() // domain, system and trust scopes
}

func roleRefs(rs []*statedb.Role) []RoleRef {
	out := make([]RoleRef, 0, len(rs))
	for _, r := range rs {
		out = append(out, RoleRef{ID: r.ID, Name: r.Name})
	}
	return out
}

// subject is a verified token and the objects it names.
type subject struct {
	claims  Claims
	user    *statedb.User
	project *statedb.Project
	appCred *statedb.AppCredential
}

// checkCred re-checks a verified token against the state: unexpired, not
// revoked, its user enabled, its project enabled, its application
// credential present.
func (s *service) checkCred(sn *statedb.Snapshot, cred *rest.Credential) (*subject, error) {
	now := s.b.Now()
	if !now.Before(cred.ExpiresAt) || sn.TokenRevoked(cred.AuditID, cred.UserID, cred.IssuedAt) {
		return nil, errUnauthorized()
	}
	sub := &subject{claims: credClaims(sn, cred)}
	var ok bool
	if sub.user, ok = sn.User(cred.UserID); !ok || !sub.user.Enabled {
		return nil, errUnauthorized()
	}
	if cred.ProjectID != "" {
		if sub.project, ok = sn.Project(cred.ProjectID); !ok || !sub.project.Enabled {
			return nil, errUnauthorized()
		}
	}
	if cred.AppCredID != "" {
		sub.appCred, ok = sn.AppCredential(cred.AppCredID)
		if !ok || (!sub.appCred.ExpiresAt.IsZero() && !now.Before(sub.appCred.ExpiresAt)) {
			return nil, errUnauthorized()
		}
	}
	return sub, nil
}

// credClaims turns a verified credential back into claims.
func credClaims(sn *statedb.Snapshot, cred *rest.Credential) Claims {
	cl := Claims{UserID: cred.UserID, ProjectID: cred.ProjectID, Methods: cred.Methods, AppCredID: cred.AppCredID,
		IssuedAt: cred.IssuedAt, ExpiresAt: cred.ExpiresAt, AuditID: cred.AuditID}
	switch {
	case len(cred.RoleIDs) == len(cred.Roles):
		for i := range cred.RoleIDs {
			cl.Roles = append(cl.Roles, RoleRef{ID: cred.RoleIDs[i], Name: cred.Roles[i]})
		}
	case len(cred.RoleIDs) > 0:
		for _, id := range cred.RoleIDs {
			ref := RoleRef{ID: id}
			if r, ok := sn.Role(id); ok {
				ref.Name = r.Name
			}
			cl.Roles = append(cl.Roles, ref)
		}
	default:
		for _, name := range cred.Roles {
			ref := RoleRef{Name: name}
			if r, ok := sn.RoleByName(name); ok {
				ref.ID = r.ID
			}
			cl.Roles = append(cl.Roles, ref)
		}
	}
	return cl
}

// subjectToken verifies the X-Subject-Token of a GET, HEAD or DELETE and
// applies the policy: a user may act on its own tokens, an administrator on
// anyone's. A bad subject is Keystone's 404.
func (s *service) subjectToken(c *rest.Ctx, sn *statedb.Snapshot) (*subject, string, error) {
	tok := c.R.Header.Get("X-Subject-Token")
	if tok == "" {
		return nil, "", expecting("X-Subject-Token", "request headers")
	}
	bad := rest.NotFoundf("Could not find token: %s.", tok)
	cred, err := s.b.Authenticate(c.Context(), tok)
	if err != nil {
		return nil, "", bad
	}
	sub, err := s.checkCred(sn, cred)
	if err != nil {
		return nil, "", bad
	}
	if err := s.selfOrAdmin(c, sub.user.ID, "token"); err != nil {
		return nil, "", err
	}
	return sub, tok, nil
}

// validateToken serves GET /v3/auth/tokens.
func (s *service) validateToken(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	sub, tok, err := s.subjectToken(c, sn)
	if err != nil {
		return nil, err
	}
	_, nocat, _ := queryBool(c, "nocatalog")
	return &rest.Response{
		Status: http.StatusOK,
		Header: http.Header{"X-Subject-Token": {tok}},
		Body:   s.tokenBody(c, sn, sub.claims, sub.user, sub.project, sub.appCred, !nocat),
	}, nil
}

// checkToken serves HEAD /v3/auth/tokens.
func (s *service) checkToken(c *rest.Ctx) (any, error) {
	_, tok, err := s.subjectToken(c, s.b.State())
	if err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusOK, Header: http.Header{"X-Subject-Token": {tok}}}, nil
}

// revokeToken serves DELETE /v3/auth/tokens: the token is revoked on every
// host until it would have expired anyway.
func (s *service) revokeToken(c *rest.Ctx) (any, error) {
	sub, _, err := s.subjectToken(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRevokeToken,
		statedb.RevokeTokenCmd{AuditID: sub.claims.AuditID, ExpiresAt: sub.claims.ExpiresAt}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

// tokenBody renders {"token": {...}} as Keystone does.
func (s *service) tokenBody(c *rest.Ctx, sn *statedb.Snapshot, cl Claims, u *statedb.User,
	p *statedb.Project, ac *statedb.AppCredential, withCatalog bool) map[string]any {
	methods := cl.Methods
	if methods == nil {
		methods = []string{}
	}
	tok := map[string]any{
		"methods": methods,
		"user": map[string]any{
			"id": u.ID, "name": u.Name, "domain": defaultDomainRef(), "password_expires_at": nil,
		},
		"audit_ids":  []string{cl.AuditID},
		"issued_at":  cl.IssuedAt.UTC().Format(timeFormat),
		"expires_at": cl.ExpiresAt.UTC().Format(timeFormat),
		"is_domain":  false,
	}
	if p != nil {
		roles := make([]map[string]string, 0, len(cl.Roles))
		for _, r := range cl.Roles {
			roles = append(roles, map[string]string{"id": r.ID, "name": r.Name})
		}
		tok["project"] = map[string]any{"id": p.ID, "name": p.Name, "domain": defaultDomainRef()}
		tok["roles"] = roles
		if withCatalog {
			tok["catalog"] = buildCatalog(base(c, sn), p.ID)
		}
	}
	if ac != nil {
		tok["application_credential"] = map[string]any{"id": ac.ID, "name": ac.Name, "restricted": !ac.Unrestricted}
	}
	return map[string]any{"token": tok}
}

func defaultDomainRef() map[string]string {
	return map[string]string{"id": statedb.DefaultDomainID, "name": "Default"}
}

// auditID is 22 characters of base64url, like Keystone's, drawn from the
// backend's id source.
func (s *service) auditID() string {
	id := s.newID()
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != 16 {
		sum := sha256.Sum256([]byte(id))
		b = sum[:16]
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// dummy is a hash to check passwords of unknown users against, so that a
// missing user costs the same time as a wrong password.
func (s *service) dummy() string {
	s.dummyOnce.Do(func() {
		if h, err := s.b.HashPassword("peerstack-unknown-user"); err == nil {
			s.dummyHash = h
		}
	})
	return s.dummyHash
}
