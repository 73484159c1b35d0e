package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/membership"
)

// Revocation reaches open connections: every TLS connection this host has
// with another member (API server, host-to-host clients, Raft, console
// WebSockets over either) is tracked with its peer's member id, and when an
// applied entry revokes a member its connections are closed at once, not
// left to serve until they happen to end.

// trackConns returns the connection tracker of a host whose revocation
// list is read from the state Raft keeps (none revoked before Raft runs).
func trackConns(state *atomic.Pointer[consensus.Node]) *membership.Conns {
	return &membership.Conns{Revoked: func(id string) bool {
		rn := state.Load()
		if rn == nil {
			return false
		}
		_, revoked := rn.State().RevokedHost(id)
		return revoked
	}}
}

// withProtos is a copy of cfg offering the given application protocols.
func withProtos(cfg *tls.Config, protos ...string) *tls.Config {
	c := cfg.Clone()
	c.NextProtos = protos
	return c
}

// cutRevokedLoop closes the connections of revoked members whenever an
// applied entry adds to the revocation list (and once at start, for
// revocations applied while catching up). Raft's connections with a
// revoked member go once the member has left the Raft configuration,
// which the leader changes after the revocation applies: until no revoked
// peer's Raft connection is left, the loop looks again every second.
func (n *Node) cutRevokedLoop(ctx context.Context) {
	seen := -1
	pending := false // Raft connections of revoked members kept for now
	for {
		changed := n.raft.Store().Changed()
		if k := len(n.State().RevokedHosts()); k != seen || pending {
			seen = k
			inRaft := n.raftServers()
			if cut := n.conns.CloseRevoked(func(id string) bool { return inRaft[id] }); cut > 0 {
				n.log.Info("closed connections of revoked members", "connections", cut)
			}
			pending = false
			for id := range inRaft {
				if _, revoked := n.State().RevokedHost(id); revoked {
					pending = true
				}
			}
		}
		var again <-chan time.Time
		if pending {
			again = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-again:
		}
	}
}

// raftServers is the set of member ids in the Raft configuration; on an
// error, empty (every revoked connection may go).
func (n *Node) raftServers() map[string]bool {
	out := map[string]bool{}
	servers, err := n.raft.Configuration()
	if err != nil {
		return out
	}
	for _, s := range servers {
		out[s.ID] = true
	}
	return out
}

// removeSelf takes this host out of the cluster for leave: its member
// record goes and its certificate is revoked in one entry
// (statedb.RemoveHostCmd, what `members remove` proposes), so a host that
// left is refused at once rather than when its certificate expires. While
// a member runs a release without that command, it only removes the
// record, as before; revoked says which was done.
//
// The entry cuts this host off as it commits: the members close its
// connections (Raft's too) once they apply it, so the answer to the
// forwarded proposal may never come, and this host may never apply the
// entry itself. The proposal therefore also counts as done as soon as a
// member refuses this host's certificate: members refuse only what a
// committed entry revoked.
func (n *Node) removeSelf(ctx context.Context) (revoked bool, err error) {
	sn := n.State()
	var peers []string
	legacy := false
	spec, _ := statedb.Commands().Lookup(statedb.CmdRemoveHost)
	for _, m := range sn.Members() {
		if statedb.CompareVersions(m.Version, spec.MinVersion) < 0 {
			legacy = true
		}
		if m.ID != n.id.NodeID && m.APIAddr != "" {
			peers = append(peers, m.APIAddr)
		}
	}
	if legacy {
		_, err := n.raft.Propose(ctx, statedb.CmdRemoveMember, statedb.RemoveMemberCmd{ID: n.id.NodeID})
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := n.raft.Propose(ctx, statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: n.id.NodeID, Reason: "left the cluster"})
		done <- err
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil && n.refusedBy(ctx, peers) {
				err = nil
			}
			return err == nil, err
		case <-tick.C:
			if n.refusedBy(ctx, peers) {
				cancel()
				<-done
				return true, nil
			}
		}
	}
}

// refusedBy reports whether one of the hosts at addrs refuses this host's
// certificate now.
func (n *Node) refusedBy(ctx context.Context, addrs []string) bool {
	tr, ok := n.client.Transport.(*http.Transport)
	if !ok {
		return false
	}
	cfg := withProtos(tr.TLSClientConfig, "http/1.1")
	for _, addr := range addrs {
		if refuses(ctx, addr, cfg) {
			return true
		}
	}
	return false
}

// refuses makes one request to addr's internal API over a new connection
// and reports whether the server refused the client certificate (with
// TLS 1.3 that shows at the first read, as a bad-certificate alert).
func refuses(ctx context.Context, addr string, cfg *tls.Config) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err == nil {
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if _, err = fmt.Fprintf(c, "GET /internal/v1/commit HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err == nil {
			var resp *http.Response
			if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				resp.Body.Close()
				return false
			}
		}
	}
	return strings.Contains(err.Error(), "tls: bad certificate")
}
