package membership

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

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
// reach every member before the next: install the new key beside the old
// one, make it the one gossip is sent with, drop the old one. Gossip never
// partitions on the way, and a member that missed a step (down, cut off)
// asks the leader for the keys when it cannot rejoin gossip or sees that
// its keys predate a revocation.
//
// Each keyring handed out carries a version — the leader's Raft term in
// the high 32 bits, a count of its steps in the low ones — so an answer
// that arrives late never undoes a newer step and a deposed leader's
// steps never outrank its successor's, and the ids of the revoked members
// whose removal its primary key follows.

// GossipKeys is a host's set of gossip keys.
type GossipKeys struct {
	// Keys are the accepted keys, the one gossip is sent with first.
	Keys [][]byte
	// Version orders the keyrings the leaders hand out (0: the key this
	// host got at bootstrap or join).
	Version uint64
	// Covers are the ids of the revoked members that never held Keys[0].
	Covers []string
}

// gossipKeysJSON is GossipKeys on disk and on the wire.
type gossipKeysJSON struct {
	Keys    []string `json:"keys"`
	Version uint64   `json:"version"`
	Covers  []string `json:"covers"`
}

// MarshalJSON writes the keys in hex.
func (k GossipKeys) MarshalJSON() ([]byte, error) {
	j := gossipKeysJSON{Version: k.Version, Covers: k.Covers}
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
	out := GossipKeys{Version: j.Version, Covers: j.Covers}
	for _, s := range j.Keys {
		key, err := hex.DecodeString(s)
		if err != nil {
			return fmt.Errorf("gossip keys: %w", err)
		}
		if n := len(key); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("gossip keys: a key of %d bytes", n)
		}
		out.Keys = append(out.Keys, key)
	}
	*k = out
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

func (k GossipKeys) equal(o GossipKeys) bool {
	return k.Version == o.Version && slices.EqualFunc(k.Keys, o.Keys, bytes.Equal) && slices.Equal(k.Covers, o.Covers)
}

func (f Files) gossipKeyPath() string { return filepath.Join(f.DataDir, "gossip.key") }

// ReadGossipKeys reads gossip.key: the keyring JSON, or (as bootstrap and
// join write it, and older releases did) one key in hex.
func (f Files) ReadGossipKeys() (GossipKeys, error) {
	b, err := os.ReadFile(f.gossipKeyPath())
	if err != nil {
		return GossipKeys{}, fmt.Errorf("read gossip key: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "{") {
		var k GossipKeys
		if err := json.Unmarshal([]byte(s), &k); err != nil {
			return GossipKeys{}, fmt.Errorf("read gossip key: %w", err)
		}
		return k, nil
	}
	key, err := hex.DecodeString(s)
	if err != nil {
		return GossipKeys{}, fmt.Errorf("read gossip key: %w", err)
	}
	return GossipKeys{Keys: [][]byte{key}}, nil
}

// WriteGossipKeys replaces gossip.key (0600, through a rename).
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
// leads (Converge) and fetched from the leader when stale (Refresh).
type GossipKeyring struct {
	SelfID string
	State  func() *statedb.Snapshot
	// Leader is the Raft leader's id as this host knows it ("" if none).
	Leader func() string
	// Term is this host's current Raft term (nil: 0). Versions start
	// from it, so a new leader's keyrings outrank any a former leader
	// handed out, whatever their clocks say.
	Term   func() uint64
	Gossip KeyedGossip
	Files  Files
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

// Apply takes in into use, gossip first and then the file, unless this
// host holds a newer keyring; it reports whether anything changed.
func (k *GossipKeyring) Apply(in GossipKeys) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if in.Version < k.cur.Version || in.equal(k.cur) {
		return false, nil
	}
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

// nextVersion is the version of this leader's next keyring: above the one
// it holds, and at least its term shifted into the high 32 bits.
func (k *GossipKeyring) nextVersion() uint64 {
	var term uint64
	if k.Term != nil {
		term = k.Term()
	}
	return max(term<<32, k.Current().Version+1)
}

// pushTimeout bounds one push of a keyring to one member.
const pushTimeout = 3 * time.Second

// Converge, run by the leader, brings the cluster to one gossip key that
// no revoked member ever held: a new key in three steps after a
// revocation, or the last two steps of a rotation a former leader left
// unfinished. A member that does not answer a step is passed over (it
// fetches the keys when it comes back).
func (k *GossipKeyring) Converge(ctx context.Context) error {
	sn := k.State()
	revoked := revokedIDs(sn)
	cur := k.Current()
	if cur.covers(revoked) && len(cur.Keys) == 1 {
		return nil
	}
	var steps [][][]byte
	covers := cur.Covers
	if !cur.covers(revoked) {
		fresh := make([]byte, 32)
		if _, err := rand.Read(fresh); err != nil {
			return fmt.Errorf("new gossip key: %w", err)
		}
		old := cur.Keys[0]
		steps = [][][]byte{{old, fresh}, {fresh, old}, {fresh}}
	} else {
		steps = [][][]byte{cur.Keys, {cur.Keys[0]}}
	}
	targets := map[string]string{}
	for _, m := range sn.Members() {
		if _, gone := sn.RevokedHost(m.ID); m.ID != k.SelfID && !gone && m.APIAddr != "" {
			targets[m.ID] = m.APIAddr
		}
	}
	missedAny := map[string]bool{}
	for i, keys := range steps {
		if i == 1 {
			covers = revoked // from the switch on, the key follows them
		}
		if k.Leader() != k.SelfID {
			return errors.New("gossip key rotation: this host no longer leads")
		}
		next := GossipKeys{Keys: keys, Version: k.nextVersion(), Covers: covers}
		if _, err := k.Apply(next); err != nil {
			return fmt.Errorf("gossip key rotation: %w", err)
		}
		missed := k.push(ctx, targets, next)
		for _, id := range missed {
			missedAny[id] = true
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		k.Logger.Info("gossip key rotation step done", "step", i+1, "of", len(steps), "members", len(targets)-len(missed), "missed", missed)
	}
	if len(missedAny) > 0 {
		k.Logger.Warn("gossip key rotation passed over members that did not answer; they fetch the keys when they return",
			"members", slices.Sorted(maps.Keys(missedAny)))
	}
	k.Logger.Info("rotated the gossip key", "revoked", len(revoked))
	return nil
}

// push hands keys to every target at once, each tried a few times, and
// returns the ids that never took them.
func (k *GossipKeyring) push(ctx context.Context, targets map[string]string, keys GossipKeys) []string {
	body, err := json.Marshal(keys)
	if err != nil {
		return slices.Sorted(maps.Keys(targets))
	}
	var (
		mu     sync.Mutex
		missed []string
		wg     sync.WaitGroup
	)
	for id, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if err = k.send(ctx, http.MethodPut, addr, body, nil); err == nil {
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
			k.Logger.Debug("gossip key rotation: member did not take the keys", "member", id, "err", err)
			mu.Lock()
			missed = append(missed, id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(missed)
	return missed
}

// send makes one request to a member's gossip keys route; out, when not
// nil, receives the answer.
func (k *GossipKeyring) send(ctx context.Context, method, addr string, body []byte, out *GossipKeys) error {
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+"/internal/v1/gossip/keys", rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %s", method, addr, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Refresh asks the leader (or, with none known, each other member in
// turn, then the extra API addresses: a joining host that has not caught
// up yet knows its join token's) for the current keys and takes them if
// they are newer.
func (k *GossipKeyring) Refresh(ctx context.Context, extra ...string) (bool, error) {
	sn := k.State()
	var addrs []string
	if id := k.Leader(); id != "" && id != k.SelfID {
		if m, ok := sn.Member(id); ok && m.APIAddr != "" {
			addrs = append(addrs, m.APIAddr)
		}
	}
	if len(addrs) == 0 {
		for _, m := range sn.Members() {
			if m.ID != k.SelfID && m.APIAddr != "" {
				addrs = append(addrs, m.APIAddr)
			}
		}
		addrs = append(addrs, extra...)
	}
	var errs []error
	for _, addr := range addrs {
		var got GossipKeys
		if err := k.send(ctx, http.MethodGet, addr, nil, &got); err != nil {
			errs = append(errs, err)
			continue
		}
		changed, err := k.Apply(got)
		if err == nil && changed {
			k.Logger.Info("took the gossip keys from a member", "from", addr, "keys", len(got.Keys))
		}
		return changed, err
	}
	if len(errs) == 0 {
		return false, errors.New("fetch gossip keys: no other member known")
	}
	return false, fmt.Errorf("fetch gossip keys: %w", errors.Join(errs...))
}

// Service is /internal/v1/gossip/keys: GET hands this host's keys to a
// current member; PUT takes keys from the leader. The route needs a
// cluster certificate, and the TLS layer already refuses a revoked one;
// the member check here also refuses a host whose record is gone.
func (k *GossipKeyring) Service() rest.Service {
	return rest.Service{Prefix: "/internal/v1", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: http.MethodGet, Path: "/gossip/keys", Auth: rest.Internal, Handler: func(c *rest.Ctx) (any, error) {
			if _, err := k.caller(c); err != nil {
				return nil, err
			}
			return k.Current(), nil
		}},
		{Method: http.MethodPut, Path: "/gossip/keys", Auth: rest.Internal, Handler: func(c *rest.Ctx) (any, error) {
			id, err := k.caller(c)
			if err != nil {
				return nil, err
			}
			if leader := k.Leader(); id != leader {
				return nil, rest.Conflictf("member %s is not the leader this host follows", id)
			}
			var in GossipKeys
			if err := c.DecodeLimit(&in, 64<<10); err != nil {
				return nil, rest.BadRequest("gossip keys: %v", err)
			}
			if _, err := k.Apply(in); err != nil {
				return nil, err
			}
			return map[string]uint64{"version": k.Current().Version}, nil
		}},
	}}
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
