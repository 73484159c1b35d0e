package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// DetachRetry spaces the unplug requests (QMP device_del) DetachDisk sends
// to a guest that has not released a device yet: a guest still booting, or
// busy with the hot-plug it was just given, drops the request.
type DetachRetry struct {
	// First is the wait after the first request before the second one.
	// Default 7 s. Keep it above 5 s: Linux's PCIe hotplug (pciehp)
	// cancels an unplug when a second attention-button press arrives
	// within 5 s of the first, so a quicker retry undoes the request.
	First time.Duration
	// Max caps the wait between requests, which doubles after each.
	// Default 20 s.
	Max time.Duration
}

// Defaults of DetachRetry.
const (
	DefaultDetachFirstRetry = 7 * time.Second
	DefaultDetachMaxRetry   = 20 * time.Second
)

func (r DetachRetry) withDefaults() DetachRetry {
	if r.First <= 0 {
		r.First = DefaultDetachFirstRetry
	}
	if r.Max <= 0 {
		r.Max = DefaultDetachMaxRetry
	}
	if r.Max < r.First {
		r.Max = r.First
	}
	return r
}

// detachJob is one DetachDisk in progress; later calls for the same disk
// wait for it instead of sending requests of their own.
type detachJob struct {
	done chan struct{} // closed when err is set
	err  error
}

// joinDetach returns the detach of diskID in progress, or registers a new
// one; leader says the caller registered it and must end it.
func (v *vm) joinDetach(diskID string) (job *detachJob, leader bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if j := v.detaches[diskID]; j != nil {
		return j, false
	}
	if v.detaches == nil {
		v.detaches = map[string]*detachJob{}
	}
	j := &detachJob{done: make(chan struct{})}
	v.detaches[diskID] = j
	return j, true
}

func (v *vm) endDetach(diskID string, j *detachJob, err error) {
	v.mu.Lock()
	delete(v.detaches, diskID)
	v.mu.Unlock()
	j.err = err
	close(j.done)
}

// DetachDisk hot-unplugs the volume diskID and removes it from spec.json.
// While the VM runs: device_del, and again with back-off (DetachRetry)
// until the guest releases the device (DEVICE_DELETED, or the device no
// longer listed) or budget (default 2 min) runs out, which gives
// ErrDetachTimeout; each retry first looks whether the device is already
// gone. The last request stays pending in QEMU, and calling again (after a
// give-up too) resumes. Then blockdev-del frees the volume's block node.
// When the VM is not running the disk is only removed from spec.json, at
// once.
//
// A call for a disk whose detach is already in progress waits for that
// one and returns its result (with the first call's budget). The VM's
// other operations are not held up between requests.
func (d *Driver) DetachDisk(ctx context.Context, uuid, diskID string, budget time.Duration) error {
	if !idRE.MatchString(diskID) {
		return fmt.Errorf("%w: disk id %q", ErrInvalidSpec, diskID)
	}
	if budget <= 0 {
		budget = defaultDetachWait
	}
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	for {
		job, leader := v.joinDetach(diskID)
		if leader {
			err := d.detach(ctx, v, diskID, budget)
			v.endDetach(diskID, job, err)
			return err
		}
		select {
		case <-job.done:
			if job.err != nil && ctx.Err() == nil &&
				(errors.Is(job.err, context.Canceled) || errors.Is(job.err, context.DeadlineExceeded)) {
				continue // the first caller went away, not the request: carry on
			}
			return job.err
		case <-ctx.Done():
			return fmt.Errorf("vm %s: detach %s: %w", v.uuid, diskID, ctx.Err())
		}
	}
}

// errUnplugPending is QEMU's answer to a device_del while the previous
// one is still within its window.
const errUnplugPending = "already in the process of unplug"

// detach runs the request loop of DetachDisk.
func (d *Driver) detach(ctx context.Context, v *vm, diskID string, budget time.Duration) error {
	devID := VolumeDeviceID(diskID)
	start := time.Now()
	deadline := start.Add(budget)
	wait := d.cfg.DetachRetry.First
	var (
		cur      *proc         // the QEMU the requests went to
		deleted  chan struct{} // DEVICE_DELETED of devID on cur
		unwatch  = func() {}
		sent     int
		nextSend time.Time // zero: send at the next step
	)
	defer func() { unwatch() }()

	// step looks at the device and sends a request when one is due. It
	// holds the VM's lock only while it talks to QEMU.
	step := func() (gone bool, p *proc, err error) {
		v.op.Lock()
		defer v.op.Unlock()
		p = d.liveProc(v)
		if p == nil {
			return true, nil, v.forgetDisk(diskID)
		}
		if p != cur {
			// A new QEMU (the VM restarted): watch it, and ask it afresh.
			unwatch()
			deleted, unwatch = p.waitDeleted(devID)
			cur, nextSend = p, time.Time{}
		}
		mon, err := d.monitor(ctx, v, p)
		if err != nil {
			return false, p, err
		}
		ids, err := mon.PeripheralIDs(ctx)
		if err != nil {
			return false, p, fmt.Errorf("vm %s: detach %s: %w", v.uuid, diskID, err)
		}
		if !slices.Contains(ids, devID) {
			if err := d.dropVolumeNode(ctx, v, mon, diskID); err != nil {
				return false, p, err
			}
			return true, p, v.forgetDisk(diskID)
		}
		now := time.Now()
		if now.Before(nextSend) || !now.Before(deadline) {
			return false, p, nil
		}
		if err := mon.DeviceDel(ctx, devID); err != nil {
			if !strings.Contains(err.Error(), errUnplugPending) {
				return false, p, fmt.Errorf("vm %s: detach %s: %w", v.uuid, diskID, err)
			}
			d.log.Debug("unplug still pending in qemu", "uuid", v.uuid, "disk", diskID)
		}
		sent++
		if sent > 1 {
			d.log.Info("guest has not released the volume yet; asked again",
				"uuid", v.uuid, "disk", diskID, "request", sent, "after", time.Since(start).Round(time.Millisecond))
		}
		nextSend = now.Add(wait)
		wait = min(2*wait, d.cfg.DetachRetry.Max)
		return false, p, nil
	}

	for {
		gone, p, err := step()
		if gone || err != nil {
			if err == nil && sent > 1 {
				d.log.Info("volume detached after retries", "uuid", v.uuid, "disk", diskID,
					"requests", sent, "took", time.Since(start).Round(time.Millisecond))
			}
			return err
		}
		now := time.Now()
		if !now.Before(deadline) {
			return fmt.Errorf("%w: vm %s disk %s: %d unplug requests over %s went unanswered",
				ErrDetachTimeout, v.uuid, diskID, sent, time.Since(start).Round(time.Second))
		}
		next := deadline
		if !nextSend.IsZero() && nextSend.Before(next) {
			next = nextSend
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-deleted:
			deleted = nil // closed: the next step sees the device gone
		case <-p.exited:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("vm %s: detach %s: %w", v.uuid, diskID, ctx.Err())
		}
		t.Stop()
	}
}

// dropVolumeNode frees the block node of volume diskID, if QEMU has it.
func (d *Driver) dropVolumeNode(ctx context.Context, v *vm, mon *Monitor, diskID string) error {
	node := volumeNodeName(diskID)
	if err := mon.BlockdevDel(ctx, node); err != nil {
		nodes, lerr := mon.NamedBlockNodes(ctx)
		if lerr != nil || slices.ContainsFunc(nodes, func(n BlockNode) bool { return n.NodeName == node }) {
			return fmt.Errorf("vm %s: detach %s: %w", v.uuid, diskID, err)
		}
	}
	return nil
}

// forgetDisk removes volume diskID from spec.json (a VM without one has
// nothing to forget). Call with v.op held.
func (v *vm) forgetDisk(diskID string) error {
	spec, err := readSpec(v.paths)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vm %s: detach: %w", v.uuid, err)
	}
	n := len(spec.ExtraDisks)
	spec.ExtraDisks = slices.DeleteFunc(spec.ExtraDisks, func(x Disk) bool { return x.ID == diskID })
	if len(spec.ExtraDisks) == n {
		return nil
	}
	return writeSpec(v.paths, spec)
}
