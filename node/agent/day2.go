package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Day-2 server actions on this host: rescue/unrescue and snapshots of a
// server's root disk into a new image.

// Rescuer is implemented by hypervisors that can boot a VM from a rescue
// image with its root disk attached second, and back.
type Rescuer interface {
	Rescue(ctx context.Context, id string, image Disk) error
	Unrescue(ctx context.Context, id string) error
}

// Snapshotter is implemented by hypervisors that can copy a VM's root
// disk, running or not, into a standalone qcow2 file among the VM's files
// and return its path; the caller removes it with DropSnapshot.
type Snapshotter interface {
	SnapshotRoot(ctx context.Context, id, imageID string) (string, error)
	DropSnapshot(id, path string)
}

// SavedImage is what storing an image's bytes gave.
type SavedImage struct {
	Size, VirtualSize   int64
	MD5, SHA256, SHA512 string
	Holders             []string // "" entries: this host
}

// ImageSaver is implemented by image sources that can store a local file
// as a new image's bytes.
type ImageSaver interface {
	SaveImage(ctx context.Context, path string) (SavedImage, error)
}

const (
	opRescue   instOp = "rescue"   // boot from the rescue image (day2.go)
	opUnrescue instOp = "unrescue" // boot the root disk again
	opSnapshot instOp = "snapshot" // copy the root disk into a new image
)

// diffDay2 decides for the instances in a day-2 state; ok is false for
// the others, which the usual rules handle.
func diffDay2(host string, inst *statedb.Instance, st VMStatus) (out []instAction, ok bool) {
	if inst.Desired == statedb.DesiredDeleted {
		return nil, false
	}
	if out, ok := diffResize(host, inst, st); ok {
		return out, true
	}
	running := st.State == VMRunning || st.State == VMPaused
	rep := baseReport(host, inst)
	act := func(op instOp, why string) { out = append(out, instAction{Op: op, Inst: inst, Report: rep, Why: why}) }
	switch {
	case inst.TaskState == statedb.TaskImageSnapshot:
		if inst.SnapshotImage != "" {
			act(opSnapshot, "snapshot requested")
		}
		return out, true
	case inst.TaskState == statedb.TaskUnrescuing:
		rep.VMState, rep.PowerState = statedb.VMActive, statedb.PowerRunning
		act(opUnrescue, "unrescue requested")
		return out, true
	case inst.Desired != statedb.DesiredRescued:
		return nil, false
	}
	rep.VMState, rep.PowerState = statedb.VMRescued, statedb.PowerRunning
	switch {
	case inst.TaskState == statedb.TaskRescuing:
		act(opRescue, "rescue requested")
	case inst.VMState == statedb.VMError:
		// a failed rescue is not retried on its own
	case !running:
		rep.PowerState = statedb.PowerShutdown // stopped outside the agent: stays rescued, not restarted
		if needsReport(inst, rep) {
			act(opReport, "rescued server not running")
		}
	case needsReport(inst, rep):
		act(opReport, "rescued")
	}
	return out, true
}

// rescueOp rescues or unrescues a VM, then reports its new state; a
// failure makes the server ERROR with the cause as its fault.
func (a *Agent) rescueOp(ctx context.Context, act instAction) error {
	id := act.Inst.ID
	r, ok := a.cfg.Hypervisor.(Rescuer)
	var err error
	switch {
	case !ok:
		err = errors.New("this hypervisor cannot rescue servers")
	case act.Op == opUnrescue:
		err = r.Unrescue(ctx, id)
	case a.cfg.Images == nil:
		err = fmt.Errorf("rescue image %s: %w", act.Inst.RescueImage, ErrNoImages)
	default:
		var path, format string
		var release func()
		path, format, release, err = a.cfg.Images.Image(ctx, act.Inst.RescueImage)
		if err != nil {
			err = fmt.Errorf("rescue image %s: %w", act.Inst.RescueImage, err)
		} else {
			err = r.Rescue(ctx, id, Disk{Path: path, Format: format})
			release()
		}
	}
	if err != nil {
		a.reportFailure(ctx, act.Report, string(act.Op), err)
		return fmt.Errorf("%s %s: %w", act.Op, id, err)
	}
	a.log.Info("vm "+string(act.Op)+"d", "instance", id)
	return a.reportInstance(ctx, act.Report, act.Why)
}

// snapshotOp copies the server's root disk into its new image: the image
// goes saving, then active with the copy's sums (or killed), and the
// server leaves image_snapshot in the state it had. A failed snapshot
// leaves the server as it was, as Nova does.
func (a *Agent) snapshotOp(ctx context.Context, act instAction) error {
	inst := act.Inst
	imageID := inst.SnapshotImage
	fin := statedb.FinishSnapshotCmd{InstanceID: inst.ID, HostID: a.cfg.HostID, ImageID: imageID}
	if err := a.report(ctx, statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: imageID, HostID: a.cfg.HostID}); err != nil {
		if ctx.Err() != nil {
			return err
		}
		// The image went (deleted meanwhile), or an earlier try on this
		// host died with it saving: the snapshot is moot either way.
		_ = a.report(ctx, statedb.CmdKillImage, statedb.ImageUploadCmd{ID: imageID, HostID: a.cfg.HostID})
		fin.Error = fmt.Sprintf("image %s: %v", imageID, err)
		_ = a.report(ctx, statedb.CmdFinishSnapshot, fin)
		return fmt.Errorf("snapshot %s: %w", inst.ID, err)
	}
	saved, err := a.snapshotToImage(ctx, inst.ID, imageID)
	if err == nil {
		err = a.report(ctx, statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{
			ID: imageID, Size: saved.Size, VirtualSize: saved.VirtualSize, Checksum: saved.MD5,
			HashAlgo: "sha512", HashValue: saved.SHA512, SHA256: saved.SHA256, Holders: saved.Holders})
	}
	if err != nil {
		if ctx.Err() != nil {
			return err // the next agent finds the task and tries again
		}
		a.log.Error("snapshot failed", "instance", inst.ID, "image", imageID, "err", err)
		_ = a.report(ctx, statedb.CmdKillImage, statedb.ImageUploadCmd{ID: imageID, HostID: a.cfg.HostID})
		fin.Error = err.Error()
		_ = a.report(ctx, statedb.CmdFinishSnapshot, fin)
		return fmt.Errorf("snapshot %s: %w", inst.ID, err)
	}
	a.log.Info("vm snapshot saved", "instance", inst.ID, "image", imageID, "bytes", saved.Size)
	return a.report(ctx, statedb.CmdFinishSnapshot, fin)
}

func (a *Agent) snapshotToImage(ctx context.Context, id, imageID string) (SavedImage, error) {
	sn, ok := a.cfg.Hypervisor.(Snapshotter)
	if !ok {
		return SavedImage{}, errors.New("this hypervisor cannot snapshot servers")
	}
	saver, ok := a.cfg.Images.(ImageSaver)
	if !ok {
		return SavedImage{}, errors.New("this host cannot store images")
	}
	path, err := sn.SnapshotRoot(ctx, id, imageID)
	if err != nil {
		return SavedImage{}, err
	}
	defer sn.DropSnapshot(id, path)
	saved, err := saver.SaveImage(ctx, path)
	if err != nil {
		return SavedImage{}, fmt.Errorf("store the snapshot: %w", err)
	}
	for i, h := range saved.Holders {
		if h == "" {
			saved.Holders[i] = a.cfg.HostID
		}
	}
	if len(saved.Holders) == 0 {
		saved.Holders = []string{a.cfg.HostID}
	}
	return saved, nil
}
