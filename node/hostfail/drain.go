package hostfail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/rest"
)

// Raft is what draining reads and writes: the applied state and proposals.
type Raft interface {
	State() *statedb.Snapshot
	Propose(ctx context.Context, t statedb.CmdType, payload any) (uint64, error)
}

// Drainer moves this host's servers away before it leaves. A drain runs
// in the background (Run), since stopping the VMs and waiting for the
// leader to place them elsewhere can outlast an API request; its
// progress is GET /cluster/v1/drain.
type Drainer struct {
	HostID, HostName string
	Raft             Raft
	// Hypervisor is the running agent's hypervisor, nil while no agent
	// runs (then no VM is stopped here).
	Hypervisor func() agent.Hypervisor
	Logger     *slog.Logger
	// Timeout bounds a whole drain (default DefaultDrainTimeout): without
	// quorum its proposals would otherwise wait for one indefinitely and
	// act, unasked, whenever it came back.
	Timeout time.Duration

	mu     sync.Mutex
	st     DrainStatus
	kick   chan struct{}      // a requested drain for Run (made on first use)
	cancel context.CancelFunc // ends the drain under way (DELETE)
	closed bool               // Run returned: no drain can start
	// caller carries the identity of whoever asked for the drain under
	// way (the request's context without its cancellation): the drain
	// proposes as them, as the request would have.
	caller context.Context
}

// DefaultDrainTimeout bounds a drain: stopping every VM of a host and
// seeing each placed elsewhere.
const DefaultDrainTimeout = 10 * time.Minute

// Drain states (DrainStatus.Status). Draining always ends in drained or
// failed: the whole drain is bounded (Timeout), an admin may cancel it,
// and a daemon that stops during one fails it.
const (
	DrainNone     = "none"
	DrainDraining = "draining"
	DrainDrained  = "drained"
	DrainFailed   = "failed"
)

// DrainStatus is this host's drain as the API shows it.
type DrainStatus struct {
	Status     string    `json:"status"`
	Message    string    `json:"message,omitempty"` // why it failed
	Servers    int       `json:"servers"`           // servers still placed on this host
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Service is /cluster/v1/drain (admin). POST starts a drain: this host
// stops the VMs of its servers and the leader restarts them on other
// hosts, so that it can leave (`peerstack leave --evacuate`). It answers
// 202 once the drain is under way (409, with nothing changed, when a
// server has a local disk); GET shows its progress. auth is the API's
// policy.
func (d *Drainer) Service(auth rest.Backend) rest.Service {
	admin := func(c *rest.Ctx) error { return rest.Check(auth, c, rest.Admin, "", false, "member") }
	return rest.Service{Prefix: "", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: "POST", Path: "/cluster/v1/drain", Auth: rest.Token, Handler: func(c *rest.Ctx) (any, error) {
			if err := admin(c); err != nil {
				return nil, err
			}
			st, err := d.Start(c.Context())
			if err != nil {
				return nil, err
			}
			return &rest.Response{Status: http.StatusAccepted, Body: map[string]any{"drain": st}}, nil
		}},
		{Method: "GET", Path: "/cluster/v1/drain", Auth: rest.Token, Handler: func(c *rest.Ctx) (any, error) {
			if err := admin(c); err != nil {
				return nil, err
			}
			return map[string]any{"drain": d.Status()}, nil
		}},
		{Method: "DELETE", Path: "/cluster/v1/drain", Auth: rest.Token, Handler: func(c *rest.Ctx) (any, error) {
			if err := admin(c); err != nil {
				return nil, err
			}
			d.Cancel()
			return map[string]any{"drain": d.Status()}, nil
		}},
	}}
}

// Cancel ends the drain under way, if any: it fails with "cancelled", and
// what it did stays done (the host stays disabled; servers already moved
// stay moved).
func (d *Drainer) Cancel() {
	d.mu.Lock()
	cancel := d.cancel
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Status is the current or last drain of this host.
func (d *Drainer) Status() DrainStatus {
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	if st.Status == "" {
		st.Status = DrainNone
	}
	st.Servers = len(d.Raft.State().InstancesOnHost(d.HostID))
	return st
}

// Start asks Run for a drain on behalf of the caller of ctx and returns
// its status: the running one if a drain is under way already. A server
// with a local disk refuses it (409) before anything changes.
func (d *Drainer) Start(ctx context.Context) (DrainStatus, error) {
	d.mu.Lock()
	running := d.st.Status == DrainDraining
	d.mu.Unlock()
	if running {
		return d.Status(), nil
	}
	if err := d.checkShared(); err != nil {
		return DrainStatus{}, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return DrainStatus{}, &rest.HTTPError{Status: http.StatusServiceUnavailable, Msg: "The daemon is stopping; no drain can start."}
	}
	if d.st.Status != DrainDraining {
		d.st = DrainStatus{Status: DrainDraining, StartedAt: time.Now().UTC()}
		d.caller = context.WithoutCancel(ctx)
		select {
		case d.kickLocked() <- struct{}{}:
		default: // one is pending already
		}
	}
	d.mu.Unlock()
	return d.Status(), nil
}

func (d *Drainer) kickLocked() chan struct{} {
	if d.kick == nil {
		d.kick = make(chan struct{}, 1)
	}
	return d.kick
}

// Run carries out the drains Start asks for until ctx ends; a drain
// under way then fails. Between drains it withdraws a draining state
// that a previous run of the daemon left (it stopped during a drain, or
// before the host left): nothing here carries that drain on.
func (d *Drainer) Run(ctx context.Context) {
	d.mu.Lock()
	kick := d.kickLocked()
	d.mu.Unlock()
	check := time.NewTicker(5 * time.Second)
	defer check.Stop()
	d.withdrawLeftover(ctx)
	for {
		select {
		case <-ctx.Done():
			d.mu.Lock()
			d.closed = true
			d.mu.Unlock()
			d.finish(errors.New("the daemon stopped during the drain"))
			return
		case <-check.C:
			d.withdrawLeftover(ctx)
		case <-kick:
			d.mu.Lock()
			caller := d.caller
			d.mu.Unlock()
			if caller == nil {
				caller = context.Background()
			}
			// The caller's identity, cancelled when the daemon stops, when
			// an admin cancels it, or at the drain's deadline.
			timeout := d.Timeout
			if timeout <= 0 {
				timeout = DefaultDrainTimeout
			}
			dctx, cancel := context.WithTimeout(caller, timeout)
			stop := context.AfterFunc(ctx, cancel)
			d.mu.Lock()
			d.cancel = cancel
			d.mu.Unlock()
			err := d.Drain(dctx)
			stop()
			d.mu.Lock()
			d.cancel = nil
			d.mu.Unlock()
			cancel()
			switch {
			case err != nil && ctx.Err() != nil:
				err = fmt.Errorf("the daemon stopped during the drain: %w", err)
			case err != nil && errors.Is(dctx.Err(), context.DeadlineExceeded):
				err = fmt.Errorf("the drain did not end within %s: %w", timeout, err)
			case err != nil && dctx.Err() != nil:
				err = fmt.Errorf("cancelled: %w", err)
			}
			d.finish(err)
		}
	}
}

// withdrawLeftover clears this host's draining state when no drain of
// this run of the daemon set it (the state may still be catching up at
// start: Run checks again every few seconds). The host stays disabled,
// as after a failed drain.
func (d *Drainer) withdrawLeftover(ctx context.Context) {
	d.mu.Lock()
	mine := d.st.Status != ""
	d.mu.Unlock()
	if h, ok := d.Raft.State().HostHealth(d.HostID); mine || !ok || !h.Draining {
		return
	}
	if _, err := d.Raft.Propose(ctx, statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: d.HostID}); err != nil {
		if ctx.Err() == nil {
			d.Logger.Warn("drain: withdraw a previous run's draining state", "err", err)
		}
		return
	}
	d.Logger.Warn("drain: withdrew the draining state a previous run of the daemon left; run the drain again to move the servers")
}

// finish ends the drain under way: drained, or failed with err.
func (d *Drainer) finish(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st.Status != DrainDraining {
		return
	}
	d.st.Status, d.st.FinishedAt = DrainDrained, time.Now().UTC()
	if err != nil {
		d.st.Status, d.st.Message = DrainFailed, err.Error()
		d.Logger.Warn("drain failed", "err", err)
		return
	}
	d.Logger.Info("drained: no server is placed on this host any more")
}

// checkShared refuses a drain while a server placed here has a disk on
// this host (it would be lost).
func (d *Drainer) checkShared() error {
	sn := d.Raft.State()
	var local []string
	for _, i := range sn.InstancesOnHost(d.HostID) {
		if i.Desired == statedb.DesiredDeleted {
			continue
		}
		if why := sn.LocalDisks(i); why != "" {
			local = append(local, fmt.Sprintf("%s (%s): %s", i.Name, i.ID, why))
		}
	}
	if len(local) > 0 {
		return rest.Conflictf("host %s cannot move %d servers without losing data; delete or move them first: %s",
			d.HostName, len(local), strings.Join(local, "; "))
	}
	return nil
}

// Drain moves every server off this host: placements are disabled, each
// server's disks must all be on shared storage (a local disk would be
// lost: refused before anything changes), its VM is stopped here, and
// once none runs the host declares itself draining, which the leader
// treats as fenced. It returns when no server is placed here any more, or
// with the reasons of those no other host could take (the host then stays
// disabled, and its word is withdrawn).
func (d *Drainer) Drain(ctx context.Context) error {
	if err := d.checkShared(); err != nil {
		return err
	}
	if _, err := d.Raft.Propose(ctx, statedb.CmdSetHostEnabled, statedb.SetHostEnabledCmd{ID: d.HostID, Disabled: true,
		Reason: "leaving the cluster"}); err != nil {
		return fmt.Errorf("drain: disable placements: %w", err)
	}
	if hv := d.Hypervisor(); hv != nil {
		if err := d.stopVMs(ctx, hv); err != nil {
			return err
		}
	}
	if _, err := d.Raft.Propose(ctx, statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: d.HostID, Draining: true}); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var left []string
		done := true
		for _, i := range d.Raft.State().InstancesOnHost(d.HostID) {
			done = false
			if i.VMState == statedb.VMError && i.Fault != nil {
				left = append(left, fmt.Sprintf("%s: %s", i.Name, i.Fault.Message))
			}
		}
		if done {
			return nil
		}
		if len(left) > 0 || time.Now().After(deadline) || !sleepCtx(ctx, 200*time.Millisecond) {
			if _, err := d.Raft.Propose(context.WithoutCancel(ctx), statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: d.HostID}); err != nil {
				d.Logger.Warn("drain: withdraw the draining state", "err", err)
			}
			return rest.Conflictf("host %s could not move every server: %s", d.HostName, strings.Join(left, "; "))
		}
	}
}

// stopVMs stops the VMs of the servers placed here and waits (up to two
// minutes) until none runs.
func (d *Drainer) stopVMs(ctx context.Context, hv agent.Hypervisor) error {
	vms, err := hv.List(ctx)
	if err != nil {
		return fmt.Errorf("drain: list vms: %w", err)
	}
	placed := map[string]bool{}
	for _, i := range d.Raft.State().InstancesOnHost(d.HostID) {
		placed[i.ID] = true
	}
	for _, v := range vms {
		if placed[v.ID] && (v.State == agent.VMRunning || v.State == agent.VMPaused) {
			if err := hv.Stop(ctx, v.ID); err != nil {
				return fmt.Errorf("drain: stop %s: %w", v.ID, err)
			}
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		vms, err := hv.List(ctx)
		if err != nil {
			return fmt.Errorf("drain: list vms: %w", err)
		}
		running := 0
		for _, v := range vms {
			if v.State == agent.VMRunning || v.State == agent.VMPaused {
				running++
			}
		}
		if running == 0 {
			return nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("drain: %d VMs still run on host %s", running, d.HostName)
		}
	}
}

// CheckLeaveEmpty refuses a leave while servers are placed on this host:
// they would be stranded on a host that is gone.
func (d *Drainer) CheckLeaveEmpty() error {
	var names []string
	for _, i := range d.Raft.State().InstancesOnHost(d.HostID) {
		names = append(names, i.Name)
	}
	if len(names) == 0 {
		return nil
	}
	return rest.Conflictf("host %s runs %d servers (%s); move them first, or run `peerstack leave --evacuate` to restart them on other hosts",
		d.HostName, len(names), strings.Join(names, ", "))
}
