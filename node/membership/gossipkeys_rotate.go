package membership

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// pushTimeout bounds one request to one member's keys route.
const pushTimeout = 3 * time.Second

// defaultStepTimeout bounds how long the leader keeps handing one step to
// a member that refuses it for now (it has not applied the revocation
// yet, or does not know the new leader yet).
const defaultStepTimeout = 10 * time.Second

// errStopped is why a rotation stops half way.
var errStopped = errors.New("gossip key rotation: this host no longer leads in the term it started in")

// Converge, run by the leader, brings the cluster to one gossip key that
// no revoked member ever held: a new key in three steps after a
// revocation, or the last two steps of a rotation a former leader left
// unfinished. It first asks the members for their keys and starts from
// the newest (a leader that missed its predecessor's steps would
// otherwise bring the old key back). Each step goes to every member; one
// that answers but is not ready is retried for up to ten seconds
// (WithStepTimeout), one that cannot be reached three times; a member
// that still has not taken it is passed over (it fetches the keys when
// it comes back). It stops as soon as this host no longer leads in the
// term it started in.
func (k *GossipKeyring) Converge(ctx context.Context, opts ...ConvergeOption) error {
	o := convergeOptions{stepTimeout: defaultStepTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	term := k.term()
	sn := k.State()
	index := k.applied() // read after sn: at or past every revocation sn holds
	revoked := revokedIDs(sn)
	cur := k.Current()
	if cur.covers(revoked) && len(cur.Keys) == 1 {
		return nil
	}
	leading := func() error {
		if l, t := k.Leader(), k.term(); l != k.SelfID || t != term {
			return fmt.Errorf("%w (leader %q, term %d)", errStopped, l, t)
		}
		return nil
	}
	if err := leading(); err != nil {
		return err
	}
	targets := map[string]string{}
	for _, m := range sn.Members() {
		if _, gone := sn.RevokedHost(m.ID); m.ID != k.SelfID && !gone && m.APIAddr != "" {
			targets[m.ID] = m.APIAddr
		}
	}
	repush, floor, err := k.learn(ctx, slices.Collect(maps.Values(targets)))
	if err != nil {
		return err
	}
	cur = k.Current()
	if floor = max(floor, cur.Version); floor>>32 > term {
		return fmt.Errorf("gossip key rotation: keys of term %d; this host leads in term %d", floor>>32, term)
	}
	var steps [][][]byte
	covers, retired := cur.Covers, cur.Retired
	switch {
	case !cur.covers(revoked):
		fresh := make([]byte, 32)
		if _, err := rand.Read(fresh); err != nil {
			return fmt.Errorf("new gossip key: %w", err)
		}
		old := cur.Keys[0]
		steps = [][][]byte{{old, fresh}, {fresh, old}, {fresh}}
	case len(cur.Keys) > 1:
		steps = [][][]byte{cur.Keys, {cur.Keys[0]}}
	case repush:
		steps = [][][]byte{cur.Keys}
	default:
		return nil // a member held the finished rotation
	}
	missedAny := map[string]bool{}
	for i, keys := range steps {
		if len(steps) == 3 && i == 1 {
			// From the switch on the key follows the revoked members, and
			// the old one is retired: no later keyring makes it primary.
			covers, retired = revoked, mergeRetired(retired, []string{keyPrint(keys[1])})
		}
		if err := leading(); err != nil {
			return err
		}
		floor = max(floor, k.Current().Version)
		next := GossipKeys{Keys: keys, Version: max(term<<32, floor+1), Covers: covers,
			Index: index, Revoked: revoked, Retired: retired}
		k.mu.Lock()
		_, err := k.setLocked(next)
		k.mu.Unlock()
		if err != nil {
			return fmt.Errorf("gossip key rotation: %w", err)
		}
		missed, refusedRetired := k.push(ctx, targets, next, o.stepTimeout)
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(refusedRetired) > 0 {
			return fmt.Errorf("gossip key rotation: members %v hold newer keys that retired one of step %d; starting over from theirs", refusedRetired, i+1)
		}
		for _, id := range missed {
			missedAny[id] = true
		}
		k.Logger.Info("gossip key rotation step done", "step", i+1, "of", len(steps), "members", len(targets)-len(missed), "missed", missed)
	}
	if len(missedAny) > 0 {
		k.Logger.Warn("gossip key rotation passed over members that did not take a step; they fetch the keys when they return",
			"members", slices.Sorted(maps.Keys(missedAny)))
	}
	k.Logger.Info("rotated the gossip key", "revoked", len(revoked))
	return nil
}

// ConvergeOption changes how Converge hands out its steps.
type ConvergeOption func(*convergeOptions)

type convergeOptions struct{ stepTimeout time.Duration }

// WithStepTimeout bounds how long one step is retried on one member.
func WithStepTimeout(d time.Duration) ConvergeOption {
	return func(o *convergeOptions) { o.stepTimeout = d }
}

// learn asks addrs for their keys and takes the newest keyring that
// makes no retired key (as any of them, or this host, knows them)
// primary. When this host's own keys are such a dead end it takes the
// best other keyring whatever its version, and reports that its keys
// must be handed out again under a new version, above floor: the
// highest version it has seen, so the members that took the dead end
// take them.
func (k *GossipKeyring) learn(ctx context.Context, addrs []string) (repush bool, floor uint64, err error) {
	got := k.fetchAll(ctx, addrs)
	k.mu.Lock()
	defer k.mu.Unlock()
	cands := append([]GossipKeys{k.cur}, got...)
	for _, c := range cands {
		floor = max(floor, c.Version)
	}
	best, ok := bestKeys(cands)
	if !ok {
		return false, floor, errors.New("gossip key rotation: every keyring known makes a retired key primary")
	}
	if best.equal(k.cur) {
		return false, floor, nil
	}
	selfOK := checkRetired(k.cur.Keys[:1], nil, best.Retired) == nil
	if selfOK && best.Version <= k.cur.Version {
		return false, floor, nil
	}
	if _, err := k.setLocked(best); err != nil {
		return false, floor, fmt.Errorf("gossip key rotation: take a member's keys: %w", err)
	}
	k.Logger.Info("took a member's newer gossip keys before rotating", "version", best.Version, "keys", len(best.Keys))
	return !selfOK, floor, nil
}

// bestKeys is the newest of cands whose primary key no candidate
// retired; its Retired merges all of theirs.
func bestKeys(cands []GossipKeys) (GossipKeys, bool) {
	var retired []string
	for _, c := range cands {
		retired = mergeRetired(retired, c.Retired)
	}
	var best GossipKeys
	found := false
	for _, c := range cands {
		if len(c.Keys) == 0 || slices.Contains(retired, keyPrint(c.Keys[0])) {
			continue
		}
		if !found || c.Version > best.Version {
			best, found = c, true
		}
	}
	best.Retired = retired
	return best, found
}

// fetchAll asks every address for its keys at once and returns the
// answers.
func (k *GossipKeyring) fetchAll(ctx context.Context, addrs []string) []GossipKeys {
	var (
		mu  sync.Mutex
		out []GossipKeys
		wg  sync.WaitGroup
	)
	for _, addr := range addrs {
		wg.Go(func() {
			var got GossipKeys
			if err := k.send(ctx, http.MethodGet, addr, nil, &got); err != nil {
				k.Logger.Debug("ask a member for its gossip keys", "addr", addr, "err", err)
				return
			}
			mu.Lock()
			out = append(out, got)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// push hands keys to every target at once, each retried with backoff
// until it takes them or within returns; it returns the ids that never
// took them, and those that refused them for a retired key (they hold
// newer keys than this host knew).
func (k *GossipKeyring) push(ctx context.Context, targets map[string]string, keys GossipKeys, within time.Duration) (missed, retired []string) {
	body, err := json.Marshal(keys)
	if err != nil {
		return slices.Sorted(maps.Keys(targets)), nil
	}
	sctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for id, addr := range targets {
		wg.Go(func() {
			err := k.pushOne(sctx, addr, body)
			if err == nil {
				return
			}
			k.Logger.Debug("gossip key rotation: member did not take the keys", "member", id, "err", err)
			mu.Lock()
			defer mu.Unlock()
			missed = append(missed, id)
			var se *statusError
			if errors.As(err, &se) && se.code == http.StatusConflict && strings.Contains(se.msg, ErrKeyRetired.Error()) {
				retired = append(retired, id)
			}
		})
	}
	wg.Wait()
	slices.Sort(missed)
	slices.Sort(retired)
	return missed, retired
}

// pushOne hands body to one member until it takes it, it refuses it for
// good (400, 403, a retired key) or ctx ends. A member that answers but
// is not ready (503: its state lags; 409: it does not follow this leader
// yet) is retried until ctx ends; one that cannot be reached at all
// (down, cut off) is given up after three tries, so it does not hold up
// the others' next step.
func (k *GossipKeyring) pushOne(ctx context.Context, addr string, body []byte) error {
	wait := 200 * time.Millisecond
	unreachable := 0
	for {
		err := k.send(ctx, http.MethodPut, addr, body, nil)
		if err == nil {
			return nil
		}
		var se *statusError
		switch {
		case !errors.As(err, &se):
			if unreachable++; unreachable >= 3 {
				return err
			}
		case se.code == http.StatusBadRequest || se.code == http.StatusForbidden ||
			(se.code == http.StatusConflict && strings.Contains(se.msg, ErrKeyRetired.Error())):
			return err
		default:
			unreachable = 0
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// statusError is a member's answer other than 200.
type statusError struct {
	method, addr string
	code         int
	msg          string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.method, e.addr, e.code, e.msg)
}

// Rotator runs the leader's Converge in a goroutine of its own, so a
// member that does not answer never holds up the caller, and cancels it
// when this host stops leading.
type Rotator struct {
	Keyring *GossipKeyring
	Logger  *slog.Logger
	Options []ConvergeOption

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Tend starts a rotation run when leading and none is running, and
// cancels a running one when not leading. It does not block.
func (r *Rotator) Tend(ctx context.Context, leading bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	running := r.done != nil
	if running {
		select {
		case <-r.done:
			running, r.done, r.cancel = false, nil, nil
		default:
		}
	}
	if !leading {
		if running {
			r.cancel()
		}
		return
	}
	if running {
		return
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.cancel, r.done = cancel, done
	go func() {
		defer close(done)
		defer cancel()
		if err := r.Keyring.Converge(cctx, r.Options...); err != nil && cctx.Err() == nil {
			r.Logger.Warn("gossip key rotation", "err", err)
		}
	}()
}

// Stop cancels a running rotation and waits for it to end.
func (r *Rotator) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
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
		return &statusError{method: method, addr: addr, code: resp.StatusCode, msg: string(bytes.TrimSpace(data))}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
