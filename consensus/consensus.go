// Package consensus owns Raft: setup over a mutual-TLS stream layer, the FSM
// over the statedb store, snapshots, membership changes, and Apply with
// forwarding to the leader and read-your-writes.
//
// It must not know about REST, gossip or hosts' hardware; the composition
// root (node) injects how to reach the leader.
package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Sentinel errors.
var (
	// ErrNoLeader means no leader is known right now; retry later (503).
	ErrNoLeader = errors.New("no cluster leader")
	// ErrShutdown means this node is stopping.
	ErrShutdown = errors.New("consensus is shut down")
)

// Forwarder sends a command to the leader and returns the index it was
// applied at (or the business error it failed with).
type Forwarder interface {
	Forward(ctx context.Context, leaderID string, data []byte) (uint64, error)
}

// Config configures a Node.
type Config struct {
	NodeID        string
	DataDir       string // raft.db and snapshots/ live here
	BindAddr      string // raft listen address, host:port
	AdvertiseAddr string // optional
	// ServerTLS and ClientTLS are the mutual-TLS configs of the Raft
	// stream; the node keeps its own clones.
	ServerTLS *tls.Config
	ClientTLS *tls.Config
	// TLSConns, when set, makes the stream's TLS connections (see
	// TLSConns); nil: plain ones.
	TLSConns  TLSConns
	Forwarder Forwarder
	Timers    Timers // zero fields take DefaultTimers' values
	// Now and NewID stamp the commands Propose builds; nil means time.Now
	// and random 128-bit hex ids.
	Now   func() time.Time
	NewID func() string
	// CallerOf, when set, names the API caller a command proposed with ctx
	// acts for (nil: none); Apply stamps it into commands that carry no
	// caller yet (statedb.Caller).
	CallerOf func(ctx context.Context) *statedb.Caller
	// Commands is the command registry; nil means statedb.Commands().
	Commands *statedb.Registry
	// OnFatal is called once, from the state machine, when a committed
	// entry cannot be applied by this build (*statedb.FatalError). The
	// state machine applies nothing after it either way. nil panics, which
	// stops the daemon loudly: its state must not silently fork.
	OnFatal func(error)
	// Links, when set, decides which peers are reachable (fault
	// injection). nil: all of them.
	Links Links
	// WrapLogs, when set, wraps the Raft log store (fault injection: a
	// stalling disk). nil: the store as it is.
	WrapLogs func(raft.LogStore) raft.LogStore
	Logger   *slog.Logger
}

// Timers are Raft's timeouts.
type Timers struct {
	Heartbeat   time.Duration // a follower without contact this long starts an election
	Election    time.Duration // a candidate without a leader this long starts another election
	LeaderLease time.Duration // a leader without quorum contact this long steps down
	Commit      time.Duration // the longest the leader waits to batch entries
}

// DefaultTimers suit hosts on one LAN.
func DefaultTimers() Timers {
	return Timers{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond,
		LeaderLease: 250 * time.Millisecond, Commit: 2 * time.Millisecond}
}

func (t Timers) withDefaults() Timers {
	d := DefaultTimers()
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.Heartbeat, &d.Heartbeat}, {&t.Election, &d.Election}, {&t.LeaderLease, &d.LeaderLease}, {&t.Commit, &d.Commit},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return t
}

// noPipelining turns off Raft's pipelined replication: the leader sends
// a follower its next entries once the previous batch is answered
// (batches hold up to MaxAppendEntries entries, so throughput on a LAN
// barely changes).
//
// hashicorp/raft's pipeline can deadlock the replication goroutine for
// good. The pipeline's decoder goroutine hands each answer to the leader's
// consumer over a channel (unbuffered with the default two RPCs in
// flight). The consumer stops at the first answer that is not a success or
// carries a newer term, which a leadership change produces. If one more
// request was in flight, the decoder then waits forever to hand over its
// answer, and the sender, if it sends once more before it notices the
// consumer is gone (its select picks a new entry or the commit timer over
// the closed finish channel), waits forever for the decoder to take the
// request. Only closing the pipeline frees them, and the sender closes it
// on its way out. The stuck goroutine belongs to Raft's routine group, so
// the node keeps working but raft.Shutdown waits for it forever: a former
// leader's Shutdown hung this way. A value below 2 makes the transport
// refuse pipelines (raft.ErrPipelineReplicationNotSupported), which Raft
// handles by replicating with one AppendEntries call at a time; each call
// is bounded by the transport's timeout.
const noPipelining = 1

// Node is one Raft member with its state store.
type Node struct {
	cfg    Config
	raft   *raft.Raft
	store  *statedb.Store
	fsm    *fsm
	trans  *raft.NetworkTransport
	stream *tlsStream
	logs   *raftboltdb.BoltStore
	// announcer tells followers the commit index of forwarded writes
	// at once (announce.go).
	announcer commitAnnouncer
	notify    chan bool
	log       *slog.Logger

	stopOnce sync.Once
	stopped  chan struct{} // closed when Shutdown begins

	skip skipMark // see appliedIndex

	reads readRounds // see ReadIndex
}

// readRounds batches read-index requests: the callers that arrive while a
// confirmation round is in flight share the next one, which starts once
// that one ends, so every caller's round began after it asked.
type readRounds struct {
	mu   sync.Mutex
	busy bool       // a round is in flight
	next *readRound // the round the next callers join; nil: none yet
}

type readRound struct {
	done  chan struct{}
	index uint64
	err   error
}

// New opens (or creates) the Raft data in cfg.DataDir and starts the node.
// It does not bootstrap: call Bootstrap on the first host of a new cluster.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = randomID
	}
	if cfg.Commands == nil {
		cfg.Commands = statedb.Commands()
	}
	if cfg.OnFatal == nil {
		cfg.OnFatal = func(err error) { panic(err) }
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft data dir: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: slogWriter{cfg.Logger.With("sub", "raft")}})
	rc.SnapshotThreshold = 8192
	rc.TrailingLogs = 10240
	tm := cfg.Timers.withDefaults()
	rc.HeartbeatTimeout, rc.ElectionTimeout = tm.Heartbeat, tm.Election
	rc.LeaderLeaseTimeout, rc.CommitTimeout = tm.LeaderLease, tm.Commit
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft timers: %w", err)
	}
	notify := make(chan bool, 16)
	rc.NotifyCh = notify

	logs, err := raftboltdb.NewBoltStore(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	stream, err := newTLSStream(cfg.BindAddr, cfg.AdvertiseAddr, cfg.ServerTLS, cfg.ClientTLS, cfg.Links, cfg.TLSConns)
	if err != nil {
		logs.Close()
		return nil, err
	}
	watch := &leaderWatch{tm: tm}
	stream.gone = watch.peerGone
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 5, Timeout: 5 * time.Second, Logger: rc.Logger,
		MaxRPCsInFlight: noPipelining,
	})
	store := statedb.NewStoreFor(cfg.Commands)
	f := newFSM(store, cfg.OnFatal, cfg.Logger)
	var logStore raft.LogStore = logs
	if cfg.WrapLogs != nil {
		logStore = cfg.WrapLogs(logs)
	}
	timed := &logTimer{LogStore: logStore}
	logStore = timed
	r, err := raft.NewRaft(rc, f, logStore, logs, snaps, trans)
	if err != nil {
		trans.Close()
		logs.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n := &Node{cfg: cfg, raft: r, store: store, fsm: f, trans: trans, stream: stream, logs: logs, notify: notify, log: cfg.Logger, stopped: make(chan struct{})}
	n.announcer.barrier = func() error { return n.await(r.Barrier(barrierTimeout)) }
	// Two log writes in a row must beat the commit timer's shortest wait.
	n.announcer.worth = func() bool { return timed.below(tm.Commit / 2) }
	watch.node.Store(n)
	n.electAloneSoon(tm)
	return n, nil
}

// electAloneSoon shortens the wait before the first election while this
// node is the only voter of its configuration (a new cluster, or a
// one-host cluster restarting): nobody else can lead, so waiting a full
// heartbeat timeout (500-1000 ms by default) only delays the first write.
// The heartbeat timeout drops to the leader lease (the shortest Raft
// accepts) until this node leads, then returns to tm.
func (n *Node) electAloneSoon(tm Timers) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil || n.raft.State() == raft.Leader {
		return
	}
	servers := f.Configuration().Servers
	if len(servers) != 1 || servers[0].ID != raft.ServerID(n.cfg.NodeID) || servers[0].Suffrage != raft.Voter {
		return
	}
	if tm.LeaderLease >= tm.Heartbeat {
		return
	}
	ch := make(chan raft.Observation, 4)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		st, ok := o.Data.(raft.RaftState)
		return ok && st == raft.Leader
	})
	n.raft.RegisterObserver(obs)
	set := func(hb, el time.Duration) error {
		rc := n.raft.ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = hb, el
		return n.raft.ReloadConfig(rc)
	}
	if err := set(tm.LeaderLease, tm.LeaderLease); err != nil {
		n.raft.DeregisterObserver(obs)
		n.log.Debug("raft: keep the default first election wait", "err", err)
		return
	}
	go func() {
		defer n.raft.DeregisterObserver(obs)
		t := time.NewTimer(10 * tm.Heartbeat)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		case <-n.stopped:
			return
		}
		if err := set(tm.Heartbeat, tm.Election); err != nil {
			n.log.Warn("raft: restore timers after the first election", "err", err)
		}
	}()
}

// Addr is the Raft address others reach this node at.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// HasState reports whether this data dir already holds a Raft configuration.
func HasState(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "raft.db"))
	return err == nil
}

// Bootstrap makes this node the single voter of a new cluster.
func (n *Node) Bootstrap() error {
	f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
		ID: raft.ServerID(n.cfg.NodeID), Address: n.trans.LocalAddr(), Suffrage: raft.Voter,
	}}})
	if err := f.Error(); err != nil {
		return fmt.Errorf("bootstrap raft: %w", err)
	}
	n.electAloneSoon(n.cfg.Timers.withDefaults())
	return nil
}

// Halted returns the *statedb.FatalError the state machine stopped at, or
// nil while it runs.
func (n *Node) Halted() error { return n.fsm.halted() }

// Store returns the local state store.
func (n *Node) Store() *statedb.Store { return n.store }

// State returns an immutable snapshot of the local state.
func (n *Node) State() *statedb.Snapshot { return n.store.Snapshot() }

// LeaderNotify delivers leadership transitions (true = became leader).
func (n *Node) LeaderNotify() <-chan bool { return n.notify }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and Raft address, if known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Barrier waits until every preceding log entry is applied (leader only).
func (n *Node) Barrier(ctx context.Context) error {
	return n.await(n.raft.Barrier(timeoutOf(ctx, 10*time.Second)))
}

// ConfirmLeader returns once an entry this node appended after the call
// is committed in its term, proving that a quorum of voters still
// followed that term after the call began (leader only); it gives up when
// ctx ends.
//
// Commitment counts voters only, and a voter that has moved to a newer
// term refuses the entry. Raft's VerifyLeader is not used: it counts the
// heartbeat answers of every replicated peer, non-voters included, so a
// leader cut off from the other voters but still reaching a non-voter
// (which has not heard of the newer term) is "verified".
//
// The entry is a barrier: it is written to the log (the leader's disk
// must answer) and returns once the entries before it are applied.
func (n *Node) ConfirmLeader(ctx context.Context) error {
	f := n.raft.Barrier(timeoutOf(ctx, 10*time.Second))
	done := make(chan error, 1)
	go func() { done <- n.await(f) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReadIndex is Raft's read index, on the leader: it confirms this node
// still leads (ConfirmLeader: a barrier committed in its term, appended
// after the call) and returns the index its state has applied, which
// then holds every write acknowledged before the call. A host that waits
// until it has applied that index may answer a read as the leader would
// have (linearizable). Concurrent callers share one round, so reads do
// not each add a log entry.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, fmt.Errorf("read index: %w", ErrNoLeader)
	}
	rr := &n.reads
	rr.mu.Lock()
	r := rr.next
	if r == nil {
		r = &readRound{done: make(chan struct{})}
		rr.next = r
		if !rr.busy {
			n.startReadRound()
		}
	}
	rr.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return 0, fmt.Errorf("read index: %w", ctx.Err())
	}
	if r.err != nil {
		return 0, fmt.Errorf("read index: %w", r.err)
	}
	return r.index, nil
}

// startReadRound runs the pending round (n.reads.mu held), and the next
// one when callers joined it meanwhile.
func (n *Node) startReadRound() {
	rr := &n.reads
	r := rr.next
	rr.next, rr.busy = nil, true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.ConfirmLeader(ctx)
		cancel()
		r.index, r.err = n.store.AppliedIndex(), err
		close(r.done)
		rr.mu.Lock()
		rr.busy = false
		if rr.next != nil {
			n.startReadRound()
		}
		rr.mu.Unlock()
	}()
}

// StepAside cuts this node off from the other members while it is the
// leader, so they stop hearing its heartbeats and elect another; it
// joins them again once it no longer leads. It is for a leader that can
// no longer commit while its heartbeats still hold the followers: Raft
// writes the log in its leader loop, so a stalled disk stops commits and
// leadership transfers alike, while heartbeats, sent from goroutines of
// their own, go on. The leader steps down by itself once its lease runs
// out without the others' answers (or, stalled, once its loop runs
// again). A node that does not lead is left alone, and so is the only
// voter (nobody else could lead: cutting it off would only starve the
// non-voters). Aside lasts at most asideMax: a leader still leading then
// is reconnected (and may be asked again).
func (n *Node) StepAside() {
	if n.raft.State() != raft.Leader || n.soleVoter() || !n.stream.aside.CompareAndSwap(false, true) {
		return
	}
	n.log.Warn("raft: stepping aside: cut off from the other members until this node no longer leads")
	n.trans.CloseStreams()
	tm := n.cfg.Timers.withDefaults()
	limit := time.NewTimer(asideMax * (tm.Heartbeat + tm.Election))
	go func() {
		defer n.stream.aside.Store(false)
		defer limit.Stop()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for n.raft.State() == raft.Leader {
			select {
			case <-t.C:
			case <-limit.C:
				n.log.Warn("raft: still the leader after stepping aside; back in touch with the other members")
				return
			case <-n.stopped:
				return
			}
		}
		n.log.Info("raft: no longer the leader; back in touch with the other members")
	}()
}

// snapshotIndex is the index of the latest Raft snapshot (0: none).
func (n *Node) snapshotIndex() uint64 {
	v, _ := strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	return v
}

// asideMax bounds how long StepAside keeps a node cut off, in heartbeat
// plus election timeouts.
const asideMax = 5

// soleVoter reports whether this node is the only voter of its
// configuration.
func (n *Node) soleVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	voters, self := 0, false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
			self = self || string(s.ID) == n.cfg.NodeID
		}
	}
	return voters == 1 && self
}

// Status is a summary of this node's Raft state.
type Status struct {
	State        string
	Term         uint64
	AppliedIndex uint64
	CommitIndex  uint64
	LastContact  time.Time
}

// Status reports Raft state, term and indexes. AppliedIndex is how far
// the local state reflects the log (see appliedIndex).
func (n *Node) Status() Status {
	commit := n.raft.CommitIndex()
	return Status{
		State: strings.ToLower(n.raft.State().String()), Term: n.raft.CurrentTerm(),
		AppliedIndex: n.appliedIndex(commit), CommitIndex: commit, LastContact: n.raft.LastContact(),
	}
}

// maxSkipScan bounds how many log entries one appliedIndex call reads.
const maxSkipScan = 64

// skipMark remembers how far appliedIndex has found no command after the
// state machine's applied index: entries (from, to] never reach it.
type skipMark struct {
	mu       sync.Mutex
	from, to uint64
}

// appliedIndex is the index of the last command the state machine applied,
// moved up to commit when every entry after it up to commit is one that
// never reaches the state machine (a barrier — one per lease confirmation
// round, or announcing a forwarded write's commit —, a new leader's no-op,
// a configuration change): otherwise a host
// whose last entries are such ones would never read as caught up. Raft's
// own applied index will not do: it moves when entries are queued for the
// state machine, not once applied. Each call reads at most maxSkipScan
// entries and remembers how far it got, so a long run of barriers after
// the last command is read once, not on every call.
func (n *Node) appliedIndex(commit uint64) uint64 {
	applied := n.store.AppliedIndex()
	if applied >= commit || n.raft.AppliedIndex() < commit {
		return applied
	}
	n.skip.mu.Lock()
	defer n.skip.mu.Unlock()
	start := applied
	if n.skip.from == applied && n.skip.to > applied {
		start = n.skip.to
	}
	if start >= commit {
		return commit
	}
	end := min(commit, start+maxSkipScan)
	for i := start + 1; i <= end; i++ {
		var l raft.Log
		err := n.logs.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			// Compacted into a snapshot, which the state machine took or
			// restored: nothing up to its index needs reading. (A snapshot
			// records the last command's index, not its own, so after a
			// restore those entries would otherwise never be read past.)
			if snap := n.snapshotIndex(); snap >= i {
				i = min(snap, commit)
				end = min(commit, i+maxSkipScan)
				continue
			}
		}
		if err != nil || l.Type == raft.LogCommand {
			n.skip.from, n.skip.to = applied, i-1
			return applied
		}
	}
	n.skip.from, n.skip.to = applied, end
	if end < commit {
		return applied // the next call reads on from end
	}
	return commit
}

// Apply submits a command and returns once this node's FSM has applied it
// (read-your-writes). On a follower the command is forwarded to the leader.
// Leader changes are retried with the same request id, which the FSM
// deduplicates, so a command is applied at most once. Business failures come
// back as *statedb.Error.
func (n *Node) Apply(ctx context.Context, cmd *statedb.Command) (uint64, error) {
	if err := n.cfg.Commands.Gate(n.store.Snapshot(), cmd.Type); err != nil {
		return 0, err
	}
	if cmd.Caller == nil && n.cfg.CallerOf != nil {
		// Only user commands carry a caller: a host command proposed while
		// serving a request (an image fetched for a download) is the
		// host's own.
		if spec, ok := n.cfg.Commands.Lookup(cmd.Type); ok {
			if by, known := spec.Proposers(); known && by&statedb.ByUser != 0 {
				cmd.Caller = n.cfg.CallerOf(ctx)
			}
		}
	}
	data, err := cmd.Encode()
	if err != nil {
		return 0, fmt.Errorf("encode command: %w", err)
	}
	backoff := 10 * time.Millisecond
	for {
		idx, err := n.applyOnce(ctx, data)
		if err == nil {
			return idx, n.WaitIndex(ctx, idx)
		}
		var se *statedb.Error
		var fe *statedb.FatalError
		if errors.As(err, &se) || errors.As(err, &fe) || errors.Is(err, ErrShutdown) {
			if idx > 0 {
				_ = n.WaitIndex(ctx, idx)
			}
			return idx, err
		}
		n.log.Debug("apply retry", "type", cmd.Type, "err", err)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: %v", ErrNoLeader, err)
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

func (n *Node) applyOnce(ctx context.Context, data []byte) (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.ApplyLeader(ctx, data)
	}
	leaderID, _ := n.Leader()
	if leaderID == "" {
		return 0, ErrNoLeader
	}
	if leaderID == n.cfg.NodeID {
		return 0, ErrNoLeader // stale view of ourselves as leader
	}
	if n.cfg.Forwarder == nil {
		return 0, fmt.Errorf("not the leader and no forwarder: %w", ErrNoLeader)
	}
	return n.cfg.Forwarder.Forward(ctx, leaderID, data)
}

// ApplyLeader applies encoded command data on the leader. It is what the
// internal API calls for forwarded writes. A command is admitted into the
// log only if this build can apply it and every member's version knows it
// (statedb.Registry.Admit); a refusal is a *statedb.Error for the proposer.
func (n *Node) ApplyLeader(ctx context.Context, data []byte) (uint64, error) {
	if err := n.fsm.halted(); err != nil {
		return 0, err
	}
	sn := n.store.Snapshot()
	if _, err := n.store.Registry().Admit(sn, data); err != nil {
		return 0, err
	}
	data = n.store.Registry().ForLog(sn, data)
	f := n.raft.Apply(data, timeoutOf(ctx, 10*time.Second))
	if err := n.await(f); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return 0, ErrShutdown
		}
		return 0, fmt.Errorf("raft apply: %w", err)
	}
	res, ok := f.Response().(statedb.Result)
	if !ok {
		return f.Index(), nil
	}
	return res.Index, res.Err
}

// WaitIndex blocks until the local FSM has applied idx. It fails at once
// if the FSM has stopped (Halted).
func (n *Node) WaitIndex(ctx context.Context, idx uint64) error {
	for {
		ch := n.store.Changed()
		if n.store.AppliedIndex() >= idx {
			return nil
		}
		if err := n.fsm.halted(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-n.fsm.haltCh:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d: %w", idx, ctx.Err())
		}
	}
}

// Server is a member of the Raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Configuration returns the current Raft configuration.
func (n *Node) Configuration() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds or promotes a voter (leader only).
func (n *Node) AddVoter(id, addr string) error {
	if err := n.await(n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second)); err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
	return nil
}

// AddNonvoter adds a nonvoter (leader only).
func (n *Node) AddNonvoter(id, addr string) error {
	if err := n.await(n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second)); err != nil {
		return fmt.Errorf("add nonvoter %s: %w", id, err)
	}
	return nil
}

// DemoteVoter turns a voter into a nonvoter (leader only).
func (n *Node) DemoteVoter(id string) error {
	if err := n.await(n.raft.DemoteVoter(raft.ServerID(id), 0, 10*time.Second)); err != nil {
		return fmt.Errorf("demote %s: %w", id, err)
	}
	return nil
}

// RemoveServer removes a member from Raft (leader only).
func (n *Node) RemoveServer(id string) error {
	if err := n.await(n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second)); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	return nil
}

// TransferLeadership asks another voter to take over (used on leave).
func (n *Node) TransferLeadership() error {
	return n.await(n.raft.LeadershipTransfer())
}

// await returns f's error, or raft.ErrRaftShutdown once Shutdown has
// begun. Raft does not answer every future it took when it stops: a
// leadership transfer still queued for the main loop, or entries already
// handed to the state machine goroutine, are never answered, and their
// Error would wait forever. The goroutine waiting for such a future is
// left behind (one per call caught by a shutdown).
func (n *Node) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.stopped:
		select {
		case err := <-done:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// shutdownWait bounds how long Shutdown waits for Raft's goroutines.
const shutdownWait = 30 * time.Second

// Shutdown stops Raft and closes its files. If Raft's goroutines have not
// all ended within shutdownWait, it closes the transport (which may
// unblock them), leaves the log files open for them and returns an
// error, rather than hang the caller.
func (n *Node) Shutdown() error {
	n.stopOnce.Do(func() { close(n.stopped) })
	done := make(chan error, 1)
	go func() { done <- n.raft.Shutdown().Error() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(shutdownWait):
		n.trans.CloseStreams()
		n.trans.Close()
		n.log.Error("raft did not stop within the shutdown wait; its log files stay open", "wait", shutdownWait)
		return fmt.Errorf("raft shutdown: not done after %v", shutdownWait)
	}
	// Close pooled connections too, as a process exit would: peers see
	// them end at once (a follower then elects sooner, see leadergone.go).
	n.trans.CloseStreams()
	n.trans.Close()
	// An RPC handler still answering (a heartbeat saving the term) must
	// finish before the log closes under it.
	if !n.stream.in.drain(5 * time.Second) {
		n.log.Error("raft RPC handlers still running 5 s after shutdown; its log files stay open")
		return errors.Join(err, errors.New("raft shutdown: RPC handlers still running"))
	}
	if cerr := n.logs.Close(); err == nil {
		err = cerr
	}
	return err
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return def
}

// slogWriter routes hclog output into slog at warn level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}
