package consensus

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A follower notices a dead leader only when its heartbeat timeout runs
// out (500-1000 ms by default) and a cluster writes again only after the
// election that follows. When the leader's process dies its kernel closes
// the connections it had opened to the followers at once, so a follower
// that sees the leader's inbound connection end shortens its heartbeat
// timeout to the leader lease until a leader is heard from again. This is
// a hint, never a decision: Raft still starts an election only after no
// contact for that (shorter) timeout, and a live leader heartbeats ten
// times within it, so a connection closed for another reason (the
// leader's transport pool trimming) costs nothing. A leader whose host
// loses power closes nothing; the configured timeout covers that case.

// notifyConn reports its peer's certificate name and address once, when
// a read ends the connection (EOF or an error), to gone.
type notifyConn struct {
	net.Conn
	once sync.Once
	gone func(name, ip string)
}

func (c *notifyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.once.Do(func() {
			name := ""
			if tc, ok := c.Conn.(*tls.Conn); ok {
				if st := tc.ConnectionState(); len(st.PeerCertificates) > 0 {
					name = st.PeerCertificates[0].Subject.CommonName
				}
			}
			ip := ""
			if a, ok := c.Conn.RemoteAddr().(*net.TCPAddr); ok {
				ip = a.IP.String()
			}
			c.gone(name, ip)
		})
	}
	return n, err
}

// leaderWatch turns "the leader's connection ended" into a shorter
// heartbeat timeout for a while.
type leaderWatch struct {
	node    atomic.Pointer[Node] // nil until New has built the node
	tm      Timers
	running atomic.Bool
}

// peerGone is called when an inbound Raft connection ends, with the
// peer's certificate name (a host certificate names its node id) and IP.
// It counts as the leader's if either matches the leader's.
func (w *leaderWatch) peerGone(name, ip string) {
	n := w.node.Load()
	if n == nil {
		return
	}
	r := n.raft
	if r.State() != raft.Follower {
		return
	}
	addr, id := r.LeaderWithID()
	if id == "" || !w.isLeader(r, string(id), string(addr), name, ip) {
		return
	}
	peer := string(id)
	if w.tm.LeaderLease >= w.tm.Heartbeat || !w.running.CompareAndSwap(false, true) {
		return
	}
	since := time.Now()
	if err := w.set(r, w.tm.LeaderLease, w.tm.LeaderLease); err != nil {
		w.running.Store(false)
		return
	}
	n.log.Debug("raft: the leader's connection ended; electing sooner if it stays silent", "leader", peer)
	go func() {
		defer w.running.Store(false)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * w.tm.Heartbeat)
		for {
			select {
			case <-tick.C:
			case <-deadline:
				w.restore(n)
				return
			}
			_, id := r.LeaderWithID()
			// A new leader, or the same one heard from after its
			// connection ended: back to the configured timers.
			if (id != "" && string(id) != peer) || r.LastContact().After(since.Add(w.tm.LeaderLease/2)) || r.State() == raft.Shutdown {
				w.restore(n)
				return
			}
		}
	}()
}

func (w *leaderWatch) restore(n *Node) {
	if err := w.set(n.raft, w.tm.Heartbeat, w.tm.Election); err != nil {
		n.log.Warn("raft: restore timers", "err", err)
	}
}

func (w *leaderWatch) set(r *raft.Raft, hb, el time.Duration) error {
	rc := r.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = hb, el
	return r.ReloadConfig(rc)
}

// isLeader reports whether a peer with certificate name and IP ip is the
// leader id at addr. Host certificates name their node id, so a name that
// is a member's id decides; only a certificate naming no member (shared
// test certificates) falls back to comparing IPs.
func (w *leaderWatch) isLeader(r *raft.Raft, id, addr, name, ip string) bool {
	if name == id {
		return true
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == name {
				return false
			}
		}
	}
	return sameHost(addr, ip)
}

// sameHost reports whether the Raft address addr is on IP ip.
func sameHost(addr, ip string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || ip == "" {
		return false
	}
	if h := net.ParseIP(host); h != nil {
		return h.Equal(net.ParseIP(ip))
	}
	return false
}
