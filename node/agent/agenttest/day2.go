package agenttest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/peerstack/peerstack/node/agent"
)

// Rescue implements agent.Rescuer: the VM (running or not) boots from
// image, recorded in its Rescue.
func (h *Hypervisor) Rescue(ctx context.Context, id string, image agent.Disk) error {
	h.mu.Lock()
	c, err := h.record("Rescue", id, image.Path)
	if err == nil {
		v := h.vms[id]
		switch {
		case v == nil:
			err = fmt.Errorf("vm %s not found", id)
		case v.Suspended:
			err = fmt.Errorf("vm %s is suspended", id)
		case v.Rescue != nil && (v.State == agent.VMRunning || v.State == agent.VMPaused):
		default:
			img := image
			if v.Rescue != nil {
				img = *v.Rescue
			}
			h.nextPID++
			v.State, v.PID, v.Reason, v.Rescue = agent.VMRunning, h.nextPID, "", &img
			v.Starts++
			v.Boots++
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// Unrescue implements agent.Rescuer: the VM boots its root disk again.
func (h *Hypervisor) Unrescue(ctx context.Context, id string) error {
	h.mu.Lock()
	c, err := h.record("Unrescue", id, "")
	if err == nil {
		v := h.vms[id]
		switch {
		case v == nil:
			err = fmt.Errorf("vm %s not found", id)
		case v.Rescue == nil && (v.State == agent.VMRunning || v.State == agent.VMPaused):
		default:
			h.nextPID++
			v.State, v.PID, v.Reason, v.Rescue = agent.VMRunning, h.nextPID, "", nil
			v.Starts++
			v.Boots++
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// SnapshotRoot implements agent.Snapshotter: the "copy" is a path named
// after the VM and the image; nothing is written.
func (h *Hypervisor) SnapshotRoot(ctx context.Context, id, imageID string) (string, error) {
	h.mu.Lock()
	c, err := h.record("SnapshotRoot", id, imageID)
	if err == nil {
		switch v := h.vms[id]; {
		case v == nil:
			err = fmt.Errorf("vm %s not found", id)
		case v.Rescue != nil:
			err = fmt.Errorf("vm %s is in rescue mode", id)
		}
	}
	h.mu.Unlock()
	h.notify(c)
	if err != nil {
		return "", err
	}
	return "/fake/vms/" + id + "/snapshot-" + imageID + ".qcow2", nil
}

// DropSnapshot implements agent.Snapshotter.
func (h *Hypervisor) DropSnapshot(id, path string) {
	h.mu.Lock()
	c, _ := h.record("DropSnapshot", id, path)
	h.mu.Unlock()
	h.notify(c)
}

// SaveImage implements agent.ImageSaver: sums made up from the path; this
// host holds the "bytes".
func (a AnyImage) SaveImage(ctx context.Context, path string) (agent.SavedImage, error) {
	sum := sha256.Sum256([]byte(path))
	hexSum := hex.EncodeToString(sum[:])
	return agent.SavedImage{Size: 1 << 20, VirtualSize: 1 << 30, MD5: hexSum[:32], SHA256: hexSum,
		SHA512: hexSum + hexSum, Holders: []string{""}}, nil
}

// PrepareResize implements agent.ServerResizer: the VM stops, its old
// root disk is kept (once) and the disk grows to rootGB.
func (h *Hypervisor) PrepareResize(ctx context.Context, id string, rootGB int) error {
	h.mu.Lock()
	c, err := h.record("PrepareResize", id, fmt.Sprint(rootGB))
	if err == nil {
		v := h.vms[id]
		switch {
		case v == nil:
			err = fmt.Errorf("vm %s not found", id)
		case v.Rescue != nil:
			err = fmt.Errorf("vm %s is in rescue mode", id)
		default:
			v.State, v.PID, v.Reason = agent.VMShutoff, 0, "resize"
			v.ResizeKept = true
			if rootGB > v.RootGB {
				v.RootGB = rootGB
			}
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// RevertResize implements agent.ServerResizer: the VM stops and its kept
// root disk is back (RootGB 0: as created).
func (h *Hypervisor) RevertResize(ctx context.Context, id string) error {
	h.mu.Lock()
	c, err := h.record("RevertResize", id, "")
	if err == nil {
		if v := h.vms[id]; v == nil {
			err = fmt.Errorf("vm %s not found", id)
		} else {
			v.State, v.PID, v.Reason = agent.VMShutoff, 0, "revert resize"
			if v.ResizeKept {
				v.ResizeKept, v.RootGB = false, 0
			}
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// ConfirmResize implements agent.ServerResizer.
func (h *Hypervisor) ConfirmResize(ctx context.Context, id string) error {
	h.mu.Lock()
	c, err := h.record("ConfirmResize", id, "")
	if err == nil {
		if v := h.vms[id]; v != nil {
			v.ResizeKept = false
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// SaveImage implements agent.ImageSaver as AnyImage does.
func (im *Images) SaveImage(ctx context.Context, path string) (agent.SavedImage, error) {
	return AnyImage{}.SaveImage(ctx, path)
}
