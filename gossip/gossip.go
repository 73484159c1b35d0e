// Package gossip owns this host's membership in the cluster's gossip pool:
// it wraps hashicorp/memberlist, gossips the host's Meta (addresses and
// capacity) and tracks every host it has heard of as alive, dead or left.
// All gossip is encrypted and verified with the cluster key.
//
// Events are hints: they are dropped rather than block memberlist, so
// consumers must reconcile from Members. The package must not import other
// peerstack packages, decide anything about Raft or scheduling, or block
// memberlist's callbacks. It starts no goroutines of its own beyond one per
// in-flight Join, which Shutdown waits for; memberlist's own goroutines stop
// in Shutdown.
package gossip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	// ErrShutdown is returned by calls made after Shutdown.
	ErrShutdown = errors.New("gossip shut down")
	// ErrLeft is returned by UpdateMeta after Leave.
	ErrLeft = errors.New("gossip left")
	// ErrNoPeers is returned by Join when no peer could be joined.
	ErrNoPeers = errors.New("no peer reachable")
)

const (
	defaultEventBuffer = 256
	defaultReapAfter   = 24 * time.Hour
	// defaultWait bounds UpdateMeta and Leave when no other bound is given.
	defaultWait = 5 * time.Second
)

// Config configures New.
type Config struct {
	NodeID        string // memberlist node name
	BindAddr      string // "0.0.0.0" or an IP; empty means "0.0.0.0"
	BindPort      int    // 0 = pick a free port (tests); read back with (*Gossip).Port()
	AdvertiseAddr string // optional
	AdvertisePort int    // optional; defaults to the bound port
	// SecretKey is the cluster key, 16, 24 or 32 bytes. Required: all
	// gossip is encrypted and unencrypted gossip is refused.
	SecretKey []byte
	// OtherKeys are further keys accepted on incoming gossip (a key
	// rotation in progress); gossip is sent with SecretKey only.
	OtherKeys [][]byte
	Meta      Meta // NodeID may be empty; it is set to Config.NodeID
	// Timers tune the failure detector; the zero value keeps memberlist's
	// LAN defaults.
	Timers Timers
	// Links, when set, decides which peers are reachable (fault
	// injection: a partition). nil: all of them.
	Links  Links
	Logger *slog.Logger // nil discards

	EventBuffer int           // Events capacity; <= 0 means 256
	ReapAfter   time.Duration // how long dead/left members stay listed; <= 0 means 24h
	// Now is this host's wall clock, sent in probe acks so that peers
	// measure its skew (Member.ClockSkew); nil means time.Now. Fault
	// injection and tests shift it.
	Now func() time.Time
}

// Timers tune memberlist's failure detection and dissemination. Each
// zero field keeps memberlist's LAN default.
type Timers struct {
	ProbeInterval, ProbeTimeout time.Duration
	GossipInterval              time.Duration
	PushPullInterval            time.Duration
	TCPTimeout                  time.Duration
	GossipToTheDeadTime         time.Duration
	// DeadNodeReclaimTime lets a host restarted on a new port take its
	// name back once its old self has been dead this long (default: never).
	DeadNodeReclaimTime time.Duration
	// SuspicionMult and SuspicionMaxTimeoutMult scale how long a member
	// stays suspect before it is declared dead.
	SuspicionMult, SuspicionMaxTimeoutMult int
}

func (t Timers) apply(mc *memberlist.Config) {
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	set(&mc.ProbeInterval, t.ProbeInterval)
	set(&mc.ProbeTimeout, t.ProbeTimeout)
	set(&mc.GossipInterval, t.GossipInterval)
	set(&mc.PushPullInterval, t.PushPullInterval)
	set(&mc.TCPTimeout, t.TCPTimeout)
	set(&mc.GossipToTheDeadTime, t.GossipToTheDeadTime)
	set(&mc.DeadNodeReclaimTime, t.DeadNodeReclaimTime)
	if t.SuspicionMult > 0 {
		mc.SuspicionMult = t.SuspicionMult
	}
	if t.SuspicionMaxTimeoutMult > 0 {
		mc.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	}
}

// LogValue keeps the key out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("node_id", c.NodeID),
		slog.String("bind", fmt.Sprintf("%s:%d", c.BindAddr, c.BindPort)),
		slog.String("advertise", fmt.Sprintf("%s:%d", c.AdvertiseAddr, c.AdvertisePort)),
	)
}

// Gossip is this host's handle on the gossip pool. It is safe for
// concurrent use.
type Gossip struct {
	nodeID    string
	log       *slog.Logger
	now       func() time.Time
	list      *memberlist.Memberlist
	keyring   *memberlist.Keyring
	port      int
	reapAfter time.Duration
	events    chan Event
	dropped   atomic.Uint64
	joins     sync.WaitGroup // in-flight Join goroutines

	// updateMu serialises UpdateMeta, Leave and Shutdown, so memberlist
	// never sees Leave or UpdateNode after its Shutdown.
	updateMu sync.Mutex

	mu      sync.Mutex // guards the fields below
	meta    Meta       // local Meta, normalised
	metaBuf []byte     // meta encoded, served to memberlist
	members map[string]*record
	left    bool
	closed  bool
}

// New starts gossiping on the configured address. It does not join anyone.
func New(cfg Config) (*Gossip, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("gossip: node id required")
	}
	for _, k := range append([][]byte{cfg.SecretKey}, cfg.OtherKeys...) {
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
	}
	// memberlist binds every address when given one it cannot parse.
	for _, a := range []string{cfg.BindAddr, cfg.AdvertiseAddr} {
		if a != "" && net.ParseIP(a) == nil {
			return nil, fmt.Errorf("gossip: address %q is not an ip", a)
		}
	}
	meta := cfg.Meta.normalize()
	if meta.NodeID == "" {
		meta.NodeID = cfg.NodeID
	}
	if meta.NodeID != cfg.NodeID {
		return nil, fmt.Errorf("gossip: meta node id %q differs from node id %q", meta.NodeID, cfg.NodeID)
	}
	buf, err := meta.Encode()
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	others := make([][]byte, 0, len(cfg.OtherKeys))
	for _, k := range cfg.OtherKeys {
		others = append(others, append([]byte(nil), k...))
	}
	keyring, err := memberlist.NewKeyring(others, append([]byte(nil), cfg.SecretKey...))
	if err != nil {
		return nil, fmt.Errorf("gossip: keyring: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Gossip{
		nodeID:    cfg.NodeID,
		log:       logger,
		now:       cfg.Now,
		reapAfter: cmp.Or(max(cfg.ReapAfter, 0), defaultReapAfter),
		events:    make(chan Event, cmp.Or(max(cfg.EventBuffer, 0), defaultEventBuffer)),
		meta:      meta,
		metaBuf:   buf,
		members:   make(map[string]*record),
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr = cmp.Or(cfg.BindAddr, "0.0.0.0")
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	// memberlist advertises port 0 if given an address without a port.
	mc.AdvertisePort = cmp.Or(cfg.AdvertisePort, cfg.BindPort)
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.Delegate = hooks{g}
	mc.Events = hooks{g}
	mc.Conflict = hooks{g}
	mc.Ping = hooks{g}
	mc.Logger = log.New(&logWriter{log: logger.With("source", "memberlist")}, "", 0)
	cfg.Timers.apply(mc)
	var linked *linkedTransport
	if cfg.Links != nil {
		t, port, err := newLinkedTransport(mc.BindAddr, mc.BindPort, cfg.Links, mc.Logger)
		if err != nil {
			return nil, err
		}
		linked, mc.Transport = t, t
		if mc.BindPort == 0 {
			mc.BindPort = port
			mc.AdvertisePort = cmp.Or(cfg.AdvertisePort, port)
		}
	}
	list, err := memberlist.Create(mc)
	if err != nil {
		if linked != nil {
			_ = linked.Shutdown()
		}
		return nil, fmt.Errorf("gossip: start memberlist on %s:%d: %w", mc.BindAddr, cfg.BindPort, err)
	}
	// Create filled in the bound port; nothing else writes mc now.
	g.list, g.port, g.keyring = list, mc.BindPort, keyring
	logger.Debug("gossip started", "config", cfg, "port", g.port)
	return g, nil
}

// Port returns the bound gossip port.
func (g *Gossip) Port() int { return g.port }

// Join contacts the given "ip:port" peers and merges their view of the
// pool. It returns how many peers it reached; if none, the error wraps
// ErrNoPeers and each peer's reason. memberlist cannot be cancelled, so if
// ctx ends first Join returns ctx's error while the attempt in flight runs
// on (each peer bounded by the TCP timeout) and may still join; Shutdown
// waits for it.
func (g *Gossip) Join(ctx context.Context, peers []string) (int, error) {
	if len(peers) == 0 {
		return 0, fmt.Errorf("gossip: join: no peers given: %w", ErrNoPeers)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("gossip: join: %w", err)
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return 0, fmt.Errorf("gossip: join: %w", ErrShutdown)
	}
	g.joins.Add(1)
	g.mu.Unlock()

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	peers = append([]string(nil), peers...)
	go func() {
		defer g.joins.Done()
		n, err := g.list.Join(peers)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.n > 0 {
			return r.n, nil
		}
		if r.err == nil {
			r.err = errors.New("no addresses")
		}
		return 0, fmt.Errorf("gossip: join %s: %w: %w", strings.Join(peers, ","), ErrNoPeers, r.err)
	case <-ctx.Done():
		return 0, fmt.Errorf("gossip: join: %w", ctx.Err())
	}
}

// UpdateMeta gossips a new local Meta if it differs from the current one.
// m.NodeID may be empty. It waits, bounded by ctx's deadline or 5s, until
// the change has been broadcast; on a timeout the change still spreads.
func (g *Gossip) UpdateMeta(ctx context.Context, m Meta) error {
	m = m.normalize()
	if m.NodeID == "" {
		m.NodeID = g.nodeID
	}
	if m.NodeID != g.nodeID {
		return fmt.Errorf("gossip: update meta: node id %q differs from %q", m.NodeID, g.nodeID)
	}
	buf, err := m.Encode()
	if err != nil {
		return fmt.Errorf("gossip: update meta: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gossip: update meta: %w", err)
	}
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	g.mu.Lock()
	switch {
	case g.closed:
		g.mu.Unlock()
		return fmt.Errorf("gossip: update meta: %w", ErrShutdown)
	case g.left:
		g.mu.Unlock()
		return fmt.Errorf("gossip: update meta: %w", ErrLeft)
	case g.meta == m:
		g.mu.Unlock()
		return nil
	}
	g.meta, g.metaBuf = m, buf
	g.mu.Unlock()

	timeout := defaultWait
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := g.list.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: update meta: %w", err)
	}
	return nil
}

// Leave tells the pool this host is going away: it gossips Meta.Leaving,
// then memberlist's leave, waiting up to timeout (<= 0 means 5s) in all.
// Others then list this host as left. Call Shutdown afterwards.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = defaultWait
	}
	deadline := time.Now().Add(timeout)
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return fmt.Errorf("gossip: leave: %w", ErrShutdown)
	}
	if g.left {
		g.mu.Unlock()
		return nil
	}
	g.left = true
	g.meta.Leaving = true
	buf, err := g.meta.Encode()
	if err == nil {
		g.metaBuf = buf
	}
	g.mu.Unlock()

	if err == nil {
		// Best effort: a peer that misses the flag lists us as dead.
		if err := g.list.UpdateNode(timeout / 2); err != nil {
			g.log.Debug("gossip leave: leaving flag not fully broadcast", "err", err)
		}
	}
	if err := g.list.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping without telling anyone (others will list this
// host as dead unless Leave ran first), waits for in-flight Joins and closes
// Events. It is idempotent.
func (g *Gossip) Shutdown() error {
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true // from here no Join starts and no event is sent
	g.mu.Unlock()

	err := g.list.Shutdown()
	g.joins.Wait()
	close(g.events)
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}
