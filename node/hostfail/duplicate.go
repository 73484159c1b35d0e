package hostfail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrDuplicateHost is why a daemon refuses to start: another daemon with
// the same host identity (a copied data dir) answers at the address this
// identity last had.
var ErrDuplicateHost = errors.New("another daemon runs with this host's identity")

// Identity is the host a daemon is about to start as.
type Identity struct {
	NodeID, Name string
	// APIAddr is the API address this identity last advertised.
	APIAddr string
	DataDir string
}

// CheckDuplicate dials the API address this identity last advertised and
// refuses to start when a daemon there presents this host's own
// certificate: two daemons with one id would run the same VMs. A daemon
// that cannot be reached (the usual restart) passes, and so does an
// address that is own, the API listener this daemon bound (a restart on
// the same machine). clientTLS makes this host's client TLS set-up.
func CheckDuplicate(ctx context.Context, id Identity, own net.Addr, clientTLS func() (*tls.Config, error)) error {
	addr := id.APIAddr
	if addr == "" || isOwnAddr(addr, own) {
		return nil
	}
	tc, err := clientTLS()
	if err != nil {
		return err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: tc.Clone()}
	dctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	if len(st.PeerCertificates) > 0 && st.PeerCertificates[0].Subject.CommonName == id.NodeID {
		return fmt.Errorf("%w: host %s (id %s) already answers at %s; this data dir %s is a copy of that host's. "+
			"Refusing to start, so no VM runs twice: stop the other daemon, or join this machine with an empty data dir",
			ErrDuplicateHost, id.Name, id.NodeID, addr, id.DataDir)
	}
	return nil
}

// isOwnAddr reports whether addr (host:port) is the listener ln: same
// port, and the listener's IP or, for a wildcard listener, a local one.
func isOwnAddr(addr string, ln net.Addr) bool {
	h, p, err := net.SplitHostPort(addr)
	tcp, ok := ln.(*net.TCPAddr)
	if err != nil || !ok || p != fmt.Sprint(tcp.Port) {
		return false
	}
	ip := net.ParseIP(h)
	if tcp.IP.Equal(ip) {
		return true
	}
	if !tcp.IP.IsUnspecified() {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
