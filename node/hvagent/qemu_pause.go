package hvagent

import (
	"context"

	"github.com/peerstack/peerstack/node/agent"
)

var (
	_ agent.Pauser    = (*QEMU)(nil)
	_ agent.Suspender = (*QEMU)(nil)
)

// Pause implements agent.Pauser (QMP stop).
func (h *QEMU) Pause(ctx context.Context, id string) error { return h.d.Pause(ctx, id) }

// Unpause implements agent.Pauser (QMP cont).
func (h *QEMU) Unpause(ctx context.Context, id string) error { return h.d.Unpause(ctx, id) }

// Suspend implements agent.Suspender: memory to the VM's directory, the
// next Start restores it.
func (h *QEMU) Suspend(ctx context.Context, id string) error { return h.d.Suspend(ctx, id) }
