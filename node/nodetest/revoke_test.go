package nodetest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
)

// hostTLS is host i's own client TLS config (its certificate), as a
// removed host would still hold it.
func (c *Cluster) hostTLS(t *testing.T, i int) *tls.Config {
	t.Helper()
	tr := c.hostClient(t, i).Transport.(*http.Transport)
	cfg := tr.TLSClientConfig.Clone()
	cfg.ServerName = "peerstack-node"
	return cfg
}

// openAPIConn opens a keep-alive HTTP/1.1 connection to host to's API
// with cfg's certificate and makes one internal request on it.
func openAPIConn(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "GET /internal/v1/commit HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request over the connection to %s: %v", addr, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
		t.Fatalf("internal request to %s with a member's certificate = %d; want 200 or 409", addr, resp.StatusCode)
	}
	if resp.Close {
		t.Fatalf("the server of %s did not keep the connection open", addr)
	}
	return conn, br
}

// openRaftConn opens a TLS connection to a host's Raft port with cfg's
// certificate, and checks the server kept it: a refused certificate
// answers with an alert at the first read, an accepted one stays silent.
func openRaftConn(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial raft %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("raft %s did not keep a member's connection: %v", addr, err)
	}
	return conn
}

// closedWithin reads from r until it ends; it reports whether it ended
// (EOF or an error other than the deadline) before the deadline.
func closedWithin(conn net.Conn, r io.Reader, d time.Duration) (bool, error) {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, err
	}
	return true, err
}

// TestRevokeClosesOpenConnections: connections a host opened with its
// certificate before it was removed (an idle keep-alive API connection
// and a Raft connection, to the leader and to a follower) are closed by
// every host once it applies the revocation, not left open until they
// end by themselves. The API's idle timeout (60 s) is far beyond the
// wait, so only the revocation can close them.
func TestRevokeClosesOpenConnections(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	other := 3 - ld - f
	fid := c.Node(f).ID()
	cfg := c.hostTLS(t, f)

	type open struct {
		what string
		conn net.Conn
		r    io.Reader
	}
	var conns []open
	for _, to := range []int{ld, other} {
		api, br := openAPIConn(t, c.Node(to).APIAddr(), cfg)
		conns = append(conns, open{fmt.Sprintf("API connection to host%d", to), api, br})
		rc := openRaftConn(t, c.Node(to).Consensus().Addr(), cfg)
		conns = append(conns, open{fmt.Sprintf("Raft connection to host%d", to), rc, rc})
	}

	if st := c.send(t, ld, "DELETE", "/cluster/v1/members/"+fid, c.AdminToken(ld), ""); st != http.StatusNoContent {
		t.Fatalf("remove member = %d; want 204", st)
	}
	for _, o := range conns {
		ok, err := closedWithin(o.conn, o.r, 10*time.Second)
		if !ok {
			t.Errorf("%s opened before the revocation is still open 10 s after it (%v)", o.what, err)
		}
	}
	// And the same certificate cannot open a new one.
	for _, to := range []int{ld, other} {
		conn, err := tls.Dial("tcp", c.Node(to).APIAddr(), cfg)
		if err != nil {
			continue
		}
		fmt.Fprintf(conn, "GET /internal/v1/commit HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err == nil {
			t.Errorf("a new connection to host%d with the removed host's certificate was answered", to)
		}
	}
}

// TestLeaveRevokes: a host that leaves is removed and revoked in one
// entry, so its certificate is refused by every remaining host as soon as
// they apply it (the leave answers 202), and a connection it held is cut.
func TestLeaveRevokes(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	other := 3 - ld - f
	fid := c.Node(f).ID()
	cfg := c.hostTLS(t, f)
	api, br := openAPIConn(t, c.Node(other).APIAddr(), cfg)

	if st, body := apiCall(t, c, "POST", c.URL(f)+"/cluster/v1/leave", c.AdminToken(f), ""); st != http.StatusAccepted {
		t.Fatalf("leave = %d %v; want 202", st, body)
	}
	c.Eventually(10*time.Second, "the leaving host revoked on every remaining host", func() bool {
		for _, i := range []int{ld, other} {
			sn := c.Node(i).State()
			if _, ok := sn.RevokedHost(fid); !ok {
				return false
			}
			if _, ok := sn.Member(fid); ok {
				return false
			}
		}
		return true
	})
	if ok, err := closedWithin(api, br, 10*time.Second); !ok {
		t.Errorf("the left host's open API connection is still open (%v)", err)
	}
	report := statedb.ReportPortCmd{PortID: "nope", HostID: fid, Status: "ACTIVE"}
	for _, to := range []int{ld, other} {
		st, err := c.tryForge(t, f, to, statedb.CmdReportPort, report)
		if err == nil {
			t.Errorf("the left host's certificate to host%d: answered %d; want a refused handshake", to, st)
		}
	}
}

// TestRemoveFromTwoHosts: in a two-host cluster, removing the other host
// (members remove) or the other host leaving must leave the remaining one
// leading alone, writable. Cutting the removed host's Raft connections as
// soon as its revocation applied — before the leader took it out of the
// Raft configuration — made the leader lose its quorum for good.
func TestRemoveFromTwoHosts(t *testing.T) {
	for _, how := range []string{"members remove", "leave"} {
		t.Run(how, func(t *testing.T) {
			c := NewCluster(t, 2, Options{Config: func(i int, cfg *node.Config) {
				// Production timers: a 250 ms leader lease, the membership
				// routine every second.
				cfg.Timers.Raft = consensus.Timers{}
				cfg.Timers.Leader = time.Second
			}})
			ld := c.Leader(10 * time.Second)
			f := 1 - ld
			fid := c.Node(f).ID()
			switch how {
			case "members remove":
				if st := c.send(t, ld, "DELETE", "/cluster/v1/members/"+fid, c.AdminToken(ld), ""); st != http.StatusNoContent {
					t.Fatalf("members remove = %d; want 204", st)
				}
			default:
				if st, body := apiCall(t, c, "POST", c.URL(f)+"/cluster/v1/leave", c.AdminToken(f), ""); st != http.StatusAccepted {
					t.Fatalf("leave = %d %v; want 202", st, body)
				}
			}
			rn := c.Node(ld).Consensus()
			c.Eventually(20*time.Second, "the remaining host alone in the Raft configuration, leading", func() bool {
				conf, err := rn.Configuration()
				return err == nil && len(conf) == 1 && conf[0].ID == c.Node(ld).ID() && rn.IsLeader()
			})
			createProject(t.Context(), t, c.Node(ld), "after-"+strings.ReplaceAll(how, " ", "-"))
		})
	}
}
