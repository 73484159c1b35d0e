package access

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/peerstack/peerstack/node/identity"
)

// pwCache remembers recent successful password checks so a client that
// logs in again with the same password does not pay bcrypt each time (the
// approach of Apache's mod_authn_socache). Entries are keyed by an HMAC,
// under a random per-process key, of the stored hash and the password: a
// changed password hash never matches, and the cache holds no password.
// Only successes are cached; failures always run bcrypt.
type pwCache struct {
	mu      sync.Mutex
	key     [32]byte
	entries map[[32]byte]time.Time
	ttl     time.Duration
	max     int
	// pool runs every bcrypt of this host (checks and hashes).
	pool *identity.Pool
}

// pwPoolQueue is how many password checks may wait for a worker; more
// are refused with 503.
const pwPoolQueue = 64

func newPWCache(ttl time.Duration, max int) *pwCache {
	c := &pwCache{entries: map[[32]byte]time.Time{}, ttl: ttl, max: max,
		pool: identity.NewPool(identity.DefaultPoolWorkers(), pwPoolQueue)}
	_, _ = rand.Read(c.key[:])
	return c
}

func (c *pwCache) sum(hash, pw string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(pw))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// check returns true if (hash, pw) verified within the TTL.
func (c *pwCache) check(hash, pw string, now time.Time) bool {
	k := c.sum(hash, pw)
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.entries[k]
	if ok && now.Before(exp) {
		return true
	}
	if ok {
		delete(c.entries, k)
	}
	return false
}

// remember records a successful check.
func (c *pwCache) remember(hash, pw string, now time.Time) {
	k := c.sum(hash, pw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for key, exp := range c.entries {
			if !now.Before(exp) || len(c.entries) >= c.max {
				delete(c.entries, key)
			}
		}
	}
	c.entries[k] = now.Add(c.ttl)
}
