package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

func TestAgentCreateStartsAndReportsActive(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA)
	i := h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if i.LaunchedAt.IsZero() || i.Fault != nil {
		t.Errorf("instance after start: launched_at %v, fault %v; want a launch time and no fault", i.LaunchedAt, i.Fault)
	}
	if got, want := h.hv.Ops("i-1"), []string{"CreateRootDisk", "WriteConfigDrive", "Start"}; !slices.Equal(got, want) {
		t.Errorf("hypervisor ops = %v; want %v", got, want)
	}
	vm, _ := h.hv.VM("i-1")
	if vm.Base.Path != "/images/img-1.qcow2" || vm.Spec.Root.Path != vm.RootDisk.Path || vm.Spec.VCPUs != 1 || vm.Spec.RAMMB != 128 ||
		vm.Spec.ConfigDrive == "" {
		t.Errorf("vm = %+v; want the image overlay as root, 1 vCPU, 128 MB and a config drive", vm)
	}
	port, _ := h.st.Snapshot().Port("port-i-1")
	if want := []agent.NIC{{PortID: "port-i-1", Tap: h.net.TapName("port-i-1"), MAC: port.MAC}}; !slices.Equal(vm.Spec.NICs, want) {
		t.Errorf("NICs = %v; want %v", vm.Spec.NICs, want)
	}
	cd := vm.ConfigDrive
	if cd.UUID != "i-1" || cd.Hostname != "vm-i-1" || cd.Name != "vm i-1" || cd.PublicKeys["mykey"] != "ssh-ed25519 AAAAC3 test" ||
		string(cd.UserData) != "#!/bin/sh\necho hi" {
		t.Errorf("config drive = %+v", cd)
	}
	nd, _ := json.Marshal(cd.NetworkData)
	if !strings.Contains(string(nd), `"ethernet_mac_address":"`+port.MAC+`"`) || !strings.Contains(string(nd), `"type":"ipv4_dhcp"`) {
		t.Errorf("network_data.json = %s; want the port's link and a DHCP network", nd)
	}
	// The port is plumbed (tap in the applied network state) and ACTIVE.
	h.eventually("port ACTIVE", func() bool {
		p, _ := h.st.Snapshot().Port("port-i-1")
		return p.Status == statedb.PortActive
	})
	d, _ := h.net.Last()
	if len(d.Networks) != 1 || len(d.Networks[0].Ports) != 1 || d.Networks[0].Ports[0].Hostname != "vm-i-1" ||
		d.Networks[0].Ports[0].IP.String() != port.FixedIPs[0].IP {
		t.Errorf("applied network state = %+v; want net-1 with the server's port", d)
	}
	// Nothing more happens on later resyncs.
	h.settle()
	if n := h.hv.Count("Start", "i-1"); n != 1 {
		t.Errorf("Start called %d times; want 1", n)
	}
}

func TestAgentLifecycleReachesTheHypervisorInOrder(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)

	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStop})
	h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
	if got := h.hv.Running(); len(got) != 0 {
		t.Fatalf("running after stop = %v; want none", got)
	}
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStart})
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)

	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionReboot})
	h.eventually("soft reboot done", func() bool { i := h.inst("i-1"); return i.RebootDone == 1 && i.TaskState == "" })
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionReboot, Hard: true})
	h.eventually("hard reboot done", func() bool { i := h.inst("i-1"); return i.RebootDone == 2 && i.TaskState == "" })
	if i := h.inst("i-1"); i.VMState != statedb.VMActive || i.PowerState != statedb.PowerRunning {
		t.Errorf("after reboots: %s/%d; want active/1", i.VMState, i.PowerState)
	}

	h.apply(statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: "i-1"})
	h.eventually("record gone", func() bool { return h.inst("i-1") == nil })
	want := []string{"CreateRootDisk", "WriteConfigDrive", "Start", "Stop", "CreateRootDisk", "WriteConfigDrive", "Start",
		"Reboot:soft", "Reboot:hard", "Delete"}
	if got := h.hv.Ops("i-1"); !slices.Equal(got, want) {
		t.Errorf("hypervisor ops = %v; want %v", got, want)
	}
	if ids := h.hv.IDs(); len(ids) != 0 {
		t.Errorf("VMs left = %v; want none", ids)
	}
	if _, ok := h.st.Snapshot().Port("port-i-1"); ok {
		t.Errorf("the server's port survived its deletion")
	}
	// The tap went with the port.
	h.eventually("network state without ports", func() bool {
		d, _ := h.net.Last()
		return len(d.Networks) == 0
	})
}

func TestAgentRecoverDoesNotStartTwice(t *testing.T) {
	h := newHarness(t)
	h.server("i-run", hostA, noNICs) // building in the state: the old agent died before its report
	h.server("i-act", hostA, noNICs)
	// i-act was reported active; its VM still runs.
	h.apply(statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: "i-act", HostID: hostA,
		VMState: statedb.VMActive, PowerState: statedb.PowerRunning})
	for _, id := range []string{"i-run", "i-act"} {
		h.hv.Put(agenttest.VM{ID: id, State: agent.VMRunning, RootDisk: &agent.Disk{Path: "/fake/" + id}})
	}
	h.run()
	h.waitState("i-run", statedb.VMActive, statedb.PowerRunning)
	h.settle()
	calls := h.hv.Calls()
	if len(calls) == 0 || calls[0].Op != "Recover" {
		t.Fatalf("first hypervisor call = %v; want Recover", calls)
	}
	for _, id := range []string{"i-run", "i-act"} {
		if ops := h.hv.Ops(id); len(ops) != 0 {
			t.Errorf("ops on recovered %s = %v; want none", id, ops)
		}
	}
	if i := h.inst("i-act"); i.VMState != statedb.VMActive {
		t.Errorf("i-act = %s; want active", i.VMState)
	}

	// A second agent (daemon restart) adopts the same VMs: still no start.
	h.stop()
	h.run()
	h.settle()
	if n := h.hv.Count("Start", ""); n != 0 {
		t.Errorf("Start called %d times after restarts; want 0", n)
	}
}

func TestAgentStartFailureUndoesAndReportsError(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(h *harness)
		fault   string
		wantOps []string
	}{
		{"qemu missing", func(h *harness) {
			h.hv.FailFor("Start", "i-1", errors.New("qemu not available: exec: \"qemu-system-x86_64\": executable file not found in $PATH"))
		}, "qemu not available", []string{"CreateRootDisk", "WriteConfigDrive", "Start", "Delete"}},
		{"no space for the root disk", func(h *harness) {
			h.hv.FailFor("CreateRootDisk", "i-1", errors.New("qemu-img create: No space left on device"))
		}, "No space left on device", []string{"CreateRootDisk", "Delete"}},
		{"config drive", func(h *harness) {
			h.hv.FailFor("WriteConfigDrive", "i-1", errors.New("iso: disk full"))
		}, "config drive: iso: disk full", []string{"CreateRootDisk", "WriteConfigDrive", "Delete"}},
		{"unknown image", func(h *harness) {
			h.imgs = agenttest.NewImages(nil)
		}, "image img-1", nil},
		{"bad MAC", func(h *harness) {
			h.hv.FailFor("Start", "i-1", errors.New("invalid vm spec: nic: MAC 01:00:5e:00:00:01 is multicast"))
		}, "is multicast", []string{"CreateRootDisk", "WriteConfigDrive", "Start", "Delete"}},
		{"networking unavailable", func(h *harness) {
			h.net.Fail(fmt.Errorf("%w: netdev: permission denied: needs CAP_NET_ADMIN", agent.ErrNetworkUnavailable))
		}, "needs CAP_NET_ADMIN", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			c.setup(h)
			h.run()
			h.server("i-1", hostA)
			i := h.waitState("i-1", statedb.VMError, statedb.PowerNoState)
			if i.Fault == nil || !strings.Contains(i.Fault.Message, c.fault) {
				t.Errorf("fault = %+v; want one naming %q", i.Fault, c.fault)
			}
			if got := h.hv.Ops("i-1"); !slices.Equal(got, c.wantOps) {
				t.Errorf("hypervisor ops = %v; want %v", got, c.wantOps)
			}
			if ids := h.hv.IDs(); len(ids) != 0 {
				t.Errorf("VMs left after a failed start = %v; want none", ids)
			}
			// Not retried on its own.
			h.settle()
			if got := h.hv.Ops("i-1"); len(got) != len(c.wantOps) {
				t.Errorf("hypervisor ops after resyncs = %v; want no retry", got)
			}
		})
	}
}

func TestAgentStartFailureOfExistingVMKeepsItsDisk(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStop})
	h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
	h.hv.FailFor("Start", "i-1", errors.New("qemu exited during start"))
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStart})
	h.waitState("i-1", statedb.VMError, statedb.PowerNoState)
	vm, ok := h.hv.VM("i-1")
	if !ok || vm.RootDisk == nil {
		t.Fatalf("a failed restart removed the server's root disk")
	}
	if n := h.hv.Count("Delete", "i-1"); n != 0 {
		t.Errorf("Delete called %d times; want 0", n)
	}
}

func TestAgentExitedVMIsReportedStoppedNotRestarted(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.server("i-1", hostA, noNICs)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	h.hv.Crash("i-1", "guest shutdown")
	h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
	h.settle()
	if n := h.hv.Count("Start", "i-1"); n != 1 {
		t.Errorf("Start called %d times; want 1 (no automatic restart)", n)
	}
	if i := h.inst("i-1"); i.Desired != statedb.DesiredRunning {
		t.Errorf("desired = %s; want it kept (running)", i.Desired)
	}
	// The user starts it again.
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStart})
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if n := h.hv.Count("Start", "i-1"); n != 2 {
		t.Errorf("Start called %d times; want 2", n)
	}
}

func TestAgentBootVolumesAndAttachedVolumes(t *testing.T) {
	h := newHarness(t)
	h.run()
	h.apply(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: "boot", ProjectID: "proj", SizeGB: 2,
		Format: "qcow2", Host: hostA, Path: "/vols/boot.qcow2", ImageID: image, Bootable: true}})
	h.eventually("boot volume available", func() bool {
		v, _ := h.st.Snapshot().Volume("boot")
		return v.Status == statedb.VolumeAvailable
	})
	if size, from, ok := h.vols.File("/vols/boot.qcow2"); !ok || size != 2 || from != "/images/img-1.qcow2" {
		t.Fatalf("boot volume file = %d GB from %q (%v); want 2 GB from the image", size, from, ok)
	}
	h.server("i-1", hostA, noNICs, func(ic *statedb.InstanceCreate) { ic.Instance.ImageID, ic.Instance.RootVolume = "", "boot" })
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	vm, _ := h.hv.VM("i-1")
	if vm.Spec.Root.Path != "/vols/boot.qcow2" || vm.RootDisk != nil {
		t.Errorf("root = %+v, overlay %v; want the boot volume and no overlay", vm.Spec.Root, vm.RootDisk)
	}
	// Attach a data volume, then restart: it comes back as an extra disk.
	h.apply(statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: "data", ProjectID: "proj", SizeGB: 1,
		Format: "raw", Host: hostA, Path: "/vols/data.raw"}})
	h.eventually("data available", func() bool { v, _ := h.st.Snapshot().Volume("data"); return v.Status == statedb.VolumeAvailable })
	h.apply(statedb.CmdAttachVolume, statedb.AttachVolumeCmd{VolumeID: "data", ServerID: "i-1", AttachmentID: "att-1"})
	h.eventually("data in-use", func() bool { v, _ := h.st.Snapshot().Volume("data"); return v.Status == statedb.VolumeInUse })
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStop})
	h.waitState("i-1", statedb.VMStopped, statedb.PowerShutdown)
	h.apply(statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: "i-1", Action: statedb.ActionStart})
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	vm, _ = h.hv.VM("i-1")
	if want := []agent.Disk{{ID: "data", Path: "/vols/data.raw", Format: "raw"}}; !slices.Equal(vm.Spec.ExtraDisks, want) {
		t.Errorf("extra disks at start = %v; want %v", vm.Spec.ExtraDisks, want)
	}
}

func TestAgentLostReportDoesNotStartTwice(t *testing.T) {
	h := newHarness(t)
	h.prop.FailWith(errors.New("no leader"))
	h.run()
	h.server("i-1", hostA, noNICs)
	h.eventually("started", func() bool { return h.hv.Count("Start", "i-1") == 1 })
	h.settle()
	if i := h.inst("i-1"); i.VMState != statedb.VMBuilding {
		t.Fatalf("vm_state = %s while reports fail; want building", i.VMState)
	}
	h.prop.FailWith(nil)
	h.waitState("i-1", statedb.VMActive, statedb.PowerRunning)
	if n := h.hv.Count("Start", "i-1"); n != 1 {
		t.Errorf("Start called %d times; want 1", n)
	}
}

// TestAgentNoDoubleStartUnderChurn: many servers, slow reports and a state
// that changes all the time (so syncs overlap operations in every way):
// each VM is started exactly once.
func TestAgentNoDoubleStartUnderChurn(t *testing.T) {
	h := newHarness(t)
	h.prop.Delay = 3 * time.Millisecond
	h.hv.StartDelay = 2 * time.Millisecond
	h.run()
	stop := make(chan struct{})
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = h.st.Apply(statedb.CmdCreateProject, statedb.Project{ID: fmt.Sprintf("p%d", k), Name: fmt.Sprintf("p%d", k), Enabled: true})
			time.Sleep(200 * time.Microsecond)
		}
	}()
	var ids []string
	for k := range 60 {
		id := fmt.Sprintf("i-%02d", k)
		ids = append(ids, id)
		h.server(id, hostA, noNICs)
	}
	for _, id := range ids {
		h.waitState(id, statedb.VMActive, statedb.PowerRunning)
	}
	h.settle()
	close(stop)
	<-churned
	for _, id := range ids {
		if n := h.hv.Count("Start", id); n != 1 {
			t.Errorf("Start(%s) called %d times; want 1", id, n)
		}
	}
}
