package hvagent

import (
	"context"
	"os"
	"path/filepath"

	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/node/agent"
)

var (
	_ agent.Rescuer     = (*QEMU)(nil)
	_ agent.Snapshotter = (*QEMU)(nil)
)

// Rescue implements agent.Rescuer.
func (h *QEMU) Rescue(ctx context.Context, id string, image agent.Disk) error {
	return h.d.Rescue(ctx, id, qemu.Disk{Path: image.Path, Format: image.Format})
}

// Unrescue implements agent.Rescuer.
func (h *QEMU) Unrescue(ctx context.Context, id string) error { return h.d.Unrescue(ctx, id) }

// SnapshotRoot implements agent.Snapshotter: the copy goes to the VM's
// directory, on the same storage as its disk.
func (h *QEMU) SnapshotRoot(ctx context.Context, id, imageID string) (string, error) {
	path := filepath.Join(h.d.Paths(id).Dir, "snapshot-"+filepath.Base(imageID)+".qcow2")
	_ = os.Remove(path) // a crashed earlier try
	if err := h.d.SnapshotRoot(ctx, id, path); err != nil {
		return "", err
	}
	return path, nil
}

// DropSnapshot implements agent.Snapshotter.
func (h *QEMU) DropSnapshot(id, path string) { _ = os.Remove(path) }

var _ agent.ServerResizer = (*QEMU)(nil)

// PrepareResize implements agent.ServerResizer.
func (h *QEMU) PrepareResize(ctx context.Context, id string, rootGB int) error {
	return h.d.PrepareResize(ctx, id, rootGB)
}

// RevertResize implements agent.ServerResizer.
func (h *QEMU) RevertResize(ctx context.Context, id string) error { return h.d.RevertResize(ctx, id) }

// ConfirmResize implements agent.ServerResizer.
func (h *QEMU) ConfirmResize(ctx context.Context, id string) error {
	return h.d.ConfirmResize(ctx, id)
}
