package consensus

import (
	"crypto/tls"
	"fmt"
	"net"
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
	client    *tls.Config
}

func newTLSStream(bind string, advertise string, server, client *tls.Config) (*tlsStream, error) {
	if server == nil || client == nil {
		return nil, fmt.Errorf("raft stream on %s: server and client TLS configs are required", bind)
	}
	server, client = server.Clone(), client.Clone()
	ln, err := tls.Listen("tcp", bind, server)
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
	return &tlsStream{Listener: ln, advertise: adv, client: client}, nil
}

func (s *tlsStream) Addr() net.Addr { return s.advertise }

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), s.client)
}
