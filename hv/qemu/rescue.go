package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Rescue mode, as Nova's: the VM boots from a fresh overlay of a rescue
// image with its own root disk attached as the second disk (vdb), so a
// user can repair it. spec.json then describes the rescue VM (a reboot or
// a restart after a crash stays in rescue) and the original spec waits in
// UnrescueSpec until Unrescue boots it again.

// RescueDisk is the overlay a rescued VM boots from.
func (p Paths) RescueDisk() string { return filepath.Join(p.Dir, "rescue.qcow2") }

// UnrescueSpec is the spec a rescued VM returns to.
func (p Paths) UnrescueSpec() string { return filepath.Join(p.Dir, "spec.unrescue.json") }

// RescueRootID is the serial of the original root disk while the VM is
// rescued.
const RescueRootID = "root"

// rescueSpec is the rescue VM of orig: booting from rescue, then the
// original root disk (vdb, as Nova), then the rest of orig's disks.
func rescueSpec(orig Spec, rescue string) Spec {
	s := orig
	s.RootDisk = Disk{ID: "rescue", Path: rescue, Format: "qcow2"}
	root := orig.RootDisk
	root.ReadOnly = false
	s.RescuedRoot = &root
	return s
}

// Rescued reports whether the VM is in rescue mode.
func (d *Driver) Rescued(uuid string) bool {
	_, err := os.Stat(d.Paths(uuid).UnrescueSpec())
	return err == nil
}

// Rescue stops the VM (gracefully, as Stop) and boots it from a new
// overlay of image (a local path or nfs:// URL, format qcow2 or raw) with
// its root disk attached second. A VM already in rescue is started again
// from its rescue spec when it does not run. On failure the VM's files are
// as before (the VM itself left stopped).
func (d *Driver) Rescue(ctx context.Context, uuid string, image Disk) (err error) {
	if err := d.checkOpen(); err != nil {
		return err
	}
	if image.Format != "qcow2" && image.Format != "raw" {
		return fmt.Errorf("%w: rescue image format %q: want qcow2 or raw", ErrInvalidSpec, image.Format)
	}
	if !strings.HasPrefix(image.Path, "nfs://") && !filepath.IsAbs(image.Path) {
		return fmt.Errorf("%w: rescue image %q: not an absolute path or nfs:// URL", ErrInvalidSpec, image.Path)
	}
	img, err := lookPath(d.cfg.QEMUImg)
	if err != nil {
		return err
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if d.Rescued(v.uuid) {
		if d.liveProc(v) != nil {
			return nil
		}
		s, err := readSpec(v.paths)
		if err != nil {
			return fmt.Errorf("vm %s: rescue: %w", v.uuid, err)
		}
		return d.start(ctx, v, s)
	}
	orig, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: rescue: %w", v.uuid, err)
	}
	if p := d.liveProc(v); p != nil {
		if err := d.stop(ctx, v, p, d.cfg.StopTimeout); err != nil {
			return fmt.Errorf("vm %s: rescue: %w", v.uuid, err)
		}
	}
	if _, err := os.Stat(v.paths.SavedState()); err == nil {
		return fmt.Errorf("vm %s: rescue: the vm is suspended", v.uuid)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(v.paths.RescueDisk())
			_ = os.Remove(v.paths.UnrescueSpec())
			_ = writeSpec(v.paths, orig)
		}
	}()
	rescue := v.paths.RescueDisk()
	_ = os.Remove(rescue)
	out, err := exec.CommandContext(ctx, img, "create", "-q", "-f", "qcow2",
		"-F", image.Format, "-b", image.Path, rescue).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm %s: rescue disk: qemu-img create: %v: %s", v.uuid, err, strings.TrimSpace(string(out)))
	}
	b, err := json.MarshalIndent(orig, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(v.paths.UnrescueSpec(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("vm %s: rescue: %w", v.uuid, err)
	}
	if err := d.start(ctx, v, rescueSpec(orig, rescue)); err != nil {
		return fmt.Errorf("rescue: %w", err)
	}
	d.log.Info("vm rescued", "uuid", v.uuid, "image", image.Path)
	return nil
}

// Unrescue ends rescue mode: the rescue VM is ended (no guest shutdown, as
// Nova's unrescue), the original spec booted again and the rescue overlay
// removed. A VM not in rescue is only started when it does not run.
func (d *Driver) Unrescue(ctx context.Context, uuid string) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	b, err := os.ReadFile(v.paths.UnrescueSpec())
	if errors.Is(err, os.ErrNotExist) {
		if d.liveProc(v) != nil {
			return nil
		}
		s, err := readSpec(v.paths)
		if err != nil {
			return fmt.Errorf("vm %s: unrescue: %w", v.uuid, err)
		}
		return d.start(ctx, v, s)
	}
	if err != nil {
		return fmt.Errorf("vm %s: unrescue: %w", v.uuid, err)
	}
	var orig Spec
	if err := json.Unmarshal(b, &orig); err != nil {
		return fmt.Errorf("vm %s: unrescue: %s: %w", v.uuid, v.paths.UnrescueSpec(), err)
	}
	if p := d.liveProc(v); p != nil {
		if err := d.forceStop(ctx, v, p); err != nil {
			return fmt.Errorf("vm %s: unrescue: %w", v.uuid, err)
		}
	}
	if err := d.start(ctx, v, orig); err != nil {
		return fmt.Errorf("unrescue: %w", err)
	}
	// The original runs: rescue is over even if the leftovers stay.
	if err := os.Remove(v.paths.UnrescueSpec()); err != nil {
		d.log.Warn("unrescue: remove the saved spec", "uuid", v.uuid, "err", err)
	}
	_ = os.Remove(v.paths.RescueDisk())
	d.log.Info("vm unrescued", "uuid", v.uuid)
	return nil
}
