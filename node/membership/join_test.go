package membership_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
)

// admission is a bootstrapped one-member state and an Admitter on it.
type admission struct {
	t    *testing.T
	st   *agenttest.State
	adm  *membership.Admitter
	now  time.Time
	caPE string
}

func newAdmission(t *testing.T) *admission {
	t.Helper()
	a := &admission{t: t, st: agenttest.NewState(), now: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
	a.st.Now = func() time.Time { return a.now }
	ca, caKey, err := membership.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	a.caPE = ca.CertPEM()
	if err := a.st.Apply(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:  statedb.ClusterConfig{ClusterID: "c1", CACertPEM: ca.CertPEM(), CAKeyPEM: caKey, GossipKey: []byte("k")},
		Member:  statedb.Member{ID: "m1", Name: "first", APIAddr: "10.0.0.1:8470", GossipAddr: "10.0.0.1:7946"},
		Project: statedb.Project{ID: "p", Name: "admin"}, Admin: statedb.User{ID: "u", Name: "admin"},
		Roles: []statedb.Role{{ID: "r", Name: "admin"}}, Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k", Secret: []byte("k")},
	}); err != nil {
		t.Fatal(err)
	}
	a.adm = &membership.Admitter{SelfID: "m1", SelfName: "first", State: a.st.Snapshot, Proposer: &agenttest.Proposer{State: a.st},
		Clock: func() time.Time { return a.now }, MaxClockSkew: 30 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return a
}

// token makes a join token and returns it parsed.
func (a *admission) token(ttl time.Duration) membership.JoinToken {
	a.t.Helper()
	text, exp, err := a.adm.CreateToken(context.Background(), ttl, "10.0.0.1:8470")
	if err != nil {
		a.t.Fatal(err)
	}
	if !exp.Equal(a.now.Add(ttl)) {
		a.t.Errorf("token expires %v; want %v", exp, a.now.Add(ttl))
	}
	tok, err := membership.ParseJoinToken(text)
	if err != nil {
		a.t.Fatal(err)
	}
	return tok
}

func (a *admission) request(tok membership.JoinToken, name string, clock time.Time) cluster.JoinRequest {
	a.t.Helper()
	_, csr, err := membership.NewKeyAndCSR("n-" + name)
	if err != nil {
		a.t.Fatal(err)
	}
	return cluster.JoinRequest{TokenID: tok.ID, Secret: tok.Secret, NodeID: "n-" + name, Name: name, APIAddr: "10.0.0.9:8470",
		RaftAddr: "10.0.0.9:8471", GossipAddr: "10.0.0.9:7946", CSR: csr, Hosts: []string{"10.0.0.9"}, Time: clock}
}

func status(err error) int {
	var he *rest.HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	var se *statedb.Error
	if errors.As(err, &se) && se.Kind == statedb.KindForbidden {
		return http.StatusForbidden
	}
	return 0
}

func TestAdmitJoin(t *testing.T) {
	a := newAdmission(t)
	ctx := context.Background()
	tok := a.token(time.Hour)
	if tok.ClusterID != "c1" || tok.Addrs[0] != "10.0.0.1:8470" {
		t.Fatalf("token = %+v; want cluster c1 and this host's address first", tok)
	}
	caCert, _ := membership.ParseCert(a.caPE)
	if tok.CAFingerprint != membership.Fingerprint(caCert) {
		t.Fatalf("token pins %s; want the cluster CA's fingerprint", tok.CAFingerprint)
	}

	wrong := tok
	wrong.Secret = "guess"
	if _, err := a.adm.Join(ctx, a.request(wrong, "h2", a.now)); status(err) != http.StatusForbidden {
		t.Fatalf("join with a wrong secret = %v; want 403", err)
	}
	if _, err := a.adm.Join(ctx, a.request(tok, "first", a.now)); status(err) != http.StatusConflict {
		t.Fatalf("join under a taken name = %v; want 409", err)
	}
	// A clock an hour ahead is refused before the token is used, so the
	// same token still works once the clock is fixed.
	_, err := a.adm.Join(ctx, a.request(tok, "h2", a.now.Add(time.Hour)))
	if status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "3600.0 s ahead of host first") {
		t.Fatalf("join with a skewed clock = %v; want 400 naming the skew", err)
	}
	// Behind by the limit plus the transit allowance is still accepted.
	resp, err := a.adm.Join(ctx, a.request(tok, "h2", a.now.Add(-30*time.Second-membership.JoinTransit)))
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	if resp.ClusterID != "c1" || resp.CACert != a.caPE || len(resp.Peers) != 1 || resp.Peers[0] != "10.0.0.1:7946" || !resp.Time.Equal(a.now) {
		t.Fatalf("join response = %+v", resp)
	}
	cert, err := membership.ParseCert(resp.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: a.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil ||
		cert.Subject.CommonName != "n-h2" {
		t.Fatalf("issued certificate for %s: %v", cert.Subject.CommonName, err)
	}
	m, ok := a.st.Snapshot().Member("n-h2")
	if !ok || m.Name != "h2" || m.RaftAddr != "10.0.0.9:8471" || !m.JoinedAt.Equal(a.now) {
		t.Fatalf("member record = %+v, %v", m, ok)
	}
	if _, err := a.adm.Join(ctx, a.request(tok, "h3", a.now)); status(err) != http.StatusForbidden {
		t.Fatalf("second join with one token = %v; want 403", err)
	}

	expiring := a.token(time.Minute)
	a.now = a.now.Add(2 * time.Minute)
	if _, err := a.adm.Join(ctx, a.request(expiring, "h4", a.now)); status(err) != http.StatusForbidden ||
		!strings.Contains(err.Error(), "expired") {
		t.Fatalf("join with an expired token = %v; want 403 expired", err)
	}
}

// TestJoinRefusesOldVersion: once the members run a version whose
// commands may be in the log, a joiner older than it is refused before its
// token is used.
func TestJoinRefusesOldVersion(t *testing.T) {
	a := newAdmission(t)
	ctx := context.Background()
	if err := a.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: "m1", Name: "first", APIAddr: "10.0.0.1:8470",
		GossipAddr: "10.0.0.1:7946", Version: "0.2.0"}); err != nil {
		t.Fatal(err)
	}
	tok := a.token(time.Hour)
	old := a.request(tok, "h2", a.now)
	old.Version = "0.1.0"
	_, err := a.adm.Join(ctx, old)
	if status(err) != http.StatusConflict || !strings.Contains(err.Error(), "0.2.0 or newer") {
		t.Fatalf("join at 0.1.0 into a 0.2.0 cluster = %v; want 409 naming the version needed", err)
	}
	if _, ok := a.st.Snapshot().Member("n-h2"); ok {
		t.Fatal("a refused joiner was recorded as a member")
	}
	upgraded := a.request(tok, "h2", a.now)
	upgraded.Version = "0.2.1"
	if _, err := a.adm.Join(ctx, upgraded); err != nil {
		t.Fatalf("join at 0.2.1 with the same token: %v", err)
	}
}

// TestJoinRetryAfterLostAnswer: a host whose join answer was lost (a
// timeout under load) repeats it with the same token and key and is
// admitted again; the used token gives nothing to anyone else, even one
// naming the same node id with another key.
func TestJoinRetryAfterLostAnswer(t *testing.T) {
	a := newAdmission(t)
	ctx := context.Background()
	tok := a.token(time.Hour)
	req := a.request(tok, "h2", a.now)
	if _, err := a.adm.Join(ctx, req); err != nil {
		t.Fatal(err)
	}
	registers := func() int {
		n := 0
		for _, p := range a.adm.Proposer.(*agenttest.Proposer).Proposals() {
			if p.Type == statedb.CmdRegisterMember {
				n++
			}
		}
		return n
	}
	before := registers()
	resp, err := a.adm.Join(ctx, req)
	if err != nil {
		t.Fatalf("the same host repeating its join = %v; want admitted", err)
	}
	// Already registered: registering it again would be a host command
	// for another member, which the leader refuses from a follower.
	if n := registers() - before; n != 0 {
		t.Fatalf("the repeated join proposed RegisterMember %d times; want none", n)
	}
	if _, err := membership.ParseCert(resp.Cert); err != nil {
		t.Fatal(err)
	}
	thief := a.request(tok, "h2", a.now) // same node id and name, a new key
	if _, err := a.adm.Join(ctx, thief); status(err) != http.StatusForbidden {
		t.Fatalf("a used token with another key = %v; want 403", err)
	}
	other := a.request(tok, "h3", a.now)
	if _, err := a.adm.Join(ctx, other); status(err) != http.StatusForbidden {
		t.Fatalf("a used token for another host = %v; want 403", err)
	}
	if n := len(a.st.Snapshot().Members()); n != 2 {
		t.Fatalf("%d members; want 2", n)
	}
	// Long after, the token has done its work: no more repeats.
	a.now = a.now.Add(statedb.JoinRetryWindow)
	if _, err := a.adm.Join(ctx, a.request(tok, "h2", a.now)); status(err) != http.StatusForbidden {
		t.Fatalf("a repeat after the retry window = %v; want 403", err)
	}
}

// lateStateProposer applies RegisterMember and then answers as the leader
// would to a second one for an existing member: this host's state lagged,
// the first attempt had committed.
type lateStateProposer struct{ *agenttest.Proposer }

func (p lateStateProposer) Propose(ctx context.Context, t statedb.CmdType, payload any) error {
	err := p.Proposer.Propose(ctx, t, payload)
	if t == statedb.CmdRegisterMember && err == nil {
		m := payload.(statedb.Member)
		return statedb.Errorf(statedb.KindForbidden, "Host m1 may not propose RegisterMember for host %q.", m.ID)
	}
	return err
}

// A join whose RegisterMember the leader refuses because the joiner is
// already registered — at the very addresses it asks for — is admitted:
// the record stands. A refusal for anything else is still a refusal.
func TestJoinAdmittedWhenAlreadyRegisteredAsAsked(t *testing.T) {
	a := newAdmission(t)
	a.adm.Proposer = lateStateProposer{&agenttest.Proposer{State: a.st}}
	tok := a.token(time.Hour)
	if _, err := a.adm.Join(context.Background(), a.request(tok, "h2", a.now)); err != nil {
		t.Fatalf("join whose RegisterMember committed but was answered 403 = %v; want admitted", err)
	}
	a.adm.Proposer = &agenttest.Proposer{State: a.st}
	tok3 := a.token(time.Hour)
	a.adm.Proposer.(*agenttest.Proposer).FailWith(statedb.Errorf(statedb.KindForbidden, "no"))
	if _, err := a.adm.Join(context.Background(), a.request(tok3, "h3", a.now)); err == nil {
		t.Fatal("a join whose proposals all fail was admitted")
	}
}
