package identity_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/identity"
	"github.com/peerstack/peerstack/rest/resttest"
)

// leaderless makes Apply wait for its context, as a host cut off from the
// Raft majority does, while block is set.
type leaderless struct {
	*fakeBackend
	block atomic.Bool
}

func (b *leaderless) Apply(ctx context.Context, cmd *statedb.Command) (uint64, error) {
	if b.block.Load() {
		<-ctx.Done()
		return 0, fmt.Errorf("%w: %v", rest.ErrNoLeader, ctx.Err())
	}
	return b.fakeBackend.Apply(ctx, cmd)
}

// proxyEnv is an identity server that believes X-Forwarded-For from
// loopback, so a test can speak from many source addresses.
func proxyEnv(t *testing.T, st statedb.Settings, opts rest.ServerOptions) (*env, *leaderless) {
	t.Helper()
	b := &leaderless{fakeBackend: &fakeBackend{Backend: resttest.New()}}
	seed := b.Bootstrap(t, st, adminPassword)
	opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	srv := resttest.NewServerOpts(t, opts, b, identity.Service(b))
	return &env{t: t, b: b.fakeBackend, seed: seed, srv: srv, anon: &resttest.Client{T: t, Base: srv.URL}}, b
}

// loginFrom posts a password login as if from source.
func (e *env) loginFrom(source, user, pw string) *resttest.Resp {
	e.t.Helper()
	var hdr []string
	if source != "" {
		hdr = []string{"X-Forwarded-For", source}
	}
	return e.anon.Do("POST", "/identity/v3/auth/tokens", passwordAuth(user, pw, ""), hdr...)
}

// storm sends n logins at once from n source addresses; pw(i) is the
// password of the i-th.
func (e *env) storm(n int, user string, pw func(int) string) []*resttest.Resp {
	out := make([]*resttest.Resp, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = e.loginFrom(fmt.Sprintf("198.51.100.%d", i+1), user, pw(i))
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// TestParallelGuessesCapped: 60 parallel wrong logins from 60 addresses
// run at most the lockout threshold of password checks (with the right
// password among them, at most one threshold on each side of its reset),
// and after them the right password is refused.
func TestParallelGuessesCapped(t *testing.T) {
	const threshold = 6
	e, _ := proxyEnv(t, statedb.Settings{LockoutAttempts: threshold, LockoutDuration: 5 * time.Minute}, rest.ServerOptions{})
	e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	e.b.checks.Store(0)
	for _, r := range e.storm(60, "alice", func(i int) string {
		if i == 30 {
			return "pw-alice"
		}
		return fmt.Sprintf("guess-%d", i)
	}) {
		if r.Status != http.StatusUnauthorized && r.Status != http.StatusTooManyRequests && r.Status != http.StatusCreated {
			t.Errorf("storm login = %d %s", r.Status, r.Body)
		}
	}
	// The right password, if checked, resets the counter as in Keystone:
	// at most one threshold of guesses before it and one after.
	if n := e.b.checks.Load(); n > 2*threshold {
		t.Fatalf("60 parallel logins ran %d password checks; want at most %d", n, 2*threshold)
	}

	// Bob: only wrong guesses, then his right password is refused.
	_, bob := e.b.ProjectUser(t, "bobs", "bob", "pw-bob", "member")
	e.b.checks.Store(0)
	e.storm(60, "bob", func(i int) string { return fmt.Sprintf("guess-%d", i) })
	if n := e.b.checks.Load(); n > threshold {
		t.Fatalf("60 parallel wrong logins ran %d password checks; want at most %d", n, threshold)
	}
	if u, _ := e.b.State().User(bob.ID); u.FailedLogins != threshold {
		t.Fatalf("bob's failed logins = %d; want %d", u.FailedLogins, threshold)
	}
	// Refused: locked in the state, or first by this host's back-off.
	r := e.loginFrom("192.0.2.200", "bob", "pw-bob")
	if r.Status != http.StatusUnauthorized && r.Status != http.StatusTooManyRequests {
		t.Fatalf("right password while locked = %d %s; want 401 or 429", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), bob.ID) {
		t.Errorf("the lockout message names the user: %s", r.Body)
	}
}

// TestStrangersCannotLockOutAdmin: wrong admin passwords from one address
// lock that address out, not the administrator elsewhere; nothing is
// counted in the replicated state.
func TestStrangersCannotLockOutAdmin(t *testing.T) {
	e, _ := proxyEnv(t, statedb.Settings{LockoutAttempts: 6, LockoutDuration: 5 * time.Minute}, rest.ServerOptions{})
	var last *resttest.Resp
	for range 10 {
		last = e.loginFrom("203.0.113.7", "admin", "guess")
		if last.Status != http.StatusUnauthorized {
			t.Fatalf("stranger's guess = %d %s; want 401", last.Status, last.Body)
		}
	}
	keystoneError(t, last, http.StatusUnauthorized, "The account is locked.")
	if strings.Contains(string(last.Body), e.seed.Admin.ID) {
		t.Errorf("the lockout message names the user: %s", last.Body)
	}
	if r := e.loginFrom("203.0.113.7", "admin", adminPassword); r.Status != http.StatusUnauthorized {
		t.Fatalf("right password from the locked address = %d; want 401", r.Status)
	}
	if r := e.loginFrom("192.0.2.10", "admin", adminPassword); r.Status != http.StatusCreated {
		t.Fatalf("admin from elsewhere = %d %s; want 201", r.Status, r.Body)
	}
	if u, _ := e.b.State().User(e.seed.Admin.ID); u.FailedLogins != 0 {
		t.Fatalf("admin failed logins in the state = %d; want 0", u.FailedLogins)
	}
}

// TestAppCredSecretRules: a client-chosen secret shorter than 16 characters
// is refused; wrong secrets are throttled like passwords.
func TestAppCredSecretRules(t *testing.T) {
	e, _ := proxyEnv(t, statedb.Settings{}, rest.ServerOptions{})
	_, alice := e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	c := e.as("alice", "pw-alice", "demo")
	base := "/identity/v3/users/" + alice.ID + "/application_credentials"
	for _, secret := range []string{"x", "fifteen-chars!!"} {
		keystoneError(t, c.Do("POST", base, map[string]any{"application_credential": map[string]any{"name": "s" + secret, "secret": secret}}),
			http.StatusBadRequest, "at least 16 characters")
	}
	r := c.Do("POST", base, map[string]any{"application_credential": map[string]any{"name": "ok", "secret": "sixteen-chars!!!"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("16-character secret = %d %s; want 201", r.Status, r.Body)
	}
	id := str(r.JSON(t), "application_credential", "id")
	e.b.checks.Store(0)
	throttled := false
	for i := range 30 {
		r := e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(id, "wrong-secret-guess"), "X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i+1))
		if r.Status == http.StatusTooManyRequests {
			throttled = r.Header.Get("Retry-After") != ""
			break
		}
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("wrong secret = %d %s", r.Status, r.Body)
		}
	}
	if !throttled {
		t.Fatalf("30 wrong secrets from 30 addresses were never throttled (%d checks)", e.b.checks.Load())
	}
	if r := e.anon.Do("POST", "/identity/v3/auth/tokens", appCredAuth(id, "sixteen-chars!!!")); r.Status != http.StatusTooManyRequests {
		t.Fatalf("right secret while throttled = %d; want 429", r.Status)
	}
}

// TestCatalogIgnoresHostHeader: neither a forged Host nor an untrusted
// X-Forwarded-Proto reaches the catalog or links.
func TestCatalogIgnoresHostHeader(t *testing.T) {
	e := newEnv(t, statedb.Settings{})
	body := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"` +
		adminPassword + `"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`
	req, err := http.NewRequest("POST", e.srv.URL+"/identity/v3/auth/tokens", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "evil.example"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-Proto", "gopher")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("login = %d %s", resp.StatusCode, raw)
	}
	if strings.Contains(string(raw), "evil.example") || strings.Contains(string(raw), "gopher") {
		t.Fatalf("the catalog took the request's headers: %s", raw)
	}
	if !strings.Contains(string(raw), e.srv.URL+"/") {
		t.Fatalf("the catalog does not name the host's own address %s: %s", e.srv.URL, raw)
	}
}

// TestWriteWithoutLeader: a write that no leader commits is answered 503
// with Retry-After once the server's write deadline passes.
func TestWriteWithoutLeader(t *testing.T) {
	e, b := proxyEnv(t, statedb.Settings{}, rest.ServerOptions{Limits: rest.Limits{WriteDeadline: 200 * time.Millisecond}})
	admin := e.admin()
	b.block.Store(true)
	done := make(chan *resttest.Resp, 1)
	go func() {
		done <- admin.Do("POST", "/identity/v3/projects", map[string]any{"project": map[string]any{"name": "p"}})
	}()
	select {
	case r := <-done:
		keystoneError(t, r, http.StatusServiceUnavailable, "leader")
		if r.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a write without a leader got no answer in 30s")
	}
}

// TestLoginWithoutLeader: on a host cut off from the majority, a user with
// failed logins on record still logs in with the right password; a wrong
// one is still a 401 and a locked user stays locked.
func TestLoginWithoutLeader(t *testing.T) {
	e, b := proxyEnv(t, statedb.Settings{LockoutAttempts: 3, LockoutDuration: time.Hour},
		rest.ServerOptions{Limits: rest.Limits{WriteDeadline: 200 * time.Millisecond}})
	e.b.ProjectUser(t, "demo", "alice", "pw-alice", "member")
	e.b.ProjectUser(t, "bobs", "bob", "pw-bob", "member")
	e.loginFrom("", "alice", "wrong")
	for range 3 {
		e.loginFrom("", "bob", "wrong")
	}
	b.block.Store(true)
	if r := e.loginFrom("", "alice", "pw-alice"); r.Status != http.StatusCreated {
		t.Fatalf("valid login without a leader = %d %s; want 201", r.Status, r.Body)
	}
	if r := e.loginFrom("", "alice", "wrong"); r.Status != http.StatusUnauthorized {
		t.Fatalf("wrong password without a leader = %d; want 401", r.Status)
	}
	keystoneError(t, e.loginFrom("", "bob", "pw-bob"), http.StatusUnauthorized, "locked")
}
