package agenttest

import (
	"context"
	"fmt"

	"github.com/peerstack/peerstack/node/agent"
)

// Pause implements agent.Pauser: a running VM becomes paused.
func (h *Hypervisor) Pause(ctx context.Context, id string) error {
	return h.transition("Pause", id, agent.VMRunning, agent.VMPaused)
}

// Unpause implements agent.Pauser: a paused VM runs again.
func (h *Hypervisor) Unpause(ctx context.Context, id string) error {
	return h.transition("Unpause", id, agent.VMPaused, agent.VMRunning)
}

// Suspend implements agent.Suspender: the VM's "process" ends with its
// files kept (shut off); the next Start resumes it.
func (h *Hypervisor) Suspend(ctx context.Context, id string) error {
	h.mu.Lock()
	c, err := h.record("Suspend", id, "")
	if err == nil {
		v := h.vms[id]
		switch {
		case v == nil || (v.State != agent.VMRunning && v.State != agent.VMPaused):
			err = fmt.Errorf("vm %s not running", id)
		default:
			v.State, v.PID, v.Reason = agent.VMShutoff, 0, "suspended"
			v.Suspended = true
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

func (h *Hypervisor) transition(op, id string, from, to agent.VMState) error {
	h.mu.Lock()
	c, err := h.record(op, id, "")
	if err == nil {
		v := h.vms[id]
		if v == nil || v.State != from {
			err = fmt.Errorf("vm %s is not %s", id, from)
		} else {
			v.State = to
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}
