package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
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
// The entry cuts this host off as it commits, so the answer to the
// proposal may never come: membership.SelfRemoval says when the removal
// is proven otherwise (this host applied it, or a majority of the other
// voters refuse its certificate).
func (n *Node) removeSelf(ctx context.Context) (revoked bool, err error) {
	sn := n.State()
	legacy := false
	spec, _ := statedb.Commands().Lookup(statedb.CmdRemoveHost)
	for _, m := range sn.Members() {
		if statedb.CompareVersions(m.Version, spec.MinVersion) < 0 {
			legacy = true
		}
	}
	if legacy {
		_, err := n.raft.Propose(ctx, statedb.CmdRemoveMember, statedb.RemoveMemberCmd{ID: n.id.NodeID})
		return false, err
	}
	servers, err := n.raft.Configuration()
	if err != nil {
		return false, fmt.Errorf("raft configuration: %w", err)
	}
	var voters []membership.Voter
	for _, s := range servers {
		if s.Voter && s.ID != n.id.NodeID {
			m, _ := sn.Member(s.ID)
			v := membership.Voter{ID: s.ID}
			if m != nil {
				v.APIAddr = m.APIAddr
			}
			voters = append(voters, v)
		}
	}
	tr, ok := n.client.Transport.(*http.Transport)
	if !ok {
		return false, errors.New("remove this host: no TLS client")
	}
	r := &membership.SelfRemoval{
		Propose: func(ctx context.Context) error {
			_, err := n.raft.Propose(ctx, statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: n.id.NodeID, Reason: "left the cluster"})
			return err
		},
		Applied: func() bool {
			_, ok := n.State().RevokedHost(n.id.NodeID)
			return ok
		},
		Voters: voters, ClientTLS: tr.TLSClientConfig}
	proof, err := r.Run(ctx)
	if err != nil {
		return false, err
	}
	n.log.Info("removed and revoked this host", "proof", string(proof))
	return true, nil
}
