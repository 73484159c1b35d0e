package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// instOp is what the instance reconciler does to one instance.
type instOp string

const (
	opStart  instOp = "start"  // prepare (image, root disk, config drive) and boot
	opStop   instOp = "stop"   // shut down
	opReboot instOp = "reboot" // reboot a running VM
	opDelete instOp = "delete" // remove the VM and its files, report gone
	opReport instOp = "report" // only tell the state what the host shows

	opPause   instOp = "pause"   // freeze a running VM (pause.go)
	opUnpause instOp = "unpause" // thaw a paused VM
	opSuspend instOp = "suspend" // save a VM's memory and end its process
)

// instAction is one step of the instance diff.
type instAction struct {
	Op     instOp
	Inst   *statedb.Instance
	Hard   bool                      // opReboot
	Report statedb.ReportInstanceCmd // what to report (after Op succeeds)
	Why    string                    // for logs
}

// diffInstances compares the instances placed on host with the VMs the
// hypervisor reports and returns what to do, in instance id order. It is
// pure.
//
// Rules (Nova semantics):
//   - Desired deleted: delete the VM, or report gone when there is none.
//   - Desired stopped: stop a running VM; otherwise report stopped.
//   - Desired running with a reboot pending (RebootSeq > RebootDone):
//     reboot a running VM, start a stopped one.
//   - Desired running: report a running VM active. Start a VM that does
//     not run only when the state asks for a (re)start: a new instance
//     (vm_state building) or a start request (task_state powering-on).
//     A VM that stopped on its own (guest power-off, killed) is reported
//     stopped and not restarted, as Nova's power-state sync does.
func diffInstances(host string, insts []*statedb.Instance, actual map[string]VMStatus) []instAction {
	sorted := slices.Clone(insts)
	slices.SortFunc(sorted, func(a, b *statedb.Instance) int { return strings.Compare(a.ID, b.ID) })
	var out []instAction
	for _, inst := range sorted {
		if inst.Host != host {
			continue
		}
		st, ok := actual[inst.ID]
		if !ok {
			st = VMStatus{ID: inst.ID, State: VMMissing}
		}
		running := st.State == VMRunning || st.State == VMPaused
		rebootDue := inst.RebootSeq > inst.RebootDone
		if acts, ok := diffDay2(host, inst, st); ok {
			out = append(out, acts...)
			continue
		}
		rep := baseReport(host, inst)
		act := func(op instOp, why string) {
			out = append(out, instAction{Op: op, Inst: inst, Report: rep, Why: why})
		}
		switch inst.Desired {
		case statedb.DesiredDeleted:
			rep.VMState, rep.PowerState, rep.Gone = statedb.VMDeleted, statedb.PowerNoState, true
			if st.State == VMMissing {
				act(opReport, "deleted, nothing left on the host")
			} else {
				act(opDelete, "desired deleted")
			}
		case statedb.DesiredStopped:
			rep.VMState, rep.PowerState = statedb.VMStopped, statedb.PowerShutdown
			if rebootDue {
				rep.RebootDone = inst.RebootSeq // a reboot of a server being stopped is moot
			}
			switch {
			case running:
				act(opStop, "desired stopped")
			case inst.VMState == statedb.VMError && inst.TaskState == "":
				// stays in error until someone acts on it
			case needsReport(inst, rep):
				act(opReport, "not running")
			}
		case statedb.DesiredPaused:
			rep.VMState, rep.PowerState = statedb.VMPaused, statedb.PowerPaused
			switch {
			case st.State == VMRunning:
				act(opPause, "pause requested")
			case st.State == VMPaused:
				if needsReport(inst, rep) {
					act(opReport, "paused")
				}
			default:
				rep.VMState, rep.PowerState = statedb.VMStopped, statedb.PowerShutdown
				if needsReport(inst, rep) {
					act(opReport, "paused server stopped outside the agent")
				}
			}
		case statedb.DesiredSuspended:
			rep.VMState, rep.PowerState = statedb.VMSuspended, statedb.PowerSuspended
			switch {
			case running:
				act(opSuspend, "suspend requested")
			case needsReport(inst, rep):
				act(opReport, "suspended")
			}
		default: // running
			switch {
			case st.State == VMPaused && inst.TaskState == statedb.TaskUnpausing:
				rep.VMState, rep.PowerState = statedb.VMActive, statedb.PowerRunning
				act(opUnpause, "unpause requested")
			case rebootDue && running:
				rep.VMState, rep.PowerState, rep.RebootDone = statedb.VMActive, statedb.PowerRunning, inst.RebootSeq
				out = append(out, instAction{Op: opReboot, Inst: inst, Hard: inst.RebootHard, Report: rep, Why: "reboot requested"})
			case rebootDue:
				rep.VMState, rep.PowerState, rep.RebootDone = statedb.VMActive, statedb.PowerRunning, inst.RebootSeq
				act(opStart, "reboot of a server that does not run")
			case running:
				rep.VMState, rep.PowerState = statedb.VMActive, statedb.PowerRunning
				if needsReport(inst, rep) {
					act(opReport, "running")
				}
			case inst.VMState == statedb.VMBuilding || inst.TaskState == statedb.TaskPoweringOn || inst.TaskState == statedb.TaskResuming:
				rep.VMState, rep.PowerState = statedb.VMActive, statedb.PowerRunning
				why := "new server"
				switch inst.TaskState {
				case statedb.TaskPoweringOn:
					why = "start requested"
				case statedb.TaskResuming:
					why = "resume requested"
				}
				act(opStart, why)
			case inst.VMState == statedb.VMError:
				// a failed server is not retried on its own
			default:
				rep.VMState, rep.PowerState = statedb.VMStopped, statedb.PowerShutdown
				if needsReport(inst, rep) {
					why := "stopped outside the agent"
					if st.Reason != "" {
						why += ": " + st.Reason
					}
					act(opReport, why)
				}
			}
		}
	}
	return out
}

// baseReport is a report that keeps what the state has.
func baseReport(host string, inst *statedb.Instance) statedb.ReportInstanceCmd {
	return statedb.ReportInstanceCmd{
		InstanceID: inst.ID, HostID: host, VMState: inst.VMState, PowerState: inst.PowerState,
		RebootDone: inst.RebootDone, LaunchedAt: inst.LaunchedAt,
	}
}

// needsReport tells whether the state differs from what rep says.
func needsReport(inst *statedb.Instance, rep statedb.ReportInstanceCmd) bool {
	return inst.VMState != rep.VMState || inst.PowerState != rep.PowerState || inst.TaskState != rep.TaskState ||
		inst.RebootDone < rep.RebootDone || (rep.VMState != statedb.VMError && inst.Fault != nil)
}

// syncInstances diffs the VMs against the state and launches the
// operations.
func (a *Agent) syncInstances(ctx context.Context, sn *statedb.Snapshot, actual map[string]VMStatus, net netReadiness, seen uint64) {
	insts := sn.InstancesOnHost(a.cfg.HostID)
	a.noteOrphans(insts, actual)
	insts, moved := a.fenceView(sn, insts, actual)
	a.removeMoved(ctx, seen, moved)
	for _, act := range diffInstances(a.cfg.HostID, insts, actual) {
		act := act
		id := act.Inst.ID
		var op func(ctx context.Context) error
		switch act.Op {
		case opReport:
			if act.Report.VMState == statedb.VMStopped && actual[id].Reason == "" {
				a.mu.Lock()
				if why := a.exitWhy[id]; why != "" {
					act.Why += ": " + why
				}
				a.mu.Unlock()
			}
			op = func(ctx context.Context) error { return a.reportInstance(ctx, act.Report, act.Why) }
		case opStart:
			plan := a.planStart(sn, act.Inst, net)
			if plan.wait {
				continue // the next network sync plumbs its ports, or its boot volume gets made
			}
			op = func(ctx context.Context) error { return a.start(ctx, act, plan, actual[id]) }
		case opStop:
			op = func(ctx context.Context) error { return a.stop(ctx, act) }
		case opReboot:
			op = func(ctx context.Context) error { return a.reboot(ctx, act) }
		case opDelete:
			op = func(ctx context.Context) error { return a.delete(ctx, act) }
		case opPause, opUnpause, opSuspend:
			op = func(ctx context.Context) error { return a.pauseOp(ctx, act) }
		case opRescue, opUnrescue:
			op = func(ctx context.Context) error { return a.rescueOp(ctx, act) }
		case opSnapshot:
			op = func(ctx context.Context) error { return a.snapshotOp(ctx, act) }
		case opResize, opRevertResize:
			plan := a.planStart(sn, act.Inst, net)
			if plan.wait {
				continue
			}
			op = func(ctx context.Context) error { return a.resizeOp(ctx, act, plan) }
		case opConfirmResize:
			op = func(ctx context.Context) error { return a.confirmResizeOp(ctx, act) }
		}
		if op == nil {
			continue
		}
		a.launch(ctx, seen, string(act.Op), []string{id}, op)
	}
}

// noteOrphans logs, once each, VMs on this host that no instance placed
// here explains. They are left alone: the local state may still be
// catching up after a restart, and killing a VM is not undoable.
func (a *Agent) noteOrphans(insts []*statedb.Instance, actual map[string]VMStatus) {
	placed := make(map[string]bool, len(insts))
	for _, i := range insts {
		placed[i.ID] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, st := range actual {
		if !placed[id] && !a.orphans[id] {
			a.orphans[id] = true
			a.log.Warn("vm on this host belongs to no instance placed here; leaving it alone", "instance", id, "state", st.State)
		}
	}
}

// reportInstance sends an instance report, filling LaunchedAt on the first
// report of a running server.
func (a *Agent) reportInstance(ctx context.Context, rep statedb.ReportInstanceCmd, why string) error {
	if rep.VMState == statedb.VMActive && rep.LaunchedAt.IsZero() {
		rep.LaunchedAt = a.cfg.Now().UTC()
	}
	if rep.Fault == nil || rep.Gone {
		a.log.Info("instance report", "instance", rep.InstanceID, "vm_state", rep.VMState, "power", rep.PowerState, "why", why)
	}
	return a.report(ctx, statedb.CmdReportInstance, rep)
}

// reportFailure reports an instance as ERROR with the cause as its fault.
// Nothing is reported when ctx ended (the daemon stops; the next agent
// retries).
func (a *Agent) reportFailure(ctx context.Context, rep statedb.ReportInstanceCmd, what string, cause error) {
	if ctx.Err() != nil {
		return
	}
	a.log.Error("instance operation failed", "instance", rep.InstanceID, "op", what, "err", cause)
	rep.VMState, rep.PowerState = statedb.VMError, statedb.PowerNoState
	rep.Gone = false
	msg := cause.Error()
	if len(msg) > 255 {
		msg = msg[:252] + "..."
	}
	rep.Fault = &statedb.Fault{Code: 500, Message: msg, Details: fmt.Sprintf("%s failed on host %s: %v", what, a.cfg.HostID, cause),
		Created: a.cfg.Now().UTC()}
	_ = a.report(ctx, statedb.CmdReportInstance, rep)
}

// startPlan is what a start needs from the snapshot, computed when the
// operation is planned so the operation itself reads no state.
type startPlan struct {
	spec VMSpec      // without Root and ConfigDrive
	cd   ConfigDrive // content of the config drive
	root *Disk       // boot volume; nil: an overlay over the image
	err  error       // the plan itself failed (bad user data, missing volume...)
	wait bool        // networking or the boot volume is not ready yet: try again later
	warn string      // logged at start
	inst *statedb.Instance
}

// planStart gathers the VM spec, config drive and disks of inst.
func (a *Agent) planStart(sn *statedb.Snapshot, inst *statedb.Instance, net netReadiness) startPlan {
	p := startPlan{inst: inst, spec: VMSpec{ID: inst.ID, Name: inst.Name, VCPUs: inst.Flavor.VCPUs, RAMMB: inst.Flavor.RAMMB}}
	ports := instancePorts(sn, inst)
	if len(ports) < len(inst.PortIDs) {
		p.err = fmt.Errorf("server %s: %d of its %d ports are missing", inst.ID, len(inst.PortIDs)-len(ports), len(inst.PortIDs))
		return p
	}
	switch {
	case len(ports) == 0:
	case net.disabled:
		p.warn = fmt.Sprintf("tenant networking is disabled on this host: the server starts without its %d NICs", len(ports))
	case net.err != nil:
		p.err = fmt.Errorf("server %s: %w", inst.ID, net.err)
		return p
	default:
		for _, port := range ports {
			// Refused fails only a server being built: one that ran
			// before (a host restart, a start) keeps its state and waits
			// for the port, as for a port not plumbed yet.
			if why, ok := net.refused[port.ID]; ok && inst.VMState == statedb.VMBuilding {
				p.err = fmt.Errorf("server %s: port %s cannot be plumbed on host %s: %s", inst.ID, port.ID, a.cfg.HostID, why)
				return p
			}
			if !net.plumbed[port.ID] {
				p.wait = true
				return p
			}
			p.spec.NICs = append(p.spec.NICs, NIC{PortID: port.ID, Tap: a.cfg.Network.TapName(port.ID), MAC: port.MAC})
		}
	}
	if inst.RootVolume != "" {
		v, ok := sn.Volume(inst.RootVolume)
		switch {
		case !ok:
			p.err = fmt.Errorf("server %s: boot volume %s not found", inst.ID, inst.RootVolume)
			return p
		case v.Status == statedb.VolumeCreating:
			p.wait = true // made from its image on the volume's host first
			return p
		case v.Status != statedb.VolumeInUse && v.Status != statedb.VolumeAvailable && v.Status != statedb.VolumeExtending:
			p.err = fmt.Errorf("server %s: boot volume %s is %s: %s", inst.ID, v.ID, v.Status, reasonOr(v.ErrorReason, "not usable"))
			return p
		}
		p.root = &Disk{ID: v.ID, Path: v.Path, Format: v.Format}
	} else if inst.ImageID == "" {
		p.err = fmt.Errorf("server %s has neither an image nor a boot volume", inst.ID)
		return p
	}
	for _, v := range sn.VolumesAttachedTo(inst.ID) {
		if att := v.Attachment(); att != nil && att.State == statedb.AttachAttached && v.ID != inst.RootVolume {
			p.spec.ExtraDisks = append(p.spec.ExtraDisks, Disk{ID: v.ID, Path: v.Path, Format: v.Format})
		}
	}
	slices.SortFunc(p.spec.ExtraDisks, func(a, b Disk) int { return strings.Compare(a.ID, b.ID) })
	tap := func(id string) string { return "tap" + compactID(id, 11) }
	if a.cfg.Network != nil {
		tap = a.cfg.Network.TapName
	}
	p.cd, p.err = buildConfigDrive(sn, inst, ports, tap)
	return p
}

// instancePorts returns the ports of inst in its NIC order.
func instancePorts(sn *statedb.Snapshot, inst *statedb.Instance) []*statedb.Port {
	var out []*statedb.Port
	for _, id := range inst.PortIDs {
		if p, ok := sn.Port(id); ok {
			out = append(out, p)
		}
	}
	return out
}

// start prepares and boots a VM: image, root overlay, the flavor's
// ephemeral disk, config drive, then the hypervisor start; each step
// registers its undo as it succeeds. On failure everything this start
// created is removed and the server is reported ERROR with the cause.
func (a *Agent) start(ctx context.Context, act instAction, plan startPlan, before VMStatus) (err error) {
	id := act.Inst.ID
	if plan.warn != "" {
		a.log.Warn(plan.warn, "instance", id)
	}
	var undo revert
	defer func() {
		if err != nil {
			if errors.Is(err, ErrAlreadyRunning) {
				return
			}
			undo.run()
			a.reportFailure(ctx, act.Report, "start", err)
		}
	}()
	if plan.err != nil {
		return plan.err
	}
	fresh := before.State == VMMissing || before.State == ""
	// Anything created for a VM new on this host goes with one Delete.
	undoFresh := func() {
		if !fresh {
			return
		}
		fresh = false
		undo.add(func() {
			cctx, cancel := cleanupCtx(ctx)
			defer cancel()
			if err := a.cfg.Hypervisor.Delete(cctx, id); err != nil {
				a.log.Error("undo start: delete vm files", "instance", id, "err", err)
			}
		})
	}
	spec := plan.spec
	if plan.root != nil {
		spec.Root = *plan.root
	} else {
		if a.cfg.Images == nil {
			return fmt.Errorf("image %s: %w", act.Inst.ImageID, ErrNoImages)
		}
		path, format, release, err := a.cfg.Images.Image(ctx, act.Inst.ImageID)
		if err != nil {
			return fmt.Errorf("image %s: %w", act.Inst.ImageID, err)
		}
		root, err := a.cfg.Hypervisor.CreateRootDisk(ctx, id, Disk{Path: path, Format: format}, act.Inst.Flavor.DiskGB)
		release()
		if err != nil {
			undoFresh() // a half-created overlay
			return fmt.Errorf("root disk: %w", err)
		}
		undoFresh()
		spec.Root = root
	}
	if gb := act.Inst.Flavor.EphemeralGB; gb > 0 {
		eh, ok := a.cfg.Hypervisor.(EphemeralDisker)
		if !ok {
			a.log.Warn("this hypervisor has no ephemeral disks: the server starts without its flavor's ephemeral disk",
				"instance", id, "ephemeral_gb", gb)
		} else {
			eph, err := eh.CreateEphemeralDisk(ctx, id, gb)
			if err != nil {
				undoFresh() // a half-created disk
				return fmt.Errorf("ephemeral disk: %w", err)
			}
			undoFresh()
			spec.Ephemeral = &eph
		}
	}
	cdPath, err := a.cfg.Hypervisor.WriteConfigDrive(ctx, id, plan.cd)
	if err != nil {
		undoFresh()
		return fmt.Errorf("config drive: %w", err)
	}
	undoFresh()
	spec.ConfigDrive = cdPath
	if err := a.cfg.Hypervisor.Start(ctx, spec); err != nil {
		if errors.Is(err, ErrAlreadyRunning) {
			a.log.Warn("vm already running; not starting it again", "instance", id)
			_ = a.reportInstance(ctx, act.Report, "already running")
			return err
		}
		return fmt.Errorf("start: %w", err)
	}
	a.log.Info("vm started", "instance", id, "why", act.Why)
	_ = a.reportInstance(ctx, act.Report, act.Why)
	return nil
}

// stop shuts a VM down and reports it stopped.
func (a *Agent) stop(ctx context.Context, act instAction) error {
	if err := a.cfg.Hypervisor.Stop(ctx, act.Inst.ID); err != nil {
		if ctx.Err() == nil {
			a.log.Error("stop vm", "instance", act.Inst.ID, "err", err)
		}
		return fmt.Errorf("stop %s: %w", act.Inst.ID, err)
	}
	return a.reportInstance(ctx, act.Report, act.Why)
}

// reboot reboots a running VM; a failure makes the server ERROR.
func (a *Agent) reboot(ctx context.Context, act instAction) error {
	if err := a.cfg.Hypervisor.Reboot(ctx, act.Inst.ID, act.Hard); err != nil {
		a.reportFailure(ctx, act.Report, "reboot", err)
		return fmt.Errorf("reboot %s: %w", act.Inst.ID, err)
	}
	a.log.Info("vm rebooted", "instance", act.Inst.ID, "hard", act.Hard)
	return a.reportInstance(ctx, act.Report, act.Why)
}

// delete removes a VM with its files and reports it gone.
func (a *Agent) delete(ctx context.Context, act instAction) error {
	if err := a.cfg.Hypervisor.Delete(ctx, act.Inst.ID); err != nil {
		a.reportFailure(ctx, act.Report, "delete", err)
		return fmt.Errorf("delete %s: %w", act.Inst.ID, err)
	}
	a.mu.Lock()
	delete(a.exitWhy, act.Inst.ID)
	a.mu.Unlock()
	a.log.Info("vm deleted", "instance", act.Inst.ID)
	return a.reportInstance(ctx, act.Report, act.Why)
}

// reasonOr is reason, or fallback when it is empty.
func reasonOr(reason, fallback string) string {
	if reason == "" {
		return fallback
	}
	return reason
}
