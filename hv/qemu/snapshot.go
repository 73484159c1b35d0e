package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// SnapshotRoot writes a standalone qcow2 copy of the VM's root disk (its
// whole backing chain flattened) to dest, which must not exist. A running
// or paused VM is copied by a QMP drive-backup job (sync full): the copy
// is the disk as it was when the job started, consistent as after a power
// cut, while the guest runs on. A VM without a process is copied with
// qemu-img convert, from a local file or an nfs:// URL. On failure dest
// is removed.
func (d *Driver) SnapshotRoot(ctx context.Context, uuid, dest string) (err error) {
	if !filepath.IsAbs(dest) {
		return fmt.Errorf("%w: snapshot destination %q: not an absolute path", ErrInvalidSpec, dest)
	}
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("snapshot destination %s: %w", dest, os.ErrExist)
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if d.Rescued(v.uuid) {
		return fmt.Errorf("vm %s: snapshot: the vm is in rescue mode", v.uuid)
	}
	s, err := readSpec(v.paths)
	if err != nil {
		return fmt.Errorf("vm %s: snapshot: %w", v.uuid, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(dest)
		}
	}()
	if p := d.liveProc(v); p != nil {
		mon, err := d.monitor(ctx, v, p)
		if err != nil {
			return err
		}
		if err := backupJob(ctx, mon, "root", dest); err != nil {
			return fmt.Errorf("vm %s: snapshot: %w", v.uuid, err)
		}
		return nil
	}
	img, err := lookPath(d.cfg.QEMUImg)
	if err != nil {
		return err
	}
	// An nfs:// root disk (a boot volume on shared storage) is read by
	// qemu-img's own nfs driver, through the URL QEMU opens it by.
	src := s.RootDisk
	format := src.Format
	if format == "" {
		format = "qcow2"
	}
	out, err := exec.CommandContext(ctx, img, "convert", "-q", "-f", format, "-O", "qcow2", src.Path, dest).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm %s: snapshot: qemu-img convert: %v: %s", v.uuid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

type jobInfo struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

// endJob cancels block job id if it still runs, waits (up to 10 s) until
// it has concluded and dismisses it, so its id can be used again: a job
// left behind (an error path, a daemon restart mid-copy) would otherwise
// refuse every later snapshot of the VM with "job ID in use".
func endJob(ctx context.Context, mon *Monitor, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	canceled := false
	for {
		var jobs []jobInfo
		if err := mon.run(ctx, "query-jobs", nil, &jobs); err != nil {
			return
		}
		i := slices.IndexFunc(jobs, func(j jobInfo) bool { return j.ID == id })
		switch {
		case i < 0:
			return
		case jobs[i].Status == "concluded":
			_ = mon.run(ctx, "job-dismiss", map[string]any{"id": id}, nil)
			return
		case !canceled:
			_ = mon.run(ctx, "job-cancel", map[string]any{"id": id}, nil)
			canceled = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// backupJob copies block node device to a new qcow2 at dest with a
// drive-backup job and waits for it to end.
func backupJob(ctx context.Context, mon *Monitor, device, dest string) error {
	job := "snapshot-" + device
	endJob(ctx, mon, job) // one an earlier try left behind
	err := mon.run(ctx, "drive-backup", map[string]any{
		"job-id": job, "device": device, "target": dest, "format": "qcow2",
		"sync": "full", "mode": "absolute-paths", "auto-dismiss": false,
	}, nil)
	if err != nil {
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var jobs []jobInfo
		if err := mon.run(ctx, "query-jobs", nil, &jobs); err != nil {
			endJob(ctx, mon, job)
			return err
		}
		found := false
		for _, j := range jobs {
			if j.ID != job {
				continue
			}
			found = true
			if j.Status == "concluded" {
				endJob(ctx, mon, job)
				if j.Error != "" {
					return fmt.Errorf("backup job: %s", j.Error)
				}
				return nil
			}
		}
		if !found {
			return errors.New("backup job vanished before it concluded")
		}
		select {
		case <-ctx.Done():
			endJob(ctx, mon, job)
			return fmt.Errorf("backup job: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
