package hostfail

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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

// Drainer moves this host's servers away before it leaves.
type Drainer struct {
	HostID, HostName string
	Raft             Raft
	// Hypervisor is the running agent's hypervisor, nil while no agent
	// runs (then no VM is stopped here).
	Hypervisor func() agent.Hypervisor
	Logger     *slog.Logger
}

// Service is POST /cluster/v1/drain (admin): this host stops the VMs of
// its servers and the leader restarts them on other hosts, so that it can
// leave (`peerstack leave --evacuate`). auth is the API's policy.
func (d *Drainer) Service(auth rest.Backend) rest.Service {
	return rest.Service{Prefix: "", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: "POST", Path: "/cluster/v1/drain", Auth: rest.Token, Handler: func(c *rest.Ctx) (any, error) {
			if err := rest.Check(auth, c, rest.Admin, "", false, "member"); err != nil {
				return nil, err
			}
			if err := d.Drain(c.Context()); err != nil {
				return nil, err
			}
			return map[string]any{"drained": true}, nil
		}},
	}}
}

// Drain moves every server off this host: placements are disabled, each
// server's disks must all be on shared storage (a local disk would be
// lost: refused before anything changes), its VM is stopped here, and
// once none runs the host declares itself draining, which the leader
// treats as fenced. It returns when no server is placed here any more, or
// with the reasons of those no other host could take (the host then stays
// disabled, and its word is withdrawn).
func (d *Drainer) Drain(ctx context.Context) error {
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
