package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CreateRootDisk creates <dir>/root.qcow2, a qcow2 overlay over
// backingImage (a local absolute path or nfs:// URL of format
// backingFormat), grown to sizeGB but never smaller than the image's virtual
// size (sizeGB 0 keeps the image's size). It returns the overlay's path.
//
// An existing root.qcow2 over the same backing file is kept and returned
// (the call is idempotent); one over another backing file is an error, never
// overwritten.
func (d *Driver) CreateRootDisk(ctx context.Context, uuid, backingImage, backingFormat string, sizeGB int) (string, error) {
	if !uuidRE.MatchString(uuid) {
		return "", fmt.Errorf("%w: uuid %q", ErrInvalidSpec, uuid)
	}
	if backingFormat != "qcow2" && backingFormat != "raw" {
		return "", fmt.Errorf("%w: backing format %q: want qcow2 or raw", ErrInvalidSpec, backingFormat)
	}
	if sizeGB < 0 {
		return "", fmt.Errorf("%w: size %d GB", ErrInvalidSpec, sizeGB)
	}
	if !strings.HasPrefix(backingImage, "nfs://") && !filepath.IsAbs(backingImage) {
		return "", fmt.Errorf("%w: backing image %q: not an absolute path or nfs:// URL", ErrInvalidSpec, backingImage)
	}
	img, err := lookPath(d.cfg.QEMUImg)
	if err != nil {
		return "", err
	}
	v := d.vmFor(uuid)
	v.op.Lock()
	defer v.op.Unlock()
	path := v.paths.RootDisk()

	if _, err := os.Stat(path); err == nil {
		info, err := imageInfo(ctx, img, path, "qcow2")
		if err != nil {
			return "", err
		}
		if info.Backing != backingImage {
			return "", fmt.Errorf("vm %s: %s exists with backing file %q, not %q", uuid, path, info.Backing, backingImage)
		}
		return path, nil
	}
	base, err := imageInfo(ctx, img, backingImage, backingFormat)
	if err != nil {
		return "", err
	}
	size := int64(sizeGB) << 30
	if size < base.VirtualSize {
		size = base.VirtualSize
	}
	if err := os.MkdirAll(v.paths.Dir, 0o700); err != nil {
		return "", fmt.Errorf("vm %s: %w", uuid, err)
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	out, err := exec.CommandContext(ctx, img, "create", "-q", "-f", "qcow2",
		"-F", backingFormat, "-b", backingImage, tmp, strconv.FormatInt(size, 10)).CombinedOutput()
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("vm %s: qemu-img create %s: %v: %s", uuid, path, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("vm %s: %w", uuid, err)
	}
	return path, nil
}

type imgInfo struct {
	VirtualSize int64  `json:"virtual-size"`
	Format      string `json:"format"`
	Backing     string `json:"backing-filename"`
}

func imageInfo(ctx context.Context, img, path, format string) (imgInfo, error) {
	// -U: do not take the image lock, so a running VM's disk can be inspected.
	out, err := exec.CommandContext(ctx, img, "info", "-U", "--output=json", "-f", format, path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return imgInfo{}, fmt.Errorf("qemu-img info %s: %s", path, strings.TrimSpace(string(ee.Stderr)))
		}
		return imgInfo{}, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info imgInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return imgInfo{}, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info, nil
}

// AttachDisk hot-plugs disk into the running VM: blockdev-add (a local file,
// or an nfs:// URL through libnfs) and device_add virtio-blk-pci with id
// "vol-<ID>". The disk is also recorded in spec.json, so a restart keeps it.
// When the VM is not running the disk is only recorded (attached at the next
// start). Attaching a disk that is already attached is a no-op.
func (d *Driver) AttachDisk(ctx context.Context, uuid string, disk Disk) (err error) {
	if !idRE.MatchString(disk.ID) {
		return fmt.Errorf("%w: disk id %q", ErrInvalidSpec, disk.ID)
	}
	disk, err = disk.normalize("disk " + disk.ID)
	if err != nil {
		return err
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	spec, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: attach: %w", v.uuid, err)
	}
	if !strings.HasPrefix(disk.Path, "nfs://") {
		if _, err := os.Stat(disk.Path); err != nil {
			return fmt.Errorf("vm %s: disk: %w", v.uuid, err)
		}
	}
	newSpec := spec
	newSpec.ExtraDisks = slices.DeleteFunc(slices.Clone(spec.ExtraDisks), func(x Disk) bool { return x.ID == disk.ID })
	newSpec.ExtraDisks = append(newSpec.ExtraDisks, disk)
	if _, err := newSpec.normalize(); err != nil {
		return err
	}

	var undo revert
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	if err = writeSpec(v.paths, newSpec); err != nil {
		return fmt.Errorf("vm %s: attach: %w", v.uuid, err)
	}
	undo.add(func() { _ = writeSpec(v.paths, spec) })
	p := d.liveProc(v)
	if p == nil {
		return nil
	}
	mon, err := d.monitor(ctx, v, p)
	if err != nil {
		return err
	}
	devID, node := VolumeDeviceID(disk.ID), volumeNodeName(disk.ID)
	ids, err := mon.PeripheralIDs(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(ids, devID) {
		return nil
	}
	nodes, err := mon.NamedBlockNodes(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(nodes, func(n BlockNode) bool { return n.NodeName == node }) {
		if err = mon.BlockdevAdd(ctx, disk.blockdev(node)); err != nil {
			return fmt.Errorf("vm %s: attach %s: %w", v.uuid, disk.ID, err)
		}
		undo.add(func() {
			if err := mon.BlockdevDel(context.Background(), node); err != nil {
				d.log.Warn("undo attach: blockdev-del", "uuid", v.uuid, "node", node, "err", err)
			}
		})
	}
	err = mon.DeviceAdd(ctx, map[string]any{
		"driver": "virtio-blk-pci",
		"drive":  node,
		"id":     devID,
		"serial": diskSerial(disk.ID),
	})
	if err != nil {
		return fmt.Errorf("vm %s: attach %s: %w", v.uuid, disk.ID, err)
	}
	return nil
}

// CreateEphemeralDisk creates the flavor's ephemeral disk of VM uuid: a
// blank qcow2 image of sizeGB in the VM's directory (Paths.Ephemeral), not
// formatted (the guest's cloud-init does that). It is removed with the VM
// by Delete. An existing one is returned as is, so a restart keeps the
// guest's data. It returns the image's path; pass it as Spec.Ephemeral.
func (d *Driver) CreateEphemeralDisk(ctx context.Context, uuid string, sizeGB int) (string, error) {
	if !uuidRE.MatchString(uuid) {
		return "", fmt.Errorf("%w: uuid %q", ErrInvalidSpec, uuid)
	}
	if sizeGB <= 0 {
		return "", fmt.Errorf("%w: ephemeral size %d GB", ErrInvalidSpec, sizeGB)
	}
	img, err := lookPath(d.cfg.QEMUImg)
	if err != nil {
		return "", err
	}
	v := d.vmFor(uuid)
	v.op.Lock()
	defer v.op.Unlock()
	path := v.paths.Ephemeral()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(v.paths.Dir, 0o700); err != nil {
		return "", fmt.Errorf("vm %s: %w", uuid, err)
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	out, err := exec.CommandContext(ctx, img, "create", "-q", "-f", "qcow2", tmp,
		strconv.FormatInt(int64(sizeGB)<<30, 10)).CombinedOutput()
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("vm %s: qemu-img create %s: %v: %s", uuid, path, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("vm %s: %w", uuid, err)
	}
	return path, nil
}

// ResizeDisk grows the volume diskID of VM uuid to sizeBytes. While the VM
// runs with the volume plugged in, QEMU grows it (QMP block_resize on the
// volume's block node) and the guest sees the new capacity at once;
// otherwise the image is grown offline with qemu-img resize. A volume
// already of that size is left alone (the call is idempotent); shrinking is
// refused. The volume must be attached (recorded in spec.json).
func (d *Driver) ResizeDisk(ctx context.Context, uuid, diskID string, sizeBytes int64) error {
	if !idRE.MatchString(diskID) {
		return fmt.Errorf("%w: disk id %q", ErrInvalidSpec, diskID)
	}
	if sizeBytes <= 0 || sizeBytes%512 != 0 {
		return fmt.Errorf("%w: size %d: want a positive multiple of 512 bytes", ErrInvalidSpec, sizeBytes)
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	spec, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: resize %s: %w", v.uuid, diskID, err)
	}
	// A volume is an extra disk, or the root disk of a VM booted from it.
	var disk Disk
	node := volumeNodeName(diskID)
	if i := slices.IndexFunc(spec.ExtraDisks, func(x Disk) bool { return x.ID == diskID }); i >= 0 {
		disk = spec.ExtraDisks[i]
	} else if spec.RootDisk.ID == diskID {
		disk, node = spec.RootDisk, "root"
	} else {
		return fmt.Errorf("vm %s: resize %s: disk not attached", v.uuid, diskID)
	}
	disk, err = disk.normalize("disk " + diskID)
	if err != nil {
		return err
	}
	grow := func(cur int64) (bool, error) {
		switch {
		case cur == sizeBytes:
			return false, nil
		case cur > sizeBytes:
			return false, fmt.Errorf("vm %s: resize %s: %d bytes is smaller than its %d bytes (no shrinking)", v.uuid, diskID, sizeBytes, cur)
		}
		return true, nil
	}
	if p := d.liveProc(v); p != nil {
		mon, err := d.monitor(ctx, v, p)
		if err != nil {
			return err
		}
		nodes, err := mon.NamedBlockNodes(ctx)
		if err != nil {
			return err
		}
		if j := slices.IndexFunc(nodes, func(n BlockNode) bool { return n.NodeName == node }); j >= 0 {
			if ok, err := grow(nodes[j].Image.VirtualSize); !ok {
				return err
			}
			if err := mon.BlockResize(ctx, node, sizeBytes); err != nil {
				return fmt.Errorf("vm %s: resize %s: %w", v.uuid, diskID, err)
			}
			return nil
		}
		// Recorded but not plugged in: QEMU holds no lock on it.
	}
	img, err := lookPath(d.cfg.QEMUImg)
	if err != nil {
		return err
	}
	info, err := imageInfo(ctx, img, disk.Path, disk.Format)
	if err != nil {
		return fmt.Errorf("vm %s: resize %s: %w", v.uuid, diskID, err)
	}
	if ok, err := grow(info.VirtualSize); !ok {
		return err
	}
	out, err := exec.CommandContext(ctx, img, "resize", "-q", "-f", disk.Format, disk.Path,
		strconv.FormatInt(sizeBytes, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm %s: resize %s: qemu-img resize %s: %v: %s", v.uuid, diskID, disk.Path, err, strings.TrimSpace(string(out)))
	}
	return nil
}
