package nodetest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
)

// hostClient is an HTTP client presenting host i's own certificate, as a
// compromised member would.
func (c *Cluster) hostClient(t *testing.T, i int) *http.Client {
	t.Helper()
	dir := filepath.Join(c.Dir(i), "tls")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12,
	}}}
}

// forge posts a hand-made command to the leader's internal apply
// endpoint with host from's certificate (and token, if any) and returns
// the status; it retries while leadership moves (503).
func (c *Cluster) forge(t *testing.T, from int, typ statedb.CmdType, caller *statedb.Caller, token string, payload any) (int, string) {
	t.Helper()
	cmd, err := statedb.NewCommand(typ, c.Node(from).NewID(), c.Node(from).Now(), payload)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Caller = caller
	data, _ := cmd.Encode()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest("POST", c.URL(c.Leader(10*time.Second))+"/internal/v1/apply", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Auth-Token", token)
		}
		resp, err := c.hostClient(t, from).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return resp.StatusCode, string(body)
		}
		time.Sleep(50 * time.Millisecond) // leadership is moving: ask the new leader
	}
}

// TestHostCertificateIsNotAdmin: a member's certificate alone cannot put
// user commands into the log (a forged GrantRole making a user admin, a
// network in another project, a report for another host); a caller's own
// token carries only that caller's rights; writes forwarded for real
// callers still go through.
func TestHostCertificateIsNotAdmin(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	mal := c.addUser(t, "mallory", "pw-mallory")
	c.Eventually(10*time.Second, "mallory and her grant on the follower", func() bool {
		sn := c.Node(f).State()
		_, ok := sn.User(mal.ID)
		return ok && len(sn.Assignments()) == len(c.Node(ld).State().Assignments())
	})
	tok, st := c.login(t, f, "mallory", "pw-mallory")
	if st != http.StatusCreated {
		t.Fatalf("mallory's login = %d", st)
	}
	sn := c.Node(ld).State()
	adminProject, _ := sn.ProjectByName("admin")
	adminRole, _ := sn.RoleByName("admin")
	grant := statedb.Assignment{ID: statedb.AssignmentID(adminProject.ID, mal.ID, adminRole.ID),
		ProjectID: adminProject.ID, UserID: mal.ID, RoleID: adminRole.ID}
	mallory := &statedb.Caller{UserID: mal.ID, ProjectID: adminProject.ID, Writer: true}
	other := statedb.Project{ID: "otherproject", Name: "other", DomainID: statedb.DefaultDomainID, Enabled: true, Tags: []string{}}
	if _, err := rest.Propose(adminContext(t.Context(), t, c.Node(ld)), c.Node(ld), statedb.CmdCreateProject, other); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		typ     statedb.CmdType
		caller  *statedb.Caller
		token   string
		payload any
	}{
		{"GrantRole with the host certificate alone", statedb.CmdGrantRole, nil, "", grant},
		{"GrantRole claiming the admin without a token", statedb.CmdGrantRole, &statedb.Caller{UserID: "admin", ProjectID: adminProject.ID, Admin: true, Writer: true}, "", grant},
		{"GrantRole claiming the admin with mallory's token", statedb.CmdGrantRole, &statedb.Caller{UserID: mal.ID, ProjectID: adminProject.ID, Admin: true, Writer: true}, tok, grant},
		{"GrantRole claiming the admin with a made-up token", statedb.CmdGrantRole, &statedb.Caller{UserID: "admin", ProjectID: adminProject.ID, Admin: true, Writer: true}, "ps1.made.up", grant},
		{"GrantRole as mallory", statedb.CmdGrantRole, mallory, tok, grant},
		{"a network in another project as mallory", statedb.CmdCreateNetwork, mallory, tok, statedb.Network{ID: "forged", Name: "forged", ProjectID: other.ID}},
		{"a report for another host", statedb.CmdReportPort, nil, "", statedb.ReportPortCmd{PortID: "x", HostID: c.Node(ld).ID(), Status: "ACTIVE"}},
		{"a leader's command", statedb.CmdRotateSigningKeys, nil, "", statedb.RotateSigningKeysCmd{}},
	} {
		st, body := c.forge(t, f, tc.typ, tc.caller, tc.token, tc.payload)
		if st != http.StatusForbidden {
			t.Errorf("%s: %d %s; want 403", tc.name, st, body)
		}
	}
	sn = c.Node(ld).State()
	for _, a := range sn.Assignments() {
		if a.ID == grant.ID {
			t.Fatal("the forged grant is in the state")
		}
	}
	if _, ok := sn.Network("forged"); ok {
		t.Fatal("the forged network is in the state")
	}

	// Real callers' writes through the follower are forwarded and applied:
	// the admin creates a project, mallory a network in her project; her
	// own network elsewhere is refused.
	admin := c.AdminToken(f)
	if st := c.send(t, f, "POST", "/identity/v3/projects", admin, `{"project":{"name":"fwd"}}`); st != http.StatusCreated {
		t.Fatalf("admin's project through a follower = %d; want 201", st)
	}
	if st := c.send(t, f, "POST", "/network/v2.0/networks", tok, `{"network":{"name":"mine"}}`); st != http.StatusCreated {
		t.Fatalf("mallory's network through a follower = %d; want 201", st)
	}
	if st := c.send(t, f, "POST", "/identity/v3/projects", tok, `{"project":{"name":"nope"}}`); st != http.StatusForbidden {
		t.Fatalf("mallory's project = %d; want 403", st)
	}
}

// send makes an API call with a JSON body through host i.
func (c *Cluster) send(t *testing.T, i int, method, path, token, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, c.URL(i)+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e json.RawMessage = b
		t.Logf("%s %s = %d %s", method, path, resp.StatusCode, e)
	}
	return resp.StatusCode
}

// TestRemovedHostIsRefused: `members remove` (DELETE on the member) takes
// a host out and revokes its certificate: its next connection to any
// member's internal API is refused, and it is no member any more.
func TestRemovedHostIsRefused(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	other := 3 - ld - f
	fid := c.Node(f).ID()
	report := statedb.ReportPortCmd{PortID: "nope", HostID: fid, Status: "ACTIVE"}
	if st, body := c.forge(t, f, statedb.CmdReportPort, nil, "", report); st != http.StatusOK {
		t.Fatalf("before removal, the host's own report = %d %s; want 200 (a business answer)", st, body)
	}
	// A non-admin cannot remove members.
	ru := c.addUser(t, "rita", "pw-rita")
	c.Eventually(10*time.Second, "rita on the leader", func() bool {
		_, ok := c.Node(ld).State().User(ru.ID)
		return ok && len(c.Node(ld).State().Assignments()) == len(c.Any().State().Assignments())
	})
	rita, _ := c.login(t, ld, "rita", "pw-rita")
	if st := c.send(t, ld, "DELETE", "/cluster/v1/members/"+c.Node(other).ID(), rita, ""); st != http.StatusForbidden {
		t.Fatalf("member removal by a non-admin = %d; want 403", st)
	}
	admin := c.AdminToken(ld)
	if st := c.send(t, ld, "DELETE", "/cluster/v1/members/"+fid, admin, ""); st != http.StatusNoContent {
		t.Fatalf("remove member = %d; want 204", st)
	}
	c.Eventually(10*time.Second, "the revocation on every remaining host", func() bool {
		for _, i := range []int{ld, other} {
			if _, ok := c.Node(i).State().RevokedHost(fid); !ok {
				return false
			}
		}
		return true
	})
	for _, to := range []int{ld, other} {
		st, err := c.tryForge(t, f, to, statedb.CmdReportPort, report)
		if err == nil && st != http.StatusForbidden {
			t.Errorf("removed host's certificate to host%d: %d; want a refused handshake or 403", to, st)
		}
	}
	if _, ok := c.Node(ld).State().Member(fid); ok {
		t.Error("the removed host is still a member")
	}
}

// tryForge is forge returning the transport error instead of failing.
func (c *Cluster) tryForge(t *testing.T, from, to int, typ statedb.CmdType, payload any) (int, error) {
	t.Helper()
	cmd, err := statedb.NewCommand(typ, c.Node(to).NewID(), c.Node(to).Now(), payload)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := cmd.Encode()
	req, _ := http.NewRequest("POST", c.URL(to)+"/internal/v1/apply", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hostClient(t, from).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestHostCertificatesRenew: host certificates are short-lived and each
// host renews its own before it expires, so the cluster keeps working
// past the first certificates' expiry with fresh ones.
func TestHostCertificatesRenew(t *testing.T) {
	const ttl = 8 * time.Second
	c := NewCluster(t, 2, Options{Config: func(_ int, cfg *node.Config) { cfg.CertTTL = ttl }})
	f := c.Follower()
	first := c.diskCert(t, f)
	if life := first.NotAfter.Sub(first.NotBefore); life > ttl+2*time.Hour {
		t.Fatalf("certificate valid for %v; want about %v (plus the backdate)", life, ttl)
	}
	c.Eventually(30*time.Second, "the follower's certificate renewed and the first one expired", func() bool {
		cur := c.diskCert(t, f)
		return cur.SerialNumber.Cmp(first.SerialNumber) != 0 && time.Now().After(first.NotAfter.Add(time.Second))
	})
	if cur := c.diskCert(t, f); !cur.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate expires %v, not after the first's %v", cur.NotAfter, first.NotAfter)
	}
	// Past the first certificate's expiry, a write through the follower
	// is still forwarded over mutual TLS.
	admin := c.AdminToken(f)
	if st := c.send(t, f, "POST", "/identity/v3/projects", admin, `{"project":{"name":"after-renewal"}}`); st != http.StatusCreated {
		t.Fatalf("write through the follower after renewal = %d; want 201", st)
	}
}

// diskCert reads host i's certificate from its data dir.
func (c *Cluster) diskCert(t *testing.T, i int) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir(i), "tls", "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM in node.crt")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestClusterSecretsOffTheLog: the CA's private key and the gossip key
// are not in the replicated state (so not in the log, snapshots or
// backups); each member keeps them on its disk, root-only, and a host
// joining through any member gets them and a certificate.
func TestClusterSecretsOffTheLog(t *testing.T) {
	c := NewCluster(t, 2)
	c.Join(t.Context())
	c.WaitMembers(3, 20*time.Second)
	for i := range c.Len() {
		n := c.Node(i)
		cfg, ok := n.State().Cluster()
		if !ok || cfg.CAKeyPEM != "" || len(cfg.GossipKey) != 0 {
			t.Fatalf("host%d: the state holds the CA key (%d bytes) or the gossip key (%d bytes)", i, len(cfg.CAKeyPEM), len(cfg.GossipKey))
		}
		var dump bytes.Buffer
		if err := n.State().Dump(json.NewEncoder(&dump)); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(dump.Bytes(), []byte("PRIVATE KEY")) {
			t.Fatalf("host%d: a snapshot of the state holds a private key", i)
		}
		st, err := os.Stat(filepath.Join(c.Dir(i), "tls", "ca.key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("host%d: CA key on disk: %v, mode %v; want a 0600 file", i, err, st)
		}
	}
}
