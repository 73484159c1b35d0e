package consensus

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStream is a raft.StreamLayer over mutual TLS: both ends present a
// certificate from the cluster CA. It keeps its own clones of the configs
// it is given: a *tls.Config must not be shared with another user (an
// http.Transport writes into the config it holds when it sets up HTTP/2),
// and Dial reads the client config from Raft's goroutines.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	links     Links // nil: every peer is reachable
	conns     TLSConns
	// gone, when set, is told the certificate name and IP of a peer whose
	// inbound connection ended.
	gone func(name, ip string)
	in   inbound
	// aside, while set, cuts this node's outbound connections
	// (Node.StepAside).
	aside atomic.Bool
}

// inbound tracks the accepted connections whose Raft handler has not
// returned yet: the transport's handler goroutines answer RPCs (a
// heartbeat writes the current term) outside Raft's own goroutines, so
// Raft's Shutdown does not wait for them, and closing the log under one
// makes Raft panic ("failed to save current term: database not open").
type inbound struct {
	mu   sync.Mutex
	open map[*inboundConn]struct{}
}

// inboundConn is an accepted connection; the transport's handler closes it
// when it returns (deferred), which is what forgets it.
type inboundConn struct {
	net.Conn
	owner *inbound
	once  sync.Once
}

func (c *inboundConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.owner.mu.Lock()
		delete(c.owner.open, c)
		c.owner.mu.Unlock()
	})
	return err
}

func (in *inbound) add(c net.Conn) net.Conn {
	ic := &inboundConn{Conn: c, owner: in}
	in.mu.Lock()
	if in.open == nil {
		in.open = map[*inboundConn]struct{}{}
	}
	in.open[ic] = struct{}{}
	in.mu.Unlock()
	return ic
}

// drain closes the accepted connections under their handlers (a handler
// reading the next RPC returns at once; one answering an RPC finishes it
// first) and waits at most wait until every handler has returned. It
// reports whether they all did.
func (in *inbound) drain(wait time.Duration) bool {
	in.mu.Lock()
	for c := range in.open {
		_ = c.Conn.Close()
	}
	in.mu.Unlock()
	deadline := time.Now().Add(wait)
	for {
		in.mu.Lock()
		n := len(in.open)
		in.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TLSConns makes the TLS side of Raft's connections, so that whoever
// runs the node can keep track of them (and cut those of a peer whose
// certificate it no longer accepts). nil: plain tls.Server and tls.Client.
type TLSConns interface {
	Server(raw net.Conn, cfg *tls.Config) *tls.Conn
	Client(raw net.Conn, cfg *tls.Config) *tls.Conn
}

type plainTLS struct{}

func (plainTLS) Server(raw net.Conn, cfg *tls.Config) *tls.Conn { return tls.Server(raw, cfg) }
func (plainTLS) Client(raw net.Conn, cfg *tls.Config) *tls.Conn { return tls.Client(raw, cfg) }

// Accept wraps inbound connections in TLS and so their end is reported to
// gone.
func (s *tlsStream) Accept() (net.Conn, error) {
	raw, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := net.Conn(s.conns.Server(raw, s.server))
	if s.gone != nil {
		c = &notifyConn{Conn: c, gone: s.gone}
	}
	return s.in.add(c), nil
}

// Links says which peers this node can reach (fault injection: a
// partition). Dialling a peer that is not up fails, and a connection to
// it fails at its next write once the link goes down. Both sides of a
// partition must agree, as inbound connections are not filtered.
type Links interface {
	Up(addr string) bool
}

func newTLSStream(bind string, advertise string, server, client *tls.Config, links Links, conns TLSConns) (*tlsStream, error) {
	if server == nil || client == nil {
		return nil, fmt.Errorf("raft stream on %s: server and client TLS configs are required", bind)
	}
	if conns == nil {
		conns = plainTLS{}
	}
	server, client = server.Clone(), client.Clone()
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen raft %s: %w", bind, err)
	}
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
		}
		adv = a
	}
	return &tlsStream{Listener: ln, advertise: adv, server: server, client: client, links: links, conns: conns}, nil
}

func (s *tlsStream) Addr() net.Addr { return s.advertise }

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.aside.Load() {
		return nil, fmt.Errorf("dial %s: this node stepped aside", addr)
	}
	if s.links != nil && !s.links.Up(string(addr)) {
		return nil, fmt.Errorf("dial %s: link down", addr)
	}
	c, err := s.dialTLS(string(addr), timeout)
	if err != nil {
		return c, err
	}
	return &linkedConn{Conn: c, addr: string(addr), links: s.links, aside: &s.aside}, nil
}

// dialTLS dials addr and completes the handshake, both within timeout.
func (s *tlsStream) dialTLS(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := s.conns.Client(raw, s.client)
	if err := c.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("raft tls handshake with %s: %w", addr, err)
	}
	return c, nil
}

// linkedConn fails (and closes) once the link to its peer is down, or
// its node stepped aside.
type linkedConn struct {
	net.Conn
	addr  string
	links Links // nil: every peer is reachable
	aside *atomic.Bool
}

func (c *linkedConn) down() bool {
	return c.aside.Load() || (c.links != nil && !c.links.Up(c.addr))
}

func (c *linkedConn) Write(b []byte) (int, error) {
	if c.down() {
		c.Conn.Close()
		return 0, fmt.Errorf("write to %s: link down", c.addr)
	}
	return c.Conn.Write(b)
}

func (c *linkedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err == nil && c.down() {
		c.Conn.Close()
		return 0, fmt.Errorf("read from %s: link down", c.addr)
	}
	return n, err
}
