package statedb

import (
	"slices"
	"time"
)

// Day-2 server actions, as Nova: rescue/unrescue and createImage (a
// snapshot of the root disk into a new image). The API proposes them; the
// host agent of the server carries them out and reports back (a plain
// instance report for rescue, FinishSnapshotCmd for a snapshot).

// VM state of a rescued server (status RESCUE).
const VMRescued = "rescued"

// DesiredRescued asks the agent to boot the server from its rescue image
// with its root disk attached second.
const DesiredRescued = "rescued"

// Task states of the day-2 actions.
const (
	TaskRescuing      = "rescuing"
	TaskUnrescuing    = "unrescuing"
	TaskImageSnapshot = "image_snapshot"
)

// Instance action names (Nova's).
const (
	ActionRescue      = "rescue"
	ActionUnrescue    = "unrescue"
	ActionCreateImage = "createImage"
)

// RescueCmd rescues a server from ImageID (its own image when empty), or
// unrescues it.
type RescueCmd struct {
	ID       string   `json:"id"`
	Unrescue bool     `json:"unrescue,omitempty"`
	ImageID  string   `json:"image_id,omitempty"`
	By       ActionBy `json:"by"`
}

func applyRescueServer(t *Txn, c *Command) error {
	r, err := decode[RescueCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	action := ActionRescue
	if r.Unrescue {
		action = ActionUnrescue
	}
	if err := checkDay2Action(inst, action, r.By); err != nil {
		return err
	}
	cp := *inst
	if r.Unrescue {
		if inst.VMState != VMRescued {
			return vmStateConflict(action, inst)
		}
		cp.TaskState, cp.Desired, cp.RescueImage = TaskUnrescuing, DesiredRunning, ""
	} else {
		switch inst.VMState {
		case VMActive, VMStopped, VMError:
		default:
			return vmStateConflict(action, inst)
		}
		if inst.RootVolume != "" {
			return Errorf(KindInvalid, "Cannot rescue a volume-backed instance")
		}
		img := r.ImageID
		if img == "" {
			img = inst.ImageID
		}
		if i, ok := t.read().Image(img); !ok || i.Status != ImageActive {
			return Errorf(KindInvalid, "Image %s is not active.", img)
		}
		cp.TaskState, cp.Desired, cp.RescueImage = TaskRescuing, DesiredRescued, img
	}
	cp.UpdatedAt = c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, action, r.By, false)
}

// checkDay2Action refuses an action on a server being deleted, not yet
// placed, busy with another task or locked against the caller.
func checkDay2Action(inst *Instance, action string, by ActionBy) error {
	if inst.Desired == DesiredDeleted {
		return Errorf(KindConflict, "Cannot '%s' instance %s while it is in task_state %s", action, inst.ID, TaskDeleting)
	}
	if inst.Locked && !by.Admin {
		return LockedError(inst.ID)
	}
	if inst.Host == "" {
		return vmStateConflict(action, inst)
	}
	if inst.TaskState != "" {
		return taskStateConflict(action, inst)
	}
	return nil
}

// SnapshotServerCmd snapshots a server's root disk into Image, a new
// image the command records as queued.
type SnapshotServerCmd struct {
	ID    string   `json:"id"`
	Image Image    `json:"image"`
	By    ActionBy `json:"by"`
}

func applySnapshotServer(t *Txn, c *Command) error {
	r, err := decode[SnapshotServerCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	if err := checkDay2Action(inst, ActionCreateImage, r.By); err != nil {
		return err
	}
	switch inst.VMState {
	case VMActive, VMStopped, VMPaused, VMSuspended:
	default:
		return vmStateConflict(ActionCreateImage, inst)
	}
	if err := snapshotRootVolume(t.read(), inst); err != nil {
		return err
	}
	img, err := newQueuedImage(t, c, &r.Image, "private")
	if err != nil {
		return err
	}
	if err := t.insert(tblImages, img); err != nil {
		return err
	}
	cp := *inst
	cp.TaskState, cp.SnapshotImage, cp.UpdatedAt = TaskImageSnapshot, img.ID, c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, ActionCreateImage, r.By, false)
}

// snapshotRootVolume checks that a volume-backed server's boot volume
// can be copied now: in use by the server and settled (not extending,
// not half attached or detached), else 409.
func snapshotRootVolume(sn *Snapshot, inst *Instance) error {
	if inst.RootVolume == "" {
		return nil
	}
	v, ok := sn.Volume(inst.RootVolume)
	if !ok {
		return Errorf(KindConflict, "Cannot 'createImage' instance %s: its boot volume %s is gone", inst.ID, inst.RootVolume)
	}
	a := bootAttachment(v, inst)
	if v.Status != VolumeInUse || a == nil || a.State != AttachAttached {
		return Errorf(KindConflict, "Cannot 'createImage' instance %s: its boot volume %s is %s; snapshot it once that is done.", inst.ID, v.ID, v.Status)
	}
	return nil
}

// FinishSnapshotCmd is the agent's report that a snapshot ended: the
// image is active (FinishImageUpload) or, with Error, killed.
type FinishSnapshotCmd struct {
	InstanceID string `json:"instance_id"`
	HostID     string `json:"host_id"`
	ImageID    string `json:"image_id"`
	Error      string `json:"error,omitempty"`
}

func applyFinishSnapshot(t *Txn, c *Command) error {
	r, err := decode[FinishSnapshotCmd](c)
	if err != nil {
		return err
	}
	inst, ok := t.read().Instance(r.InstanceID)
	if !ok || inst.Host != r.HostID || inst.SnapshotImage != r.ImageID {
		return nil // the server went or moved on: nothing to finish
	}
	cp := *inst
	cp.SnapshotImage, cp.UpdatedAt = "", c.Time
	if cp.TaskState == TaskImageSnapshot {
		cp.TaskState = ""
	}
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return finishNamedAction(t, c.Time, &cp, ActionCreateImage, r.Error)
}

// finishNamedAction ends the open events of inst's actions called action,
// with Error and msg when msg is not empty.
func finishNamedAction(t *Txn, now time.Time, inst *Instance, action, msg string) error {
	for _, a := range t.read().InstanceActions(inst.ID) {
		if a.Action != action || a.Finished() {
			continue
		}
		cp := *a
		cp.Events = slices.Clone(a.Events)
		for i := range cp.Events {
			if cp.Events[i].Result != "" {
				continue
			}
			cp.Events[i].FinishTime, cp.Events[i].Result, cp.Events[i].Host = now, ResultSuccess, inst.Host
			if msg != "" {
				cp.Events[i].Result, cp.Events[i].Traceback, cp.Message = ResultError, msg, msg
			}
		}
		cp.UpdatedAt = now
		if err := t.insert(tblInstanceActions, &cp); err != nil {
			return err
		}
	}
	return nil
}
