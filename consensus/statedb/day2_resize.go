package statedb

// Cold resize, as Nova: the server stops, its root disk grows, it starts
// with the new flavor and waits in VERIFY_RESIZE (vm_state resized) for
// confirm (keep it) or revert (the old flavor and the root disk as it was
// before the resize). The claims of both flavors stay on the host until
// then (Instance.Claim).
//
// peerstack resizes on the server's own host only: a server's root disk
// lives on its host's local storage and moving it to another host is not
// done here, so a flavor that does not fit the host is refused.

// VM state of a resized server waiting for confirm or revert.
const VMResized = "resized"

// Task states of resize.
const (
	TaskResizePrep      = "resize_prep"
	TaskResizeReverting = "resize_reverting"
)

// Resize actions (Nova's action names).
const (
	ActionResize        = "resize"
	ActionConfirmResize = "confirmResize"
	ActionRevertResize  = "revertResize"
)

// ResizeState is a resize under way or waiting for confirm/revert.
type ResizeState struct {
	OldFlavor  Flavor `json:"old_flavor"`
	NewFlavor  Flavor `json:"new_flavor"`
	WasStopped bool   `json:"was_stopped,omitempty"` // the server was SHUTOFF: it stays off
	Confirming bool   `json:"confirming,omitempty"`  // confirmed; the host drops the old disk
}

// ResizeCmd resizes a server to FlavorID (Action resize; HostCap is its
// host's totals as gossip knows them), or confirms or reverts a resize.
type ResizeCmd struct {
	ID       string   `json:"id"`
	Action   string   `json:"action"`
	FlavorID string   `json:"flavor_id,omitempty"`
	HostCap  HostCap  `json:"host_cap"`
	By       ActionBy `json:"by"`
}

// flavorClaim is what a server of flavor f claims on its host.
func (i *Instance) flavorClaim(f Flavor) HostCap {
	disk := f.EphemeralGB + (f.SwapMB+1023)/1024
	if i.RootVolume == "" {
		disk += f.DiskGB
	}
	return HostCap{VCPUs: f.VCPUs, RAMMB: f.RAMMB, DiskGB: disk}
}

func applyResizeServer(t *Txn, c *Command) error {
	r, err := decode[ResizeCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	if err := checkDay2Action(inst, r.Action, r.By); err != nil {
		return err
	}
	cp := *inst
	finished := false
	switch r.Action {
	case ActionResize:
		if inst.VMState != VMActive && inst.VMState != VMStopped {
			return vmStateConflict(r.Action, inst)
		}
		f, ok := t.read().Flavor(r.FlavorID)
		if !ok {
			return Errorf(KindInvalid, "Flavor %s could not be found.", r.FlavorID)
		}
		old := inst.Flavor
		switch {
		case f.ID == old.ID:
			return Errorf(KindInvalid, "When resizing, instances must change flavor!")
		case inst.RootVolume == "" && f.DiskGB < old.DiskGB:
			return Errorf(KindInvalid, "Resize error: Unable to resize disk down.")
		case f.EphemeralGB < old.EphemeralGB:
			return Errorf(KindInvalid, "Resize error: Unable to resize ephemeral disk down.")
		}
		// The project's usage counts the new flavor from now on.
		if err := checkQuota(t, inst.ProjectID, "", charge{QuotaCores, int64(f.VCPUs - old.VCPUs)},
			charge{QuotaRAM, int64(f.RAMMB - old.RAMMB)}); err != nil {
			return err
		}
		var ratios Ratios
		if cfg, ok := t.read().Cluster(); ok {
			ratios = cfg.Settings.Ratios
		}
		if !Fits(r.HostCap, t.read().ClaimsOn(inst.Host), inst.flavorClaim(*f), ratios) {
			return Errorf(KindInvalid, "%s The server's host cannot hold flavor %s next to %s until the resize is confirmed; "+
				"resizing to another host is not supported.", NoValidHost, f.Name, old.Name)
		}
		nf := *f
		nf.Projects = nil
		cp.Resize = &ResizeState{OldFlavor: old, NewFlavor: nf, WasStopped: inst.VMState == VMStopped}
		cp.Flavor, cp.TaskState = nf, TaskResizePrep
	case ActionConfirmResize, ActionRevertResize:
		if inst.VMState != VMResized || inst.Resize == nil || inst.Resize.Confirming {
			return vmStateConflict(r.Action, inst)
		}
		rs := *inst.Resize
		if r.Action == ActionConfirmResize {
			rs.Confirming, finished = true, true
		} else {
			cp.Flavor, cp.TaskState = rs.OldFlavor, TaskResizeReverting
		}
		cp.Resize = &rs
	default:
		return Errorf(KindInvalid, "unknown resize action %q", r.Action)
	}
	cp.UpdatedAt = c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, r.Action, r.By, finished)
}

// resizeReported updates the resize of an instance an agent report moves
// out of it: a revert or confirm carried out ends the resize; a resize
// that failed (ERROR) returns to the old flavor's claim.
func resizeReported(before, after *Instance) {
	rs := before.Resize
	if rs == nil || after.TaskState != "" {
		return
	}
	switch {
	case before.TaskState == TaskResizeReverting && after.VMState != VMResized,
		rs.Confirming && after.VMState != VMResized:
		after.Resize = nil
	case before.TaskState == TaskResizePrep && after.VMState == VMError:
		after.Flavor, after.Resize = rs.OldFlavor, nil
	}
}
