package statedb

import (
	"fmt"
	"time"
)

// Boot volumes. A server that boots from a volume (block_device_mapping_v2
// boot_index 0, destination volume) holds it through an attachment on
// RootDevice, made in the same CreateInstances transaction as the server:
//
//   - source volume: an existing available volume becomes in-use at once;
//   - source image: a new volume is created in status creating, reserved
//     by an attaching attachment. When the volume's host agent reports it
//     available it becomes in-use and a server already placed moves from
//     block_device_mapping to spawning; when the agent reports an error
//     the server goes to ERROR with the cause as its fault.
//
// The scheduler may place the server while the volume is still created:
// the host agent starts it once the volume is in-use. With local storage
// the volume's file lives on Volume.Host, so the server is placed there
// only. Deleting the server deletes a volume whose attachment has
// DeleteOnTermination and leaves any other one available. A boot
// attachment has a HostID only once it is attached and the server is
// placed, so host agents never hot-plug it.

// RootDevice is the guest device of a boot volume.
const RootDevice = "/dev/vda"

// RootDisk is the boot volume of an InstanceCreate. With New, apply
// creates that volume (the proposer fills ID, Host, Path, SizeGB, Format,
// ImageID, VolumeType and the optional fields; apply sets the project,
// status and attachment) and sets Instance.RootVolume to its id. Without
// New it reserves the existing Instance.RootVolume, which must be
// available and unattached.
type RootDisk struct {
	AttachmentID        string  `json:"attachment_id"`
	DeleteOnTermination bool    `json:"delete_on_termination,omitempty"`
	New                 *Volume `json:"new,omitempty"`
}

// BootVolumeHost is the host inst must be placed on because its boot
// volume's file lives there (local storage), or "" when any host will do:
// the volume's recorded path is an nfs:// URL (or, with none yet, the
// cluster's storage is), so the setting changing later does not move it.
func (sn *Snapshot) BootVolumeHost(inst *Instance) string {
	if inst.RootVolume == "" {
		return ""
	}
	v, ok := sn.Volume(inst.RootVolume)
	if !ok {
		return ""
	}
	if sn.VolumeShared(v) {
		return ""
	}
	return v.Host
}

// rootOf returns the instance that boots from volume id, if any.
func rootOf(sn *Snapshot, id string) (*Instance, bool) {
	for _, inst := range sn.Instances() {
		if inst.RootVolume == id {
			return inst, true
		}
	}
	return nil, false
}

// bootAttachment returns v's attachment when it is inst's boot volume
// attachment, else nil.
func bootAttachment(v *Volume, inst *Instance) *VolumeAttachment {
	a := v.Attachment()
	if a == nil || a.ServerID != inst.ID || inst.RootVolume != v.ID {
		return nil
	}
	return a
}

// reserveRootVolume creates or reserves inst's boot volume (see RootDisk)
// inside the instance's create transaction. With placedBoot a new volume
// on local storage may come without host and path: placeBootVolume gives
// it its server's host, whose agent chooses the path.
func reserveRootVolume(t *Txn, now time.Time, inst *Instance, r *RootDisk, placedBoot bool) error {
	if r.AttachmentID == "" {
		return Errorf(KindInvalid, "the boot volume of instance %s needs an attachment id", inst.ID)
	}
	sn := t.read()
	att := VolumeAttachment{ID: r.AttachmentID, ServerID: inst.ID, Device: RootDevice, DeleteOnTermination: r.DeleteOnTermination}
	if r.New == nil {
		v, ok := sn.Volume(inst.RootVolume)
		if inst.RootVolume == "" || !ok {
			return Errorf(KindInvalid, "Block Device Mapping is Invalid: failed to get volume %s.", inst.RootVolume)
		}
		if v.Status != VolumeAvailable || len(v.Attachments) > 0 {
			return Errorf(KindInvalid, "Invalid volume: volume %s status must be 'available', it is '%s'", v.ID, v.Status)
		}
		if other, ok := rootOf(sn, v.ID); ok {
			return Errorf(KindInvalid, "Invalid volume: volume %s is the root disk of server %s.", v.ID, other.ID)
		}
		cp := copyVolume(v)
		att.State, att.AttachedAt = AttachAttached, now
		cp.Attachments = []VolumeAttachment{att}
		cp.Status, cp.ErrorReason, cp.UpdatedAt = VolumeInUse, "", now
		return t.insert(tblVolumes, cp)
	}
	v := *r.New
	withServer := placedBoot && v.Host == "" && v.Path == "" && !sn.VolumeShared(&v)
	switch {
	case v.ID == "" || (v.Host == "" || v.Path == "") && !withServer:
		return Errorf(KindInvalid, "the boot volume of instance %s needs an id, a host and a path", inst.ID)
	case v.SizeGB <= 0:
		return Errorf(KindInvalid, "Invalid input received: volume size must be a positive number of GB, not %d.", v.SizeGB)
	case v.Format != "qcow2" && v.Format != "raw":
		return Errorf(KindInvalid, "volume format must be qcow2 or raw, not %q", v.Format)
	case v.ImageID == "":
		return Errorf(KindInvalid, "the boot volume of instance %s is made from an image, and names none", inst.ID)
	case inst.RootVolume != "" && inst.RootVolume != v.ID:
		return Errorf(KindInvalid, "instance %s names boot volume %s but creates %s", inst.ID, inst.RootVolume, v.ID)
	}
	if _, ok := sn.Volume(v.ID); ok {
		return Errorf(KindConflict, "volume %s already exists", v.ID)
	}
	if _, ok := sn.Member(v.Host); !ok && !withServer {
		return Errorf(KindInvalid, "host %s is not a member of the cluster", v.Host)
	}
	if _, ok := sn.Image(v.ImageID); !ok {
		return Errorf(KindInvalid, "Image %s could not be found.", v.ImageID)
	}
	v.ProjectID = inst.ProjectID
	if v.UserID == "" {
		v.UserID = inst.UserID
	}
	att.State = AttachAttaching
	v.Status, v.Bootable, v.Attachments = VolumeCreating, true, []VolumeAttachment{att}
	v.ErrorReason, v.PrevSizeGB = "", 0
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = now
	}
	v.UpdatedAt = now
	inst.RootVolume = v.ID
	return t.insert(tblVolumes, &v)
}

// placeBootVolume records the placement of inst (a copy being placed on
// inst.Host) on its boot volume: an attached boot volume learns its host;
// a server whose volume is still being created waits in
// block_device_mapping.
func placeBootVolume(t *Txn, now time.Time, inst *Instance) error {
	if inst.RootVolume == "" {
		return nil
	}
	old, ok := t.read().Volume(inst.RootVolume)
	if !ok || bootAttachment(old, inst) == nil {
		return nil
	}
	v := copyVolume(old)
	a := v.Attachment()
	switch {
	case a.State == AttachAttached:
		a.HostID, v.UpdatedAt = inst.Host, now
		return t.insert(tblVolumes, v)
	case v.Status == VolumeCreating && v.Host == "":
		// Made with its server (local storage): on the server's host,
		// whose agent makes the file and reports where.
		inst.TaskState = TaskBlockDeviceMapping
		v.Host, v.UpdatedAt = inst.Host, now
		return t.insert(tblVolumes, v)
	case v.Status == VolumeCreating:
		inst.TaskState = TaskBlockDeviceMapping
	}
	return nil
}

// failBootVolume marks the boot volume of inst, whose placement failed,
// as failed too when it was to be made with the server on its host: no
// host will make it. (Deleting the server then removes or frees it.)
func failBootVolume(t *Txn, now time.Time, inst *Instance, reason string) error {
	old, ok := t.read().Volume(inst.RootVolume)
	if !ok || bootAttachment(old, inst) == nil || old.Status != VolumeCreating || old.Host != "" {
		return nil
	}
	v := copyVolume(old)
	v.Status, v.ErrorReason, v.UpdatedAt = VolumeError, "its server could not be placed: "+reason, now
	return t.insert(tblVolumes, v)
}

// settleBootVolume finishes the reservation of a new boot volume whose
// creation ended (v is the volume as the report leaves it, old as it was):
// available becomes in-use for the server, which may now spawn; error
// puts a server still building into ERROR. A volume whose server is gone
// loses the attachment.
func settleBootVolume(t *Txn, now time.Time, old, v *Volume) error {
	a := v.Attachment()
	if old.Status != VolumeCreating || v.Status == VolumeCreating || a == nil || a.State != AttachAttaching {
		return nil
	}
	inst, ok := t.read().Instance(a.ServerID)
	if !ok || inst.RootVolume != v.ID {
		dropAttachment(v)
		return nil
	}
	cp := *inst
	switch v.Status {
	case VolumeAvailable:
		a.State, a.AttachedAt, a.HostID = AttachAttached, now, inst.Host
		v.Status = VolumeInUse
		if inst.TaskState != TaskBlockDeviceMapping || inst.Desired == DesiredDeleted {
			return nil
		}
		cp.TaskState = TaskSpawning
	case VolumeError:
		if inst.VMState != VMBuilding || inst.Desired == DesiredDeleted {
			return nil
		}
		msg := fmt.Sprintf("Build of instance %s aborted: boot volume %s could not be created: %s", inst.ID, v.ID, v.ErrorReason)
		if len(msg) > 255 {
			msg = msg[:252] + "..."
		}
		cp.VMState, cp.TaskState, cp.PowerState = VMError, "", PowerNoState
		cp.Fault = &Fault{Code: 500, Message: msg, Details: v.ErrorReason, Created: now}
	default:
		return nil
	}
	cp.UpdatedAt = now
	return t.insert(tblInstances, &cp)
}

// releaseRootVolume lets go of the boot volume of an instance being
// removed: deleted with DeleteOnTermination, else detached (available, or
// whatever file operation it is in).
func releaseRootVolume(t *Txn, now time.Time, inst *Instance) error {
	if inst.RootVolume == "" {
		return nil
	}
	old, ok := t.read().Volume(inst.RootVolume)
	if !ok {
		return nil
	}
	a := bootAttachment(old, inst)
	if a == nil {
		return nil
	}
	v := copyVolume(old)
	releaseAttachment(v, a)
	v.UpdatedAt = now
	return putReleased(t, v)
}

// putReleased writes a volume whose attachment was released; one being
// deleted that never had a host has no file, so its record goes at once.
func putReleased(t *Txn, v *Volume) error {
	if v.Status == VolumeDeleting && v.Host == "" {
		return t.delete(tblVolumes, v)
	}
	return t.insert(tblVolumes, v)
}

// releaseAttachment lets go of v's attachment a to a server being
// removed: with DeleteOnTermination the volume is deleted (a file
// operation in flight, creating or extending, finishes first: the host
// agent serialises the volume's operations), else it is detached.
func releaseAttachment(v *Volume, a *VolumeAttachment) {
	if !a.DeleteOnTermination {
		dropAttachment(v)
		return
	}
	v.Attachments = []VolumeAttachment{}
	if v.Status != VolumeDeleting {
		v.Status, v.ErrorReason, v.PrevSizeGB = VolumeDeleting, "", 0
	}
}
