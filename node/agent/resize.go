package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// ServerResizer is implemented by hypervisors that can cold-resize a VM
// on its host: PrepareResize stops it, keeps its root disk for a revert
// and grows it to rootGB (0: leave the disk alone); the agent then starts
// it with the new flavor. RevertResize ends the VM and puts the kept disk
// back; ConfirmResize drops the kept disk.
type ServerResizer interface {
	PrepareResize(ctx context.Context, id string, rootGB int) error
	RevertResize(ctx context.Context, id string) error
	ConfirmResize(ctx context.Context, id string) error
}

const (
	opResize        instOp = "resize"         // stop, grow the root disk, start with the new flavor (resize.go)
	opRevertResize  instOp = "revert_resize"  // stop, the old root disk back, start with the old flavor
	opConfirmResize instOp = "confirm_resize" // drop the old root disk
)

// diffResize decides for an instance being resized; ok is false for the
// others.
func diffResize(host string, inst *statedb.Instance, st VMStatus) (out []instAction, ok bool) {
	rs := inst.Resize
	if rs == nil {
		return nil, false
	}
	rep := baseReport(host, inst)
	act := func(op instOp, why string) { out = append(out, instAction{Op: op, Inst: inst, Report: rep, Why: why}) }
	off := func(vmState string) {
		rep.VMState, rep.PowerState = vmState, statedb.PowerRunning
		if rs.WasStopped {
			rep.PowerState = statedb.PowerShutdown
		}
	}
	switch {
	case inst.TaskState == statedb.TaskResizePrep:
		off(statedb.VMResized)
		act(opResize, "resize requested")
	case inst.TaskState == statedb.TaskResizeReverting:
		off(statedb.VMActive)
		if rs.WasStopped {
			rep.VMState = statedb.VMStopped
		}
		act(opRevertResize, "resize revert requested")
	case inst.VMState == statedb.VMResized && inst.TaskState == "" && rs.Confirming:
		rep.VMState, rep.PowerState = statedb.VMActive, statedb.PowerRunning
		if st.State != VMRunning && st.State != VMPaused {
			rep.VMState, rep.PowerState = statedb.VMStopped, statedb.PowerShutdown
		}
		act(opConfirmResize, "resize confirmed")
	case inst.VMState == statedb.VMResized:
		// waits for confirm or revert
	default:
		return nil, false
	}
	return out, true
}

// resizeOp carries out a resize or its revert: the hypervisor step, then
// a start with the flavor the state now has (unless the server was off).
// A failure makes the server ERROR with the cause as its fault.
func (a *Agent) resizeOp(ctx context.Context, act instAction, plan startPlan) error {
	id := act.Inst.ID
	r, ok := a.cfg.Hypervisor.(ServerResizer)
	var err error
	switch {
	case !ok:
		err = errors.New("this hypervisor cannot resize servers")
	case act.Op == opResize:
		root := 0
		if act.Inst.RootVolume == "" {
			root = act.Inst.Flavor.DiskGB
		}
		err = r.PrepareResize(ctx, id, root)
	default:
		err = r.RevertResize(ctx, id)
	}
	if err != nil {
		a.reportFailure(ctx, act.Report, string(act.Op), err)
		return fmt.Errorf("%s %s: %w", act.Op, id, err)
	}
	if act.Inst.Resize.WasStopped {
		return a.reportInstance(ctx, act.Report, act.Why)
	}
	return a.start(ctx, act, plan, VMStatus{ID: id, State: VMShutoff})
}

// confirmResizeOp drops the disk a resize kept and reports the server
// out of VERIFY_RESIZE.
func (a *Agent) confirmResizeOp(ctx context.Context, act instAction) error {
	if r, ok := a.cfg.Hypervisor.(ServerResizer); ok {
		if err := r.ConfirmResize(ctx, act.Inst.ID); err != nil {
			// The resize stands; only the kept disk stays behind.
			a.log.Warn("confirm resize: drop the kept root disk", "instance", act.Inst.ID, "err", err)
		}
	}
	return a.reportInstance(ctx, act.Report, act.Why)
}
