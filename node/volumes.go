package node

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/scheduler"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/volume"
)

// mountVolumes registers the block storage API and Nova's volume
// attachment routes.
func (n *Node) mountVolumes(srv *rest.Server) {
	b := volumeBackend{n}
	srv.Mount(volume.Service(b, volume.Options{}))
	srv.Mount(volume.ComputeService(b))
}

// volumeBackend is the node as the volume API's backend.
type volumeBackend struct{ *Node }

// HostID is this host: it creates the files of volumes created through it.
func (b volumeBackend) HostID() string { return b.ID() }

// VolumePath is where this host's volume store keeps a volume file.
func (b volumeBackend) VolumePath(name, format string) (string, error) {
	s, err := b.VolumeStore()
	if err != nil {
		return "", err
	}
	return s.Path(name, format)
}

// VolumeStore returns the store new volume files go to, built from the
// cluster's current Settings.Storage: the nfs:// export, or
// <data-dir>/volumes with local storage.
func (n *Node) VolumeStore() (*storage.VolumeStore, error) {
	backend := filepath.Join(mustAbs(n.cfg.DataDir), "volumes")
	if cfg, ok := n.State().Cluster(); ok && cfg.Settings.Storage != "" {
		backend = cfg.Settings.Storage
	}
	s, err := n.volumeStoreAt(backend)
	if err != nil {
		return nil, fmt.Errorf("cluster storage setting: %w", err)
	}
	return s, nil
}

// volumeStoreOf returns the store that holds v's file: the backend its
// recorded path is on, which is the storage setting of when v was made
// (the setting may have changed since). A volume without a path yet gets
// the current store.
func (n *Node) volumeStoreOf(v *statedb.Volume) (*storage.VolumeStore, error) {
	if v.Path == "" {
		return n.VolumeStore()
	}
	s, err := n.volumeStoreAt(volumeBackendOf(v.Path))
	if err != nil {
		return nil, fmt.Errorf("volume %s at %s: %w", v.ID, v.Path, err)
	}
	return s, nil
}

func (n *Node) volumeStoreAt(backend string) (*storage.VolumeStore, error) {
	return storage.NewVolumeStore(backend, storage.VolumeOptions{Logger: n.log.With("sub", "volumes")})
}

// volumeBackendOf is the backend (directory or nfs:// URL) of a volume
// file path made by a VolumeStore: the path without its file name.
func volumeBackendOf(p string) string {
	if strings.HasPrefix(p, "nfs://") {
		return p[:strings.LastIndex(p, "/")]
	}
	return filepath.Dir(p)
}

// CheckStorage proves from this host that an nfs:// storage backend is
// reachable and writable (a probe file is made and removed), before the
// cluster's storage setting moves to it.
func (n *Node) CheckStorage(ctx context.Context, backend string) error {
	return storage.ProbeNFS(ctx, backend, nil)
}

// volumesLeaderTick runs leader-only volumes work once per leader tick:
// it chooses the hosts of new volumes on local storage, releases
// attachments whose server is gone (deleted with the volume attached) and
// hands the volumes of hosts that left the cluster to this host (shared
// storage) or marks them lost (local storage). The state machine re-checks
// all three, so a stale view proposes nothing harmful.
func (n *Node) volumesLeaderTick(ctx context.Context) {
	sn := n.State()
	if len(sn.UnplacedVolumes()) > 0 {
		for _, p := range scheduler.PlanVolumes(sn, schedulerHosts(n.gossipMembers())) {
			n.proposeVolume(ctx, statedb.CmdPlaceVolume, p, "place a volume", p.VolumeID)
		}
		sn = n.State()
	}
	goneHosts := map[string]bool{}
	for _, v := range sn.Volumes() {
		if a := v.Attachment(); a != nil {
			if _, ok := sn.Instance(a.ServerID); !ok {
				n.proposeVolume(ctx, statedb.CmdReleaseVolume, statedb.ReleaseVolumeCmd{VolumeID: v.ID, AttachmentID: a.ID},
					"release the volume of a deleted server", v.ID)
			}
		}
		if _, ok := sn.Member(v.Host); !ok && v.Host != "" {
			goneHosts[v.Host] = true
		}
	}
	for host := range goneHosts {
		n.proposeVolume(ctx, statedb.CmdVolumeHostGone, statedb.VolumeHostGoneCmd{HostID: host, NewHostID: n.ID()},
			"hand over the volumes of a host that left", host)
	}
}

func (n *Node) proposeVolume(ctx context.Context, t statedb.CmdType, payload any, what, id string) {
	if _, err := rest.Propose(ctx, n, t, payload); err != nil && ctx.Err() == nil {
		n.log.Warn("volumes: "+what, "id", id, "err", err)
	}
}
