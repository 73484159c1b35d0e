package membership

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// RefuseRevoked returns a copy of cfg that, after the usual chain checks,
// refuses a peer whose certificate names a revoked member (revoked is
// asked with the certificate's common name, the member id). A peer
// without a certificate (an API client using a token) passes: cfg decides
// whether one is required. The check runs at every handshake, so a host
// removed from the cluster is refused at its next connection.
func RefuseRevoked(cfg *tls.Config, revoked func(memberID string) bool) *tls.Config {
	c := cfg.Clone()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		if id := cs.PeerCertificates[0].Subject.CommonName; revoked(id) {
			return fmt.Errorf("the certificate of member %s is revoked: the member was removed from the cluster", id)
		}
		return nil
	}
	return c
}

// RevokedCloser closes the tracked connections of revoked members (Conns).
type RevokedCloser interface {
	CloseRevoked(inRaft func(memberID string) bool) int
}

// Cutter closes the connections of revoked members whenever an applied
// entry adds to the revocation list (and once at start, for revocations
// applied while catching up). Raft's connections with a revoked member go
// once the member has left the Raft configuration, which the leader
// changes after the revocation applies: until no revoked peer's Raft
// connection is left, Run looks again every second.
type Cutter struct {
	// State is the local state.
	State func() *statedb.Snapshot
	// Changed returns a channel closed at the state's next change.
	Changed func() <-chan struct{}
	// Servers is the Raft configuration.
	Servers func() ([]RaftServer, error)
	Conns   RevokedCloser
	Logger  *slog.Logger
}

// Run sweeps until ctx ends.
func (c *Cutter) Run(ctx context.Context) {
	const retry = time.Second // while revoked members' Raft connections are kept
	seen := -1
	pending := false // Raft connections of revoked members kept for now
	for {
		changed := c.Changed()
		if k := len(c.State().RevokedHosts()); k != seen || pending {
			seen = k
			inRaft := c.raftServers()
			if cut := c.Conns.CloseRevoked(func(id string) bool { return inRaft[id] }); cut > 0 {
				c.Logger.Info("closed connections of revoked members", "connections", cut)
			}
			pending = false
			for id := range inRaft {
				if _, revoked := c.State().RevokedHost(id); revoked {
					pending = true
				}
			}
		}
		var again <-chan time.Time
		if pending {
			again = time.After(retry)
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
func (c *Cutter) raftServers() map[string]bool {
	out := map[string]bool{}
	servers, err := c.Servers()
	if err != nil {
		return out
	}
	for _, s := range servers {
		out[s.ID] = true
	}
	return out
}
