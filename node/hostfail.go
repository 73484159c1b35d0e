package node

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/hostfail"
	"github.com/peerstack/peerstack/node/leader"
	"github.com/peerstack/peerstack/node/membership"
)

// Host-failure wiring (docs/ha.md): the lease, the drain and the guard
// live in node/hostfail, the leader's failover routine in node/leader and
// the agent's fence in node/agent; this file connects them.

// ErrDuplicateHost is why a daemon refuses to start: another daemon with
// the same host identity (a copied data dir) answers at the address this
// identity last had.
var ErrDuplicateHost = hostfail.ErrDuplicateHost

// wireHostFail makes the lease and the drainer once Raft, gossip and the
// host-to-host client exist.
func (n *Node) wireHostFail() {
	n.lease = &hostfail.Lease{SelfID: n.id.NodeID, SelfName: n.id.Name, Raft: n.raft,
		Heard: n.contacts.Heard, Cover: n.coverFenceTimeout, AddrOf: n.apiAddrOf, Client: n.client}
	n.drain = &hostfail.Drainer{HostID: n.id.NodeID, HostName: n.id.Name, Raft: n.raft, Logger: n.log,
		Hypervisor: func() agent.Hypervisor {
			n.mu.Lock()
			defer n.mu.Unlock()
			if rt := n.cfg.Agent.rt; rt != nil {
				return rt.hv
			}
			return nil
		}}
}

// failoverRoutine is the leader's host-failure routine.
func (n *Node) failoverRoutine(log *slog.Logger) leader.Routine {
	return leader.Failover{SelfID: n.id.NodeID, State: n.raft, Gossip: n.hosts, Contacts: n.contacts,
		Proposer: n.raft, Interval: n.cfg.Timers.Leader, Logger: log}.Routine()
}

// newFence is the agent's fence; with a guard command the guard is kept
// running until ctx ends.
func (n *Node) newFence(ctx context.Context, log *slog.Logger, opts AgentOptions) *agent.Fence {
	fence, timeouts, keep := hostfail.NewFence(hostfail.FenceConfig{
		Renew: n.lease.Renew, Applied: func() uint64 { return n.raft.Status().AppliedIndex },
		Setting: func() time.Duration {
			if cfg, ok := n.State().Cluster(); ok {
				return cfg.Settings.EffectiveFenceTimeout()
			}
			return statedb.DefaultFenceTimeout
		},
		Interval: opts.FenceInterval, GuardCommand: opts.GuardCommand, Watchdog: opts.Watchdog, DataDir: n.cfg.DataDir, Logger: log,
	})
	n.mu.Lock()
	n.fenceTimeouts = timeouts
	n.mu.Unlock()
	if keep != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); keep(ctx) }()
	}
	return fence
}

// FenceTimeout is the T_fence this host's fence counts now: the setting
// as of its last acknowledged lease renewal (0 before its agent runs).
func (n *Node) FenceTimeout() time.Duration {
	n.mu.Lock()
	ft := n.fenceTimeouts
	n.mu.Unlock()
	if ft == nil {
		return 0
	}
	return ft.Timeout()
}

// MinWatchdogTimeout is the shortest --watchdog-timeout: the fence's
// shortest watchdog period (agent.MinWatchdog).
const MinWatchdogTimeout = agent.MinWatchdog

// RunGuard is `peerstack fence-guard`: it guards the heartbeat file (see
// hostfail.RunGuard), petting the watchdog device (when set), until ctx
// ends, or until the host of dataDir (when set) has no identity any more
// or has left the cluster, or until stop is closed and no VM it guards
// is alive.
func RunGuard(ctx context.Context, heartbeat, lock, dataDir, watchdog string, stop <-chan struct{}, log *slog.Logger) error {
	cfg := hostfail.GuardConfig{Heartbeat: heartbeat, Lock: lock, Watchdog: watchdog, Stop: stop, Logger: log}
	if dataDir != "" {
		cfg.HostGone = func() string {
			id, err := loadIdentity(dataDir)
			switch {
			case errors.Is(err, errNoIdentity):
				return "the host's identity is gone from " + dataDir
			case err == nil && id.Left:
				return "the host left the cluster"
			}
			return ""
		}
	}
	return hostfail.RunGuard(ctx, cfg)
}

// FenceSleep is `peerstack fence-sleep pre|post`, which systemd-sleep
// runs before the host sleeps and after it resumes: it stops the HA
// servers' QEMUs of every daemon on this host, then kills them if the
// lease lapsed meanwhile and lets them run again otherwise
// (hostfail.FenceSleep). dataDirs are where a daemon that could not write
// the run dir keeps its heartbeat.
func FenceSleep(phase string, dataDirs []string, log *slog.Logger) error {
	return hostfail.FenceSleep(phase, hostfail.SleepConfig{DataDirs: dataDirs, Logger: log})
}

// checkDuplicateOf refuses to start when another daemon answers with this
// host's certificate (hostfail.CheckDuplicate). own is the API listener
// this daemon bound.
func (n *Node) checkDuplicateOf(ctx context.Context, own net.Addr, caPEM, certPEM, keyPEM string) error {
	return hostfail.CheckDuplicate(ctx, hostfail.Identity{NodeID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr,
		DataDir: n.cfg.DataDir}, own, func() (*tls.Config, error) {
		_, clientTLS, err := membership.TLSConfigs(caPEM, certPEM, keyPEM)
		return clientTLS, err
	})
}

// coverFenceTimeout makes the state's fence wait cover d before a lease
// renewal reporting d is acknowledged (hostfail.Lease.Cover).
// While a member runs an older release the entry cannot be proposed;
// T_fence cannot change then either (its command is gated too), so a
// longer report can only come from a host still catching up, and the
// renewal is acknowledged as before rather than refused (a refused
// renewal would fence the host).
func (n *Node) coverFenceTimeout(ctx context.Context, d time.Duration) error {
	sn := n.State()
	if cfg, ok := sn.Cluster(); ok && d <= cfg.Settings.EffectiveFenceTimeout() {
		return nil
	}
	if statedb.Commands().Gate(sn, statedb.CmdCoverFenceTimeout) != nil {
		return nil
	}
	return nodeProposer{n}.Propose(ctx, statedb.CmdCoverFenceTimeout, statedb.CoverFenceTimeoutCmd{Timeout: d})
}
