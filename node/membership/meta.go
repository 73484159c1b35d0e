package membership

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
)

// MetaGossip is the running gossip that carries this host's metadata.
type MetaGossip interface {
	UpdateMeta(ctx context.Context, m gossip.Meta) error
}

// Advertiser keeps this host's gossip metadata current: its ids and
// addresses, its capacity for instances, how much of it the committed
// claims placed here use, its accelerator, architecture and release. The
// leader's scheduler and the hypervisor API read capacity from it.
type Advertiser struct {
	// Self holds what does not change while the daemon runs: NodeID,
	// Name, APIAddr, RaftAddr, VTEPAddr, SWVersion. The rest is filled in.
	Self gossip.Meta
	// DataDir is where instance disks go: its file system's size is the
	// disk capacity.
	DataDir string
	// VCPUs, RAMMB and DiskGB replace the measured capacity when positive.
	VCPUs, RAMMB, DiskGB int
	// Accel probes the accelerator VMs get here (called once; nil: none).
	Accel func() string
	// State is the local state (nil: no claims are counted).
	State func() *statedb.Snapshot
	// Changed returns a channel closed at the state's next change.
	Changed func() <-chan struct{}
	// Gossip is the running gossip; nil until it runs (Update then only
	// remembers the metadata).
	Gossip MetaGossip
	Logger *slog.Logger

	accelOnce sync.Once
	accel     string

	mu   sync.Mutex
	last gossip.Meta // what Update last saw
}

// Meta is this host's gossip metadata now.
func (a *Advertiser) Meta() gossip.Meta {
	vcpus, ram, disk := HostCapacity(a.DataDir)
	if a.VCPUs > 0 {
		vcpus = a.VCPUs
	}
	if a.RAMMB > 0 {
		ram = a.RAMMB
	}
	if a.DiskGB > 0 {
		disk = a.DiskGB
	}
	m := gossip.Meta{Version: 1, NodeID: a.Self.NodeID, Name: a.Self.Name, APIAddr: a.Self.APIAddr, RaftAddr: a.Self.RaftAddr,
		VTEPAddr: a.Self.VTEPAddr, VCPUs: vcpus, RAMMB: ram, DiskGB: disk, Accel: a.accelerator(), Arch: Arch(), SWVersion: a.Self.SWVersion}
	if a.State != nil {
		// What this host runs, from the committed claims.
		for _, inst := range a.State().InstancesOnHost(a.Self.NodeID) {
			m.UsedVCPUs += inst.Flavor.VCPUs
			m.UsedRAMMB += inst.Flavor.RAMMB
			m.UsedDiskGB += inst.Flavor.DiskGB + inst.Flavor.EphemeralGB
		}
	}
	return m
}

// accelerator is the accelerator VMs get here, probed once per daemon: a
// probe starts QEMU, too slow for every refresh.
func (a *Advertiser) accelerator() string {
	a.accelOnce.Do(func() {
		if a.Accel != nil {
			a.accel = a.Accel()
		}
	})
	return a.accel
}

// Update hands gossip the metadata when it differs from what the last
// Update saw.
func (a *Advertiser) Update(ctx context.Context) {
	m := a.Meta()
	a.mu.Lock()
	same := m == a.last
	a.last = m
	a.mu.Unlock()
	if same || a.Gossip == nil {
		return
	}
	if err := a.Gossip.UpdateMeta(ctx, m); err != nil {
		a.Logger.Warn("update gossip metadata", "err", err)
	}
}

// metaEvery and metaSettle pace Run's refreshes.
const (
	metaEvery  = 10 * time.Second
	metaSettle = 500 * time.Millisecond
)

// Run refreshes the metadata when the host's numbers change: on state
// changes (claims placed here), at most every 500 ms, and every 10 s,
// until ctx ends.
func (a *Advertiser) Run(ctx context.Context) {
	t := time.NewTicker(metaEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.Changed():
			select {
			case <-ctx.Done():
				return
			case <-time.After(metaSettle):
			}
		}
		a.Update(ctx)
	}
}

// HostCapacity reads vCPUs, RAM and disk for instances from the host.
func HostCapacity(dataDir string) (vcpus, ramMB, diskGB int) {
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

// Arch is this host's architecture as QEMU and images name it.
func Arch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return runtime.GOARCH
}
