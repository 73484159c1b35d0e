// Package hostfail owns this host's side of host-failure handling that is
// not an agent reconciler (docs/ha.md): the lease round trip with the
// leader and the route the leader answers it on, the fence-guard process
// (keeping it running, and the guard command itself), the step
// systemd-sleep runs around a system sleep (FenceSleep), the check that no
// other daemon runs with this host's identity, and draining the host
// before it leaves.
//
// It must not decide what the leader decides (timing hosts out and
// failing their servers over is node/leader's), must not reconcile VMs
// (node/agent's fence does that), and holds no reference to the daemon:
// it reads Raft and proposes through the small interfaces below.
package hostfail

import (
	"context"
	"time"
)

// sleepCtx waits d, or less when ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
