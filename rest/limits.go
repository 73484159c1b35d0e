package rest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits bound what one client can hold of a host: connection time, idle
// keep-alives, connections per source address and the time a write may
// wait for Raft. The zero value of a field means its default.
type Limits struct {
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// http.Server's. Streaming requests and responses (octet-stream
	// uploads, raw downloads) replace the read or write deadline with a
	// rolling one of StreamIdle per chunk, so a large image still moves.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	StreamIdle                                                time.Duration
	// ConnsPerIP caps concurrent connections from one source address;
	// more are closed as soon as they are accepted.
	ConnsPerIP int
	// WriteDeadline bounds how long a request's write waits for a leader
	// to commit it; then the client gets 503 with Retry-After.
	WriteDeadline time.Duration
}

// Defaults of Limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultStreamIdle        = 60 * time.Second
	DefaultConnsPerIP        = 256
	DefaultWriteDeadline     = 10 * time.Second
)

func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&l.ReadTimeout, DefaultReadTimeout)
	def(&l.WriteTimeout, DefaultWriteTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	def(&l.StreamIdle, DefaultStreamIdle)
	def(&l.WriteDeadline, DefaultWriteDeadline)
	if l.ConnsPerIP <= 0 {
		l.ConnsPerIP = DefaultConnsPerIP
	}
	return l
}

// HTTPServer returns an http.Server for h with the timeouts of l; serve it
// on LimitListener(ln, l) so the per-address cap holds.
func HTTPServer(h http.Handler, l Limits) *http.Server {
	l = l.withDefaults()
	return &http.Server{Handler: h, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout}
}

// LimitListener closes accepted connections beyond l.ConnsPerIP from one
// source address.
func LimitListener(ln net.Listener, l Limits) net.Listener {
	return &limitListener{Listener: ln, max: l.withDefaults().ConnsPerIP, open: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[netip.Addr]int
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrIP(c.RemoteAddr())
		ll.mu.Lock()
		if ll.open[ip] >= ll.max {
			ll.mu.Unlock()
			_ = c.Close()
			continue
		}
		ll.open[ip]++
		ll.mu.Unlock()
		return &limitConn{Conn: c, ll: ll, ip: ip}, nil
	}
}

func (ll *limitListener) release(ip netip.Addr) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.open[ip]--; ll.open[ip] <= 0 {
		delete(ll.open, ip)
	}
}

type limitConn struct {
	net.Conn
	ll   *limitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.ll.release(c.ip) })
	return c.Conn.Close()
}

func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// BaseURL is scheme://host[:port] clients reach this host at; links
	// and catalogs use it. Empty means the local address the request
	// arrived on. The request's Host header is never used.
	BaseURL string
	// TrustedProxies may set X-Forwarded-For and X-Forwarded-Proto; from
	// anyone else those headers are ignored. Default none.
	TrustedProxies []netip.Prefix
	// Limits: only WriteDeadline and StreamIdle matter to the handler.
	Limits Limits
	// ReadBarrier serves reads that ask for linearizable consistency
	// (ConsistencyHeader): it returns once this host's state holds every
	// write acknowledged anywhere before the call. nil: this server's
	// state is the only copy, and every read is linearizable as it is.
	ReadBarrier func(ctx context.Context) error
}

// reqInfo is what the server learned about a request before routing it.
type reqInfo struct {
	source        netip.Addr // the client, past trusted proxies
	base          string
	writeDeadline time.Duration
}

type reqInfoKey struct{}

func infoOf(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return nil
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// requestInfo works out the client address and base URL of r.
func (s *Server) requestInfo(r *http.Request) *reqInfo {
	ri := &reqInfo{writeDeadline: s.opts.Limits.WriteDeadline}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ri.source = ap.Addr().Unmap()
	}
	viaProxy := s.trusted(ri.source)
	if viaProxy {
		// The rightmost address not itself a trusted proxy is the client.
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break
			}
			ri.source = a.Unmap()
			if !s.trusted(ri.source) {
				break
			}
		}
	}
	ri.base = strings.TrimRight(s.opts.BaseURL, "/")
	if ri.base == "" {
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		if p := r.Header.Get("X-Forwarded-Proto"); viaProxy && (p == "http" || p == "https") {
			scheme = p
		}
		host := "localhost"
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			host = la.String()
		}
		ri.base = scheme + "://" + host
	}
	return ri
}

// Source is the client's address: the peer, or the client a trusted proxy
// names. It is the zero Addr outside a Server.
func Source(r *http.Request) netip.Addr {
	if ri := infoOf(r); ri != nil {
		return ri.source
	}
	return netip.Addr{}
}

// BaseURL returns scheme://host clients reach this host at: the
// configured base URL, else the local address the request came in on.
func BaseURL(r *http.Request) string {
	if ri := infoOf(r); ri != nil {
		return ri.base
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://localhost"
}

// writeContext bounds one write proposed for a request by the server's
// write deadline; outside a request the context is returned as is.
func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ri, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	if ri == nil || ri.writeDeadline <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, ri.writeDeadline)
}

// streamBody extends the connection's read deadline by idle on every read
// of a streamed upload, so an upload is cut only when it stalls, and the
// write deadline past it so the answer can still be written.
type streamBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *streamBody) Read(p []byte) (int, error) {
	d := time.Now().Add(b.idle)
	_ = b.rc.SetReadDeadline(d)
	_ = b.rc.SetWriteDeadline(d.Add(b.idle)) // the answer comes after the upload
	return b.ReadCloser.Read(p)
}

// copyStream writes a raw response body, extending the write deadline by
// idle for every chunk.
func copyStream(w http.ResponseWriter, r io.Reader, idle time.Duration) {
	rc := http.NewResponseController(w)
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			// A stream of small events must reach the client as written.
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// Throttle counts failures per key in memory and refuses attempts with an
// exponential back-off once a key has failed more than its free attempts.
// Every attempt is counted as a failure when it is reserved, so parallel
// attempts cannot all pass before the first failure is recorded;
// Succeeded forgets the key. Keys idle for longer than Forget are dropped.
type Throttle struct {
	Forget time.Duration

	mu sync.Mutex
	m  map[string]*throttleEntry
}

// Backoff is a Throttle policy: Free failures pass, then attempt n after
// them waits Base·2ⁿ, at most Max, after the previous one.
type Backoff struct {
	Free      int
	Base, Max time.Duration
}

type throttleEntry struct {
	failures int
	next     time.Time
	last     time.Time
}

// NewThrottle returns an empty throttle.
func NewThrottle(forget time.Duration) *Throttle {
	return &Throttle{Forget: forget, m: map[string]*throttleEntry{}}
}

// Reserve counts one attempt for key, or refuses it and says how long to
// wait.
func (t *Throttle) Reserve(key string, p Backoff, now time.Time) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) > 10000 {
		for k, e := range t.m {
			if now.Sub(e.last) > t.Forget {
				delete(t.m, k)
			}
		}
	}
	e := t.m[key]
	if e == nil || now.Sub(e.last) > t.Forget {
		e = &throttleEntry{}
		t.m[key] = e
	}
	if now.Before(e.next) {
		return false, e.next.Sub(now)
	}
	e.failures++
	e.last = now
	if over := e.failures - p.Free; over > 0 {
		d := p.Base
		for i := 1; i < over && d < p.Max; i++ {
			d *= 2
		}
		e.next = now.Add(min(d, p.Max))
	}
	return true, 0
}

// Succeeded forgets key's failures.
func (t *Throttle) Succeeded(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
}

// TooManyRequests is a 429 asking the client to wait.
func TooManyRequests(wait time.Duration) error {
	secs := int(wait.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return &HTTPError{Status: http.StatusTooManyRequests, Msg: "Too many failed attempts; retry later.",
		Header: http.Header{"Retry-After": {strconv.Itoa(secs)}}, Quiet: true}
}
