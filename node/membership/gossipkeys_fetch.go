package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"
)

// Refresh asks every other member the state knows, and the extra API
// addresses (a joining host that has not caught up yet knows its join
// token's), for their keys at once and takes the newest keyring that
// makes no retired key primary, if it is newer than this host's.
func (k *GossipKeyring) Refresh(ctx context.Context, extra ...string) (bool, error) {
	sn := k.State()
	var addrs []string
	for _, m := range sn.Members() {
		if m.ID != k.SelfID && m.APIAddr != "" && !slices.Contains(addrs, m.APIAddr) {
			addrs = append(addrs, m.APIAddr)
		}
	}
	for _, a := range extra {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return false, errors.New("fetch gossip keys: no other member known")
	}
	got, errs := k.fetchEach(ctx, addrs)
	if len(got) == 0 {
		return false, fmt.Errorf("fetch gossip keys: %w", errors.Join(errs...))
	}
	best, ok := bestKeys(append([]GossipKeys{k.Current()}, got...))
	if !ok {
		return false, errors.New("fetch gossip keys: every keyring handed out makes a retired key primary")
	}
	changed, err := k.Apply(best)
	if err == nil && changed {
		k.Logger.Info("took the gossip keys from the members", "version", best.Version, "keys", len(best.Keys), "asked", len(addrs), "answered", len(got))
	}
	return changed, err
}

// fetchEach asks every address for its keys at once and returns the
// answers and the failures.
func (k *GossipKeyring) fetchEach(ctx context.Context, addrs []string) ([]GossipKeys, []error) {
	type answer struct {
		keys GossipKeys
		err  error
	}
	ch := make(chan answer, len(addrs))
	for _, addr := range addrs {
		go func() {
			var a answer
			a.err = k.send(ctx, http.MethodGet, addr, nil, &a.keys)
			ch <- a
		}()
	}
	var (
		got  []GossipKeys
		errs []error
	)
	for range addrs {
		a := <-ch
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		got = append(got, a.keys)
	}
	return got, errs
}

// FetchGossipKeys asks the API addresses for the gossip keys over client
// (this host's mutual-TLS client) and returns the newest keyring that
// makes no retired key primary: how a host whose gossip.key is lost or
// unreadable gets the keys back before it starts gossip.
func FetchGossipKeys(ctx context.Context, client *http.Client, addrs []string) (GossipKeys, error) {
	k := &GossipKeyring{Client: client, Logger: slog.New(slog.DiscardHandler)}
	got, errs := k.fetchEach(ctx, addrs)
	if len(got) == 0 {
		if len(errs) == 0 {
			return GossipKeys{}, errors.New("fetch gossip keys: no other member known")
		}
		return GossipKeys{}, fmt.Errorf("fetch gossip keys from %v: %w", addrs, errors.Join(errs...))
	}
	best, ok := bestKeys(got)
	if !ok {
		return GossipKeys{}, errors.New("fetch gossip keys: every keyring handed out makes a retired key primary")
	}
	return best, nil
}

// RecoverGossipKeys gets the gossip keys of a host whose gossip.key is
// lost or unreadable, before gossip starts: from the other members' API
// addresses (others lists them as the state knows them; it is asked again
// every second while Raft brings the state), over client (this host's
// mutual-TLS client), for up to a minute. The keys are saved before they
// are returned.
func RecoverGossipKeys(ctx context.Context, client *http.Client, others func() []string, save func(GossipKeys) error) (GossipKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		var keys GossipKeys
		addrs := others()
		err := errors.New("the state lists no other member yet")
		if len(addrs) > 0 {
			if keys, err = FetchGossipKeys(ctx, client, addrs); err == nil {
				if err := save(keys); err != nil {
					return GossipKeys{}, fmt.Errorf("save the fetched gossip keys: %w", err)
				}
				return keys, nil
			}
		}
		select {
		case <-ctx.Done():
			return GossipKeys{}, fmt.Errorf("no member handed out the keys (%w): %w", err, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// FetchPacer spaces a member's fetches of the keys: every second while it
// cannot rejoin gossip, every five seconds while its keys are stale, and,
// after fetches that fail (a removed host that every member refuses),
// twice as long each time up to a minute.
type FetchPacer struct {
	last    time.Time
	backoff time.Duration
}

// maxFetchBackoff is the longest wait between failing fetches.
const maxFetchBackoff = time.Minute

// Due reports whether a fetch is due at now; urgent is a host that
// cannot rejoin gossip. A due fetch counts as started.
func (p *FetchPacer) Due(now time.Time, urgent bool) bool {
	every := 5 * time.Second
	if urgent {
		every = time.Second
	}
	if now.Sub(p.last) < max(every, p.backoff) {
		return false
	}
	p.last = now
	return true
}

// Done records how the fetch ended.
func (p *FetchPacer) Done(err error) {
	if err == nil {
		p.backoff = 0
		return
	}
	p.backoff = min(max(2*p.backoff, 2*time.Second), maxFetchBackoff)
}
