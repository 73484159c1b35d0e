package agent

import (
	"context"
	"fmt"
)

// Pauser is implemented by hypervisors that can freeze a VM's vCPUs in
// memory and thaw them (QMP stop/cont).
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Unpause(ctx context.Context, id string) error
}

// Suspender is implemented by hypervisors that can save a running VM's
// memory among its files and end its process; the next Start restores the
// saved memory instead of booting.
type Suspender interface {
	Suspend(ctx context.Context, id string) error
}

// pauseOp pauses, unpauses or suspends a VM, then reports the new state;
// a failure makes the server ERROR with the cause as its fault.
func (a *Agent) pauseOp(ctx context.Context, act instAction) error {
	id := act.Inst.ID
	var err error
	switch act.Op {
	case opPause, opUnpause:
		p, ok := a.cfg.Hypervisor.(Pauser)
		switch {
		case !ok:
			err = fmt.Errorf("this hypervisor cannot pause servers")
		case act.Op == opPause:
			err = p.Pause(ctx, id)
		default:
			err = p.Unpause(ctx, id)
		}
	case opSuspend:
		s, ok := a.cfg.Hypervisor.(Suspender)
		if !ok {
			err = fmt.Errorf("this hypervisor cannot suspend servers")
		} else {
			err = s.Suspend(ctx, id)
		}
	}
	if err != nil {
		a.reportFailure(ctx, act.Report, string(act.Op), err)
		return fmt.Errorf("%s %s: %w", act.Op, id, err)
	}
	a.log.Info("vm "+string(act.Op)+"d", "instance", id)
	return a.reportInstance(ctx, act.Report, act.Why)
}
