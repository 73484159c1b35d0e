package identity_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/identity"
	"github.com/peerstack/peerstack/rest/resttest"
)

// fakeBackend is identity.Backend for tests: tokens are JSON claims with an
// HMAC under the state's active signing key, passwords bcrypt at cost 4.
// Authenticate re-checks what the node's does (expiry, revocation, user,
// project and application credential still valid).
type fakeBackend struct {
	*resttest.Backend
	checks atomic.Int64 // password and secret checks run
}

var errFakeToken = errors.New("fake: invalid token")

func (f *fakeBackend) activeKey() (*statedb.SigningKey, bool) {
	var active *statedb.SigningKey
	for _, k := range f.State().SigningKeys() {
		if k.RetireAt.IsZero() && (active == nil || k.CreatedAt.After(active.CreatedAt)) {
			active = k
		}
	}
	return active, active != nil
}

func fakeMAC(secret []byte, msg string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (f *fakeBackend) IssueToken(c identity.Claims) (string, error) {
	k, ok := f.activeKey()
	if !ok {
		return "", errors.New("fake: no signing key")
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	msg := "fk." + k.ID + "." + base64.RawURLEncoding.EncodeToString(raw)
	return msg + "." + fakeMAC(k.Secret, msg), nil
}

func (f *fakeBackend) Authenticate(_ context.Context, tok string) (*rest.Credential, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 4 || parts[0] != "fk" {
		return nil, errFakeToken
	}
	sn := f.State()
	k, ok := sn.SigningKey(parts[1])
	if !ok {
		return nil, errFakeToken
	}
	msg := strings.Join(parts[:3], ".")
	if !hmac.Equal([]byte(fakeMAC(k.Secret, msg)), []byte(parts[3])) {
		return nil, errFakeToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errFakeToken
	}
	var c identity.Claims
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, errFakeToken
	}
	if !f.Now().Before(c.ExpiresAt) || sn.TokenRevoked(c.AuditID, c.UserID, c.IssuedAt) {
		return nil, errFakeToken
	}
	u, ok := sn.User(c.UserID)
	if !ok || !u.Enabled {
		return nil, errFakeToken
	}
	if c.ProjectID != "" {
		if p, ok := sn.Project(c.ProjectID); !ok || !p.Enabled {
			return nil, errFakeToken
		}
	}
	if c.AppCredID != "" {
		if _, ok := sn.AppCredential(c.AppCredID); !ok {
			return nil, errFakeToken
		}
	}
	cred := &rest.Credential{UserID: c.UserID, UserName: u.Name, ProjectID: c.ProjectID, AuditID: c.AuditID,
		Token: tok, IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, Methods: c.Methods, AppCredID: c.AppCredID}
	for _, r := range c.Roles {
		cred.Roles = append(cred.Roles, r.Name)
		cred.RoleIDs = append(cred.RoleIDs, r.ID)
	}
	return cred, nil
}

func (f *fakeBackend) HashPassword(pw string) (string, error) { return resttest.HashPassword(pw) }
func (f *fakeBackend) CheckPassword(_ context.Context, hash, pw string) (bool, error) {
	f.checks.Add(1)
	return resttest.CheckPassword(hash, pw), nil
}

var _ identity.Backend = (*fakeBackend)(nil)

const adminPassword = "secret"

// env is one identity server over a fresh bootstrapped state.
type env struct {
	t    *testing.T
	b    *fakeBackend
	seed *resttest.Seed
	srv  *httptest.Server
	anon *resttest.Client
}

func newEnv(t *testing.T, st statedb.Settings) *env {
	t.Helper()
	b := &fakeBackend{Backend: resttest.New()}
	seed := b.Bootstrap(t, st, adminPassword)
	srv := resttest.NewServer(t, b, identity.Service(b))
	return &env{t: t, b: b, seed: seed, srv: srv, anon: &resttest.Client{T: t, Base: srv.URL}}
}

// passwordAuth is a password auth body by user name in the Default domain,
// scoped to a project by name ("" for no scope).
func passwordAuth(user, pw, project string) map[string]any {
	a := map[string]any{"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{
		"user": map[string]any{"name": user, "domain": map[string]any{"name": "Default"}, "password": pw}}}}
	if project != "" {
		a["scope"] = map[string]any{"project": map[string]any{"name": project, "domain": map[string]any{"name": "Default"}}}
	}
	return map[string]any{"auth": a}
}

// login issues a token through the API and fails the test unless it is 201.
func (e *env) login(user, pw, project string) (string, map[string]any) {
	e.t.Helper()
	r := e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth(user, pw, project))
	if r.Status != http.StatusCreated {
		e.t.Fatalf("login %s/%s = %d %s; want 201", user, project, r.Status, r.Body)
	}
	tok := r.Header.Get("X-Subject-Token")
	if tok == "" {
		e.t.Fatalf("login %s: no X-Subject-Token", user)
	}
	return tok, r.JSON(e.t)["token"].(map[string]any)
}

// admin returns a client with an admin token scoped to the admin project.
func (e *env) admin() *resttest.Client {
	e.t.Helper()
	tok, _ := e.login("admin", adminPassword, "admin")
	return e.anon.With(tok)
}

// as returns a client logged in as user on project.
func (e *env) as(user, pw, project string) *resttest.Client {
	e.t.Helper()
	tok, _ := e.login(user, pw, project)
	return e.anon.With(tok)
}

// keystoneError asserts a Keystone error body with the status and, when
// msg is not empty, a message containing msg.
func keystoneError(t *testing.T, r *resttest.Resp, status int, msg string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d (%s); want %d", r.Status, r.Body, status)
	}
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Title   string `json:"title"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.Decode(t, &body)
	if body.Error.Code != status || body.Error.Title != http.StatusText(status) {
		t.Errorf("error body = %s; want code %d title %q", r.Body, status, http.StatusText(status))
	}
	if msg != "" && !strings.Contains(body.Error.Message, msg) {
		t.Errorf("error message = %q; want it to contain %q", body.Error.Message, msg)
	}
}

// writesSince lists the command types applied after index.
func (e *env) writesSince(index uint64) []statedb.CmdType {
	var out []statedb.CmdType
	for _, a := range e.b.AppliedSince(index) {
		out = append(out, a.Type)
	}
	return out
}

// get walks a decoded JSON value along keys and array indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		default:
			panic(fmt.Sprintf("bad path element %v", p))
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

// parseKeystoneTime checks the token time format: RFC 3339, microseconds, Z.
func parseKeystoneTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("time %q does not parse as RFC 3339: %v", s, err)
	}
	if !strings.HasSuffix(s, "Z") || len(s) != len("2006-01-02T15:04:05.000000Z") {
		t.Errorf("time %q; want the form 2006-01-02T15:04:05.000000Z", s)
	}
	return ts
}

// checkPW compares a password with a hash outside any request.
func (e *env) checkPW(hash, pw string) bool { return resttest.CheckPassword(hash, pw) }
