package node

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"syscall"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/node/forward"
	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
	restidentity "github.com/peerstack/peerstack/rest/identity"
)

// mountServices registers every API service.
func (n *Node) mountServices(srv *rest.Server) {
	srv.Mount(cluster.Service(n))
	srv.Mount(cluster.SettingsService(n))
	srv.Mount(n.ready.CommitService())
	srv.Mount(n.gkeys.Service())
	srv.Mount(restidentity.Service(n))
	n.mountCompute(srv)
	n.mountImages(srv)
	n.mountNetworks(srv)
	n.mountVolumes(srv)
	srv.Mount(n.lease.Service())
	srv.Mount(n.drain.Service(n))
	srv.Handle("/healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	}))
	srv.HandleAdmin("/metrics", n.metricsHandler(), n)
}

// ReadIndex confirms this host leads and returns its applied index
// (served to members on /internal/v1/read-index).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) { return n.raft.ReadIndex(ctx) }

// LinearizableRead returns once this host's state holds every write
// acknowledged anywhere before the call (forward.LinearizableRead).
func (n *Node) LinearizableRead(ctx context.Context) error {
	return forward.LinearizableRead(ctx, n.raft, n.fwd)
}

// apiAddrOf finds a host's API address from the state, then gossip.
func (n *Node) apiAddrOf(id string) string {
	if m, ok := n.State().Member(id); ok && m.APIAddr != "" {
		return m.APIAddr
	}
	for _, m := range n.gossip.Members() {
		if m.Name == id {
			return m.Meta.APIAddr
		}
	}
	return ""
}

// ApplyForwarded applies a command a follower forwarded (forward.Admission).
func (n *Node) ApplyForwarded(ctx context.Context, data []byte, fromHost, token string) (uint64, error) {
	return (&forward.Admission{Raft: n.raft, Authenticate: n.Authenticate}).Apply(ctx, data, fromHost, token)
}

// Members lists the cluster's hosts with Raft role and gossip state.
func (n *Node) Members() []cluster.Member {
	conf, _ := n.raft.Configuration()
	servers := make([]membership.RaftServer, 0, len(conf))
	for _, s := range conf {
		servers = append(servers, membership.RaftServer{ID: s.ID, Voter: s.Voter})
	}
	leaderID, _ := n.raft.Leader()
	return membership.MemberList(n.State().Members(), servers, leaderID, n.gossip.Members())
}

// Status summarises Raft from this host's point of view.
func (n *Node) Status() cluster.Status {
	st := n.raft.Status()
	leaderID, _ := n.raft.Leader()
	s := cluster.Status{ClusterID: n.id.ClusterID, Term: st.Term, AppliedIndex: st.AppliedIndex, CommitIndex: st.CommitIndex,
		RaftState: st.State, Self: cluster.NodeRef{ID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr},
		Members: len(n.State().Members())}
	if leaderID != "" {
		s.Leader.ID = leaderID
		if m, ok := n.State().Member(leaderID); ok {
			s.Leader.Name, s.Leader.APIAddr = m.Name, m.APIAddr
		}
	}
	return s
}

// Leave removes this host from the cluster gracefully (membership.Leaver):
// leadership moves away, the member record goes and its certificate is
// revoked (one entry, see removeSelf), the leader drops it from Raft,
// gossip says goodbye and the daemon stops (Left is closed).
func (n *Node) Leave(ctx context.Context) error {
	l := &membership.Leaver{HostID: n.id.NodeID, Raft: n.raft, CheckEmpty: n.drain.CheckLeaveEmpty, Remove: n.removeSelf,
		MarkLeft: func() error {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.id.Left = true
			return saveIdentity(n.cfg.DataDir, n.id)
		},
		InRaft: func() (bool, error) {
			conf, err := n.raft.Configuration()
			in := false
			for _, s := range conf {
				in = in || s.ID == n.id.NodeID
			}
			return in, err
		},
		Goodbye: func() {
			m := n.buildMeta()
			m.Leaving = true
			_ = n.gossip.UpdateMeta(context.Background(), m)
			_ = n.gossip.Leave(2 * time.Second)
			n.log.Info("left the cluster", "node", n.id.NodeID)
			close(n.left)
		}}
	return l.Leave(ctx)
}

// buildMeta is this host's gossip metadata.
func (n *Node) buildMeta() gossip.Meta {
	vcpus, ram, disk := hostCapacity(n.cfg.DataDir)
	if n.cfg.VCPUs > 0 {
		vcpus = n.cfg.VCPUs
	}
	if n.cfg.RAMMB > 0 {
		ram = n.cfg.RAMMB
	}
	if n.cfg.DiskGB > 0 {
		disk = n.cfg.DiskGB
	}
	m := gossip.Meta{Version: 1, NodeID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr, RaftAddr: n.id.RaftAddr,
		VTEPAddr: n.cfg.VTEPAddr, VCPUs: vcpus, RAMMB: ram, DiskGB: disk, Accel: n.accel(), Arch: arch(), SWVersion: Version}
	if n.raft != nil {
		// What this host runs, from the committed claims.
		for _, inst := range n.State().InstancesOnHost(n.id.NodeID) {
			m.UsedVCPUs += inst.Flavor.VCPUs
			m.UsedRAMMB += inst.Flavor.RAMMB
			m.UsedDiskGB += inst.Flavor.DiskGB + inst.Flavor.EphemeralGB
		}
	}
	return m
}

func (n *Node) updateMeta(ctx context.Context) {
	m := n.buildMeta()
	n.mu.Lock()
	same := m == n.metaNow
	n.metaNow = m
	n.mu.Unlock()
	if same || n.gossip == nil {
		return
	}
	if err := n.gossip.UpdateMeta(ctx, m); err != nil {
		n.log.Warn("update gossip metadata", "err", err)
	}
}

// metaLoop refreshes gossip metadata when the host's numbers change: on
// state changes (claims placed here), at most every 500 ms, and every 10 s.
func (n *Node) metaLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.raft.Store().Changed():
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
		n.updateMeta(ctx)
	}
}

// registerLoop keeps this host's member record in step with its addresses
// and version, and registers it again whenever another member is upgraded
// (membership.Reaffirm says why).
func (n *Node) registerLoop(ctx context.Context) {
	self := statedb.Member{ID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr, RaftAddr: n.id.RaftAddr,
		GossipAddr: n.id.GossipAddr, Version: Version}
	left := func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.id.Left
	}
	from := n.raft.State()
	membership.Register(ctx, n.raft, self, left, n.Now, n.log)
	membership.Reaffirm(ctx, n.raft, n.raft.Store().Changed, from, self, left, n.Now, n.log)
}

// hostCapacity reads vCPUs, RAM and disk for instances from the host.
func hostCapacity(dataDir string) (vcpus, ramMB, diskGB int) {
	vcpus = runtime.NumCPU()
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		ramMB = int(uint64(si.Totalram) * uint64(si.Unit) / (1 << 20))
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(dataDir, &fs) == nil {
		diskGB = int(fs.Blocks * uint64(fs.Bsize) / (1 << 30))
	}
	return
}

// accel is the accelerator VMs get here: KVM only if a probe QEMU can
// really use it (a /dev/kvm that opens is not enough), else TCG. Probed
// once per daemon.
func (n *Node) accel() string {
	n.accelOnce.Do(func() { n.accelVal = string(qemu.DetectAccel()) })
	return n.accelVal
}

func arch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return runtime.GOARCH
}
