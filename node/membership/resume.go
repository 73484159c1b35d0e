package membership

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// Session resumption on the cluster plane. Every tracked connection runs on
// its own clone of the host's TLS config (wrap adds the revocation check),
// and a clone without ticket keys of its own makes up fresh ones: no ticket
// was ever accepted again, and each reconnect between two hosts was a full
// handshake (certificate chains, signatures). Conns therefore gives every
// server-side clone the same ticket keys, and every client-side clone one
// session cache in which each remote address keeps its own sessions.
//
// Resumption does not get around revocation: Go runs VerifyConnection on a
// resumed handshake too, with the peer certificates the session recorded,
// so the revocation check refuses a revoked member there as it does in a
// full handshake.

// ticketKeyRotation is how often a new session-ticket key comes in; the
// key before it still opens tickets for one more period, so a ticket lasts
// at most three periods (a key is replaced up to a period late when no
// connection comes to rotate it).
const ticketKeyRotation = time.Hour

// sessionCacheSize bounds the client-side sessions kept (one per remote
// address and server name).
const sessionCacheSize = 1024

// ticketKeys are a host's session-ticket keys, newest first. They live in
// memory only: a restarted daemon starts with fresh ones, and the tickets
// it issued before no longer resume.
type ticketKeys struct {
	keys    [][32]byte
	created time.Time
}

// rotate puts a new random key first and keeps the one before it.
func (k *ticketKeys) rotate(now time.Time) error {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return fmt.Errorf("session ticket key: %w", err)
	}
	k.keys = append([][32]byte{key}, k.keys...)
	if len(k.keys) > 2 {
		k.keys = k.keys[:2]
	}
	k.created = now
	return nil
}

// RotateTicketKeys makes a new session-ticket key: new tickets are sealed
// with it, and tickets sealed with the key before it still resume until
// the next rotation. Keys also rotate on their own every hour.
func (c *Conns) RotateTicketKeys() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tickets.rotate(time.Now())
}

// currentTicketKeys returns the ticket keys, rotated first when the newest
// is due. Called with c.mu held.
func (c *Conns) currentTicketKeys() [][32]byte {
	now := time.Now()
	if now.Sub(c.tickets.created) >= 2*ticketKeyRotation {
		// The key before the newest has had its extra period too: a ticket
		// lasts at most two periods even when no connection came for long.
		c.tickets.keys = nil
	}
	if len(c.tickets.keys) == 0 || now.Sub(c.tickets.created) >= ticketKeyRotation {
		if err := c.tickets.rotate(now); err != nil {
			return nil // no keys: the clone makes its own (a full handshake next time)
		}
	}
	return c.tickets.keys
}

// resumption sets up session resumption on a connection's config clone:
// the shared ticket keys on a server, the remote's sessions on a client.
// Called with c.mu held.
func (c *Conns) resumption(cc *tls.Config, raw net.Conn, server bool) {
	if cc.SessionTicketsDisabled {
		return
	}
	if server {
		if keys := c.currentTicketKeys(); keys != nil {
			cc.SetSessionTicketKeys(keys)
		}
		return
	}
	if cc.ClientSessionCache != nil {
		return // the caller keeps its own
	}
	if c.sessions == nil {
		c.sessions = tls.NewLRUClientSessionCache(sessionCacheSize)
	}
	cc.ClientSessionCache = remoteSessions{cache: c.sessions, remote: raw.RemoteAddr().String()}
}

// remoteSessions is the part of a session cache kept for one remote
// address. The members' configs all name the same server (NodeCertName),
// which is the key Go files a session under: without the address every
// host would share one entry and each would overwrite the other's session.
type remoteSessions struct {
	cache  tls.ClientSessionCache
	remote string
}

func (r remoteSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return r.cache.Get(r.remote + "|" + key)
}

func (r remoteSessions) Put(key string, cs *tls.ClientSessionState) {
	r.cache.Put(r.remote+"|"+key, cs)
}
