package consensus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// testPKI is a throwaway cluster CA with one certificate every test node
// uses, valid for certName and 127.0.0.1.
type testPKI struct {
	server, client *tls.Config
}

const certName = "consensus-test"

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: certName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{certName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		server: &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
		client: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: certName, MinVersion: tls.VersionTLS12},
	}
}

// memForwarder forwards to the leader in process, as node's internal API
// does over HTTPS.
type memForwarder struct {
	mu    sync.Mutex
	nodes map[string]*Node
}

func (f *memForwarder) Forward(ctx context.Context, leaderID string, data []byte) (uint64, error) {
	f.mu.Lock()
	n := f.nodes[leaderID]
	f.mu.Unlock()
	if n == nil {
		return 0, ErrNoLeader
	}
	return n.ApplyLeader(ctx, data)
}

// testCluster is a set of loopback Raft nodes sharing one PKI.
type testCluster struct {
	t     *testing.T
	pki   *testPKI
	fwd   *memForwarder
	nodes []*Node
}

func newTestCluster(t *testing.T) *testCluster {
	return &testCluster{t: t, pki: newTestPKI(t), fwd: &memForwarder{nodes: map[string]*Node{}}}
}

// fastTimers keep elections short on loopback.
func fastTimers() Timers {
	return Timers{Heartbeat: 200 * time.Millisecond, Election: 200 * time.Millisecond, LeaderLease: 100 * time.Millisecond}
}

// add starts node id; edit may change its config before it starts.
func (c *testCluster) add(id string, edit func(*Config)) *Node {
	c.t.Helper()
	cfg := Config{
		NodeID: id, DataDir: c.t.TempDir(), BindAddr: "127.0.0.1:0",
		ServerTLS: c.pki.server, ClientTLS: c.pki.client, Forwarder: c.fwd, Timers: fastTimers(),
	}
	if edit != nil {
		edit(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.t.Cleanup(func() { _ = n.Shutdown() })
	c.fwd.mu.Lock()
	c.fwd.nodes[id] = n
	c.fwd.mu.Unlock()
	c.nodes = append(c.nodes, n)
	return n
}

// start bootstraps the first node, adds the others as voters (retrying
// through leader changes on a loaded machine) and returns the leader.
func (c *testCluster) start() *Node {
	c.t.Helper()
	if err := c.nodes[0].Bootstrap(); err != nil {
		c.t.Fatal(err)
	}
	for _, n := range c.nodes[1:] {
		waitFor(c.t, "voter "+n.cfg.NodeID+" added", func() bool {
			l := c.leader()
			return l != nil && l.AddVoter(n.cfg.NodeID, n.Addr()) == nil
		})
	}
	var leader *Node
	waitFor(c.t, "every node to know the leader", func() bool {
		leader = c.leader()
		if leader == nil {
			return false
		}
		for _, n := range c.nodes {
			if id, _ := n.Leader(); id != leader.cfg.NodeID {
				return false
			}
		}
		return true
	})
	return leader
}

// leader returns the node that is leader now, if any.
func (c *testCluster) leader() *Node {
	for _, n := range c.nodes {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

// makeLeader moves leadership to n.
func (c *testCluster) makeLeader(n *Node) {
	c.t.Helper()
	waitFor(c.t, n.cfg.NodeID+" to lead", func() bool {
		l := c.leader()
		if l == n {
			return true
		}
		if l != nil {
			_ = l.raft.LeadershipTransferToServer(raft.ServerID(n.cfg.NodeID), raft.ServerAddress(n.Addr())).Error()
		}
		return false
	})
}

// follower returns a node other than leader.
func (c *testCluster) follower(leader *Node) *Node {
	for _, n := range c.nodes {
		if n != leader {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func project(i int) statedb.Project {
	return statedb.Project{ID: fmt.Sprintf("p%d", i), Name: fmt.Sprintf("project-%d", i), Enabled: true}
}
