package statedb

import (
	"strings"
	"time"
)

// Host failure: what the leader concluded about each host's liveness, and
// the commands that move servers off a fenced host (docs/ha.md). Commands
// 8-12 and 66-69.

const (
	tblHostHealth  = "host_health"
	tblEvacuations = "evacuations"
)

var hostFailTables = []table{
	idTable(tblHostHealth, func() any { return &HostHealth{} }),
	idTable(tblEvacuations, func() any { return &Evacuation{} }, "Host"),
}

// HAMetadataKey is the server metadata key that opts a server out of
// automatic restart elsewhere: "false" (or "no", "off", "0") turns it off.
const HAMetadataKey = "peerstack:ha"

// DefaultFenceTimeout is T_fence when Settings.FenceTimeout is 0: a host
// that has had no quorum contact for this long kills its HA servers' VMs.
const DefaultFenceTimeout = 10 * time.Second

// HostHealth is the leader's verdict on one host, counted on the leader's
// own monotonic clock. Down: silent for longer than the down delay (the
// compute service shows "down"). Fenced: silent for longer than T_fence
// plus the margin, so the host has killed its HA VMs by itself and its
// servers may run elsewhere. A record with neither is removed.
type HostHealth struct {
	ID        string    `json:"id"` // member id
	Down      bool      `json:"down"`
	DownSince time.Time `json:"down_since,omitempty"` // proposer time of the first down verdict
	Fenced    bool      `json:"fenced,omitempty"`
	FencedAt  time.Time `json:"fenced_at,omitempty"`
	// Draining: the host itself stopped its VMs to leave the cluster
	// (`peerstack leave --evacuate`); it counts as fenced, and only the
	// host clears it.
	Draining bool `json:"draining,omitempty"`
}

// Evacuation is an admin's request (Nova's evacuate) to restart a server
// of a down host elsewhere; the leader carries it out once the host is
// fenced.
type Evacuation struct {
	ID          string    `json:"id"` // instance id
	Host        string    `json:"host"`
	TargetHost  string    `json:"target_host,omitempty"` // member id; "" = the scheduler chooses
	RequestedAt time.Time `json:"requested_at"`
	By          ActionBy  `json:"by"`
}

// HostHealth returns the leader's verdict on a host; a host without a
// record is up.
func (sn *Snapshot) HostHealth(id string) (*HostHealth, bool) {
	return get[HostHealth](sn, tblHostHealth, id)
}

// HostDown reports whether the leader declared the host down.
func (sn *Snapshot) HostDown(id string) bool {
	h, ok := sn.HostHealth(id)
	return ok && h.Down
}

// HostFenced reports whether the leader declared the host fenced.
func (sn *Snapshot) HostFenced(id string) bool {
	h, ok := sn.HostHealth(id)
	return ok && h.Fenced
}

// HostHealths lists every verdict.
func (sn *Snapshot) HostHealths() []*HostHealth { return list[HostHealth](sn, tblHostHealth) }

// Evacuation returns the pending evacuation of an instance.
func (sn *Snapshot) Evacuation(id string) (*Evacuation, bool) {
	return get[Evacuation](sn, tblEvacuations, id)
}

// Evacuations lists the pending evacuations.
func (sn *Snapshot) Evacuations() []*Evacuation { return list[Evacuation](sn, tblEvacuations) }

// EffectiveFenceTimeout is FenceTimeout, or DefaultFenceTimeout when unset.
func (s *Settings) EffectiveFenceTimeout() time.Duration {
	if s.FenceTimeout > 0 {
		return s.FenceTimeout
	}
	return DefaultFenceTimeout
}

// FenceMargin is what the leader waits beyond T_fence before it restarts
// a silent host's servers elsewhere: 2 s plus 5 % of T_fence, which covers
// a clock-rate error between the two hosts' monotonic clocks, the fence's
// own polling period and a deposed leader's lease.
func FenceMargin(tFence time.Duration) time.Duration { return 2*time.Second + tFence/20 }

// HAOptOut reports whether the server's metadata turns automatic restart
// elsewhere off.
func HAOptOut(inst *Instance) bool {
	switch strings.ToLower(strings.TrimSpace(inst.Metadata[HAMetadataKey])) {
	case "false", "no", "off", "0":
		return true
	}
	return false
}

// LocalDisks returns why a server has a disk that lives on its host and
// so cannot run elsewhere without losing it ("" = every disk is on shared
// storage): a root overlay over an image, a flavor's ephemeral or swap
// disk, a volume on local storage.
func (sn *Snapshot) LocalDisks(inst *Instance) string {
	if inst.RootVolume == "" {
		return "its root disk is an overlay on the host's local disk"
	}
	if inst.Flavor.EphemeralGB > 0 || inst.Flavor.SwapMB > 0 {
		return "its flavor has an ephemeral or swap disk on the host's local disk"
	}
	vols := sn.VolumesAttachedTo(inst.ID)
	ids := map[string]bool{}
	for _, v := range vols {
		ids[v.ID] = true
		if !sn.VolumeShared(v) {
			return "volume " + v.ID + " is on the host's local storage"
		}
	}
	if !ids[inst.RootVolume] {
		if v, ok := sn.Volume(inst.RootVolume); !ok || !sn.VolumeShared(v) {
			return "its boot volume is not on shared storage"
		}
	}
	return ""
}

// HA reports whether the server is restarted elsewhere when its host
// fails: HA is not off for the cluster, the server did not opt out, and
// every disk is on shared storage.
func (sn *Snapshot) HA(inst *Instance) bool {
	if cfg, ok := sn.Cluster(); ok && cfg.Settings.HADisabled {
		return false
	}
	return !HAOptOut(inst) && sn.LocalDisks(inst) == ""
}

// SetHostHealthCmd is the leader's verdict on a host (CmdSetHostHealth).
// Up (Down false) removes the record.
type SetHostHealthCmd struct {
	ID     string `json:"id"`
	Down   bool   `json:"down"`
	Fenced bool   `json:"fenced,omitempty"` // needs Down
	// Draining is the host's own word that its VMs are stopped (it
	// implies Down and Fenced).
	Draining bool `json:"draining,omitempty"`
}

func applySetHostHealth(t *Txn, c *Command) error {
	r, err := decode[SetHostHealthCmd](c)
	if err != nil {
		return err
	}
	sn := t.read()
	old, had := sn.HostHealth(r.ID)
	if r.Draining {
		r.Down, r.Fenced = true, true
	}
	if !r.Down {
		if !had {
			return nil
		}
		// The host is back before it was fenced: evacuations of its
		// servers are void, the servers run there.
		for _, ev := range listBy[Evacuation](sn, tblEvacuations, "Host", r.ID) {
			if err := t.delete(tblEvacuations, ev); err != nil {
				return err
			}
			if inst, ok := sn.Instance(ev.ID); ok && inst.TaskState == TaskRebuilding {
				cp := *inst
				cp.TaskState, cp.UpdatedAt = "", c.Time
				if cp.SnapshotImage != "" {
					// The snapshot the evacuation interrupted goes on
					// (or is killed) on the host that is back.
					cp.TaskState = TaskImageSnapshot
				}
				if err := t.insert(tblInstances, &cp); err != nil {
					return err
				}
			}
		}
		return t.delete(tblHostHealth, old)
	}
	if _, ok := sn.Member(r.ID); !ok {
		return Errorf(KindNotFound, "host %s not found", r.ID)
	}
	h := &HostHealth{ID: r.ID, Down: true, DownSince: c.Time}
	if had {
		cp := *old
		h = &cp
	}
	if r.Fenced && !h.Fenced {
		h.Fenced, h.FencedAt = true, c.Time
	}
	h.Draining = h.Draining || r.Draining
	return t.insert(tblHostHealth, h)
}

// EvacuateCmd asks for a server of a down host to be restarted elsewhere
// (CmdEvacuateInstance); TargetHost "" lets the scheduler choose.
type EvacuateCmd struct {
	ID         string   `json:"id"`
	TargetHost string   `json:"target_host,omitempty"`
	By         ActionBy `json:"by,omitempty"`
}

func applyEvacuateInstance(t *Txn, c *Command) error {
	r, err := decode[EvacuateCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	sn := t.read()
	switch {
	case inst.Locked && !r.By.Admin:
		return LockedError(inst.ID)
	case inst.Desired == DesiredDeleted:
		return Errorf(KindConflict, "Cannot 'evacuate' instance %s while it is in task_state %s", inst.ID, TaskDeleting)
	case inst.Host == "":
		return Errorf(KindConflict, "Cannot 'evacuate' instance %s: it is not placed on a host", inst.ID)
	case !sn.HostDown(inst.Host):
		return Errorf(KindConflict, "Compute service of host %s is still in use.", hostName(sn, inst.Host))
	case r.TargetHost == inst.Host:
		return Errorf(KindInvalid, "The target host can't be the same one.")
	}
	if r.TargetHost != "" {
		if _, ok := sn.Member(r.TargetHost); !ok {
			return Errorf(KindNotFound, "Compute host %s could not be found.", r.TargetHost)
		}
	}
	if _, ok := sn.Evacuation(inst.ID); ok {
		return Errorf(KindConflict, "Cannot 'evacuate' instance %s while it is in task_state %s", inst.ID, TaskRebuilding)
	}
	ev := &Evacuation{ID: inst.ID, Host: inst.Host, TargetHost: r.TargetHost, RequestedAt: c.Time, By: r.By}
	if err := t.insert(tblEvacuations, ev); err != nil {
		return err
	}
	cp := *inst
	cp.TaskState, cp.UpdatedAt = TaskRebuilding, c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, "evacuate", r.By, false)
}

// TaskRebuilding is Nova's task state of a server being evacuated.
const TaskRebuilding = "rebuilding"

func hostName(sn *Snapshot, id string) string {
	if m, ok := sn.Member(id); ok {
		return m.Name
	}
	return id
}

// FailoverCmd is the leader's decision for the servers of a fenced host
// (CmdFailoverInstances): Moves restart servers on other hosts (through
// the placement rule, which apply checks again), Stranded stay on the
// failed host in ERROR with a fault saying why, Deleted finish a delete
// that waited for the host (Nova's local delete).
type FailoverCmd struct {
	From     string             `json:"from"`
	Moves    []PlacementRec     `json:"moves,omitempty"`
	Stranded []PlacementFailure `json:"stranded,omitempty"`
	Deleted  []string           `json:"deleted,omitempty"`
	HostCaps map[string]HostCap `json:"host_caps,omitempty"`
	Ratios   Ratios             `json:"ratios"`
}

func applyFailoverInstances(t *Txn, c *Command) error {
	r, err := decode[FailoverCmd](c)
	if err != nil {
		return err
	}
	if !t.read().HostFenced(r.From) {
		return Errorf(KindConflict, "host %s is not fenced: its servers may still run there", r.From)
	}
	used := map[string]HostCap{}
	for _, id := range r.Deleted {
		inst, ok := t.read().Instance(id)
		if !ok || inst.Host != r.From || inst.Desired != DesiredDeleted {
			continue
		}
		if err := removeInstance(t, c.Time, inst); err != nil {
			return err
		}
	}
	for _, mv := range r.Moves {
		sn := t.read()
		inst, ok := sn.Instance(mv.InstanceID)
		if !ok || inst.Host != r.From || inst.Desired == DesiredDeleted || mv.HostID == r.From {
			continue // moved, deleted or stale
		}
		total, ok := r.HostCaps[mv.HostID]
		if !ok {
			continue
		}
		if m, ok := sn.Member(mv.HostID); !ok || m.Disabled || sn.HostDown(mv.HostID) {
			continue
		}
		u, ok := used[mv.HostID]
		if !ok {
			u = sn.ClaimsOn(mv.HostID)
		}
		need := inst.Claim()
		if cons := sn.PlacementConstraints(inst, nil); !Fits(total, u, need, r.Ratios) || !cons.Allows(mv.HostID) {
			continue // the leader tries again next round
		}
		used[mv.HostID] = u.Add(need)
		if err := moveInstance(t, c, inst, mv.HostID); err != nil {
			return err
		}
	}
	for _, f := range r.Stranded {
		inst, ok := t.read().Instance(f.InstanceID)
		if !ok || inst.Host != r.From || inst.Desired == DesiredDeleted {
			continue
		}
		if inst.VMState == VMError && inst.Fault != nil && inst.Fault.Message == f.Reason {
			continue
		}
		cp := *inst
		cp.VMState, cp.TaskState, cp.PowerState, cp.UpdatedAt = VMError, "", PowerNoState, c.Time
		cp.Fault = &Fault{Code: 500, Message: f.Reason, Details: "host " + hostName(t.read(), r.From) + " failed", Created: c.Time}
		if err := killSnapshot(t, c, &cp); err != nil {
			return err
		}
		if err := t.insert(tblInstances, &cp); err != nil {
			return err
		}
		if ev, ok := t.read().Evacuation(inst.ID); ok {
			if err := t.delete(tblEvacuations, ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// killSnapshot ends the snapshot of cp that died with its host: the image
// being made is killed, the server no longer names it and its createImage
// action ends with an error.
func killSnapshot(t *Txn, c *Command, cp *Instance) error {
	snapshot := cp.SnapshotImage
	if snapshot == "" {
		return nil
	}
	cp.SnapshotImage = ""
	if img, ok := t.read().Image(snapshot); ok && (img.Status == ImageQueued || img.Status == ImageSaving) {
		ki := copyImage(img)
		ki.Status, ki.UploadHost, ki.UpdatedAt = ImageKilled, "", c.Time
		if err := t.insert(tblImages, ki); err != nil {
			return err
		}
	}
	return finishNamedAction(t, c.Time, cp, ActionCreateImage, "the server's host failed during the snapshot")
}

// moveInstance restarts inst on host: its claim moves (Host), its ports
// and volume attachments follow, and the action log says why.
func moveInstance(t *Txn, c *Command, inst *Instance, host string) error {
	from := hostName(t.read(), inst.Host)
	action, by := "evacuate", ActionBy{}
	ev, requested := t.read().Evacuation(inst.ID)
	if requested {
		by = ev.By
		if err := t.delete(tblEvacuations, ev); err != nil {
			return err
		}
	}
	cp := *inst
	cp.Host, cp.UpdatedAt = host, c.Time
	cp.RebootSeq, cp.RebootDone = max(cp.RebootSeq, cp.RebootDone), max(cp.RebootSeq, cp.RebootDone)
	// Day-2 work under way died with the host: a resize ends on the
	// flavor the server had when it was done (the old one if it was still
	// being prepared), a rescue ends (the server boots its own disk), and
	// a snapshot being taken is killed; nothing stays in VERIFY_RESIZE or
	// queued.
	if rs := inst.Resize; rs != nil {
		if inst.TaskState == TaskResizePrep {
			cp.Flavor = rs.OldFlavor
		}
		cp.Resize = nil
	}
	cp.RescueImage = ""
	if err := killSnapshot(t, c, &cp); err != nil {
		return err
	}
	switch inst.Desired {
	case DesiredStopped:
		cp.VMState, cp.TaskState, cp.PowerState = VMStopped, "", PowerShutdown
	default:
		// Paused or suspended memory died with the host: the server boots.
		cp.Desired, cp.VMState, cp.TaskState, cp.PowerState = DesiredRunning, VMBuilding, TaskSpawning, PowerNoState
	}
	why := "restarted on host " + hostName(t.read(), host) + " after host " + from + " failed"
	if requested {
		why = "evacuated from host " + from + " to host " + hostName(t.read(), host)
	}
	cp.Fault = &Fault{Code: 500, Message: why, Created: c.Time}
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	if err := bindPorts(t, c.Time, inst.ID, host); err != nil {
		return err
	}
	for _, v := range t.read().VolumesAttachedTo(inst.ID) {
		nv := copyVolume(v)
		changed := false
		for k := range nv.Attachments {
			if nv.Attachments[k].ServerID == inst.ID && nv.Attachments[k].HostID != host {
				nv.Attachments[k].HostID, changed = host, true
			}
		}
		if changed {
			nv.UpdatedAt = c.Time
			if err := t.insert(tblVolumes, nv); err != nil {
				return err
			}
		}
	}
	if !requested {
		by = ActionBy{Admin: true}
	}
	// One command moves many servers: each action needs its own id.
	per := *c
	if per.ReqID != "" {
		per.ReqID += "-" + inst.ID
	}
	return recordAction(t, &per, &cp, action, by, false)
}

// Bounds of Settings.FenceTimeout.
const (
	MinFenceTimeout = 2 * time.Second
	MaxFenceTimeout = 10 * time.Minute
)

func checkHASettings(r *UpdateSettingsCmd) error {
	if d := r.FenceTimeout; d != nil && *d != 0 && (*d < MinFenceTimeout || *d > MaxFenceTimeout) {
		return Errorf(KindInvalid, "fence_timeout must be between %s and %s (0 = the default %s), not %s",
			MinFenceTimeout, MaxFenceTimeout, DefaultFenceTimeout, *d)
	}
	return nil
}

// setHASettings applies the HA keys of a settings patch. Carried by
// CmdUpdateHASettings, a new fence timeout keeps the bound (fencetimeout.go);
// an UpdateSettings entry written before that command existed replays as
// it applied then: a plain assignment.
func setHASettings(s *Settings, r *UpdateSettingsCmd, bounded bool) {
	switch {
	case r.FenceTimeout != nil && bounded:
		setFenceTimeout(s, *r.FenceTimeout)
	case r.FenceTimeout != nil:
		s.FenceTimeout = *r.FenceTimeout
	}
	if r.HADisabled != nil {
		s.HADisabled = *r.HADisabled
	}
}
