package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Volumes manages volume files on the cluster's storage backend.
type Volumes interface {
	// Create makes v's file at v.Path (v.SizeGB, v.Format), from image's
	// bytes when image is not nil.
	Create(ctx context.Context, v *statedb.Volume, image *Disk) error
	// Delete removes v's file; a missing file is not an error.
	Delete(ctx context.Context, v *statedb.Volume) error
	// Extend grows v's file to v.SizeGB.
	Extend(ctx context.Context, v *statedb.Volume) error
	// Path is where this host's store keeps the file of v, a volume placed
	// here on local storage without a path yet.
	Path(v *statedb.Volume) (string, error)
}

// volOp is what the volume reconciler does.
type volOp string

const (
	volCreate volOp = "create"
	volDelete volOp = "delete"
	volExtend volOp = "extend"
	volAttach volOp = "attach"
	volDetach volOp = "detach"
	volRefuse volOp = "refuse" // report an attachment this host cannot carry out
)

// volAction is one step of the volume diff.
type volAction struct {
	Op     volOp
	Vol    *statedb.Volume
	Att    statedb.VolumeAttachment
	Server *statedb.Instance // attach, detach (nil when the server is gone)
	Why    string            // volRefuse: the error to report
}

// diffVolumes returns what host must do for the volumes, in volume id
// order. File operations belong to the volume's host (for an extend while
// attached, to the attachment's host, which also resizes the guest's
// device); attachments to the attachment's host, except a server's boot
// volume, which its VM opens at start. Every detaching attachment is
// detached, so a detach cut short (the daemon stopped) resumes, and so
// does one an older agent left with a fault. It is pure.
func diffVolumes(sn *statedb.Snapshot, host string, vols []*statedb.Volume) []volAction {
	sorted := slices.Clone(vols)
	slices.SortFunc(sorted, func(a, b *statedb.Volume) int { return strings.Compare(a.ID, b.ID) })
	var out []volAction
	for _, v := range sorted {
		att := v.Attachment()
		switch v.Status {
		case statedb.VolumeCreating:
			if v.Host == host {
				out = append(out, volAction{Op: volCreate, Vol: v})
			}
			continue
		case statedb.VolumeDeleting:
			if v.Host == host {
				out = append(out, volAction{Op: volDelete, Vol: v})
			}
			continue
		case statedb.VolumeExtending:
			owner := v.Host
			if att != nil {
				owner = att.HostID
			}
			if owner == host {
				a := volAction{Op: volExtend, Vol: v}
				if att != nil && att.State == statedb.AttachAttached {
					a.Att = *att
					a.Server, _ = sn.Instance(att.ServerID)
				}
				out = append(out, a)
			}
			continue
		}
		if att == nil || att.HostID != host {
			continue
		}
		inst, ok := sn.Instance(att.ServerID)
		if ok && inst.RootVolume == v.ID {
			continue // a boot volume: the VM opens it at start
		}
		switch att.State {
		case statedb.AttachAttaching:
			switch {
			case !ok:
				out = append(out, volAction{Op: volRefuse, Vol: v, Att: *att, Why: fmt.Sprintf("server %s no longer exists", att.ServerID)})
			case inst.Host != host:
				out = append(out, volAction{Op: volRefuse, Vol: v, Att: *att,
					Why: fmt.Sprintf("attachment names host %s but server %s is placed on host %q", host, inst.ID, inst.Host)})
			default:
				out = append(out, volAction{Op: volAttach, Vol: v, Att: *att, Server: inst})
			}
		case statedb.AttachDetaching:
			a := volAction{Op: volDetach, Vol: v, Att: *att}
			if ok && inst.Host == host {
				a.Server = inst
			}
			out = append(out, a)
		}
	}
	return out
}

// volDisk is the hypervisor's view of a volume.
func volDisk(v *statedb.Volume) Disk { return Disk{ID: v.ID, Path: v.Path, Format: v.Format} }

// syncVolumes launches the volume operations.
func (a *Agent) syncVolumes(ctx context.Context, sn *statedb.Snapshot, seen uint64) {
	for _, act := range diffVolumes(sn, a.cfg.HostID, sn.Volumes()) {
		act := act
		keys := []string{"vol:" + act.Vol.ID}
		var op func(ctx context.Context) error
		switch act.Op {
		case volCreate:
			op = func(ctx context.Context) error { return a.createVolume(ctx, act.Vol) }
		case volDelete:
			op = func(ctx context.Context) error { return a.deleteVolume(ctx, act.Vol) }
		case volExtend:
			if act.Server != nil {
				keys = append(keys, act.Server.ID)
			}
			op = func(ctx context.Context) error { return a.extendVolume(ctx, act) }
		case volRefuse:
			op = func(ctx context.Context) error {
				a.log.Error("refusing volume attachment", "volume", act.Vol.ID, "attachment", act.Att.ID, "why", act.Why)
				return a.reportAttachment(ctx, act, "", act.Why)
			}
		case volAttach:
			keys = append(keys, act.Server.ID)
			op = func(ctx context.Context) error { return a.attachVolume(ctx, act) }
		case volDetach:
			if act.Server != nil {
				keys = append(keys, act.Server.ID)
			}
			// Mostly waiting for the guest: it takes no slot from the
			// parallelism bound, so it holds up no other VM.
			a.launchWaiting(ctx, seen, string(act.Op), keys, func(ctx context.Context) error { return a.detachVolume(ctx, act) })
			continue
		}
		a.launch(ctx, seen, string(act.Op), keys, op)
	}
}

func (a *Agent) reportVolume(ctx context.Context, v *statedb.Volume, status string, cause error) error {
	rep := statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: a.cfg.HostID, Status: status}
	if cause != nil {
		rep.Error = cause.Error()
	}
	return a.report(ctx, statedb.CmdReportVolume, rep)
}

func (a *Agent) reportAttachment(ctx context.Context, act volAction, state, errMsg string) error {
	rep := statedb.ReportVolumeCmd{VolumeID: act.Vol.ID, HostID: a.cfg.HostID, AttachmentID: act.Att.ID,
		AttachmentState: state, Error: errMsg}
	if state == statedb.AttachAttached {
		rep.Device = act.Att.Device
	}
	return a.report(ctx, statedb.CmdReportVolume, rep)
}

// createVolume makes a volume's file, from its image when it has one. A
// volume placed here without a path (local storage) gets the one this
// host's store keeps it at, and the report tells the state.
func (a *Agent) createVolume(ctx context.Context, v *statedb.Volume) error {
	v, err := a.volumeWithPath(v)
	if err == nil {
		err = a.doCreateVolume(ctx, v)
	}
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		a.log.Error("create volume", "volume", v.ID, "err", err)
		_ = a.reportVolume(ctx, v, statedb.VolumeError, err)
		return err
	}
	a.log.Info("volume created", "volume", v.ID, "size_gb", v.SizeGB, "path", v.Path)
	return a.report(ctx, statedb.CmdReportVolume, statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: a.cfg.HostID,
		Status: statedb.VolumeAvailable, Path: v.Path})
}

// volumeWithPath returns v, or for a volume without a path a copy with
// the path this host's store keeps it at.
func (a *Agent) volumeWithPath(v *statedb.Volume) (*statedb.Volume, error) {
	if v.Path != "" {
		return v, nil
	}
	if a.cfg.Volumes == nil {
		return v, fmt.Errorf("create volume %s: %w", v.ID, ErrNoVolumeStore)
	}
	p, err := a.cfg.Volumes.Path(v)
	if err != nil {
		return v, fmt.Errorf("create volume %s: where to: %w", v.ID, err)
	}
	cp := *v
	cp.Path = p
	return &cp, nil
}

func (a *Agent) doCreateVolume(ctx context.Context, v *statedb.Volume) error {
	if a.cfg.Volumes == nil {
		return fmt.Errorf("create volume %s: %w", v.ID, ErrNoVolumeStore)
	}
	var img *Disk
	if v.ImageID != "" {
		if a.cfg.Images == nil {
			return fmt.Errorf("volume %s from image %s: %w", v.ID, v.ImageID, ErrNoImages)
		}
		path, format, release, err := a.cfg.Images.Image(ctx, v.ImageID)
		if err != nil {
			return fmt.Errorf("volume %s from image %s: %w", v.ID, v.ImageID, err)
		}
		defer release()
		img = &Disk{Path: path, Format: format}
	}
	if err := a.cfg.Volumes.Create(ctx, v, img); err != nil {
		return fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	return nil
}

// deleteVolume removes a volume's file.
func (a *Agent) deleteVolume(ctx context.Context, v *statedb.Volume) error {
	var err error
	if a.cfg.Volumes == nil {
		err = ErrNoVolumeStore
	} else {
		err = a.cfg.Volumes.Delete(ctx, v)
	}
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		err = fmt.Errorf("delete volume %s: %w", v.ID, err)
		a.log.Error("delete volume", "volume", v.ID, "err", err)
		_ = a.reportVolume(ctx, v, statedb.VolumeErrorDeleting, err)
		return err
	}
	a.log.Info("volume deleted", "volume", v.ID)
	return a.reportVolume(ctx, v, statedb.VolumeDeleted, nil)
}

// extendVolume grows a volume's file. While it is attached, a hypervisor
// that can (DiskResizer, QMP block_resize) grows it under the running
// guest; otherwise the file is grown offline (a running QEMU's lock then
// refuses it, and the extend fails with that reason).
func (a *Agent) extendVolume(ctx context.Context, act volAction) error {
	v := act.Vol
	var err error
	r, canResize := a.cfg.Hypervisor.(DiskResizer)
	switch {
	case act.Server != nil && canResize:
		err = r.ResizeDisk(ctx, act.Server.ID, v.ID, v.SizeGB)
	case a.cfg.Volumes == nil:
		err = ErrNoVolumeStore
	default:
		if act.Server != nil {
			a.log.Info("extending an attached volume offline: this hypervisor has no block_resize; the guest sees the new size after a restart",
				"volume", v.ID, "server", act.Server.ID)
		}
		err = a.cfg.Volumes.Extend(ctx, v)
	}
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		err = fmt.Errorf("extend volume %s: %w", v.ID, err)
		a.log.Error("extend volume", "volume", v.ID, "err", err)
		_ = a.reportVolume(ctx, v, statedb.VolumeError, err)
		return err
	}
	a.log.Info("volume extended", "volume", v.ID, "size_gb", v.SizeGB)
	return a.reportVolume(ctx, v, statedb.VolumeAvailable, nil)
}

// attachVolume hot-plugs a volume into its server's VM.
func (a *Agent) attachVolume(ctx context.Context, act volAction) error {
	err := a.cfg.Hypervisor.AttachDisk(ctx, act.Server.ID, volDisk(act.Vol))
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		err = fmt.Errorf("attach volume %s to server %s: %w", act.Vol.ID, act.Server.ID, err)
		a.log.Error("attach volume", "volume", act.Vol.ID, "server", act.Server.ID, "err", err)
		_ = a.reportAttachment(ctx, act, "", err.Error())
		return err
	}
	a.log.Info("volume attached", "volume", act.Vol.ID, "server", act.Server.ID, "device", act.Att.Device)
	return a.reportAttachment(ctx, act, statedb.AttachAttached, "")
}

// detachVolume hot-unplugs a volume, from a server gone or not running at
// once. The hypervisor asks the guest again with back-off for up to
// DetachTimeout; a call that fails quickly (the monitor was briefly
// unreachable) is retried within what remains of it. At the end the
// volume is detached (available), or the detach is given up and reported
// with the reason (in-use again; asking again starts over). A detach cut
// short by ctx (the daemon stops) reports nothing: the attachment stays
// detaching and the next agent resumes it. So does one whose server is
// asked to stop, reboot or go meanwhile: that waits for no guest, and the
// detach resumes after it.
func (a *Agent) detachVolume(ctx context.Context, act volAction) error {
	if act.Server != nil {
		uctx, stop := a.whileServerUnchanged(ctx, act.Server)
		err := a.unplug(uctx, act)
		stop()
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(uctx), errServerChanged) {
			a.log.Info("detach volume paused: its server has another operation to run first",
				"volume", act.Vol.ID, "server", act.Server.ID)
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			err = fmt.Errorf("detach volume %s from server %s: %w", act.Vol.ID, act.Server.ID, err)
			a.log.Error("detach volume given up; the volume stays attached", "volume", act.Vol.ID, "server", act.Server.ID, "err", err)
			return a.reportAttachment(ctx, act, statedb.AttachAttached, err.Error())
		}
	}
	a.log.Info("volume detached", "volume", act.Vol.ID, "attachment", act.Att.ID)
	return a.reportAttachment(ctx, act, statedb.AttachDetached, "")
}

// whileServerUnchanged returns a context that ends with ctx, or once the
// server's desired power or task differs from inst's (another operation
// awaits it, behind the detach) or the server is gone. Call stop when
// done.
func (a *Agent) whileServerUnchanged(ctx context.Context, inst *statedb.Instance) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	changed := func() bool {
		cur, ok := a.cfg.State.Snapshot().Instance(inst.ID)
		return !ok || cur.Desired != inst.Desired || cur.TaskState != inst.TaskState
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ch := a.cfg.State.Changed()
			if changed() {
				cancel(errServerChanged)
				return
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, func() { cancel(nil); <-done }
}

// errServerChanged ends a detach whose server has another operation to run.
var errServerChanged = errors.New("the server has another operation to run")

// Pauses between two DetachDisk calls that failed before their budget.
const (
	detachPause    = 500 * time.Millisecond
	detachPauseMax = 8 * time.Second
)

// unplug calls DetachDisk until it succeeds or DetachTimeout is spent.
func (a *Agent) unplug(ctx context.Context, act volAction) error {
	deadline := time.Now().Add(a.cfg.DetachTimeout)
	pause := detachPause
	for try := 1; ; try++ {
		err := a.cfg.Hypervisor.DetachDisk(ctx, act.Server.ID, act.Vol.ID, time.Until(deadline))
		if err == nil || ctx.Err() != nil || time.Until(deadline) <= pause {
			return err
		}
		a.log.Warn("detach volume failed; retrying", "volume", act.Vol.ID, "server", act.Server.ID,
			"try", try, "in", pause, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		pause = min(2*pause, detachPauseMax)
	}
}
