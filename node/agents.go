package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/agent"
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
		return brokenHV{err: err}, func() {}
	}
	h := newQEMUHV(d)
	return h, h.close
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
		return &netdevNet{err: err}, func() {}
	}
	return &netdevNet{m: m}, func() { _ = m.Close() }
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

func (im nodeImages) Image(ctx context.Context, imageID string) (string, string, error) {
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

// netdevNet adapts hv/netdev to agent.Network.
type netdevNet struct {
	m   *netdev.Manager
	err error // why there is no manager
}

func (d *netdevNet) TapName(portID string) string {
	if d.m != nil {
		return d.m.TapName(portID)
	}
	return netdev.TapName(portID)
}

func (d *netdevNet) Apply(ctx context.Context, want agent.NetDesired) error {
	if d.m == nil {
		return fmt.Errorf("%w: %v", agent.ErrNetworkUnavailable, d.err)
	}
	_, err := d.m.Apply(ctx, toNetdev(want))
	var pf *netdev.ProvidersFailed
	switch {
	case errors.Is(err, netdev.ErrPermission):
		return fmt.Errorf("%w: %v", agent.ErrNetworkUnavailable, err)
	case errors.As(err, &pf) && err == error(pf):
		return partialError(want, pf)
	}
	return err
}

// partialError tells the agent which provider networks and ports failed,
// and which of their ports cannot be plumbed as things stand (a failed
// network's ports share its reason).
func partialError(want agent.NetDesired, pf *netdev.ProvidersFailed) error {
	e := &agent.NetPartialError{Networks: pf.IDs, Ports: pf.Ports, Refused: map[string]string{}, Err: pf}
	for _, pn := range want.Providers {
		for _, p := range pn.Ports {
			for _, id := range []string{pn.ID, p.ID} {
				if pf.Permanent(id) {
					e.Refused[p.ID] = pf.Cause(id).Error()
				}
			}
		}
	}
	return e
}

func toNetdev(d agent.NetDesired) netdev.Desired {
	out := netdev.Desired{LocalVTEP: d.LocalVTEP}
	for _, s := range d.Networks {
		nw := netdev.Network{ID: s.ID, VNI: s.VNI, MTU: s.MTU, Routed: s.Routed, Remotes: s.Remotes}
		for _, p := range s.Ports {
			nw.Ports = append(nw.Ports, toNetdevPort(p))
		}
		for _, m := range s.MACs {
			nw.MACs = append(nw.MACs, netdev.RemoteMAC{MAC: m.MAC, VTEP: m.VTEP})
		}
		out.Networks = append(out.Networks, nw)
	}
	for _, pn := range d.Providers {
		nw := netdev.Provider{ID: pn.ID, Uplink: pn.Iface, VLAN: pn.VLAN, MTU: pn.MTU}
		for _, p := range pn.Ports {
			nw.Ports = append(nw.Ports, toNetdevPort(p))
		}
		out.Providers = append(out.Providers, nw)
	}
	return out
}

func toNetdevPort(p agent.NetPort) netdev.Port {
	np := netdev.Port{ID: p.ID, Tap: p.Tap, MAC: p.MAC, IP: p.IP, Prefix: p.Prefix,
		Gateway: p.Gateway, DNS: p.DNS, Routes: p.Routes, RouteVia: p.RouteVia, Hostname: p.Hostname, DHCP: p.DHCP,
		Unfiltered: p.Unfiltered}
	for _, s := range p.Sources {
		np.Sources = append(np.Sources, netdev.Source{MAC: s.MAC, Prefix: s.Prefix})
	}
	return np
}

// qemuHV adapts hv/qemu's Driver to agent.Hypervisor, agent.DiskResizer
// and agent.EphemeralDisker.
type qemuHV struct {
	d      *qemu.Driver
	events chan agent.VMEvent
	wg     sync.WaitGroup
}

func newQEMUHV(d *qemu.Driver) *qemuHV {
	h := &qemuHV{d: d, events: make(chan agent.VMEvent, 1024)}
	h.wg.Add(1)
	go func() {
		// Owned: ends when Close closes the driver's channel.
		defer h.wg.Done()
		defer close(h.events)
		for ev := range d.Events() {
			select {
			case h.events <- agent.VMEvent{ID: ev.UUID, Kind: ev.Kind, Detail: ev.Detail}:
			default: // the agent resyncs anyway
			}
		}
	}()
	return h
}

var (
	_ agent.Hypervisor      = (*qemuHV)(nil)
	_ agent.DiskResizer     = (*qemuHV)(nil)
	_ agent.EphemeralDisker = (*qemuHV)(nil)
)

// close stops the driver (VMs keep running) and the event relay.
func (h *qemuHV) close() {
	_ = h.d.Close()
	h.wg.Wait()
}

func vmStatus(st qemu.VMStatus) agent.VMStatus {
	return agent.VMStatus{ID: st.UUID, State: agent.VMState(st.State), PID: st.PID, Reason: st.Reason}
}

func vmStatuses(in []qemu.VMStatus, err error) ([]agent.VMStatus, error) {
	if err != nil {
		return nil, err
	}
	out := make([]agent.VMStatus, 0, len(in))
	for _, st := range in {
		out = append(out, vmStatus(st))
	}
	return out, nil
}

func (h *qemuHV) Recover(ctx context.Context) ([]agent.VMStatus, error) {
	return vmStatuses(h.d.Recover(ctx))
}

func (h *qemuHV) List(ctx context.Context) ([]agent.VMStatus, error) {
	return vmStatuses(h.d.List(ctx))
}

func (h *qemuHV) CreateRootDisk(ctx context.Context, id string, base agent.Disk, sizeGB int) (agent.Disk, error) {
	p, err := h.d.CreateRootDisk(ctx, id, base.Path, base.Format, sizeGB)
	if err != nil {
		return agent.Disk{}, err
	}
	return agent.Disk{Path: p, Format: "qcow2"}, nil
}

func (h *qemuHV) WriteConfigDrive(ctx context.Context, id string, cd agent.ConfigDrive) (string, error) {
	paths := h.d.Paths(id)
	if err := os.MkdirAll(paths.Dir, 0o700); err != nil {
		return "", fmt.Errorf("vm %s: %w", id, err)
	}
	p := paths.ConfigDrive()
	err := qemu.WriteConfigDrive(p, qemu.ConfigDrive{
		UUID: cd.UUID, Hostname: cd.Hostname, Name: cd.Name, AvailabilityZone: cd.AvailabilityZone, ProjectID: cd.ProjectID,
		PublicKeys: cd.PublicKeys, Meta: cd.Meta, UserData: cd.UserData, NetworkData: cd.NetworkData,
	})
	if err != nil {
		return "", err
	}
	return p, nil
}

// CreateEphemeralDisk implements agent.EphemeralDisker.
func (h *qemuHV) CreateEphemeralDisk(ctx context.Context, id string, sizeGB int) (agent.Disk, error) {
	p, err := h.d.CreateEphemeralDisk(ctx, id, sizeGB)
	if err != nil {
		return agent.Disk{}, err
	}
	return agent.Disk{ID: "ephemeral0", Path: p, Format: "qcow2"}, nil
}

// ResizeDisk implements agent.DiskResizer (QMP block_resize while the VM
// runs, qemu-img resize otherwise).
func (h *qemuHV) ResizeDisk(ctx context.Context, id, diskID string, sizeGB int) error {
	return h.d.ResizeDisk(ctx, id, diskID, int64(sizeGB)<<30)
}

func qemuDisk(d agent.Disk) qemu.Disk {
	return qemu.Disk{ID: d.ID, Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}
}

func (h *qemuHV) Start(ctx context.Context, s agent.VMSpec) error {
	spec := qemu.Spec{UUID: s.ID, Name: s.Name, VCPUs: s.VCPUs, RAMMB: s.RAMMB, RootDisk: qemuDisk(s.Root), ConfigDrive: s.ConfigDrive}
	if s.Ephemeral != nil {
		spec.Ephemeral = s.Ephemeral.Path
	}
	for _, nic := range s.NICs {
		spec.NICs = append(spec.NICs, qemu.NIC{ID: nic.PortID, Tap: nic.Tap, MAC: nic.MAC})
	}
	for _, d := range s.ExtraDisks {
		spec.ExtraDisks = append(spec.ExtraDisks, qemuDisk(d))
	}
	err := h.d.Start(ctx, spec)
	if errors.Is(err, qemu.ErrAlreadyRunning) {
		return fmt.Errorf("%w: %w", agent.ErrAlreadyRunning, err)
	}
	return err
}

func (h *qemuHV) Stop(ctx context.Context, id string) error { return h.d.Stop(ctx, id) }

func (h *qemuHV) Reboot(ctx context.Context, id string, hard bool) error {
	return h.d.Reboot(ctx, id, hard)
}

func (h *qemuHV) Delete(ctx context.Context, id string) error { return h.d.Delete(ctx, id) }

func (h *qemuHV) AttachDisk(ctx context.Context, id string, d agent.Disk) error {
	return h.d.AttachDisk(ctx, id, qemuDisk(d))
}

func (h *qemuHV) DetachDisk(ctx context.Context, id, diskID string, timeout time.Duration) error {
	return h.d.DetachDisk(ctx, id, diskID, timeout)
}

func (h *qemuHV) Events() <-chan agent.VMEvent { return h.events }

func (h *qemuHV) ConsoleLog(id string, maxBytes int64) (string, error) {
	return h.d.ConsoleLog(id, maxBytes)
}

// brokenHV stands in for a hypervisor that could not start: every change
// fails with the reason, and there are no VMs.
type brokenHV struct{ err error }

func (b brokenHV) fail() error { return fmt.Errorf("hypervisor unavailable: %w", b.err) }

func (b brokenHV) Recover(context.Context) ([]agent.VMStatus, error) { return nil, nil }
func (b brokenHV) List(context.Context) ([]agent.VMStatus, error)    { return nil, nil }
func (b brokenHV) CreateRootDisk(context.Context, string, agent.Disk, int) (agent.Disk, error) {
	return agent.Disk{}, b.fail()
}
func (b brokenHV) WriteConfigDrive(context.Context, string, agent.ConfigDrive) (string, error) {
	return "", b.fail()
}
func (b brokenHV) Start(context.Context, agent.VMSpec) error                       { return b.fail() }
func (b brokenHV) Stop(context.Context, string) error                              { return b.fail() }
func (b brokenHV) Reboot(context.Context, string, bool) error                      { return b.fail() }
func (b brokenHV) Delete(context.Context, string) error                            { return nil }
func (b brokenHV) AttachDisk(context.Context, string, agent.Disk) error            { return b.fail() }
func (b brokenHV) DetachDisk(context.Context, string, string, time.Duration) error { return b.fail() }
func (b brokenHV) Events() <-chan agent.VMEvent                                    { return nil }
