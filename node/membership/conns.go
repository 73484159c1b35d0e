package membership

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"
)

// Conns keeps the TLS connections a host has open with other members (its
// API server's, its host-to-host clients', Raft's), each with the member id
// its peer's certificate names, so that when a member is revoked every
// connection it already holds can be cut (CloseRevoked), not only its next
// handshake refused.
//
// The revocation check of each handshake and the recording of its peer run
// under one lock that CloseRevoked also takes: a connection is either
// refused at its handshake or recorded in time for the next sweep, whatever
// the interleaving with the revocation being applied.
type Conns struct {
	// Revoked reports whether a member id is revoked; nil: none is.
	Revoked func(memberID string) bool

	mu       sync.Mutex
	open     map[*trackedConn]struct{}
	tickets  ticketKeys             // shared by every server-side connection (resume.go)
	sessions tls.ClientSessionCache // client-side sessions, per remote address (resume.go)
}

// trackedConn is the raw connection under a tracked TLS connection: closing
// it (by its owner, through the TLS connection) forgets it.
type trackedConn struct {
	net.Conn
	owner *Conns
	peer  string // member id of the verified peer certificate; "" until then or without one
	raft  bool   // one of Raft's connections (RaftConns)
}

func (t *trackedConn) Close() error {
	t.owner.mu.Lock()
	delete(t.owner.open, t)
	t.owner.mu.Unlock()
	return t.Conn.Close()
}

func (c *Conns) revoked(id string) bool { return c.Revoked != nil && c.Revoked(id) }

// wrap makes raw tracked and returns the config its TLS side uses: cfg,
// plus the revocation check, the recording of the peer's member id and
// the shared session-resumption state (resume.go).
func (c *Conns) wrap(raw net.Conn, cfg *tls.Config, raft, server bool) (*trackedConn, *tls.Config) {
	t := &trackedConn{Conn: raw, owner: c, raft: raft}
	cc := cfg.Clone()
	prev := cc.VerifyConnection
	cc.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return nil // an API client with a token; cfg decides if that is allowed
		}
		id := cs.PeerCertificates[0].Subject.CommonName
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.revoked(id) {
			return fmt.Errorf("the certificate of member %s is revoked: the member was removed from the cluster", id)
		}
		t.peer = id
		return nil
	}
	c.mu.Lock()
	if c.open == nil {
		c.open = map[*trackedConn]struct{}{}
	}
	c.open[t] = struct{}{}
	c.resumption(cc, raw, server)
	c.mu.Unlock()
	return t, cc
}

// Server returns the server side of a tracked TLS connection over raw.
func (c *Conns) Server(raw net.Conn, cfg *tls.Config) *tls.Conn {
	t, cc := c.wrap(raw, cfg, false, true)
	return tls.Server(t, cc)
}

// Client returns the client side of a tracked TLS connection over raw.
func (c *Conns) Client(raw net.Conn, cfg *tls.Config) *tls.Conn {
	t, cc := c.wrap(raw, cfg, false, false)
	return tls.Client(t, cc)
}

// Raft returns the connection maker for Raft's stream: its connections
// are tracked as Raft's, which CloseRevoked keeps while their peer is
// still in the Raft configuration.
func (c *Conns) Raft() RaftConns { return RaftConns{c} }

// RaftConns makes Raft's tracked TLS connections (consensus.TLSConns).
type RaftConns struct{ c *Conns }

// Server returns the server side of a tracked Raft connection over raw.
func (r RaftConns) Server(raw net.Conn, cfg *tls.Config) *tls.Conn {
	t, cc := r.c.wrap(raw, cfg, true, true)
	return tls.Server(t, cc)
}

// Client returns the client side of a tracked Raft connection over raw.
func (r RaftConns) Client(raw net.Conn, cfg *tls.Config) *tls.Conn {
	t, cc := r.c.wrap(raw, cfg, true, false)
	return tls.Client(t, cc)
}

// Listener returns a TLS listener over ln whose connections are tracked.
// Accept returns *tls.Conn, so an http.Server sees the TLS state as with
// tls.NewListener.
func (c *Conns) Listener(ln net.Listener, cfg *tls.Config) net.Listener {
	return &trackingListener{Listener: ln, conns: c, cfg: cfg}
}

type trackingListener struct {
	net.Listener
	conns *Conns
	cfg   *tls.Config
}

func (l *trackingListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.conns.Server(raw, l.cfg), nil
}

// DialTLS returns an http.Transport DialTLSContext that dials, completes
// the handshake with cfg and tracks the connection. cfg's NextProtos
// decide the protocols offered (h2 and http/1.1 for a shared client).
func (c *Conns) DialTLS(cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := c.Client(raw, cfg)
		// The transport's TLSHandshakeTimeout does not reach a custom
		// dialer: a peer that accepts but never answers (a paused daemon)
		// must not hold the dial for good.
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = tc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		return tc, nil
	}
}

// handshakeTimeout bounds DialTLS's handshake.
const handshakeTimeout = 10 * time.Second

// Open reports how many tracked connections are open.
func (c *Conns) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// CloseRevoked closes every tracked connection whose peer is now revoked
// and returns how many it closed. It closes the raw connection under the
// TLS one, which ends any read or write in progress at once; the owner's
// own Close then finds it closed.
//
// Raft's connections with a peer still in the Raft configuration (inRaft)
// stay: the leader removes a revoked member from the configuration a
// moment later, and cutting a voter's connections before that can cost the
// leader its quorum for good (a two-host cluster removing one host would
// keep two voters and never elect again). Call it again once the
// configuration changed.
func (c *Conns) CloseRevoked(inRaft func(memberID string) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for t := range c.open {
		if t.raft && inRaft != nil && inRaft(t.peer) {
			continue
		}
		if t.peer != "" && c.revoked(t.peer) {
			_ = t.Conn.Close()
			delete(c.open, t)
			n++
		}
	}
	return n
}
