package hvagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/node/agent"
)

// QEMU adapts hv/qemu's Driver to agent.Hypervisor, agent.DiskResizer
// and agent.EphemeralDisker.
type QEMU struct {
	d      *qemu.Driver
	events chan agent.VMEvent
	wg     sync.WaitGroup
}

// NewQEMU adapts d and relays its events until Close.
func NewQEMU(d *qemu.Driver) *QEMU {
	h := &QEMU{d: d, events: make(chan agent.VMEvent, 1024)}
	h.wg.Add(1)
	go func() {
		// Owned: ends when Close closes the driver's channel.
		defer h.wg.Done()
		defer close(h.events)
		for ev := range d.Events() {
			select {
			case h.events <- agent.VMEvent{ID: ev.UUID, Kind: ev.Kind, Detail: ev.Detail}:
			default: // the agent resyncs anyway
			}
		}
	}()
	return h
}

var (
	_ agent.Hypervisor      = (*QEMU)(nil)
	_ agent.DiskResizer     = (*QEMU)(nil)
	_ agent.EphemeralDisker = (*QEMU)(nil)
)

// Close stops the driver (VMs keep running) and the event relay.
func (h *QEMU) Close() {
	_ = h.d.Close()
	h.wg.Wait()
}

func vmStatus(st qemu.VMStatus) agent.VMStatus {
	return agent.VMStatus{ID: st.UUID, State: agent.VMState(st.State), PID: st.PID, Reason: st.Reason}
}

func vmStatuses(in []qemu.VMStatus, err error) ([]agent.VMStatus, error) {
	if err != nil {
		return nil, err
	}
	out := make([]agent.VMStatus, 0, len(in))
	for _, st := range in {
		out = append(out, vmStatus(st))
	}
	return out, nil
}

func (h *QEMU) Recover(ctx context.Context) ([]agent.VMStatus, error) {
	return vmStatuses(h.d.Recover(ctx))
}

func (h *QEMU) List(ctx context.Context) ([]agent.VMStatus, error) {
	return vmStatuses(h.d.List(ctx))
}

func (h *QEMU) CreateRootDisk(ctx context.Context, id string, base agent.Disk, sizeGB int) (agent.Disk, error) {
	p, err := h.d.CreateRootDisk(ctx, id, base.Path, base.Format, sizeGB)
	if err != nil {
		return agent.Disk{}, err
	}
	return agent.Disk{Path: p, Format: "qcow2"}, nil
}

func (h *QEMU) WriteConfigDrive(ctx context.Context, id string, cd agent.ConfigDrive) (string, error) {
	paths := h.d.Paths(id)
	if err := os.MkdirAll(paths.Dir, 0o700); err != nil {
		return "", fmt.Errorf("vm %s: %w", id, err)
	}
	p := paths.ConfigDrive()
	err := qemu.WriteConfigDrive(p, toQEMUConfigDrive(cd))
	if err != nil {
		return "", err
	}
	return p, nil
}

func toQEMUConfigDrive(cd agent.ConfigDrive) qemu.ConfigDrive {
	return qemu.ConfigDrive{
		UUID: cd.UUID, Hostname: cd.Hostname, Name: cd.Name, AvailabilityZone: cd.AvailabilityZone, ProjectID: cd.ProjectID,
		LaunchIndex: cd.LaunchIndex, PublicKeys: cd.PublicKeys, Meta: cd.Meta, UserData: cd.UserData, NetworkData: cd.NetworkData,
	}
}

// CreateEphemeralDisk implements agent.EphemeralDisker.
func (h *QEMU) CreateEphemeralDisk(ctx context.Context, id string, sizeGB int) (agent.Disk, error) {
	p, err := h.d.CreateEphemeralDisk(ctx, id, sizeGB)
	if err != nil {
		return agent.Disk{}, err
	}
	return agent.Disk{ID: "ephemeral0", Path: p, Format: "qcow2"}, nil
}

// ResizeDisk implements agent.DiskResizer (QMP block_resize while the VM
// runs, qemu-img resize otherwise).
func (h *QEMU) ResizeDisk(ctx context.Context, id, diskID string, sizeGB int) error {
	return h.d.ResizeDisk(ctx, id, diskID, int64(sizeGB)<<30)
}

func qemuDisk(d agent.Disk) qemu.Disk {
	return qemu.Disk{ID: d.ID, Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly}
}

func (h *QEMU) Start(ctx context.Context, s agent.VMSpec) error {
	spec := qemu.Spec{UUID: s.ID, Name: s.Name, VCPUs: s.VCPUs, RAMMB: s.RAMMB, RootDisk: qemuDisk(s.Root), ConfigDrive: s.ConfigDrive}
	if s.Ephemeral != nil {
		spec.Ephemeral = s.Ephemeral.Path
	}
	for _, nic := range s.NICs {
		spec.NICs = append(spec.NICs, qemu.NIC{ID: nic.PortID, Tap: nic.Tap, MAC: nic.MAC})
	}
	for _, d := range s.ExtraDisks {
		spec.ExtraDisks = append(spec.ExtraDisks, qemuDisk(d))
	}
	err := h.d.Start(ctx, spec)
	if errors.Is(err, qemu.ErrAlreadyRunning) {
		return fmt.Errorf("%w: %w", agent.ErrAlreadyRunning, err)
	}
	return err
}

func (h *QEMU) Stop(ctx context.Context, id string) error { return h.d.Stop(ctx, id) }

func (h *QEMU) Reboot(ctx context.Context, id string, hard bool) error {
	return h.d.Reboot(ctx, id, hard)
}

func (h *QEMU) Delete(ctx context.Context, id string) error { return h.d.Delete(ctx, id) }

func (h *QEMU) AttachDisk(ctx context.Context, id string, d agent.Disk) error {
	return h.d.AttachDisk(ctx, id, qemuDisk(d))
}

func (h *QEMU) DetachDisk(ctx context.Context, id, diskID string, timeout time.Duration) error {
	return h.d.DetachDisk(ctx, id, diskID, timeout)
}

func (h *QEMU) Events() <-chan agent.VMEvent { return h.events }

func (h *QEMU) ConsoleLog(id string, maxBytes int64) (string, error) {
	return h.d.ConsoleLog(id, maxBytes)
}

// Broken stands in for a hypervisor that could not start: every change
// fails with the reason (Err), and there are no VMs.
type Broken struct{ Err error }

func (b Broken) fail() error { return fmt.Errorf("hypervisor unavailable: %w", b.Err) }

func (b Broken) Recover(context.Context) ([]agent.VMStatus, error) { return nil, nil }
func (b Broken) List(context.Context) ([]agent.VMStatus, error)    { return nil, nil }
func (b Broken) CreateRootDisk(context.Context, string, agent.Disk, int) (agent.Disk, error) {
	return agent.Disk{}, b.fail()
}
func (b Broken) WriteConfigDrive(context.Context, string, agent.ConfigDrive) (string, error) {
	return "", b.fail()
}
func (b Broken) Start(context.Context, agent.VMSpec) error                       { return b.fail() }
func (b Broken) Stop(context.Context, string) error                              { return b.fail() }
func (b Broken) Reboot(context.Context, string, bool) error                      { return b.fail() }
func (b Broken) Delete(context.Context, string) error                            { return nil }
func (b Broken) AttachDisk(context.Context, string, agent.Disk) error            { return b.fail() }
func (b Broken) DetachDisk(context.Context, string, string, time.Duration) error { return b.fail() }
func (b Broken) Events() <-chan agent.VMEvent                                    { return nil }
