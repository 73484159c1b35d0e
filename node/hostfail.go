package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/leader"
	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/rest"
)

// Host-failure wiring (docs/ha.md): the lease route the leader answers,
// the leader's failover routine, the agent's fence and the guard process.

// leaseAnswer is the leader's answer to a lease renewal.
type leaseAnswer struct {
	Leader string `json:"leader"`
	Commit uint64 `json:"commit_index"`
}

// mountHostFail registers POST /internal/v1/lease: a host renews its
// lease with the leader, which records when it heard from it.
func (n *Node) mountHostFail(srv *rest.Server) {
	srv.Mount(rest.Service{Prefix: "", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: "POST", Path: "/internal/v1/lease", Auth: rest.Internal, Handler: n.serveLease},
	}})
}

func (n *Node) serveLease(c *rest.Ctx) (any, error) {
	if len(c.R.TLS.PeerCertificates) == 0 {
		return nil, rest.Forbiddenf("a cluster client certificate is required")
	}
	host := c.R.TLS.PeerCertificates[0].Subject.CommonName
	if !n.raft.IsLeader() {
		return nil, rest.Conflictf("host %s is not the leader", n.id.Name)
	}
	// The commit index is read before the contact is recorded: a host that
	// applied it has seen everything this leader had decided about it.
	commit := n.raft.Status().CommitIndex
	n.contacts.Heard(host)
	return leaseAnswer{Leader: n.id.NodeID, Commit: commit}, nil
}

// renewLease makes one lease round trip with the leader.
func (n *Node) renewLease(ctx context.Context) (uint64, error) {
	id, _ := n.raft.Leader()
	if id == "" {
		return 0, fmt.Errorf("lease: no leader")
	}
	if id == n.id.NodeID {
		if !n.raft.IsLeader() {
			return 0, fmt.Errorf("lease: no longer the leader")
		}
		commit := n.raft.Status().CommitIndex
		n.contacts.Heard(id)
		return commit, nil
	}
	addr := n.apiAddrOf(id)
	if addr == "" {
		return 0, fmt.Errorf("lease: leader %s has no known address", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/internal/v1/lease", bytes.NewReader([]byte("{}")))
	if err != nil {
		return 0, fmt.Errorf("lease: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("lease from %s: status %d", addr, resp.StatusCode)
	}
	var a leaseAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	if a.Leader != id {
		return 0, fmt.Errorf("lease: %s answered for %s, not the leader %s", addr, a.Leader, id)
	}
	return a.Commit, nil
}

// failoverRoutine is the leader's host-failure routine.
func (n *Node) failoverRoutine(log *slog.Logger) leader.Routine {
	return leader.Failover{SelfID: n.id.NodeID, State: n.raft, Gossip: n.hosts, Contacts: n.contacts,
		Proposer: n.raft, Interval: n.cfg.Timers.Leader, Logger: log}.Routine()
}

// fenceTimeout is T_fence from the cluster settings.
func (n *Node) fenceTimeout() time.Duration {
	if cfg, ok := n.State().Cluster(); ok {
		return cfg.Settings.EffectiveFenceTimeout()
	}
	return statedb.DefaultFenceTimeout
}

// guardRunDir holds the guards' heartbeat files: a tmpfs, reset at boot
// like CLOCK_MONOTONIC, that a full data disk does not fill.
const guardRunDir = "/run/peerstack"

// heartbeatPath is the guard's heartbeat file.
func (n *Node) heartbeatPath() string { return heartbeatPathIn(guardRunDir, n.cfg.DataDir) }

// heartbeatPathIn is the heartbeat file of the daemon of dataDir: in
// runDir, named after the data dir's absolute path (one host may run
// several daemons), or in the data dir when runDir is not writable. The
// guard's lock (".lock") and pid (".pid") files sit next to it.
func heartbeatPathIn(runDir, dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	if err := os.MkdirAll(runDir, 0o700); err == nil {
		if f, err := os.CreateTemp(runDir, ".probe-*"); err == nil {
			f.Close()
			_ = os.Remove(f.Name())
			return filepath.Join(runDir, "fence-heartbeat-"+hex.EncodeToString(sum[:8])+".json")
		}
	}
	return filepath.Join(dataDir, "fence-heartbeat.json")
}

// newFence is the agent's fence; with a guard command the heartbeat file
// is written and the guard kept running.
func (n *Node) newFence(ctx context.Context, log *slog.Logger, opts AgentOptions) *agent.Fence {
	cfg := agent.FenceConfig{
		Renew: n.renewLease, Applied: func() uint64 { return n.raft.Status().AppliedIndex },
		Timeout: n.fenceTimeout, Interval: opts.FenceInterval, Logger: log.With("sub", "fence"),
	}
	if len(opts.GuardCommand) > 0 {
		path := n.heartbeatPath()
		// Until the agent's first sync, the previous run's HA VMs stay in
		// the heartbeat: the guard must still kill them.
		if hb, err := agent.ReadHeartbeat(path); err != nil {
			log.Warn("fence: previous heartbeat unreadable; guarding no VM until the first sync", "err", err)
		} else {
			cfg.Initial = hb.VMs
		}
		cfg.Heartbeat = func(deadline time.Duration, vms []agent.GuardVM) error {
			return agent.WriteHeartbeat(path, deadline, vms)
		}
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.keepGuard(ctx, log, opts.GuardCommand, path, n.cfg.DataDir) }()
	}
	return agent.NewFence(cfg)
}

// keepGuard runs the guard process and starts it again when it exits,
// until ctx ends. The guard lives in its own session, so it outlives the
// daemon; when ctx ends it is left running (a restarted daemon takes it
// over through the lock the guard holds).
func (n *Node) keepGuard(ctx context.Context, log *slog.Logger, command []string, heartbeat, dataDir string) {
	lock := heartbeat + ".lock"
	for ctx.Err() == nil {
		if guardRunning(lock) {
			if !sleepCtx(ctx, 2*time.Second) {
				return
			}
			continue
		}
		args := append(append([]string{}, command[1:]...), "--heartbeat", heartbeat, "--lock", lock, "--data-dir", dataDir)
		cmd := exec.Command(command[0], args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		// Its own log file, not the daemon's output: a guard that held the
		// daemon's stdout or stderr open would outlive it there too.
		logf, err := os.OpenFile(filepath.Join(dataDir, "fence-guard.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err == nil {
			cmd.Stdout, cmd.Stderr = logf, logf
			err = cmd.Start()
			logf.Close()
		}
		if err != nil {
			log.Error("fence guard not started", "err", err)
		} else {
			log.Info("fence guard started", "pid", cmd.Process.Pid)
			go func() { _ = cmd.Wait() }()
		}
		if !sleepCtx(ctx, 2*time.Second) {
			return
		}
	}
}

// guardRunning reports whether a guard holds the lock file.
func guardRunning(lock string) bool {
	f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// RunGuard is `peerstack fence-guard`: it takes the lock (exiting when
// another guard holds it), writes its pid to heartbeat+".pid" and guards
// the heartbeat file until ctx ends, or until the host is gone: dataDir
// (when set) has no identity any more or has left the cluster, or the
// heartbeat file it saw has been removed.
func RunGuard(ctx context.Context, heartbeat, lock, dataDir string, log *slog.Logger) error {
	f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("fence guard: another guard holds %s", lock)
	}
	pidfile := heartbeat + ".pid"
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	defer os.Remove(pidfile)
	log.Info("fence guard running", "heartbeat", heartbeat, "pid", os.Getpid())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = os.Stat(heartbeat)
	seen := err == nil
	go func() {
		for sleepCtx(ctx, time.Second) {
			if why := guardDone(heartbeat, dataDir, &seen); why != "" {
				log.Info("fence guard: exiting", "why", why)
				cancel()
				return
			}
		}
	}()
	agent.Guard(ctx, agent.GuardConfig{File: heartbeat, Logger: log})
	return nil
}

// guardDone tells why the guard should exit ("" = it should not): the
// host's identity is gone or has left, or the heartbeat file was removed
// after the guard saw it (seen remembers that).
func guardDone(heartbeat, dataDir string, seen *bool) string {
	if dataDir != "" {
		id, err := loadIdentity(dataDir)
		switch {
		case errors.Is(err, errNoIdentity):
			return "the host's identity is gone from " + dataDir
		case err == nil && id.Left:
			return "the host left the cluster"
		}
	} else if _, err := os.Stat(filepath.Dir(heartbeat)); errors.Is(err, os.ErrNotExist) {
		return "the heartbeat's directory is gone"
	}
	_, err := os.Stat(heartbeat)
	switch {
	case err == nil:
		*seen = true
	case errors.Is(err, os.ErrNotExist) && *seen:
		return "the heartbeat file was removed"
	}
	return ""
}

// ErrDuplicateHost is why a daemon refuses to start: another daemon with
// the same host identity (a copied data dir) answers at the address this
// identity last had.
var ErrDuplicateHost = errors.New("another daemon runs with this host's identity")

// checkDuplicate dials the API address this identity last advertised and
// refuses to start when a daemon there presents this host's own
// certificate: two daemons with one id would run the same VMs. A daemon
// that cannot be reached (the usual restart) passes.
func (n *Node) checkDuplicate(ctx context.Context, clientTLS *tls.Config) error {
	addr := n.id.APIAddr
	if addr == "" {
		return nil
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: clientTLS.Clone()}
	dctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	if len(st.PeerCertificates) > 0 && st.PeerCertificates[0].Subject.CommonName == n.id.NodeID {
		return fmt.Errorf("%w: host %s (id %s) already answers at %s; this data dir %s is a copy of that host's. "+
			"Refusing to start, so no VM runs twice: stop the other daemon, or join this machine with an empty data dir",
			ErrDuplicateHost, n.id.Name, n.id.NodeID, addr, n.cfg.DataDir)
	}
	return nil
}

// checkDuplicateOf is checkDuplicate with this host's certificates.
// own is the API listener this daemon bound: the identity's address is
// not dialled when it is that listener (a restart on the same machine).
func (n *Node) checkDuplicateOf(ctx context.Context, own net.Addr, caPEM, certPEM, keyPEM string) error {
	if isOwnAddr(n.id.APIAddr, own) {
		return nil
	}
	_, clientTLS, err := membership.TLSConfigs(caPEM, certPEM, keyPEM)
	if err != nil {
		return err
	}
	return n.checkDuplicate(ctx, clientTLS)
}

// isOwnAddr reports whether addr (host:port) is the listener ln: same
// port, and the listener's IP or, for a wildcard listener, a local one.
func isOwnAddr(addr string, ln net.Addr) bool {
	h, p, err := net.SplitHostPort(addr)
	tcp, ok := ln.(*net.TCPAddr)
	if err != nil || !ok || p != fmt.Sprint(tcp.Port) {
		return false
	}
	ip := net.ParseIP(h)
	if tcp.IP.Equal(ip) {
		return true
	}
	if !tcp.IP.IsUnspecified() {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// mountDrain registers POST /cluster/v1/drain (admin): this host stops
// the VMs of its servers and the leader restarts them on other hosts, so
// that it can leave (`peerstack leave --evacuate`).
func (n *Node) mountDrain(srv *rest.Server) {
	srv.Mount(rest.Service{Prefix: "", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: "POST", Path: "/cluster/v1/drain", Auth: rest.Token, Handler: func(c *rest.Ctx) (any, error) {
			if err := rest.Check(n, c, rest.Admin, "", false, "member"); err != nil {
				return nil, err
			}
			if err := n.Drain(c.Context()); err != nil {
				return nil, err
			}
			return map[string]any{"drained": true}, nil
		}},
	}})
}

// Drain moves every server off this host: placements are disabled, each
// server's disks must all be on shared storage (a local disk would be
// lost: refused before anything changes), its VM is stopped here, and
// once none runs the host declares itself draining, which the leader
// treats as fenced. It returns when no server is placed here any more, or
// with the reasons of those no other host could take (the host then stays
// disabled, and its word is withdrawn).
func (n *Node) Drain(ctx context.Context) error {
	sn := n.State()
	var local []string
	for _, i := range sn.InstancesOnHost(n.id.NodeID) {
		if i.Desired == statedb.DesiredDeleted {
			continue
		}
		if why := sn.LocalDisks(i); why != "" {
			local = append(local, fmt.Sprintf("%s (%s): %s", i.Name, i.ID, why))
		}
	}
	if len(local) > 0 {
		return rest.Conflictf("host %s cannot move %d servers without losing data; delete or move them first: %s",
			n.id.Name, len(local), strings.Join(local, "; "))
	}
	if _, err := n.raft.Propose(ctx, statedb.CmdSetHostEnabled, statedb.SetHostEnabledCmd{ID: n.id.NodeID, Disabled: true,
		Reason: "leaving the cluster"}); err != nil {
		return fmt.Errorf("drain: disable placements: %w", err)
	}
	n.mu.Lock()
	rt := n.cfg.Agent.rt
	n.mu.Unlock()
	if rt != nil {
		vms, err := rt.hv.List(ctx)
		if err != nil {
			return fmt.Errorf("drain: list vms: %w", err)
		}
		placed := map[string]bool{}
		for _, i := range n.State().InstancesOnHost(n.id.NodeID) {
			placed[i.ID] = true
		}
		for _, v := range vms {
			if placed[v.ID] && (v.State == agent.VMRunning || v.State == agent.VMPaused) {
				if err := rt.hv.Stop(ctx, v.ID); err != nil {
					return fmt.Errorf("drain: stop %s: %w", v.ID, err)
				}
			}
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			vms, err := rt.hv.List(ctx)
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
				break
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 200*time.Millisecond) {
				return fmt.Errorf("drain: %d VMs still run on host %s", running, n.id.Name)
			}
		}
	}
	if _, err := n.raft.Propose(ctx, statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: n.id.NodeID, Draining: true}); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var left []string
		done := true
		for _, i := range n.State().InstancesOnHost(n.id.NodeID) {
			done = false
			if i.VMState == statedb.VMError && i.Fault != nil {
				left = append(left, fmt.Sprintf("%s: %s", i.Name, i.Fault.Message))
			}
		}
		if done {
			return nil
		}
		if len(left) > 0 || time.Now().After(deadline) || !sleepCtx(ctx, 200*time.Millisecond) {
			if _, err := n.raft.Propose(context.WithoutCancel(ctx), statedb.CmdSetHostHealth, statedb.SetHostHealthCmd{ID: n.id.NodeID}); err != nil {
				n.log.Warn("drain: withdraw the draining state", "err", err)
			}
			return rest.Conflictf("host %s could not move every server: %s", n.id.Name, strings.Join(left, "; "))
		}
	}
}

// checkLeaveEmpty refuses a leave while servers are placed on this host:
// they would be stranded on a host that is gone.
func (n *Node) checkLeaveEmpty() error {
	var names []string
	for _, i := range n.State().InstancesOnHost(n.id.NodeID) {
		names = append(names, i.Name)
	}
	if len(names) == 0 {
		return nil
	}
	return rest.Conflictf("host %s runs %d servers (%s); move them first, or run `peerstack leave --evacuate` to restart them on other hosts",
		n.id.Name, len(names), strings.Join(names, ", "))
}
