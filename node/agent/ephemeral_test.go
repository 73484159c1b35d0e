package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// ephemeralHV adds agent.EphemeralDisker to the fake hypervisor.
type ephemeralHV struct {
	*agenttest.Hypervisor
	mu    sync.Mutex
	calls []string // "<id>:<GB>"
	fail  error
}

func (e *ephemeralHV) CreateEphemeralDisk(ctx context.Context, id string, sizeGB int) (agent.Disk, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, fmt.Sprintf("%s:%d", id, sizeGB))
	if e.fail != nil {
		return agent.Disk{}, e.fail
	}
	return agent.Disk{ID: "ephemeral0", Path: "/vms/" + id + "/ephemeral.qcow2", Format: "qcow2"}, nil
}

func (e *ephemeralHV) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

func withEphemeral(gb int) func(*statedb.InstanceCreate) {
	return func(ic *statedb.InstanceCreate) { ic.Instance.Flavor.EphemeralGB = gb }
}

func TestAgentEphemeralDisk(t *testing.T) {
	for _, tc := range []struct {
		name      string
		gb        int
		disker    bool // the hypervisor implements EphemeralDisker
		wantCalls []string
		wantEph   bool
	}{
		{"flavor with ephemeral", 2, true, []string{"i-1:2"}, true},
		{"flavor without ephemeral", 0, true, nil, false},
		{"hypervisor without ephemeral disks", 2, false, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			e := &ephemeralHV{}
			if tc.disker {
				h.wrapHV = func(f *agenttest.Hypervisor) agent.Hypervisor { e.Hypervisor = f; return e }
			}
			h.run()
			h.server("i-1", hostA, noNICs, withEphemeral(tc.gb))
			h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
			if got := e.Calls(); !slices.Equal(got, tc.wantCalls) {
				t.Errorf("CreateEphemeralDisk calls = %v; want %v", got, tc.wantCalls)
			}
			vm, _ := h.hv.VM("i-1")
			want := &agent.Disk{ID: "ephemeral0", Path: "/vms/i-1/ephemeral.qcow2", Format: "qcow2"}
			switch {
			case tc.wantEph && (vm.Spec.Ephemeral == nil || *vm.Spec.Ephemeral != *want):
				t.Errorf("VMSpec.Ephemeral = %+v; want %+v", vm.Spec.Ephemeral, want)
			case !tc.wantEph && vm.Spec.Ephemeral != nil:
				t.Errorf("VMSpec.Ephemeral = %+v; want nil", vm.Spec.Ephemeral)
			}
			if vm.Spec.Root.Path == "" || vm.Spec.ConfigDrive == "" || len(vm.Spec.ExtraDisks) != 0 {
				t.Errorf("VMSpec = %+v; want the root disk, a config drive and no volumes", vm.Spec)
			}
			// The config drive does not mention the ephemeral disk.
			cd, _ := json.Marshal(vm.ConfigDrive)
			if strings.Contains(strings.ToLower(string(cd)), "ephemeral") {
				t.Errorf("config drive = %s; want it unchanged by the ephemeral disk", cd)
			}
		})
	}
}

func TestAgentEphemeralDiskRestartAndFailure(t *testing.T) {
	t.Run("restart keeps it", func(t *testing.T) {
		h := newHarness(t)
		e := &ephemeralHV{}
		h.wrapHV = func(f *agenttest.Hypervisor) agent.Hypervisor { e.Hypervisor = f; return e }
		h.run()
		h.server("i-1", hostA, noNICs, withEphemeral(1))
		h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
		h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStop})
		h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
		h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStart})
		h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
		if got, want := e.Calls(), []string{"i-1:1", "i-1:1"}; !slices.Equal(got, want) {
			t.Errorf("CreateEphemeralDisk calls = %v; want %v (the disk is asked for again, and kept)", got, want)
		}
		if vm, _ := h.hv.VM("i-1"); vm.Spec.Ephemeral == nil || vm.Starts != 2 {
			t.Errorf("vm after restart: ephemeral %+v, starts %d; want the disk and 2 starts", vm.Spec.Ephemeral, vm.Starts)
		}
		if n := h.hv.Count("Delete", "i-1"); n != 0 {
			t.Errorf("Delete called %d times; want 0", n)
		}
	})
	t.Run("creation failure", func(t *testing.T) {
		h := newHarness(t)
		e := &ephemeralHV{fail: errors.New("qemu-img create: No space left on device")}
		h.wrapHV = func(f *agenttest.Hypervisor) agent.Hypervisor { e.Hypervisor = f; return e }
		h.run()
		h.server("i-1", hostA, noNICs, withEphemeral(1))
		i := h.waitState("i-1", statedb.VMError, statedb.PowerNoState)
		if i.Fault == nil || !strings.Contains(i.Fault.Message, "ephemeral disk: qemu-img create: No space left on device") {
			t.Errorf("fault = %+v; want the ephemeral disk's error", i.Fault)
		}
		if got, want := h.hv.Ops("i-1"), []string{"CreateRootDisk", "Delete"}; !slices.Equal(got, want) {
			t.Errorf("hypervisor ops = %v; want %v (the root disk undone)", got, want)
		}
	})
}

// resizerHV adds agent.DiskResizer to the fake hypervisor.
type resizerHV struct {
	*agenttest.Hypervisor
	mu    sync.Mutex
	calls []string // "<server>:<disk>:<GB>"
}

func (r *resizerHV) ResizeDisk(ctx context.Context, id, diskID string, sizeGB int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s:%s:%d", id, diskID, sizeGB))
	return nil
}

func (r *resizerHV) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func TestAgentExtendAttachedVolumeResizesOnline(t *testing.T) {
	h := newHarness(t)
	r := &resizerHV{}
	h.wrapHV = func(f *agenttest.Hypervisor) agent.Hypervisor { r.Hypervisor = f; return r }
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.newVolume("v-1", 1)
	h.apply(statedb.CmdAttachVolume, statedb.AttachVolumeCmd{VolumeID: "v-1", ServerID: "i-1", AttachmentID: "att-1"})
	h.waitVolume("v-1", statedb.VolumeInUse)

	h.apply(statedb.CmdExtendVolume, statedb.ExtendVolumeCmd{ID: "v-1", NewSizeGB: 4})
	h.eventually("extend done", func() bool { v := h.volume("v-1"); return v.Status != statedb.VolumeExtending })
	if v := h.volume("v-1"); v.Status != statedb.VolumeInUse || v.SizeGB != 4 || v.ErrorReason != "" {
		t.Errorf("volume after extend = %s %d GB %q; want in-use, 4 GB, no error", v.Status, v.SizeGB, v.ErrorReason)
	}
	if got, want := r.Calls(), []string{"i-1:v-1:4"}; !slices.Equal(got, want) {
		t.Errorf("ResizeDisk calls = %v; want %v", got, want)
	}
	if slices.Contains(h.vols.Calls(), "Extend:v-1") {
		t.Errorf("volume store calls = %v; want no offline Extend of an attached volume", h.vols.Calls())
	}
}
