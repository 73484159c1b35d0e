package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/hvagent"
	"github.com/peerstack/peerstack/node/readiness"
)

// AgentOptions configure the per-host agent (node/agent): which hypervisor,
// networking, images and volumes it drives, and its timers. The zero value
// runs real QEMU and hv/netdev.
type AgentOptions struct {
	// Disabled runs no agent (tests that play the agents themselves).
	Disabled bool
	// Hypervisor runs the VMs. nil: QEMU (hv/qemu) with its VM directories
	// in <data-dir>/instances. Tests pass a fake (agenttest.Hypervisor).
	Hypervisor agent.Hypervisor
	// QEMUBinary and Accel configure the QEMU driver ("" = find
	// qemu-system-x86_64 in PATH; detect KVM, else TCG).
	QEMUBinary string
	Accel      string
	// StopTimeout is how long a guest gets to power off before QEMU is
	// quit (default 60 s).
	StopTimeout time.Duration

	// Network is "netdev" (the default: hv/netdev bridges, VXLAN, taps and
	// DHCP) or "none" (no tenant networking: VMs start without NICs).
	Network string
	// NetworkDriver, when set, replaces Network (tests pass a fake).
	NetworkDriver agent.Network
	// NetNS is the network namespace (a path such as /run/netns/x) the
	// host's devices live in; "" is the daemon's own.
	NetNS string
	// Physnets maps physical network names to this host's interfaces
	// (--physnet); the agent records it in the state at start.
	Physnets map[string]string
	// RoutingDriver, when set, replaces hv/router (tests pass a fake).
	RoutingDriver agent.Routing

	// GuardCommand starts the fence guard (`peerstack fence-guard`), which
	// outlives the daemon; nil: no guard (in-process clusters).
	// FenceInterval is the period of lease renewals (default 1 s).
	GuardCommand  []string
	FenceInterval time.Duration
	// Watchdog is the longest timeout the guard's watchdog device may be
	// given (0: none); the guard command names the device.
	Watchdog time.Duration

	// Images makes image files available; nil: the image service
	// (Node.EnsureImage).
	Images agent.ImageSource
	// Volumes manages volume files; nil: the volume service's store
	// (Node.VolumeStore).
	Volumes agent.Volumes

	// ResyncInterval is the period of full resyncs (default 10 s, jittered).
	ResyncInterval time.Duration
	// DetachTimeout bounds a volume hot-unplug, retries included (default 2 min).
	DetachTimeout time.Duration

	// rt is the running agent's handle, set by runAgents under Node.mu.
	rt *agentRuntime
}

// agentRuntime is what the rest of the node needs from the running agent.
type agentRuntime struct {
	hv agent.Hypervisor
	ag *agent.Agent // nil until the state caught up
}

// consoleLogger is implemented by hypervisors that keep a console log.
type consoleLogger interface {
	ConsoleLog(id string, maxBytes int64) (string, error)
}

// runAgents runs this host's agent until ctx ends. VMs keep running after
// it returns.
func (n *Node) runAgents(ctx context.Context) {
	log := n.log.With("sub", "agent")
	opts := n.cfg.Agent
	if opts.Disabled {
		return
	}
	hv, closeHV := n.agentHypervisor(log, opts)
	defer closeHV()
	nw, closeNet := n.agentNetwork(log, opts)
	defer closeNet()
	fw, closeFW := n.agentFirewall(log, opts)
	defer closeFW()
	n.mu.Lock()
	n.cfg.Agent.rt = &agentRuntime{hv: hv}
	n.mu.Unlock()

	// The lease is renewed as soon as Raft is up, while the state catches
	// up: the guard's deadline runs from the previous run's last renewal.
	fence := n.newFence(ctx, log, opts)
	pre, stopPre := context.WithCancel(ctx)
	preDone := make(chan struct{})
	go func() { defer close(preDone); fence.Run(pre, nil, nil) }()
	readiness.WaitCaughtUp(ctx, n.raft, log)
	stopPre()
	<-preDone
	if ctx.Err() != nil {
		return
	}
	images := opts.Images
	if images == nil {
		images = nodeImages{n}
	}
	vols := opts.Volumes
	if vols == nil {
		vols = &nodeVolumes{n: n}
	}
	cfg := agent.Config{
		HostID: n.id.NodeID, State: n.raft.Store(), Proposer: nodeProposer{n}, Hypervisor: hv,
		Images: images, Volumes: vols, ResyncInterval: opts.ResyncInterval, DetachTimeout: opts.DetachTimeout, Logger: log,
		Fence: fence,
	}
	if nw != nil {
		cfg.Network, cfg.VTEPs, cfg.Firewall = nw, nodeVTEPs{n}, fw
		cfg.Routing, cfg.Physnets = n.agentRouting(log, opts), opts.Physnets
	}
	ag, err := agent.New(cfg)
	if err != nil {
		log.Error("agent not started", "err", err)
		return
	}
	n.mu.Lock()
	n.cfg.Agent.rt.ag = ag
	n.mu.Unlock()
	if err := ag.Run(ctx); err != nil {
		log.Error("agent stopped", "err", err)
	}
}

// agentHypervisor returns the hypervisor and how to close it. A QEMU that
// cannot start (no binary) gives a hypervisor whose operations fail with
// the cause, so servers go to ERROR with it while the daemon keeps running.
func (n *Node) agentHypervisor(log *slog.Logger, opts AgentOptions) (agent.Hypervisor, func()) {
	if opts.Hypervisor != nil {
		return opts.Hypervisor, func() {}
	}
	d, err := qemu.New(qemu.Config{
		StateDir: filepath.Join(n.cfg.DataDir, "instances"), QEMUBinary: opts.QEMUBinary, Accel: qemu.Accel(opts.Accel),
		StopTimeout: opts.StopTimeout, Logger: log,
	})
	if err != nil {
		log.Error("QEMU unavailable: servers placed on this host will fail until it is installed", "err", err)
		return hvagent.Broken{Err: err}, func() {}
	}
	h := hvagent.NewQEMU(d)
	return h, h.Close
}

// agentNetwork returns the tenant network driver (nil: disabled) and how
// to close it.
func (n *Node) agentNetwork(log *slog.Logger, opts AgentOptions) (agent.Network, func()) {
	if opts.NetworkDriver != nil {
		return opts.NetworkDriver, func() {}
	}
	switch opts.Network {
	case "none":
		log.Info("tenant networking disabled (--network none): servers start without NICs")
		return nil, func() {}
	case "", "netdev":
	default:
		log.Error("unknown network driver; tenant networking disabled", "network", opts.Network)
		return nil, func() {}
	}
	m, err := netdev.New(netdev.Config{Logger: log, NetNS: opts.NetNS})
	if err != nil {
		// agent.Network reports it (once) when it first has to plumb.
		return hvagent.NewNetwork(nil, err), func() {}
	}
	return hvagent.NewNetwork(m, nil), func() { _ = m.Close() }
}

// localConsole returns the tail of a local instance's serial console log:
// the last length lines, or the last 64 KiB when length < 0.
func (n *Node) localConsole(ctx context.Context, instanceID string, length int) (string, error) {
	n.mu.Lock()
	rt := n.cfg.Agent.rt
	n.mu.Unlock()
	if rt == nil {
		return "", fmt.Errorf("console of %s: the agent is not running on this host", instanceID)
	}
	cl, ok := rt.hv.(consoleLogger)
	if !ok {
		return "", fmt.Errorf("console of %s: this hypervisor keeps no console log", instanceID)
	}
	if length < 0 {
		out, err := cl.ConsoleLog(instanceID, 64<<10)
		if err != nil {
			return "", fmt.Errorf("console of %s: %w", instanceID, err)
		}
		return out, nil
	}
	if length == 0 {
		return "", nil
	}
	out, err := cl.ConsoleLog(instanceID, qemu.DefaultConsoleLimit)
	if err != nil {
		return "", fmt.Errorf("console of %s: %w", instanceID, err)
	}
	return lastLines(out, length), nil
}

// lastLines returns the last n lines of s (a final line without newline
// counts).
func lastLines(s string, n int) string {
	end := len(s)
	if strings.HasSuffix(s, "\n") {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n--
			if n == 0 {
				return s[i+1:]
			}
		}
	}
	return s
}

// nodeProposer proposes agent reports through Raft.
type nodeProposer struct{ n *Node }

func (p nodeProposer) Propose(ctx context.Context, t statedb.CmdType, payload any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := p.n.raft.Propose(ctx, t, payload)
	return err
}

// nodeVTEPs resolves VTEP addresses from gossip metadata (this host's from
// its configuration).
type nodeVTEPs struct{ n *Node }

func (v nodeVTEPs) VTEP(host string) net.IP {
	if host == v.n.id.NodeID {
		return net.ParseIP(v.n.cfg.VTEPAddr)
	}
	for _, m := range v.n.gossip.Members() {
		if m.Name == host {
			return net.ParseIP(m.Meta.VTEPAddr)
		}
	}
	return nil
}

// nodeImages adapts the image service (EnsureImage) to agent.ImageSource.
type nodeImages struct{ n *Node }

func (im nodeImages) Image(ctx context.Context, imageID string) (string, string, func(), error) {
	return im.n.EnsureImage(ctx, imageID)
}

// nodeVolumes adapts the volume service's hv/storage VolumeStore to
// agent.Volumes.
type nodeVolumes struct{ n *Node }

// store is the store holding vol's file (its recorded backend, which
// the storage setting may have moved away from since).
func (v *nodeVolumes) store(vol *statedb.Volume) (*storage.VolumeStore, error) {
	st, err := v.n.volumeStoreOf(vol)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", agent.ErrNoVolumeStore, err)
	}
	return st, nil
}

func (v *nodeVolumes) Create(ctx context.Context, vol *statedb.Volume, image *agent.Disk) error {
	st, err := v.store(vol)
	if err != nil {
		return err
	}
	from := ""
	if image != nil {
		from = image.Path
	}
	p, err := st.Create(ctx, statedb.VolumeFileBase(vol.ID), vol.SizeGB, vol.Format, from)
	if errors.Is(err, storage.ErrVolumeExists) {
		// A retry after a report that did not make it: the file is ours.
		if want, perr := st.Path(statedb.VolumeFileBase(vol.ID), vol.Format); perr == nil && (vol.Path == "" || want == vol.Path) {
			return nil
		}
	}
	if err != nil {
		return err
	}
	if vol.Path != "" && p != vol.Path {
		return fmt.Errorf("volume %s: created at %s, but the record says %s", vol.ID, p, vol.Path)
	}
	return nil
}

// Path is where this host's current store keeps vol's file.
func (v *nodeVolumes) Path(vol *statedb.Volume) (string, error) {
	st, err := v.store(vol)
	if err != nil {
		return "", err
	}
	return st.Path(statedb.VolumeFileBase(vol.ID), vol.Format)
}

func (v *nodeVolumes) Delete(ctx context.Context, vol *statedb.Volume) error {
	st, err := v.store(vol)
	if err != nil {
		return err
	}
	return st.Delete(ctx, vol.Path)
}

func (v *nodeVolumes) Extend(ctx context.Context, vol *statedb.Volume) error {
	st, err := v.store(vol)
	if err != nil {
		return err
	}
	return st.Extend(ctx, vol.Path, vol.SizeGB)
}
