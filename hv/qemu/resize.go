package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Cold resize on the VM's own host: PrepareResize stops the VM, keeps a
// copy of its root disk (a qcow2 overlay: the guest's writes only) and
// grows the disk; the caller then starts the VM with its new size. Revert
// puts the copy back, confirm drops it.

// PreResizeDisk is the copy of the root disk a resize keeps for revert.
func (p Paths) PreResizeDisk() string { return filepath.Join(p.Dir, "root.pre-resize.qcow2") }

// PrepareResize stops the VM (gracefully, as Stop), keeps a copy of its
// local root disk and grows the disk to rootGB (never shrinks it; 0 or a
// network disk: the disk is left alone). An earlier copy is kept, so a
// retried call does not overwrite the state revert returns to.
func (d *Driver) PrepareResize(ctx context.Context, uuid string, rootGB int) error {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if d.Rescued(v.uuid) {
		return fmt.Errorf("vm %s: resize: the vm is in rescue mode", v.uuid)
	}
	s, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: resize: %w", v.uuid, err)
	}
	if p := d.liveProc(v); p != nil {
		if err := d.stop(ctx, v, p, d.cfg.StopTimeout); err != nil {
			return fmt.Errorf("vm %s: resize: %w", v.uuid, err)
		}
	}
	root := s.RootDisk
	if rootGB <= 0 || root.ID != "" && root.ID != "root" || strings.HasPrefix(root.Path, "nfs://") {
		return nil // a boot volume: the volume service sizes it
	}
	img, err := lookPath(d.cfg.QEMUImg)
	if err != nil {
		return err
	}
	backup := v.paths.PreResizeDisk()
	if _, err := os.Stat(backup); errors.Is(err, os.ErrNotExist) {
		tmp := backup + ".tmp"
		if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", root.Path, tmp).CombinedOutput(); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("vm %s: resize: keep the root disk: %v: %s", v.uuid, err, strings.TrimSpace(string(out)))
		}
		if err := os.Rename(tmp, backup); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("vm %s: resize: %w", v.uuid, err)
		}
	}
	format := root.Format
	if format == "" {
		format = "qcow2"
	}
	info, err := imageInfo(ctx, img, root.Path, format)
	if err != nil {
		return fmt.Errorf("vm %s: resize: %w", v.uuid, err)
	}
	size := int64(rootGB) << 30
	if size <= info.VirtualSize {
		return nil
	}
	out, err := exec.CommandContext(ctx, img, "resize", "-q", "-f", format, root.Path, strconv.FormatInt(size, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm %s: resize: qemu-img resize: %v: %s", v.uuid, err, strings.TrimSpace(string(out)))
	}
	d.log.Info("vm root disk grown", "uuid", v.uuid, "bytes", size)
	return nil
}

// RevertResize ends the VM (no guest shutdown, as Nova's revert) and puts
// back the root disk PrepareResize kept. Without a kept copy the disk is
// left as it is.
func (d *Driver) RevertResize(ctx context.Context, uuid string) error {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if p := d.liveProc(v); p != nil {
		if err := d.forceStop(ctx, v, p); err != nil {
			return fmt.Errorf("vm %s: revert resize: %w", v.uuid, err)
		}
	}
	backup := v.paths.PreResizeDisk()
	if _, err := os.Stat(backup); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	s, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: revert resize: %w", v.uuid, err)
	}
	if err := os.Rename(backup, s.RootDisk.Path); err != nil {
		return fmt.Errorf("vm %s: revert resize: %w", v.uuid, err)
	}
	return nil
}

// ConfirmResize drops the root disk copy PrepareResize kept.
func (d *Driver) ConfirmResize(ctx context.Context, uuid string) error {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if err := os.Remove(v.paths.PreResizeDisk()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vm %s: confirm resize: %w", v.uuid, err)
	}
	return nil
}
