package membership

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// resumeServer is member a's tracked listener (echoing) whose handshakes
// report, before the revocation check, whether they resumed.
type resumeServer struct {
	addr    string
	conns   *Conns
	rev     *revocations
	mu      sync.Mutex
	resumed []bool // DidResume of each handshake that reached the checks
}

func startResumeServer(t testing.TB, aServer *tls.Config, conns *Conns) *resumeServer {
	t.Helper()
	s := &resumeServer{conns: conns}
	cfg := aServer.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		s.mu.Lock()
		s.resumed = append(s.resumed, cs.DidResume)
		s.mu.Unlock()
		return nil
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = raw.Addr().String()
	ln := conns.Listener(raw, cfg)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { raw.Close() })
	return s
}

func (s *resumeServer) lastResumed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.resumed) > 0 && s.resumed[len(s.resumed)-1]
}

// dialOnce connects through conns, makes one round trip (which also reads
// the session ticket the server sends after the handshake) and closes.
func dialOnce(conns *Conns, cfg *tls.Config, addr string) (tls.ConnectionState, error) {
	c, err := conns.DialTLS(cfg)(context.Background(), "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	if err := roundTrip(tc); err != nil {
		return tls.ConnectionState{}, err
	}
	return tc.ConnectionState(), nil
}

// A second connection between the same two hosts resumes the first's
// session, though each connection runs on its own config clone; each
// remote keeps its own session although all members share one server
// name.
func TestReconnectResumes(t *testing.T) {
	aServer, bClient := memberTLS(t)
	a1 := startResumeServer(t, aServer, &Conns{})
	a2 := startResumeServer(t, aServer, &Conns{}) // another host (own ticket keys)
	client := &Conns{}

	for i, want := range []struct {
		s      *resumeServer
		resume bool
	}{{a1, false}, {a1, true}, {a2, false}, {a1, true}, {a2, true}} {
		cs, err := dialOnce(client, bClient, want.s.addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if cs.DidResume != want.resume {
			t.Fatalf("connection %d to %s: resumed %v, want %v", i, want.s.addr, cs.DidResume, want.resume)
		}
		if want.s.lastResumed() != want.resume {
			t.Fatalf("connection %d: the server saw resumed %v, want %v", i, want.s.lastResumed(), want.resume)
		}
	}
}

// After two rotations the key that sealed a ticket is gone: the next
// connection is a full handshake. One rotation keeps it.
func TestRotatedTicketKeys(t *testing.T) {
	aServer, bClient := memberTLS(t)
	server := &Conns{}
	a := startResumeServer(t, aServer, server)
	client := &Conns{}
	if _, err := dialOnce(client, bClient, a.addr); err != nil {
		t.Fatal(err)
	}
	if err := server.RotateTicketKeys(); err != nil {
		t.Fatal(err)
	}
	if cs, err := dialOnce(client, bClient, a.addr); err != nil || !cs.DidResume {
		t.Fatalf("after one rotation: resumed %v, err %v; want a resumption", cs.DidResume, err)
	}
	// That connection got a ticket under the new key; two more rotations
	// retire it.
	for range 2 {
		if err := server.RotateTicketKeys(); err != nil {
			t.Fatal(err)
		}
	}
	if cs, err := dialOnce(client, bClient, a.addr); err != nil || cs.DidResume {
		t.Fatalf("after two rotations: resumed %v, err %v; want a full handshake", cs.DidResume, err)
	}
}

// A revoked member's resumed connection is refused, on the accepting side
// (a revoked client) and on the dialling side (a revoked server).
func TestResumedConnectionOfRevokedMemberRefused(t *testing.T) {
	aServer, bClient := memberTLS(t)

	// a revokes b: b's resumption attempt is refused by a.
	rev := &revocations{m: map[string]bool{}}
	a := startResumeServer(t, aServer, &Conns{Revoked: rev.has})
	resumedThenRefused(t, &Conns{}, bClient, a, func() { rev.revoke("b") }, "revoked b's resumed connection was accepted")

	// b revokes a: b refuses to resume its session with a.
	a2 := startResumeServer(t, aServer, &Conns{})
	revB := &revocations{m: map[string]bool{}}
	resumedThenRefused(t, &Conns{Revoked: revB.has}, bClient, a2, func() { revB.revoke("a") }, "b resumed its session with revoked a")
}

// resumedThenRefused connects client to srv twice (the second resumes),
// revokes, and checks that the third connection, a resumption, fails.
func resumedThenRefused(t *testing.T, client *Conns, cfg *tls.Config, srv *resumeServer, revoke func(), accepted string) {
	t.Helper()
	if _, err := dialOnce(client, cfg, srv.addr); err != nil {
		t.Fatal(err)
	}
	if cs, err := dialOnce(client, cfg, srv.addr); err != nil || !cs.DidResume {
		t.Fatalf("before the revocation: resumed %v, err %v", cs.DidResume, err)
	}
	revoke()
	if _, err := dialOnce(client, cfg, srv.addr); err == nil {
		t.Fatal(accepted)
	}
	if !srv.lastResumed() {
		t.Fatal("the refused handshake was not a resumption: the test proves nothing")
	}
}

// BenchmarkReconnect measures a reconnect between two members (dial,
// handshake, one round trip, close) with a full handshake and with a
// resumed session, in the same run: wall time, and the CPU both ends
// spent (cpu-µs/op, this process's user+system time; steadier than wall
// time on a loaded machine).
func BenchmarkReconnect(b *testing.B) {
	aServer, bClient := memberTLS(b)
	for _, bc := range []struct {
		name   string
		resume bool
	}{{"full", false}, {"resumed", true}} {
		b.Run(bc.name, func(b *testing.B) {
			s := startResumeServer(b, aServer, &Conns{})
			client := &Conns{}
			if _, err := dialOnce(client, bClient, s.addr); err != nil {
				b.Fatal(err)
			}
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				if !bc.resume {
					client = &Conns{} // no session kept
				}
				cs, err := dialOnce(client, bClient, s.addr)
				if err != nil {
					b.Fatal(err)
				}
				if cs.DidResume != bc.resume {
					b.Fatalf("resumed %v, want %v", cs.DidResume, bc.resume)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A ticket lasts at most two rotation periods even when no connection
// came meanwhile to rotate the keys on time.
func TestTicketOutlivesNoTwoPeriods(t *testing.T) {
	aServer, bClient := memberTLS(t)
	server := &Conns{}
	a := startResumeServer(t, aServer, server)
	client := &Conns{}
	if _, err := dialOnce(client, bClient, a.addr); err != nil {
		t.Fatal(err)
	}
	if cs, err := dialOnce(client, bClient, a.addr); err != nil || !cs.DidResume {
		t.Fatalf("second connection: resumed %v, err %v; want a resumption", cs.DidResume, err)
	}
	server.mu.Lock()
	server.tickets.created = server.tickets.created.Add(-5 * ticketKeyRotation)
	server.mu.Unlock()
	if cs, err := dialOnce(client, bClient, a.addr); err != nil || cs.DidResume {
		t.Fatalf("a ticket sealed 5 periods ago: resumed %v, err %v; want a full handshake", cs.DidResume, err)
	}
}
