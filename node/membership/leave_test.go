package membership

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// clusterTLS returns the server and client configs of members of one
// cluster, by member id.
func clusterTLS(t testing.TB, ids ...string) (servers, clients map[string]*tls.Config) {
	t.Helper()
	ca, caKey, err := NewCA("cluster-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(ca.CertPEM(), caKey); err != nil {
		t.Fatal(err)
	}
	servers, clients = map[string]*tls.Config{}, map[string]*tls.Config{}
	for _, id := range ids {
		keyPEM, csrPEM, err := NewKeyAndCSR(id)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := ca.Sign(csrPEM, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, c, err := TLSConfigs(ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		servers[id], clients[id] = s, c
	}
	return servers, clients
}

// fakePeer is a member's internal API: it answers every request, or
// refuses every client certificate while refuse is set.
type fakePeer struct {
	addr   string
	refuse atomic.Bool
	probes atomic.Int32
	close  func() // stops it: its address refuses connections
}

func startFakePeer(t *testing.T, server *tls.Config) *fakePeer {
	t.Helper()
	p := &fakePeer{}
	cfg := server.Clone()
	cfg.VerifyConnection = func(tls.ConnectionState) error {
		p.probes.Add(1)
		if p.refuse.Load() {
			return errors.New("refused")
		}
		return nil
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = raw.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(tls.NewListener(raw, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.close = func() { _ = srv.Close() }
	return p
}

// unanswered is a proposal whose answer never comes (the leader cut the
// connection as it applied the entry).
func unanswered(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// One member refusing the leaving host's certificate early (it lies, or
// its clock is off) does not make the removal count as applied; the
// refusal of a majority of the other voters does.
func TestSelfRemovalNeedsMajorityOfVoters(t *testing.T) {
	servers, clients := clusterTLS(t, "m1", "m2", "m3")
	liar := startFakePeer(t, servers["m2"])
	liar.refuse.Store(true)
	honest := startFakePeer(t, servers["m3"])
	r := &SelfRemoval{Propose: unanswered, Applied: func() bool { return false }, ClientTLS: clients["m1"],
		Voters: []Voter{{ID: "m2", APIAddr: liar.addr}, {ID: "m3", APIAddr: honest.addr}}, Timeout: 2 * time.Second}
	if _, err := r.Run(context.Background()); err == nil {
		t.Fatal("removal counted as applied on one member's refusal")
	}
	if liar.probes.Load() == 0 || honest.probes.Load() == 0 {
		t.Fatalf("probes: liar %d, honest %d; want both asked", liar.probes.Load(), honest.probes.Load())
	}
	// The proposal failing does not change that.
	r.Propose = func(context.Context) error { return errors.New("connection reset") }
	if _, err := r.Run(context.Background()); err == nil {
		t.Fatal("removal counted as applied on a failed proposal and one refusal")
	}

	// The honest member applies the revocation: two of two refuse.
	honest.refuse.Store(true)
	r.Propose = unanswered
	r.Timeout = 20 * time.Second
	if p, err := r.Run(context.Background()); err != nil || p != ProofVoters {
		t.Fatalf("both other voters refuse: %q, %v", p, err)
	}
}

// A refusal counts for the member whose certificate the refusing server
// presented, not for the address asked: one host answering at another
// voter's address is still one refusal.
func TestSelfRemovalCountsRefusingMembersNotAddresses(t *testing.T) {
	servers, clients := clusterTLS(t, "m1", "m2", "m3")
	liar := startFakePeer(t, servers["m2"])
	impostor := startFakePeer(t, servers["m2"]) // m2's certificate at m3's address
	liar.refuse.Store(true)
	impostor.refuse.Store(true)
	r := &SelfRemoval{Propose: unanswered, ClientTLS: clients["m1"], Timeout: 2 * time.Second,
		Voters: []Voter{{ID: "m2", APIAddr: liar.addr}, {ID: "m3", APIAddr: impostor.addr}}}
	if p, err := r.Run(context.Background()); err == nil {
		t.Fatalf("removal counted as applied on one member refusing at two addresses (%s)", p)
	}
	if impostor.probes.Load() == 0 {
		t.Fatal("the impostor was never asked")
	}
}

// The leader's answer, or this host's own applied state, proves the
// removal without asking anyone.
func TestSelfRemovalProvenByLeaderOrOwnState(t *testing.T) {
	_, clients := clusterTLS(t, "m1")
	r := &SelfRemoval{Propose: func(context.Context) error { return nil }, ClientTLS: clients["m1"],
		Voters: []Voter{{ID: "m2", APIAddr: "127.0.0.1:1"}}, Timeout: 5 * time.Second}
	if p, err := r.Run(context.Background()); err != nil || p != ProofLeader {
		t.Fatalf("answered proposal: %q, %v", p, err)
	}
	r.Propose = unanswered
	r.Applied = func() bool { return true }
	if p, err := r.Run(context.Background()); err != nil || p != ProofApplied {
		t.Fatalf("applied here: %q, %v", p, err)
	}
}

// RefusedBy tells a refused certificate from an answer, and names the
// refusing member.
func TestRefusedBy(t *testing.T) {
	servers, clients := clusterTLS(t, "m1", "m2")
	p := startFakePeer(t, servers["m2"])
	if by, refused := RefusedBy(context.Background(), p.addr, clients["m1"]); refused || by != "m2" {
		t.Fatalf("answering peer: refused %v by %q", refused, by)
	}
	p.refuse.Store(true)
	if by, refused := RefusedBy(context.Background(), p.addr, clients["m1"]); !refused || by != "m2" {
		t.Fatalf("refusing peer: refused %v by %q; want m2's refusal", refused, by)
	}
	if _, refused := RefusedBy(context.Background(), "127.0.0.1:1", clients["m1"]); refused {
		t.Fatal("nothing listening counted as a refusal")
	}
}

// A voter that is down does not hold up a leave the cluster committed:
// with three voters, the leader's refusal and this host make a majority
// while the third never answers. An honest voter that answers without
// refusing keeps a lone refusal from counting (above).
func TestSelfRemovalWithAVoterDown(t *testing.T) {
	servers, clients := clusterTLS(t, "m1", "m2", "m3")
	leader := startFakePeer(t, servers["m2"])
	leader.refuse.Store(true)
	r := &SelfRemoval{Propose: unanswered, Applied: func() bool { return false }, ClientTLS: clients["m1"],
		Voters: []Voter{{ID: "m2", APIAddr: leader.addr}, {ID: "m3", APIAddr: "127.0.0.1:1"}}, Timeout: 10 * time.Second}
	if p, err := r.Run(context.Background()); err != nil || p != ProofQuorum {
		t.Fatalf("leader refuses, third voter down: %q, %v; want %q", p, err, ProofQuorum)
	}
	// Five voters, two down: two refusals and this host are three of five.
	servers, clients = clusterTLS(t, "m1", "m2", "m3", "m4", "m5")
	a, b := startFakePeer(t, servers["m2"]), startFakePeer(t, servers["m3"])
	a.refuse.Store(true)
	r = &SelfRemoval{Propose: unanswered, ClientTLS: clients["m1"], Timeout: 2 * time.Second,
		Voters: []Voter{{ID: "m2", APIAddr: a.addr}, {ID: "m3", APIAddr: b.addr}, {ID: "m4", APIAddr: "127.0.0.1:1"}, {ID: "m5", APIAddr: "127.0.0.1:1"}}}
	if p, err := r.Run(context.Background()); err == nil {
		t.Fatalf("one refusal of five voters counted (%s)", p)
	}
	b.refuse.Store(true)
	r.Timeout = 10 * time.Second
	if p, err := r.Run(context.Background()); err != nil || p != ProofQuorum {
		t.Fatalf("two refusals, two voters down: %q, %v; want %q", p, err, ProofQuorum)
	}
}

// A cancelled leave returns at once, even while a voter holds a probe
// open without answering.
func TestSelfRemovalHonoursCancel(t *testing.T) {
	servers, clients := clusterTLS(t, "m1", "m2")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", servers["m2"])
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake() }() // then never answers
		}
	}()
	r := &SelfRemoval{Propose: unanswered, ClientTLS: clients["m1"], Timeout: 20 * time.Second,
		Voters: []Voter{{ID: "m2", APIAddr: ln.Addr().String()}}}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	if _, err := r.Run(ctx); err == nil {
		t.Fatal("a cancelled leave succeeded")
	}
	if took := time.Since(start); took >= probeTimeout {
		t.Fatalf("cancelled at 300ms, returned after %v: it waited for the probe", took)
	}
}

// A voter that answered (not refusing yet) and then went down stops
// counting as up: the leader's refusal and this host then prove it.
func TestSelfRemovalVoterDownMidLeave(t *testing.T) {
	servers, clients := clusterTLS(t, "m1", "m2", "m3")
	leader := startFakePeer(t, servers["m2"])
	third := startFakePeer(t, servers["m3"])
	r := &SelfRemoval{Propose: unanswered, Applied: func() bool { return false }, ClientTLS: clients["m1"],
		Voters: []Voter{{ID: "m2", APIAddr: leader.addr}, {ID: "m3", APIAddr: third.addr}}, Timeout: 15 * time.Second}
	go func() {
		for third.probes.Load() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		third.close() // answered once, now down
		leader.refuse.Store(true)
	}()
	if p, err := r.Run(context.Background()); err != nil || p != ProofQuorum {
		t.Fatalf("leader refuses, third voter down after answering: %q, %v; want %q", p, err, ProofQuorum)
	}
}
