package statedb

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Volume statuses (Cinder's names).
const (
	VolumeCreating       = "creating"
	VolumeAvailable      = "available"
	VolumeAttaching      = "attaching"
	VolumeInUse          = "in-use"
	VolumeDetaching      = "detaching"
	VolumeExtending      = "extending"
	VolumeDeleting       = "deleting"
	VolumeError          = "error"
	VolumeErrorDeleting  = "error_deleting"
	VolumeErrorExtending = "error_extending"
	// VolumeDeleted is only a report value: the file is gone, drop the record.
	VolumeDeleted = "deleted"
)

// Attachment states.
const (
	AttachAttaching = "attaching"
	AttachAttached  = "attached"
	AttachDetaching = "detaching"
	// AttachDetached is only a report value: the device is gone.
	AttachDetached = "detached"
)

// Storage backend types, as `openstack volume type list` shows them.
const (
	VolumeTypeNFS   = "nfs"
	VolumeTypeLocal = "local"
)

// VolumeBackendType is the volume type of a cluster whose Settings.Storage
// is storage: "nfs" for a shared nfs:// backend, "local" for a local
// directory on each host.
func VolumeBackendType(storage string) string {
	if strings.HasPrefix(storage, "nfs://") {
		return VolumeTypeNFS
	}
	return VolumeTypeLocal
}

// CreateVolumeCmd creates a volume in status creating. The proposer fills
// ID, ProjectID, UserID, SizeGB, VolumeType, Format, CreatedAt and the
// optional fields; apply resets the status and attachments. On shared
// storage it also fills Host (the member whose agent creates the file) and
// Path. On local storage it leaves both empty: the leader places the
// volume (PlaceVolumeCmd) and the agent of the chosen host makes the file
// where its store keeps it and reports the path (ReportVolumeCmd.Path).
// (Entries from before placement name the host and path; they stay valid.)
type CreateVolumeCmd struct {
	Volume Volume `json:"volume"`
}

// PlaceVolumeCmd records the leader's choice of host for a volume on local
// storage that is still creating and has none: apply accepts it only if
// the host is an enabled member whose disk, under Ratios and with HostCap
// its totals, holds the volume beside the claims of its instances and the
// local volumes it already has (the placement rule, placement.go), and
// otherwise leaves the volume unplaced for the leader to try again. With
// Failure set the volume goes to error with that reason instead.
type PlaceVolumeCmd struct {
	VolumeID string  `json:"volume_id"`
	HostID   string  `json:"host_id,omitempty"`
	HostCap  HostCap `json:"host_cap"`
	Ratios   Ratios  `json:"ratios"`
	Failure  string  `json:"failure,omitempty"`
}

// UpdateVolumeCmd changes a volume's name, description or metadata; nil
// fields stay as they are, Metadata replaces the whole map.
type UpdateVolumeCmd struct {
	ID          string             `json:"id"`
	Name        *string            `json:"name,omitempty"`
	Description *string            `json:"description,omitempty"`
	Metadata    *map[string]string `json:"metadata,omitempty"`
}

// DeleteVolumeCmd asks for a volume's deletion: the volume goes to
// deleting, and the agent on Volume.Host removes the file and reports
// "deleted".
type DeleteVolumeCmd struct {
	ID string `json:"id"`
}

// ExtendVolumeCmd grows a volume. The volume goes to extending with SizeGB
// set to the new size (PrevSizeGB keeps the old one); the agent on
// Volume.Host (or, while attached, on the attachment's host, which also
// resizes the block device in QEMU) grows the file and reports.
type ExtendVolumeCmd struct {
	ID        string `json:"id"`
	NewSizeGB int    `json:"new_size"`
}

// AttachVolumeCmd attaches a volume to a server. Apply enforces: the volume
// is available and has no attachment (attach is exclusive), the server is
// placed and active or stopped, and with local storage the server runs on
// the volume's host. Device is a hint ("/dev/vdX"); apply picks the first
// free one from /dev/vdb when it is empty or taken.
//
// Tag and DeleteOnTermination are applied only from an AttachVolumeTagged
// command (hosts that know them): an AttachVolume entry applies the same
// way on every version.
type AttachVolumeCmd struct {
	VolumeID            string `json:"volume_id"`
	ServerID            string `json:"server_id"`
	AttachmentID        string `json:"attachment_id"`
	Device              string `json:"device,omitempty"`
	Tag                 string `json:"tag,omitempty"`
	DeleteOnTermination bool   `json:"delete_on_termination,omitempty"`
}

// maxAttachTag is Nova's limit on a device tag.
const maxAttachTag = 60

// DetachVolumeCmd asks for a volume's detach from a server: the attachment
// goes to detaching and the agent on its host unplugs it, asking the guest
// again with back-off, and reports "detached" (the volume is available) or
// gives up (the volume is in-use again with the reason). It is always
// accepted while the volume is attached to the server: in-use (after a
// give-up too) or already detaching (idempotent; it clears a fault
// recorded by an older agent, which then tries again).
type DetachVolumeCmd struct {
	VolumeID string `json:"volume_id"`
	ServerID string `json:"server_id"`
}

// ResetVolumeStatusCmd is Cinder's admin os-reset_status: it forces
// Status, and with AttachStatus "detached" drops the attachment.
type ResetVolumeStatusCmd struct {
	ID           string `json:"id"`
	Status       string `json:"status,omitempty"`
	AttachStatus string `json:"attach_status,omitempty"`
}

// ReleaseVolumeCmd drops an attachment whose server no longer exists
// (deleted with the volume attached); the volume becomes available. Apply
// refuses while the server still exists.
type ReleaseVolumeCmd struct {
	VolumeID     string `json:"volume_id"`
	AttachmentID string `json:"attachment_id"`
}

// VolumeHostGoneCmd handles volumes whose Host left the cluster. With
// shared storage they move to NewHostID (a member), except volumes still
// creating, which go to error. With local storage their files are gone:
// deleting ones are removed, the others go to error. Apply refuses while
// HostID is still a member.
type VolumeHostGoneCmd struct {
	HostID    string `json:"host_id"`
	NewHostID string `json:"new_host_id,omitempty"`
}

// copyVolume returns a deep copy to modify inside a transaction.
func copyVolume(v *Volume) *Volume {
	cp := *v
	cp.Attachments = append([]VolumeAttachment(nil), v.Attachments...)
	if v.Metadata != nil {
		cp.Metadata = make(map[string]string, len(v.Metadata))
		for k, val := range v.Metadata {
			cp.Metadata[k] = val
		}
	}
	return &cp
}

// volumeForWrite loads a volume for change.
func volumeForWrite(t *Txn, id string) (*Volume, error) {
	v, ok := t.read().Volume(id)
	if !ok {
		return nil, Errorf(KindNotFound, "Volume %s could not be found.", id)
	}
	return copyVolume(v), nil
}

func applyCreateVolume(t *Txn, c *Command) error {
	r, err := decode[CreateVolumeCmd](c)
	if err != nil {
		return err
	}
	v := r.Volume
	unplaced := v.Host == "" && v.Path == "" && !t.read().VolumeShared(&v)
	switch {
	case v.ID == "" || v.ProjectID == "" || v.Host == "" && !unplaced:
		return Errorf(KindInvalid, "a volume needs an id, a project and a host (or, on local storage, neither host nor path)")
	case v.SizeGB <= 0:
		return Errorf(KindInvalid, "Invalid input received: volume size must be a positive number of GB, not %d.", v.SizeGB)
	case v.Format != "qcow2" && v.Format != "raw":
		return Errorf(KindInvalid, "volume format must be qcow2 or raw, not %q", v.Format)
	}
	if _, ok := t.read().Volume(v.ID); ok {
		return Errorf(KindConflict, "volume %s already exists", v.ID)
	}
	if _, ok := t.read().Member(v.Host); !ok && !unplaced {
		return Errorf(KindInvalid, "host %s is not a member of the cluster", v.Host)
	}
	if err := quotaCreateVolume(t, v.ProjectID, true, int64(v.SizeGB), int64(v.SizeGB)); err != nil {
		return err
	}
	v.Status = VolumeCreating
	v.Attachments = []VolumeAttachment{}
	v.ErrorReason, v.PrevSizeGB = "", 0
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = c.Time
	}
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, &v)
}

func applyPlaceVolume(t *Txn, c *Command) error {
	r, err := decode[PlaceVolumeCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	old, ok := sn.Volume(r.VolumeID)
	if !ok || !Unplaced(sn, old) {
		return nil // deleted or placed meanwhile: a stale or repeated choice
	}
	v := copyVolume(old)
	v.UpdatedAt = c.Time
	if r.Failure != "" {
		v.Status, v.ErrorReason = VolumeError, r.Failure
		return t.insert(tblVolumes, v)
	}
	if !sn.VolumeFits(v, r.HostID, r.HostCap, r.Ratios) {
		return nil // stays unplaced; the leader chooses again
	}
	v.Host = r.HostID
	return t.insert(tblVolumes, v)
}

func applyUpdateVolume(t *Txn, c *Command) error {
	r, err := decode[UpdateVolumeCmd](c)
	if err != nil {
		return err
	}
	v, err := volumeForWrite(t, r.ID)
	if err != nil {
		return err
	}
	if r.Name != nil {
		v.Name = *r.Name
	}
	if r.Description != nil {
		v.Description = *r.Description
	}
	if r.Metadata != nil {
		v.Metadata = map[string]string{}
		for k, val := range *r.Metadata {
			v.Metadata[k] = val
		}
	}
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

// deletableStatuses are the statuses a volume may be deleted from.
var deletableStatuses = map[string]bool{
	VolumeAvailable: true, VolumeError: true, VolumeErrorDeleting: true, VolumeErrorExtending: true,
}

func applyDeleteVolume(t *Txn, c *Command) error {
	r, err := decode[DeleteVolumeCmd](c)
	if err != nil {
		return err
	}
	v, err := volumeForWrite(t, r.ID)
	if err != nil {
		return err
	}
	if len(v.Attachments) > 0 {
		return Errorf(KindInvalid, "Invalid volume: volume %s is attached to server %s; detach it first.",
			v.ID, v.Attachments[0].ServerID)
	}
	if !deletableStatuses[v.Status] {
		return Errorf(KindInvalid, "Invalid volume: Volume status must be available or error or error_extending or error_deleting, but current status is: %s.", v.Status)
	}
	for _, inst := range t.read().Instances() {
		if inst.RootVolume == v.ID {
			return Errorf(KindInvalid, "Invalid volume: volume %s is the root disk of server %s.", v.ID, inst.ID)
		}
	}
	if v.Host == "" {
		// Never placed (local storage, no host found): there is no file.
		return t.delete(tblVolumes, v)
	}
	v.Status, v.ErrorReason = VolumeDeleting, ""
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

func applyExtendVolume(t *Txn, c *Command) error {
	r, err := decode[ExtendVolumeCmd](c)
	if err != nil {
		return err
	}
	v, err := volumeForWrite(t, r.ID)
	if err != nil {
		return err
	}
	if v.Status != VolumeAvailable && v.Status != VolumeInUse {
		return Errorf(KindInvalid, "Invalid volume: Volume status must be available or in-use to extend, but current status is: %s.", v.Status)
	}
	if a := v.Attachment(); a != nil && a.State != AttachAttached {
		return Errorf(KindInvalid, "Invalid volume: volume %s is %s; extend it once that is done.", v.ID, a.State)
	}
	if a := v.Attachment(); a != nil && a.HostID == "" {
		return Errorf(KindInvalid, "Invalid volume: volume %s boots server %s, which is not placed on a host yet; extend it once it is.", v.ID, a.ServerID)
	}
	// A boot volume being copied into an image keeps its size until the
	// copy ends, whatever happened to its attachment meanwhile (only a
	// SnapshotServer command, which needs every host at the release that
	// has this rule, sets SnapshotImage).
	if inst, ok := rootOf(t.read(), v.ID); ok && inst.SnapshotImage != "" {
		return Errorf(KindConflict, "Invalid volume: volume %s boots server %s, whose image is being made; extend it once that is done.", v.ID, inst.ID)
	}
	if r.NewSizeGB <= v.SizeGB {
		return Errorf(KindInvalid, "Invalid input received: New size for extend must be greater than current size. (current: %d, extended: %d).", v.SizeGB, r.NewSizeGB)
	}
	if err := quotaCreateVolume(t, v.ProjectID, false, int64(r.NewSizeGB), int64(r.NewSizeGB-v.SizeGB)); err != nil {
		return err
	}
	v.PrevSizeGB, v.SizeGB = v.SizeGB, r.NewSizeGB
	v.Status, v.ErrorReason = VolumeExtending, ""
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

// deviceRE matches the device names a guest may be given.
var deviceRE = regexp.MustCompile(`^/dev/vd[b-z]$`)

// ValidVolumeDevice reports whether dev is a device name attach accepts as
// a hint: /dev/vdb to /dev/vdz.
func ValidVolumeDevice(dev string) bool { return deviceRE.MatchString(dev) }

// pickDevice returns want if it is valid and free on the server, else the
// first free device from /dev/vdb.
func pickDevice(sn *Snapshot, serverID, want string) (string, error) {
	used := map[string]bool{}
	for _, v := range sn.VolumesAttachedTo(serverID) {
		used[v.Attachments[0].Device] = true
	}
	if ValidVolumeDevice(want) && !used[want] {
		return want, nil
	}
	for l := 'b'; l <= 'z'; l++ {
		if d := "/dev/vd" + string(l); !used[d] {
			return d, nil
		}
	}
	return "", Errorf(KindInvalid, "server %s has no free device name for another volume", serverID)
}

// attachableServer reports why a server cannot take a volume, or nil.
func attachableServer(inst *Instance) error {
	switch {
	case inst.Desired == "deleted" || inst.VMState == "deleted":
		return Errorf(KindConflict, "Cannot 'attach_volume' instance %s while it is being deleted.", inst.ID)
	case inst.Host == "":
		return Errorf(KindConflict, "Cannot 'attach_volume' instance %s while it is not placed on a host yet.", inst.ID)
	case inst.VMState != "active" && inst.VMState != "stopped":
		return Errorf(KindConflict, "Cannot 'attach_volume' instance %s while it is in vm_state %s.", inst.ID, orNone(inst.VMState))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func applyAttachVolume(t *Txn, c *Command) error {
	r, err := decode[AttachVolumeCmd](c)
	if err != nil {
		return err
	}
	if r.AttachmentID == "" {
		return Errorf(KindInvalid, "an attachment needs an id")
	}
	v, err := volumeForWrite(t, r.VolumeID)
	if err != nil {
		return err
	}
	inst, ok := t.read().Instance(r.ServerID)
	if !ok {
		return Errorf(KindNotFound, "Instance %s could not be found.", r.ServerID)
	}
	if a := v.Attachment(); a != nil {
		if a.ServerID == r.ServerID {
			return Errorf(KindInvalid, "Invalid volume: volume %s is already attached to server %s.", v.ID, r.ServerID)
		}
		return Errorf(KindInvalid, "Invalid volume: volume %s is attached to server %s; multiattach is not supported.", v.ID, a.ServerID)
	}
	if v.Status != VolumeAvailable {
		return Errorf(KindInvalid, "Invalid volume: volume %s status must be available, but current status is: %s.", v.ID, v.Status)
	}
	// A reserved root volume is in-use, so the checks above refuse it; an
	// unreserved one (entries from before reservations) attached as it
	// always did, and replay must not change that.
	if err := attachableServer(inst); err != nil {
		return err
	}
	if !t.read().VolumeShared(v) && inst.Host != v.Host {
		return Errorf(KindInvalid, "Invalid volume: volume %s lives on host %s (local storage) but server %s runs on host %s; with local storage a volume can only be attached to servers on its own host.",
			v.ID, memberName(t.read(), v.Host), inst.ID, memberName(t.read(), inst.Host))
	}
	dev, err := pickDevice(t.read(), inst.ID, r.Device)
	if err != nil {
		return err
	}
	att := VolumeAttachment{ID: r.AttachmentID, ServerID: inst.ID, HostID: inst.Host, Device: dev, State: AttachAttaching}
	if c.Type == CmdAttachVolumeTagged {
		if len(r.Tag) > maxAttachTag || strings.ContainsAny(r.Tag, "/,") {
			return Errorf(KindInvalid, "Invalid input for field/attribute tag. Value: %s. A tag has at most %d characters and no '/' or ','.", r.Tag, maxAttachTag)
		}
		att.Tag, att.DeleteOnTermination = r.Tag, r.DeleteOnTermination
	}
	v.Attachments = []VolumeAttachment{att}
	v.Status, v.ErrorReason = VolumeAttaching, ""
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

// memberName is a member's name, or its id when unknown.
func memberName(sn *Snapshot, id string) string {
	if m, ok := sn.Member(id); ok {
		return m.Name
	}
	return id
}

func applyDetachVolume(t *Txn, c *Command) error {
	r, err := decode[DetachVolumeCmd](c)
	if err != nil {
		return err
	}
	v, err := volumeForWrite(t, r.VolumeID)
	if err != nil {
		return err
	}
	a := v.Attachment()
	if a == nil || a.ServerID != r.ServerID {
		return Errorf(KindNotFound, "volume %s is not attached to server %s", v.ID, r.ServerID)
	}
	// Only the boot attachment itself: an entry from before reservations
	// could attach and detach a server's own root volume like any other.
	if inst, ok := t.read().Instance(r.ServerID); ok && inst.RootVolume == v.ID && a.Device == RootDevice {
		return Errorf(KindInvalid, "Cannot detach a root device volume")
	}
	if v.Status == VolumeExtending {
		return Errorf(KindInvalid, "Invalid volume: volume %s is extending; detach it once that is done.", v.ID)
	}
	a.State = AttachDetaching
	v.Status, v.ErrorReason = VolumeDetaching, ""
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

// resettableStatuses are the statuses an administrator may force.
var resettableStatuses = map[string]bool{
	VolumeCreating: true, VolumeAvailable: true, VolumeAttaching: true, VolumeInUse: true, VolumeDetaching: true,
	VolumeExtending: true, VolumeDeleting: true, VolumeError: true, VolumeErrorDeleting: true, VolumeErrorExtending: true,
}

func applyResetVolumeStatus(t *Txn, c *Command) error {
	r, err := decode[ResetVolumeStatusCmd](c)
	if err != nil {
		return err
	}
	v, err := volumeForWrite(t, r.ID)
	if err != nil {
		return err
	}
	if r.Status != "" && !resettableStatuses[r.Status] {
		return Errorf(KindInvalid, "Invalid input received: status %q is not a volume status.", r.Status)
	}
	switch r.AttachStatus {
	case "":
	case AttachDetached:
		v.Attachments = []VolumeAttachment{}
	case AttachAttached:
		if a := v.Attachment(); a != nil {
			a.State = AttachAttached
		}
	default:
		return Errorf(KindInvalid, "Invalid input received: attach_status must be attached or detached, not %q.", r.AttachStatus)
	}
	if r.Status != "" {
		v.Status = r.Status
	}
	v.ErrorReason, v.PrevSizeGB = "", 0
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

func applyReleaseVolume(t *Txn, c *Command) error {
	r, err := decode[ReleaseVolumeCmd](c)
	if err != nil {
		return err
	}
	v, err := volumeForWrite(t, r.VolumeID)
	if err != nil {
		return err
	}
	a := v.Attachment()
	if a == nil || a.ID != r.AttachmentID {
		return nil // already released
	}
	if _, ok := t.read().Instance(a.ServerID); ok {
		return Errorf(KindConflict, "server %s still exists; detach the volume instead", a.ServerID)
	}
	releaseAttachment(v, a) // as a boot volume's (releaseRootVolume)
	v.UpdatedAt = c.Time
	return putReleased(t, v)
}

// dropAttachment removes the attachment; the volume becomes available
// unless a file operation is in flight.
func dropAttachment(v *Volume) {
	v.Attachments = []VolumeAttachment{}
	switch v.Status {
	case VolumeAttaching, VolumeInUse, VolumeDetaching:
		v.Status = VolumeAvailable
	}
}

func applyVolumeHostGone(t *Txn, c *Command) error {
	r, err := decode[VolumeHostGoneCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	if _, ok := sn.Member(r.HostID); ok {
		return Errorf(KindConflict, "host %s is still a member", r.HostID)
	}
	vols := sn.VolumesOnHost(r.HostID)
	// Each volume by its own path: the storage setting may have changed
	// since it was made.
	if slices.ContainsFunc(vols, sn.VolumeShared) {
		if _, ok := sn.Member(r.NewHostID); !ok {
			return Errorf(KindInvalid, "new host %s is not a member", r.NewHostID)
		}
	}
	for _, old := range vols {
		shared := sn.VolumeShared(old)
		v := copyVolume(old)
		v.UpdatedAt = c.Time
		switch {
		case shared && v.Status == VolumeCreating:
			v.Host = r.NewHostID
			v.Status, v.ErrorReason = VolumeError, fmt.Sprintf("host %s left the cluster while creating the volume", r.HostID)
		case shared:
			v.Host = r.NewHostID
		case v.Status == VolumeDeleting || v.Status == VolumeErrorDeleting:
			if err := t.delete(tblVolumes, old); err != nil {
				return err
			}
			continue
		default:
			v.Status = VolumeError
			v.ErrorReason = fmt.Sprintf("host %s left the cluster; the volume's file was on its local storage", r.HostID)
		}
		if err := settleBootVolume(t, c.Time, old, v); err != nil {
			return err
		}
		if err := t.insert(tblVolumes, v); err != nil {
			return err
		}
	}
	return nil
}

// applyReportVolume applies a host agent's report (ReportVolumeCmd).
// Reports from a host that does not own the operation, about unknown
// volumes or attachments, or that do not fit the current status are
// ignored: they are late or duplicate, and never an error for the agent.
//
// File reports (no AttachmentID) come from Volume.Host, or while attached
// from the attachment's host for an extend:
//   - creating → available, or error with Error as the reason; a volume
//     placed without a path takes the report's Path;
//   - extending → available (in-use while attached); error → error_extending
//     with the old size back (in-use, with the reason, while attached);
//   - deleting → deleted (the record is removed), or error_deleting.
//
// Attachment reports come from the attachment's host:
//   - attaching → attached: the volume is in-use, Device updated;
//   - attaching or detaching → detached: the attachment is dropped and the
//     volume is available;
//   - Error while attaching: the attach failed, the attachment is dropped
//     and the volume is available with the reason;
//   - Error with AttachmentState "attached" while detaching: the agent gave
//     up (the guest never released the device): the attachment is attached
//     again and the volume in-use, with the reason, so the user can retry;
//   - Error alone while detaching (what agents before the give-up sent):
//     it stays detaching with the reason, and the agent tries again.
//
// A report about an attachment whose server no longer exists drops the
// attachment.
func applyReportVolume(t *Txn, c *Command) error {
	r, err := decode[ReportVolumeCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Volume(r.VolumeID)
	if !ok {
		return nil
	}
	v := copyVolume(old)
	var changed bool
	if r.AttachmentID != "" {
		changed = reportAttachment(t, v, r)
	} else {
		var drop bool
		changed, drop = reportFile(v, r)
		if drop {
			return t.delete(tblVolumes, old)
		}
		if changed {
			if err := settleBootVolume(t, c.Time, old, v); err != nil {
				return err
			}
		}
	}
	if !changed {
		return nil
	}
	v.UpdatedAt = c.Time
	return t.insert(tblVolumes, v)
}

// reportFile applies a file report; drop means remove the record.
func reportFile(v *Volume, r *ReportVolumeCmd) (changed, drop bool) {
	owner := v.Host
	a := v.Attachment()
	if v.Status == VolumeExtending && a != nil {
		owner = a.HostID
	}
	if owner == "" || r.HostID != owner {
		return false, false
	}
	status := r.Status
	if r.Error != "" && status == "" {
		status = VolumeError
	}
	switch {
	case v.Status == VolumeCreating && status == VolumeAvailable && v.Path == "" && r.Path == "":
		v.Status, v.ErrorReason = VolumeError, "host "+r.HostID+" made the volume but did not say where"
	case v.Status == VolumeCreating && status == VolumeAvailable:
		if v.Path == "" {
			v.Path = r.Path // placed on local storage: where the host's store put it
		}
		v.Status, v.ErrorReason = VolumeAvailable, ""
	case v.Status == VolumeCreating && status == VolumeError:
		v.Status, v.ErrorReason = VolumeError, reason(r.Error, "creating the volume failed")
	case v.Status == VolumeExtending && status == VolumeAvailable:
		v.Status, v.ErrorReason, v.PrevSizeGB = statusAfterFileOp(v), "", 0
	case v.Status == VolumeExtending && status == VolumeError:
		if v.PrevSizeGB > 0 {
			v.SizeGB = v.PrevSizeGB
		}
		v.PrevSizeGB = 0
		v.ErrorReason = reason(r.Error, "extending the volume failed")
		v.Status = VolumeErrorExtending
		if a != nil {
			v.Status = VolumeInUse
		}
	case v.Status == VolumeDeleting && status == VolumeDeleted:
		return false, true
	case v.Status == VolumeDeleting && (status == VolumeErrorDeleting || status == VolumeError):
		v.Status, v.ErrorReason = VolumeErrorDeleting, reason(r.Error, "deleting the volume failed")
	default:
		return false, false
	}
	return true, false
}

// statusAfterFileOp is in-use with an attachment, available without.
func statusAfterFileOp(v *Volume) string {
	if a := v.Attachment(); a != nil && a.State == AttachAttached {
		return VolumeInUse
	}
	return VolumeAvailable
}

func reason(msg, fallback string) string {
	if msg == "" {
		return fallback
	}
	return msg
}

// reportAttachment applies an attachment report.
func reportAttachment(t *Txn, v *Volume, r *ReportVolumeCmd) bool {
	a := v.Attachment()
	if a == nil || a.ID != r.AttachmentID || a.HostID != r.HostID {
		return false
	}
	if _, ok := t.read().Instance(a.ServerID); !ok {
		dropAttachment(v)
		return true
	}
	switch {
	case r.Error != "" && a.State == AttachAttaching:
		dropAttachment(v)
		v.ErrorReason = "attaching to server " + a.ServerID + " failed: " + r.Error
	case r.Error != "" && a.State == AttachDetaching && r.AttachmentState == AttachAttached:
		a.State = AttachAttached
		v.Status = VolumeInUse
		v.ErrorReason = "detaching from server " + a.ServerID + " failed: " + r.Error
	case r.Error != "":
		v.ErrorReason = r.Error
	case r.AttachmentState == AttachAttached && a.State == AttachAttaching:
		a.State, a.AttachedAt = AttachAttached, t.Cmd.Time
		if r.Device != "" {
			a.Device = r.Device
		}
		v.Status, v.ErrorReason = VolumeInUse, ""
	case r.AttachmentState == AttachAttached && a.State == AttachAttached && r.Device != "" && r.Device != a.Device:
		a.Device = r.Device
	case r.AttachmentState == AttachDetached && (a.State == AttachDetaching || a.State == AttachAttaching):
		dropAttachment(v)
		v.ErrorReason = ""
	default:
		return false
	}
	return true
}
