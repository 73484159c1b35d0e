package membership

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Gossip key rotation.
//
// The gossip key lives on the members' disks only (<data-dir>/gossip.key),
// never in the replicated state; a joining host gets it in the answer to
// its join. A removed member keeps the key it had, so when the state
// revokes a member the leader changes the key: it makes a new random key
// and hands it to every other member over the internal API (mutual TLS,
// which refuses a revoked member's certificate), in three steps that each
// go to every member before the next: install the new key beside the old
// one, make it the one gossip is sent with, drop the old one. A member
// that missed a step (down, cut off) asks the others for the keys when it
// cannot rejoin gossip or sees that its keys predate a revocation.
//
// Each keyring handed out carries a version — the leader's Raft term in
// the high 32 bits, a count of its steps in the low ones — so an answer
// that arrives late never undoes a newer step and a deposed leader's
// steps never outrank its successor's; the ids of the revoked members
// whose removal its primary key follows; and, from the first step on,
// the leader's applied Raft index when the rotation started and the ids
// revoked by then. A member takes a step only once its own state has
// applied that index (it refuses the revoked hosts' certificates from
// then on), and never hands the keys to a host the keyring names as
// revoked, so a member whose state lags cannot leak the new key to the
// host it was made against. Keys a rotation switched away from are
// remembered by fingerprint (retired): no keyring that makes one primary
// again, or brings one back, is taken.

// GossipKeys is a host's set of gossip keys.
type GossipKeys struct {
	// Keys are the accepted keys, the one gossip is sent with first.
	Keys [][]byte
	// Version orders the keyrings the leaders hand out (0: the key this
	// host got at bootstrap or join).
	Version uint64
	// Covers are the ids of the revoked members that never held Keys[0].
	Covers []string
	// Index is the leader's applied Raft index when the rotation that
	// made this keyring started, after the revocations it answers.
	Index uint64
	// Revoked are the ids revoked when that rotation started: no host
	// hands this keyring to one of them.
	Revoked []string
	// Retired are the fingerprints (keyPrint) of keys a rotation switched
	// away from: a revoked member may hold them.
	Retired []string
}

// gossipKeysJSON is GossipKeys on disk and on the wire.
type gossipKeysJSON struct {
	Keys    []string `json:"keys"`
	Version uint64   `json:"version"`
	Covers  []string `json:"covers"`
	Index   uint64   `json:"index,omitempty"`
	Revoked []string `json:"revoked,omitempty"`
	Retired []string `json:"retired,omitempty"`
}

// MarshalJSON writes the keys in hex.
func (k GossipKeys) MarshalJSON() ([]byte, error) {
	j := gossipKeysJSON{Version: k.Version, Covers: k.Covers, Index: k.Index, Revoked: k.Revoked, Retired: k.Retired}
	for _, key := range k.Keys {
		j.Keys = append(j.Keys, hex.EncodeToString(key))
	}
	if j.Covers == nil {
		j.Covers = []string{}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON wrote and refuses keys gossip
// cannot use.
func (k *GossipKeys) UnmarshalJSON(b []byte) error {
	var j gossipKeysJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if len(j.Keys) == 0 {
		return errors.New("gossip keys: no key")
	}
	out := GossipKeys{Version: j.Version, Covers: j.Covers, Index: j.Index, Revoked: j.Revoked, Retired: j.Retired}
	for _, s := range j.Keys {
		key, err := hex.DecodeString(s)
		if err != nil {
			return fmt.Errorf("gossip keys: %w", err)
		}
		if err := checkKeyLen(key); err != nil {
			return err
		}
		out.Keys = append(out.Keys, key)
	}
	*k = out
	return nil
}

// checkKeyLen refuses a key gossip cannot use (AES-128, -192 or -256).
func checkKeyLen(key []byte) error {
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("gossip keys: a key of %d bytes", n)
	}
	return nil
}

// covers reports whether every id in revoked is in k.Covers.
func (k GossipKeys) covers(revoked []string) bool {
	for _, id := range revoked {
		if !slices.Contains(k.Covers, id) {
			return false
		}
	}
	return true
}

// equal compares everything but the retired fingerprints, which a host
// merges from every keyring it takes.
func (k GossipKeys) equal(o GossipKeys) bool {
	return k.Version == o.Version && k.Index == o.Index && slices.EqualFunc(k.Keys, o.Keys, bytes.Equal) &&
		slices.Equal(k.Covers, o.Covers) && slices.Equal(k.Revoked, o.Revoked)
}

// excludes reports whether k names id as revoked, so id gets no copy.
func (k GossipKeys) excludes(id string) bool {
	return slices.Contains(k.Revoked, id) || slices.Contains(k.Covers, id)
}

// keyPrint is a key's fingerprint in the retired list.
func keyPrint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:12])
}

// maxRetired bounds the retired list: the newest fingerprints are kept.
const maxRetired = 64

// mergeRetired is the union of two retired lists, newest last.
func mergeRetired(a, b []string) []string {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) > maxRetired {
		out = out[len(out)-maxRetired:]
	}
	return out
}

// ErrKeyRetired refuses a keyring that would make a retired key primary
// again, or bring one back to a host that no longer holds it.
var ErrKeyRetired = errors.New("gossip keys: a retired key")

// ErrKeysDiffer refuses a keyring of the version held but other content.
var ErrKeysDiffer = errors.New("gossip keys: same version, different keys")

// checkRetired refuses keys that make a key of retired primary, or hold
// one that held (the keys a host has now) does not.
func checkRetired(keys, held [][]byte, retired []string) error {
	for i, key := range keys {
		if !slices.Contains(retired, keyPrint(key)) {
			continue
		}
		if i == 0 || !containsKey(held, key) {
			return fmt.Errorf("%w (%s)", ErrKeyRetired, keyPrint(key))
		}
	}
	return nil
}

func containsKey(keys [][]byte, k []byte) bool {
	return slices.ContainsFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) })
}

func (f Files) gossipKeyPath() string { return filepath.Join(f.DataDir, "gossip.key") }

// ReadGossipKeys reads gossip.key: the keyring JSON, or (as bootstrap and
// join write it, and older releases did) one key in hex. A file gossip
// could not use (empty after a crash, cut short) is an error.
func (f Files) ReadGossipKeys() (GossipKeys, error) {
	b, err := os.ReadFile(f.gossipKeyPath())
	if err != nil {
		return GossipKeys{}, fmt.Errorf("read gossip key: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "{") {
		var k GossipKeys
		if err := json.Unmarshal([]byte(s), &k); err != nil {
			return GossipKeys{}, fmt.Errorf("read gossip key %s: %w", f.gossipKeyPath(), err)
		}
		return k, nil
	}
	key, err := hex.DecodeString(s)
	if err == nil {
		err = checkKeyLen(key)
	}
	if err != nil {
		return GossipKeys{}, fmt.Errorf("read gossip key %s: %w", f.gossipKeyPath(), err)
	}
	return GossipKeys{Keys: [][]byte{key}}, nil
}

// WriteGossipKeys replaces gossip.key (0600, through a rename, on disk
// when it returns).
func (f Files) WriteGossipKeys(k GossipKeys) error {
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return WriteFileAtomic(f.gossipKeyPath(), append(b, '\n'), 0o600)
}

// KeyedGossip is the running gossip whose keys change.
type KeyedGossip interface {
	SetKeys(keys [][]byte) error
}

// GossipKeyring keeps this host's gossip keys: in the running gossip and
// on disk, handed out to other members (Service), rotated when this host
// leads (Converge) and fetched from the others when stale (Refresh).
type GossipKeyring struct {
	SelfID string
	State  func() *statedb.Snapshot
	// Leader is the Raft leader's id as this host knows it ("" if none).
	Leader func() string
	// Term is this host's current Raft term (nil: 0). Versions start
	// from it, so a new leader's keyrings outrank any a former leader
	// handed out, whatever their clocks say.
	Term func() uint64
	// Applied is the Raft index of the last command this host's state
	// applied (nil: 0).
	Applied func() uint64
	Gossip  KeyedGossip
	Files   Files
	// Client is this host's mutual-TLS client to the others' API.
	Client *http.Client
	Logger *slog.Logger

	mu  sync.Mutex
	cur GossipKeys
}

// NewGossipKeyring returns the keyring of a host whose gossip runs with cur.
func NewGossipKeyring(k *GossipKeyring, cur GossipKeys) *GossipKeyring {
	k.cur = cur
	return k
}

// Current returns the keys this host uses.
func (k *GossipKeyring) Current() GossipKeys {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

func (k *GossipKeyring) term() uint64 {
	if k.Term == nil {
		return 0
	}
	return k.Term()
}

func (k *GossipKeyring) applied() uint64 {
	if k.Applied == nil {
		return 0
	}
	return k.Applied()
}

// Apply takes in into use, gossip first and then the file (on disk when
// it returns), unless this host holds a newer keyring; it reports whether
// anything changed. A keyring of the version held with other keys, or
// one that makes a retired key primary again, is refused.
func (k *GossipKeyring) Apply(in GossipKeys) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if in.Version < k.cur.Version {
		return false, nil
	}
	if in.Version == k.cur.Version {
		if in.equal(k.cur) {
			return false, nil
		}
		return false, fmt.Errorf("%w: version %d", ErrKeysDiffer, in.Version)
	}
	return k.setLocked(in)
}

// setLocked takes in whatever its version; k.mu is held.
func (k *GossipKeyring) setLocked(in GossipKeys) (bool, error) {
	retired := mergeRetired(k.cur.Retired, in.Retired)
	if err := checkRetired(in.Keys, k.cur.Keys, retired); err != nil {
		return false, err
	}
	in.Retired = retired
	if err := k.Gossip.SetKeys(in.Keys); err != nil {
		return false, err
	}
	if err := k.Files.WriteGossipKeys(in); err != nil {
		return false, fmt.Errorf("gossip keys: %w", err)
	}
	k.cur = in
	return true, nil
}

// revokedIDs lists the revoked members' ids.
func revokedIDs(sn *statedb.Snapshot) []string {
	var ids []string
	for _, r := range sn.RevokedHosts() {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	return ids
}

// Stale reports whether this host's keys may be out of date: they
// predate a revocation, or a rotation left more than one.
func (k *GossipKeyring) Stale() bool {
	cur := k.Current()
	return len(cur.Keys) > 1 || !cur.covers(revokedIDs(k.State()))
}

// Service is /internal/v1/gossip/keys: GET hands this host's keys to a
// current member; PUT takes keys from the leader. The route needs a
// cluster certificate, and the TLS layer already refuses one this host's
// state has revoked; the checks here also refuse a host whose record is
// gone, or that the keys themselves name as revoked (this host's state
// may not have applied the revocation yet).
func (k *GossipKeyring) Service() rest.Service {
	return rest.Service{Prefix: "/internal/v1", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: http.MethodGet, Path: "/gossip/keys", Auth: rest.Internal, Handler: func(c *rest.Ctx) (any, error) {
			id, err := k.caller(c)
			if err != nil {
				return nil, err
			}
			return k.handOut(id)
		}},
		{Method: http.MethodPut, Path: "/gossip/keys", Auth: rest.Internal, Handler: func(c *rest.Ctx) (any, error) {
			id, err := k.caller(c)
			if err != nil {
				return nil, err
			}
			var in GossipKeys
			if err := c.DecodeLimit(&in, 64<<10); err != nil {
				return nil, rest.BadRequest("gossip keys: %v", err)
			}
			return k.take(id, in)
		}},
	}}
}

// handOut is the GET: this host's keys for member id, refused to a host
// the keys name as revoked and while this host's state has not applied
// the index the keys were made at (it may not know of the revocation).
func (k *GossipKeyring) handOut(id string) (GossipKeys, error) {
	cur := k.Current()
	if cur.excludes(id) {
		return GossipKeys{}, rest.Forbiddenf("member %s was removed from the cluster", id)
	}
	if applied := k.applied(); applied < cur.Index {
		return GossipKeys{}, rest.Unavailable(fmt.Sprintf("this host's state is at index %d, behind the gossip keys' %d", applied, cur.Index))
	}
	return cur, nil
}

// take is the PUT: a step of the rotation from from, taken only from the
// leader this host follows, in the term this host is in, once this
// host's state has applied the index the rotation started at (503 until
// then; the leader retries). It answers once the keys are on disk.
func (k *GossipKeyring) take(from string, in GossipKeys) (map[string]uint64, error) {
	if leader := k.Leader(); from != leader {
		return nil, rest.Conflictf("member %s is not the leader this host follows", from)
	}
	if term := k.term(); in.Version>>32 != term {
		return nil, rest.Conflictf("gossip keys of term %d; this host is in term %d", in.Version>>32, term)
	}
	if applied := k.applied(); applied < in.Index {
		return nil, rest.Unavailable(fmt.Sprintf("this host's state is at index %d, behind the rotation's %d", applied, in.Index))
	}
	if _, err := k.Apply(in); err != nil {
		if errors.Is(err, ErrKeyRetired) || errors.Is(err, ErrKeysDiffer) {
			return nil, rest.Conflictf("%v", err)
		}
		return nil, err
	}
	return map[string]uint64{"version": k.Current().Version}, nil
}

// caller is the member id of the request's client certificate, refused
// unless it names a current, unrevoked member.
func (k *GossipKeyring) caller(c *rest.Ctx) (string, error) {
	if c.R.TLS == nil || len(c.R.TLS.PeerCertificates) == 0 {
		return "", rest.Forbiddenf("a cluster client certificate is required")
	}
	id := c.R.TLS.PeerCertificates[0].Subject.CommonName
	sn := k.State()
	if _, revoked := sn.RevokedHost(id); revoked {
		return "", rest.Forbiddenf("member %s was removed from the cluster", id)
	}
	if _, ok := sn.Member(id); !ok {
		return "", rest.Forbiddenf("%s is not a member of the cluster", id)
	}
	return id, nil
}
