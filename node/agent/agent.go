// Package agent is the per-host agent: it converges this host to what the
// replicated state assigns to it and reports what it observed back through
// commands.
//
// Four reconcilers share one loop. Each reads its desired state from a
// state snapshot and its actual state from the host, computes a pure diff,
// and hands the resulting operations to an executor that undoes a
// half-done operation in reverse on failure:
//
//   - networks: the ports bound to this host, grouped by network, become
//     bridges, VXLAN devices, taps, forwarding entries and DHCP leases
//     (through Network); plumbed ports are reported ACTIVE;
//   - firewall: the secured ports bound to this host, their groups' rules
//     and the members of the remote groups they name become packet
//     filtering (through Firewall), before their VMs start;
//   - instances: servers placed on this host are prepared (image, root
//     overlay, config drive), started, stopped, rebooted and deleted
//     (through Hypervisor) and reported (ReportInstanceCmd);
//   - volumes: volume files this host owns are created, extended and
//     deleted (through Volumes), and attachments to its servers are
//     hot-plugged and unplugged (ReportVolumeCmd).
//
// The loop runs a full resync on a jittered interval, and a sync whenever
// the state changes, a hypervisor event arrives or an operation ends. On
// start it recovers the VMs that already run before it changes anything.
// Operations on one object are serialised; no VM is started twice.
//
// The package imports only consensus/statedb. Everything it drives is an
// interface declared here; the node implements them with hv/qemu,
// hv/netdev and hv/storage, tests with node/agent/agenttest. It must not
// decide placement, write the state other than through Proposer, or stop
// VMs because the daemon stops.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Errors a Hypervisor or Network reports that the agent acts on.
var (
	// ErrAlreadyRunning: Start found the VM running (nothing was changed).
	ErrAlreadyRunning = errors.New("vm already running")
	// ErrNetworkUnavailable: the host cannot plumb tenant networks at all
	// (for example the daemon lacks CAP_NET_ADMIN). Instances with ports
	// fail instead of waiting.
	ErrNetworkUnavailable = errors.New("tenant networking unavailable")
	// ErrNoVolumeStore: this host has no volume storage configured.
	ErrNoVolumeStore = errors.New("no volume storage on this host")
	// ErrNoImages: this host cannot fetch images.
	ErrNoImages = errors.New("no image source on this host")
)

// State is the replicated state as this host sees it. *statedb.Store
// satisfies it.
type State interface {
	Snapshot() *statedb.Snapshot
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
}

// Proposer submits a command to the cluster and returns once the local
// state has applied it.
type Proposer interface {
	Propose(ctx context.Context, t statedb.CmdType, payload any) error
}

// ImageSource makes an image available on this host.
type ImageSource interface {
	// Image returns a local path (or nfs:// URL) of the image's bytes and
	// their format (qcow2 or raw), fetching them first if needed. The
	// bytes stay at path until release is called (the host's cache may
	// evict them after; a server placed on the host keeps its image's).
	Image(ctx context.Context, imageID string) (path, format string, release func(), err error)
}

// VTEPs resolves the underlay (VXLAN tunnel endpoint) address of a host.
type VTEPs interface {
	// VTEP returns hostID's underlay address, or nil when unknown.
	VTEP(hostID string) net.IP
}

// Config configures an Agent.
type Config struct {
	HostID     string     // this host's member id
	State      State      // required
	Proposer   Proposer   // required
	Hypervisor Hypervisor // required
	Network    Network    // nil: tenant networking disabled (VMs get no NICs)
	VTEPs      VTEPs      // required with Network
	Firewall   Firewall   // nil: ports are not filtered
	Volumes    Volumes    // nil: volume operations fail with ErrNoVolumeStore
	Images     ImageSource
	// Routing runs this host's share of the routers (nil: no routing);
	// Physnets maps physical network names to this host's interfaces.
	Routing  Routing
	Physnets map[string]string
	// FIPHandover is how long a floating IP that moved here waits for the
	// old host to report it withdrawn before this host takes it anyway
	// (the old host may be dead). Default 10 s.
	FIPHandover time.Duration

	// ResyncInterval is the period of full resyncs, jittered by ±20 %.
	// Default 10 s.
	ResyncInterval time.Duration
	// DetachTimeout bounds a volume hot-unplug, the guest asked again
	// with back-off meanwhile; then the detach is given up (the volume
	// stays in-use, with the reason). Default 2 min.
	DetachTimeout time.Duration
	// Parallel bounds concurrent operations. Default 8.
	Parallel int
	// Fence, when set, kills this host's HA VMs when it loses quorum
	// contact and holds them back until it caught up (fence.go).
	Fence  *Fence
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
}

// Agent converges one host. Create it with New and run it with Run.
type Agent struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}

	wake chan struct{} // buffered(1): a sync is wanted

	mu         sync.Mutex
	busy       map[string]bool      // keys of objects with an operation in flight
	seq        uint64               // operations ended so far
	lastDone   map[string]uint64    // key → seq when its last operation ended
	backoff    map[string]time.Time // "key/op" → no retry before
	exitWhy    map[string]string    // instance id → why its QEMU exited (from events)
	netState   netState
	fwState    fwState
	routeState routingState
	host       hostCache
	orphans    map[string]bool // VM ids already logged as unknown to the state
	wg         sync.WaitGroup  // operations in flight
	lastStats  Stats
}

// hostCache is the last list of VMs read from the hypervisor.
type hostCache struct {
	actual map[string]VMStatus
	seen   uint64 // operations that had ended when it was read
	dirty  bool   // an operation ended or an event came since
}

// Stats counts what the agent did; for tests and metrics.
type Stats struct {
	Syncs      int
	FullSyncs  int
	Operations int
	Failures   int
	Reports    int
	// HostWrites counts the changes the network, firewall and routing
	// drivers attempted on the host (kernel objects written, responders
	// started or stopped; a failing Apply's attempts too). Repairs is the
	// part of it made by successful full resyncs although the desired
	// state had not changed since the last Apply: the host had drifted
	// from the state, or the driver does not converge.
	HostWrites int
	Repairs    int
}

// New returns an Agent. It changes nothing on the host until Run.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.State == nil:
		return nil, errors.New("agent: no state")
	case cfg.Proposer == nil:
		return nil, errors.New("agent: no proposer")
	case cfg.Hypervisor == nil:
		return nil, errors.New("agent: no hypervisor")
	case cfg.HostID == "":
		return nil, errors.New("agent: no host id")
	case cfg.Network != nil && cfg.VTEPs == nil:
		return nil, errors.New("agent: networking needs VTEPs")
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 10 * time.Second
	}
	if cfg.FIPHandover <= 0 {
		cfg.FIPHandover = 10 * time.Second
	}
	if cfg.DetachTimeout <= 0 {
		cfg.DetachTimeout = 2 * time.Minute
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Agent{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "agent"),
		sem:      make(chan struct{}, cfg.Parallel),
		wake:     make(chan struct{}, 1),
		busy:     map[string]bool{},
		lastDone: map[string]uint64{},
		backoff:  map[string]time.Time{},
		exitWhy:  map[string]string{},
		orphans:  map[string]bool{},
	}, nil
}

// Stats returns counters of what the agent did so far.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastStats
}

// Run recovers the VMs already running on the host, then reconciles until
// ctx ends. It returns once every operation it started has finished. VMs
// keep running after it returns.
func (a *Agent) Run(ctx context.Context) error {
	var evWG sync.WaitGroup
	defer evWG.Wait()
	// The lease is renewed from the start: recovering the VMs can take
	// long, and the guard's deadline runs from the last renewal.
	if a.cfg.Fence != nil {
		evWG.Add(1)
		go func() { defer evWG.Done(); a.runFence(ctx) }()
	}
	recovered, err := a.cfg.Hypervisor.Recover(ctx)
	if err != nil {
		// Nothing is changed below for VMs the hypervisor cannot see: List
		// reports them, and Start refuses a running one.
		a.log.Error("recover running VMs", "err", err)
	}
	for _, st := range recovered {
		a.log.Info("recovered vm", "instance", st.ID, "state", st.State, "pid", st.PID)
	}

	evWG.Add(1)
	go func() { defer evWG.Done(); a.readEvents(ctx) }()
	defer a.wg.Wait()

	timer := time.NewTimer(a.jitter())
	defer timer.Stop()
	full := true // the first sync is a full one
	changed := a.cfg.State.Changed()
	for {
		if full {
			a.sync(ctx, true)
			full = false
		} else {
			a.sync(ctx, false)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			full = true
			timer.Reset(a.jitter())
		case <-changed:
			changed = a.cfg.State.Changed()
		case <-a.wake:
		}
		// Arm the change channel before the next snapshot is read, so no
		// change between the two is missed.
		select {
		case <-changed:
			changed = a.cfg.State.Changed()
		default:
		}
	}
}

// jitter returns the resync interval ±20 %.
func (a *Agent) jitter() time.Duration {
	d := a.cfg.ResyncInterval
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// poke asks for a sync soon, without blocking.
func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// readEvents turns hypervisor events into syncs until ctx ends or the
// event channel closes.
func (a *Agent) readEvents(ctx context.Context) {
	ch := a.cfg.Hypervisor.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			switch ev.Kind {
			case EventExited:
				a.mu.Lock()
				a.exitWhy[ev.ID] = ev.Detail
				a.mu.Unlock()
				a.log.Info("vm exited", "instance", ev.ID, "reason", ev.Detail)
			case EventBlockIOError:
				a.log.Warn("vm block I/O error", "instance", ev.ID, "detail", ev.Detail)
			default:
				a.log.Debug("vm event", "instance", ev.ID, "kind", ev.Kind, "detail", ev.Detail)
			}
			a.markDirty()
			a.poke()
		}
	}
}

// sync runs the reconcilers once: networks first (taps must exist before
// a VM starts), then instances, then volumes.
func (a *Agent) sync(ctx context.Context, full bool) {
	if ctx.Err() != nil {
		return
	}
	actual, seen, err := a.readHost(ctx, full)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Error("list VMs", "err", err)
		}
		return
	}
	sn := a.cfg.State.Snapshot()
	a.mu.Lock()
	a.lastStats.Syncs++
	if full {
		a.lastStats.FullSyncs++
		now := a.cfg.Now()
		for k, t := range a.backoff {
			if now.After(t) {
				delete(a.backoff, k) // objects that went away leave no entry behind
			}
		}
		for k, s := range a.lastDone {
			if s <= seen {
				delete(a.lastDone, k) // older than what the host list shows
			}
		}
	}
	a.mu.Unlock()

	netReady := a.syncNetworks(ctx, sn, full, seen)
	a.syncFirewall(ctx, sn, full)
	a.syncRouting(ctx, sn, full, seen)
	a.syncInstances(ctx, sn, actual, netReady, seen)
	a.syncVolumes(ctx, sn, seen)
}

// readHost returns the VMs of the host and the operation sequence number
// they reflect: every operation that ended up to it. An operation that
// ends later (during the list or this sync) may have changed what the
// list and the snapshot show, so its keys wait for the next sync (see
// launch). The list is read again on full syncs and whenever something may
// have changed it (an operation ended, a hypervisor event); a sync caused
// only by a state change reuses it.
func (a *Agent) readHost(ctx context.Context, full bool) (map[string]VMStatus, uint64, error) {
	a.mu.Lock()
	if !full && !a.host.dirty && a.host.actual != nil {
		actual, seen := a.host.actual, a.host.seen
		a.mu.Unlock()
		return actual, seen, nil
	}
	a.host.dirty = false // changes from now on mark it again
	seen := a.seq
	a.mu.Unlock()
	list, err := a.cfg.Hypervisor.List(ctx)
	if err != nil {
		a.markDirty()
		return nil, 0, err
	}
	actual := make(map[string]VMStatus, len(list))
	for _, st := range list {
		actual[st.ID] = st
	}
	a.mu.Lock()
	a.host.actual, a.host.seen = actual, seen
	a.mu.Unlock()
	return actual, seen, nil
}

// markDirty makes the next sync read the host again.
func (a *Agent) markDirty() {
	a.mu.Lock()
	a.host.dirty = true
	a.mu.Unlock()
}

// launch runs op in its own goroutine once it holds every key (and a slot
// of the parallelism bound). It reports false, running nothing, when a key
// is busy, or an operation on it ended after seen (what this sync read of
// the host and the state may predate its effect), or the same operation on
// the first key failed recently (it waits for its backoff).
func (a *Agent) launch(ctx context.Context, seen uint64, opName string, keys []string, op func(ctx context.Context) error) bool {
	return a.spawn(ctx, seen, opName, keys, true, op)
}

// launchWaiting is launch for an operation that spends its time waiting
// (for a guest): it takes no slot of the parallelism bound.
func (a *Agent) launchWaiting(ctx context.Context, seen uint64, opName string, keys []string, op func(ctx context.Context) error) bool {
	return a.spawn(ctx, seen, opName, keys, false, op)
}

func (a *Agent) spawn(ctx context.Context, seen uint64, opName string, keys []string, slot bool, op func(ctx context.Context) error) bool {
	now := a.cfg.Now()
	a.mu.Lock()
	for _, k := range keys {
		if a.busy[k] || a.lastDone[k] > seen {
			a.mu.Unlock()
			return false
		}
	}
	bk := keys[0] + "/" + opName
	if t, ok := a.backoff[bk]; ok && now.Before(t) {
		a.mu.Unlock()
		return false
	}
	for _, k := range keys {
		a.busy[k] = true
	}
	a.lastStats.Operations++
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		if slot {
			select {
			case a.sem <- struct{}{}:
				defer func() { <-a.sem }()
			case <-ctx.Done():
				a.release(keys, bk, nil)
				return
			}
		}
		a.release(keys, bk, op(ctx))
	}()
	return true
}

func (a *Agent) release(keys []string, bk string, err error) {
	a.mu.Lock()
	a.seq++
	for _, k := range keys {
		delete(a.busy, k)
		a.lastDone[k] = a.seq
	}
	if err != nil {
		a.lastStats.Failures++
		a.backoff[bk] = a.cfg.Now().Add(a.cfg.ResyncInterval)
	} else {
		delete(a.backoff, bk)
	}
	a.host.dirty = true
	a.mu.Unlock()
	a.poke()
}

// countWrites records the writes an Apply of part attempted on the host;
// same says the desired state was the one applied last, so the writes of
// a successful Apply were a repair (a failing one is retried, not
// repaired). Callers hold a.mu.
func (a *Agent) countWrites(part string, writes int, same bool, err error) {
	if writes <= 0 {
		return
	}
	a.lastStats.HostWrites += writes
	if same && err == nil {
		a.lastStats.Repairs += writes
		a.log.Info("full resync repaired the host: it differed from the state", "part", part, "writes", writes)
	}
}

// report proposes a command; failures are logged (the next sync retries,
// since the state still differs).
func (a *Agent) report(ctx context.Context, t statedb.CmdType, payload any) error {
	if err := a.cfg.Proposer.Propose(ctx, t, payload); err != nil {
		if ctx.Err() == nil {
			a.log.Warn("report failed; will retry", "cmd", t, "err", err)
		}
		return fmt.Errorf("report %d: %w", t, err)
	}
	a.mu.Lock()
	a.lastStats.Reports++
	a.mu.Unlock()
	return nil
}

// cleanupCtx is a context for undo steps: it outlives ctx's cancellation
// (a daemon stopping mid-operation still cleans up) but is bounded.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// revert is a stack of undo steps run in reverse (lxc/incus shared/revert).
type revert []func()

func (r *revert) add(f func()) { *r = append(*r, f) }

func (r *revert) run() {
	for i := len(*r) - 1; i >= 0; i-- {
		(*r)[i]()
	}
	*r = nil
}
