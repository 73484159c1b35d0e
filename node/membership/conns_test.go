package membership

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// memberTLS returns the server and client configs of two members of one
// cluster ("a" and "b").
func memberTLS(t testing.TB) (aServer, bClient *tls.Config) {
	t.Helper()
	servers, clients := clusterTLS(t, "a", "b")
	return MTLSServer(servers["a"]), clients["b"]
}

// revocations is a revocation list tests change.
type revocations struct {
	mu sync.Mutex
	m  map[string]bool
}

func (r *revocations) revoke(id string) { r.mu.Lock(); r.m[id] = true; r.mu.Unlock() }
func (r *revocations) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

// echoServer accepts on ln and echoes every connection until it ends.
func echoServer(t *testing.T, ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { ln.Close() })
}

// roundTrip writes one byte and reads it back.
func roundTrip(c net.Conn) error {
	if _, err := c.Write([]byte{7}); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	return err
}

// waitClosed reads from c until the connection ends (or the deadline).
func waitClosed(t *testing.T, c net.Conn, who string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("%s: connection still open after the revocation (read: %v)", who, err)
	}
}

// A connection established before a member is revoked is closed by the
// sweep, on the side that accepted it and on the side that dialled it.
func TestCloseRevokedCutsEstablishedConnections(t *testing.T) {
	aServer, bClient := memberTLS(t)

	// Server side: a accepts b's connection and tracks it.
	rev := &revocations{m: map[string]bool{}}
	serverConns := &Conns{Revoked: rev.has}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, serverConns.Listener(raw, aServer))
	c, err := tls.Dial("tcp", raw.Addr().String(), bClient)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	if n := serverConns.CloseRevoked(nil); n != 0 {
		t.Fatalf("closed %d connections with nobody revoked", n)
	}
	if err := roundTrip(c); err != nil {
		t.Fatalf("after a sweep with nobody revoked: %v", err)
	}
	rev.revoke("b")
	if n := serverConns.CloseRevoked(nil); n != 1 {
		t.Fatalf("closed %d connections; want b's one", n)
	}
	waitClosed(t, c, "b's connection to a")
	// (TLS 1.3: the client learns of the refusal at its first read.)
	if c2, err := tls.Dial("tcp", raw.Addr().String(), bClient); err == nil {
		err = roundTrip(c2)
		c2.Close()
		if err == nil {
			t.Fatal("a new connection from revoked b works")
		}
	}

	// Client side: b dials a (plain listener) through its tracker; a is
	// revoked.
	revB := &revocations{m: map[string]bool{}}
	clientConns := &Conns{Revoked: revB.has}
	plain, err := tls.Listen("tcp", "127.0.0.1:0", aServer)
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, plain)
	dc, err := clientConns.DialTLS(bClient)(context.Background(), "tcp", plain.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if err := roundTrip(dc); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	if clientConns.Open() != 1 {
		t.Fatalf("tracking %d connections; want 1", clientConns.Open())
	}
	revB.revoke("a")
	if n := clientConns.CloseRevoked(nil); n != 1 {
		t.Fatalf("closed %d connections; want the one to a", n)
	}
	if err := roundTrip(dc); err == nil {
		t.Fatal("the connection to revoked a still works")
	}
	if clientConns.Open() != 0 {
		t.Fatalf("still tracking %d connections", clientConns.Open())
	}
}

// A closed connection is forgotten.
func TestConnsForgetClosed(t *testing.T) {
	aServer, bClient := memberTLS(t)
	conns := &Conns{}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, conns.Listener(raw, aServer))
	for i := 0; i < 3; i++ {
		c, err := tls.Dial("tcp", raw.Addr().String(), bClient)
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for conns.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still tracking %d closed connections", conns.Open())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Raft's connection with a revoked member stays while the member is still
// in the Raft configuration (its vote may be needed until the leader
// removes it) and goes at the next sweep after that; a non-Raft
// connection of the same member goes at once.
func TestCloseRevokedKeepsRaftWhileInConfiguration(t *testing.T) {
	aServer, bClient := memberTLS(t)
	rev := &revocations{m: map[string]bool{}}
	conns := &Conns{Revoked: rev.has}
	rawRaft, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftSide := conns.Raft()
	go func() {
		for {
			raw, err := rawRaft.Accept()
			if err != nil {
				return
			}
			c := raftSide.Server(raw, aServer)
			go func() { _, _ = io.Copy(c, c) }()
		}
	}()
	rawAPI, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, conns.Listener(rawAPI, aServer))
	t.Cleanup(func() { rawRaft.Close() })
	var cs []*tls.Conn
	for _, addr := range []string{rawRaft.Addr().String(), rawAPI.Addr().String()} {
		c, err := tls.Dial("tcp", addr, bClient)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	rev.revoke("b")
	inRaft := map[string]bool{"b": true}
	if n := conns.CloseRevoked(func(id string) bool { return inRaft[id] }); n != 1 {
		t.Fatalf("closed %d connections while b is a Raft server; want only the API one", n)
	}
	waitClosed(t, cs[1], "b's API connection")
	if err := roundTrip(cs[0]); err != nil {
		t.Fatalf("b's Raft connection was cut while b is still in the configuration: %v", err)
	}
	delete(inRaft, "b")
	if n := conns.CloseRevoked(func(id string) bool { return inRaft[id] }); n != 1 {
		t.Fatalf("closed %d connections after b left the configuration; want its Raft one", n)
	}
	waitClosed(t, cs[0], "b's Raft connection")
}
