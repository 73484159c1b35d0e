package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// SavedState is where Suspend keeps a VM's memory: the next Start
// restores it (-incoming) instead of booting, then removes it.
func (p Paths) SavedState() string { return filepath.Join(p.Dir, "suspend.state") }

// Pause freezes the VM's vCPUs (QMP stop); memory stays in the process.
func (d *Driver) Pause(ctx context.Context, uuid string) error {
	return d.withMonitor(ctx, uuid, func(m *Monitor) error { return m.Stop(ctx) })
}

// Unpause lets a paused VM run again (QMP cont).
func (d *Driver) Unpause(ctx context.Context, uuid string) error {
	return d.withMonitor(ctx, uuid, func(m *Monitor) error { return m.Cont(ctx) })
}

func (d *Driver) withMonitor(ctx context.Context, uuid string, fn func(m *Monitor) error) error {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	p := d.liveProc(v)
	if p == nil {
		return fmt.Errorf("%w: vm %s", ErrNotRunning, v.uuid)
	}
	mon, err := d.monitor(ctx, v, p)
	if err != nil {
		return err
	}
	if err := fn(mon); err != nil {
		return fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	return nil
}

// Suspend saves the VM's memory to SavedState (QMP stop, then migrate to
// the file) and ends its process. On failure the file is removed and the
// VM left running as it was.
func (d *Driver) Suspend(ctx context.Context, uuid string) (err error) {
	v, err := d.lookup(uuid)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	p := d.liveProc(v)
	if p == nil {
		return fmt.Errorf("%w: vm %s", ErrNotRunning, v.uuid)
	}
	mon, err := d.monitor(ctx, v, p)
	if err != nil {
		return err
	}
	running, _, err := mon.Status(ctx)
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.uuid, err)
	}
	state := v.paths.SavedState()
	tmp := state + ".tmp"
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
			if running {
				_ = mon.Cont(context.WithoutCancel(ctx))
			}
		}
	}()
	if err := mon.Stop(ctx); err != nil {
		return fmt.Errorf("vm %s: suspend: %w", v.uuid, err)
	}
	if err := mon.run(ctx, "migrate", map[string]any{"uri": "exec:cat > " + shellQuote(tmp)}, nil); err != nil {
		return fmt.Errorf("vm %s: suspend: %w", v.uuid, err)
	}
	if err := waitMigration(ctx, mon); err != nil {
		return fmt.Errorf("vm %s: suspend: %w", v.uuid, err)
	}
	if err := os.Rename(tmp, state); err != nil {
		return fmt.Errorf("vm %s: suspend: %w", v.uuid, err)
	}
	p.mu.Lock()
	p.quiet = true
	p.mu.Unlock()
	if err := d.kill(v, p, 10*time.Second); err != nil {
		_ = os.Remove(state)
		return fmt.Errorf("vm %s: suspend: end process: %w", v.uuid, err)
	}
	running = false
	d.log.Info("vm suspended", "uuid", v.uuid, "state", state)
	return nil
}

// waitMigration polls query-migrate until the migration completed.
func waitMigration(ctx context.Context, mon *Monitor) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var r struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := mon.run(ctx, "query-migrate", nil, &r); err != nil {
			return err
		}
		switch r.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", r.Status, r.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// incomingArgs adds -incoming when the VM has saved memory to restore.
func incomingArgs(p Paths, args []string) []string {
	if _, err := os.Stat(p.SavedState()); err != nil {
		return args
	}
	return append(args, "-incoming", "exec:cat "+shellQuote(p.SavedState()))
}

// finishIncoming waits for a restore to end, lets the VM run and removes
// the saved memory; a VM without saved memory is left alone.
func finishIncoming(ctx context.Context, p Paths, mon *Monitor) error {
	if _, err := os.Stat(p.SavedState()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, status, err := mon.Status(ctx)
		if err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		if status != "inmigrate" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("resume: %w", ctx.Err())
		case <-tick.C:
		}
	}
	if err := waitMigration(ctx, mon); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := mon.Cont(ctx); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := os.Remove(p.SavedState()); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

func shellQuote(s string) string {
	out := "'"
	for _, r := range s {
		if r == '\'' {
			out += `'\''`
			continue
		}
		out += string(r)
	}
	return out + "'"
}
