package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/agent"
)

var (
	_ agent.Rescuer     = (*qemuHV)(nil)
	_ agent.Snapshotter = (*qemuHV)(nil)
	_ agent.ImageSaver  = nodeImages{}
)

// Rescue implements agent.Rescuer.
func (h *qemuHV) Rescue(ctx context.Context, id string, image agent.Disk) error {
	return h.d.Rescue(ctx, id, qemu.Disk{Path: image.Path, Format: image.Format})
}

// Unrescue implements agent.Rescuer.
func (h *qemuHV) Unrescue(ctx context.Context, id string) error { return h.d.Unrescue(ctx, id) }

// SnapshotRoot implements agent.Snapshotter: the copy goes to the VM's
// directory, on the same storage as its disk.
func (h *qemuHV) SnapshotRoot(ctx context.Context, id, imageID string) (string, error) {
	path := filepath.Join(h.d.Paths(id).Dir, "snapshot-"+filepath.Base(imageID)+".qcow2")
	_ = os.Remove(path) // a crashed earlier try
	if err := h.d.SnapshotRoot(ctx, id, path); err != nil {
		return "", err
	}
	return path, nil
}

// DropSnapshot implements agent.Snapshotter.
func (h *qemuHV) DropSnapshot(id, path string) { _ = os.Remove(path) }

// SaveImage implements agent.ImageSaver: the file becomes a blob of this
// host's image store (and the shared store's, when there is one).
func (im nodeImages) SaveImage(ctx context.Context, path string) (agent.SavedImage, error) {
	info, err := storage.BlobInspectFile(path)
	if err != nil {
		return agent.SavedImage{}, err
	}
	c, err := im.n.imageCache()
	if err != nil {
		return agent.SavedImage{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return agent.SavedImage{}, err
	}
	defer f.Close()
	u, err := c.NewUpload()
	if err != nil {
		return agent.SavedImage{}, err
	}
	if _, err := u.ReadFrom(f); err != nil {
		u.Abort()
		return agent.SavedImage{}, fmt.Errorf("copy %s into the image store: %w", path, err)
	}
	sums, holders, err := u.Commit(ctx)
	if err != nil && len(holders) == 0 {
		return agent.SavedImage{}, err
	}
	return agent.SavedImage{Size: sums.Size, VirtualSize: info.VirtualSize, MD5: sums.MD5, SHA256: sums.SHA256,
		SHA512: sums.SHA512, Holders: holders}, nil
}

var _ agent.ServerResizer = (*qemuHV)(nil)

// PrepareResize implements agent.ServerResizer.
func (h *qemuHV) PrepareResize(ctx context.Context, id string, rootGB int) error {
	return h.d.PrepareResize(ctx, id, rootGB)
}

// RevertResize implements agent.ServerResizer.
func (h *qemuHV) RevertResize(ctx context.Context, id string) error { return h.d.RevertResize(ctx, id) }

// ConfirmResize implements agent.ServerResizer.
func (h *qemuHV) ConfirmResize(ctx context.Context, id string) error {
	return h.d.ConfirmResize(ctx, id)
}
