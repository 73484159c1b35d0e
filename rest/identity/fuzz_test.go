package identity_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/identity"
	"github.com/peerstack/peerstack/rest/resttest"
)

// FuzzAuthRequest throws arbitrary bodies at POST /v3/auth/tokens of a
// bootstrapped server: it must never panic (the server turns panics into
// 500s) and never answer 5xx. Seeds cover every method and scope shape.
func FuzzAuthRequest(f *testing.F) {
	seeds := []string{
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"secret"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`,
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"bad"}}}}}`,
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"id":"x","password":"y"}}},"scope":"unscoped"}}`,
		`{"auth":{"identity":{"methods":["token"],"token":{"id":"fk.k1.e30.x"}},"scope":{"project":{"id":"p"}}}}`,
		`{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"id":"a","secret":"s"}}}}`,
		`{"auth":{"identity":{"methods":["application_credential"],"application_credential":{"name":"a","secret":"s","user":{"name":"admin","domain":{"name":"Default"}}}}}}`,
		`{"auth":{"identity":{"methods":["password","totp"],"totp":{}}},"scope":{"system":{"all":true}}}`,
		`{"auth":{"identity":{"methods":[null,1]}}}`,
		`{"auth":{"identity":{"methods":["password"],"password":{"user":null}}},"scope":{"project":null,"domain":{}}}`,
		`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"` +
			strings.Repeat("x", 100) + `"}}}}}`,
		`null`, `[]`, `"auth"`, `{"auth":[]}`, `{"auth":{"identity":[]}}`, `{`, ``,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	b := &fakeBackend{Backend: resttest.New()}
	b.Bootstrap(f, statedb.Settings{LockoutAttempts: 3}, adminPassword)
	srv := rest.NewServer(b, resttest.Logger(nil))
	srv.Mount(identity.Service(b))
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/identity/v3/auth/tokens", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST %q = %d %s", body, rec.Code, rec.Body)
		}
		if rec.Code != http.StatusCreated && rec.Header().Get("X-Subject-Token") != "" {
			t.Fatalf("POST %q = %d with a token", body, rec.Code)
		}
	})
}
