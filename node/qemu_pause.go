package node

import (
	"context"

	"github.com/peerstack/peerstack/node/agent"
)

var (
	_ agent.Pauser    = (*qemuHV)(nil)
	_ agent.Suspender = (*qemuHV)(nil)
)

// Pause implements agent.Pauser (QMP stop).
func (h *qemuHV) Pause(ctx context.Context, id string) error { return h.d.Pause(ctx, id) }

// Unpause implements agent.Pauser (QMP cont).
func (h *qemuHV) Unpause(ctx context.Context, id string) error { return h.d.Unpause(ctx, id) }

// Suspend implements agent.Suspender: memory to the VM's directory, the
// next Start restores it.
func (h *qemuHV) Suspend(ctx context.Context, id string) error { return h.d.Suspend(ctx, id) }
