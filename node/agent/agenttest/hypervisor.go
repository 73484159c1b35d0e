package agenttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/node/agent"
)

// ErrDetachTimeout is what the fake's DetachDisk returns for a disk whose
// unplug the guest ignores (see HangDetach).
var ErrDetachTimeout = errors.New("disk detach timed out (guest did not release the device)")

// Call is one call the fake hypervisor received.
type Call struct {
	Op  string // Recover, List, CreateRootDisk, WriteConfigDrive, Start, Stop, Reboot, Delete, AttachDisk, DetachDisk
	ID  string // VM id
	Arg string // hard/soft for Reboot, disk id for Attach/DetachDisk
	At  time.Time
}

// failN is a failure for a number of calls.
type failN struct {
	n   int
	err error
}

// VM is the fake's record of one VM: its "files" and its "process".
type VM struct {
	ID          string
	State       agent.VMState // running or shutoff (missing VMs have no record)
	PID         int
	Reason      string // last exit
	Spec        agent.VMSpec
	RootDisk    *agent.Disk
	Base        agent.Disk // what the root disk is over
	ConfigDrive *agent.ConfigDrive
	Disks       []agent.Disk // attached volumes (spec.json's extra disks)
	Starts      int          // process starts (boots after a Start, not resets)
	Boots       int          // boots, counting resets
	Suspended   bool         // memory saved by Suspend; the next Start resumes it
	Rescue      *agent.Disk  // the rescue image booted instead of the root disk (day2.go)
	ResizeKept  bool         // a resize kept the old root disk for a revert
	RootGB      int          // the root disk's size as the last resize left it
}

// Hypervisor is a recording fake of agent.Hypervisor. VMs are records in
// memory; a "process" is a PID number. It is safe for concurrent use and
// outlives agents, as real VMs outlive the daemon.
type Hypervisor struct {
	// StartDelay is added to every Start (a simulated boot).
	StartDelay time.Duration
	// OnCall, when set, is called (outside the fake's lock) after each call.
	OnCall func(Call)

	mu      sync.Mutex
	vms     map[string]*VM
	calls   []Call
	fail    map[string]error         // "Op" or "Op/id" → error
	failN   map[string]failN         // "Op/id" → the next calls' error
	hang    map[string]chan struct{} // disk ids whose detach the guest ignores → closed when it no longer does
	events  chan agent.VMEvent
	nextPID int
}

// NewHypervisor returns an empty fake.
func NewHypervisor() *Hypervisor {
	return &Hypervisor{vms: map[string]*VM{}, fail: map[string]error{}, failN: map[string]failN{}, hang: map[string]chan struct{}{},
		events: make(chan agent.VMEvent, 4096), nextPID: 1000}
}

// Fail makes every call of op fail with err (nil clears it).
func (h *Hypervisor) Fail(op string, err error) { h.setFail(op, err) }

// FailFor makes op on VM id fail with err (nil clears it).
func (h *Hypervisor) FailFor(op, id string, err error) { h.setFail(op+"/"+id, err) }

func (h *Hypervisor) setFail(k string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.fail, k)
	} else {
		h.fail[k] = err
	}
}

// HangDetach makes the guest ignore the unplug of disk id (or honour it
// again with false, which also lets a DetachDisk waiting on it finish).
func (h *Hypervisor) HangDetach(diskID string, hang bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rel := h.hang[diskID]
	switch {
	case hang && rel == nil:
		h.hang[diskID] = make(chan struct{})
	case !hang && rel != nil:
		close(rel)
		delete(h.hang, diskID)
	}
}

// FailNext makes the next n calls of op on VM id fail with err, before
// any failure set with Fail or FailFor.
func (h *Hypervisor) FailNext(op, id string, n int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failN[op+"/"+id] = failN{n: n, err: err}
}

// record logs a call and returns the injected failure, if any. Called
// with h.mu held.
func (h *Hypervisor) record(op, id, arg string) (Call, error) {
	c := Call{Op: op, ID: id, Arg: arg, At: time.Now()}
	h.calls = append(h.calls, c)
	if f := h.failN[op+"/"+id]; f.n > 0 {
		f.n--
		h.failN[op+"/"+id] = f
		return c, f.err
	}
	if err := h.fail[op+"/"+id]; err != nil {
		return c, err
	}
	return c, h.fail[op]
}

func (h *Hypervisor) notify(c Call) {
	if h.OnCall != nil {
		h.OnCall(c)
	}
}

// Calls returns every call so far.
func (h *Hypervisor) Calls() []Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// Ops returns the operations called for VM id, in order, as "Op" or
// "Op:arg" (List and Recover are left out).
func (h *Hypervisor) Ops(id string) []string {
	var out []string
	for _, c := range h.Calls() {
		if c.ID != id {
			continue
		}
		if c.Arg != "" {
			out = append(out, c.Op+":"+c.Arg)
		} else {
			out = append(out, c.Op)
		}
	}
	return out
}

// Count returns how many times op was called for VM id ("" = any VM).
func (h *Hypervisor) Count(op, id string) int {
	n := 0
	for _, c := range h.Calls() {
		if c.Op == op && (id == "" || c.ID == id) {
			n++
		}
	}
	return n
}

// VM returns a copy of VM id's record.
func (h *Hypervisor) VM(id string) (VM, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[id]
	if !ok {
		return VM{}, false
	}
	return *v, true
}

// Running returns the ids of the running VMs, sorted.
func (h *Hypervisor) Running() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for id, v := range h.vms {
		if v.State == agent.VMRunning {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// IDs returns the ids of every VM with files, sorted.
func (h *Hypervisor) IDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for id := range h.vms {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Put adds a VM as if it had been left running (or shut off) by an earlier
// daemon.
func (h *Hypervisor) Put(v VM) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v.State == agent.VMRunning && v.PID == 0 {
		h.nextPID++
		v.PID = h.nextPID
	}
	cp := v
	h.vms[v.ID] = &cp
}

// Crash makes VM id's process exit on its own (guest power-off or a kill
// from outside) and emits an "exited" event.
func (h *Hypervisor) Crash(id, reason string) {
	h.mu.Lock()
	v, ok := h.vms[id]
	if ok && v.State == agent.VMRunning {
		v.State, v.PID, v.Reason = agent.VMShutoff, 0, reason
	}
	h.mu.Unlock()
	if ok {
		h.emit(agent.VMEvent{ID: id, Kind: agent.EventExited, Detail: reason})
	}
}

func (h *Hypervisor) emit(ev agent.VMEvent) {
	select {
	case h.events <- ev:
	default:
	}
}

func (h *Hypervisor) statusLocked(v *VM) agent.VMStatus {
	return agent.VMStatus{ID: v.ID, State: v.State, PID: v.PID, Reason: v.Reason}
}

// Recover implements agent.Hypervisor.
func (h *Hypervisor) Recover(ctx context.Context) ([]agent.VMStatus, error) {
	return h.list("Recover")
}

// List implements agent.Hypervisor.
func (h *Hypervisor) List(ctx context.Context) ([]agent.VMStatus, error) {
	return h.list("List")
}

func (h *Hypervisor) list(op string) ([]agent.VMStatus, error) {
	h.mu.Lock()
	h.calls = append(h.calls, Call{Op: op, At: time.Now()})
	err := h.fail[op]
	var out []agent.VMStatus
	for _, v := range h.vms {
		out = append(out, h.statusLocked(v))
	}
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// CreateRootDisk implements agent.Hypervisor.
func (h *Hypervisor) CreateRootDisk(ctx context.Context, id string, base agent.Disk, sizeGB int) (agent.Disk, error) {
	h.mu.Lock()
	c, err := h.record("CreateRootDisk", id, "")
	if err == nil {
		v := h.vmLocked(id)
		switch {
		case v.RootDisk != nil && v.Base.Path != base.Path:
			err = fmt.Errorf("vm %s: root disk exists over %s, not %s", id, v.Base.Path, base.Path)
		case v.RootDisk == nil:
			v.RootDisk = &agent.Disk{Path: "/fake/" + id + "/root.qcow2", Format: "qcow2"}
			v.Base = base
		}
	}
	var d agent.Disk
	if v := h.vms[id]; v != nil && v.RootDisk != nil {
		d = *v.RootDisk
	}
	h.mu.Unlock()
	h.notify(c)
	return d, err
}

// vmLocked returns VM id's record, creating an empty (shut off) one.
func (h *Hypervisor) vmLocked(id string) *VM {
	v := h.vms[id]
	if v == nil {
		v = &VM{ID: id, State: agent.VMShutoff}
		h.vms[id] = v
	}
	return v
}

// WriteConfigDrive implements agent.Hypervisor.
func (h *Hypervisor) WriteConfigDrive(ctx context.Context, id string, cd agent.ConfigDrive) (string, error) {
	h.mu.Lock()
	c, err := h.record("WriteConfigDrive", id, "")
	if err == nil {
		cp := cd
		h.vmLocked(id).ConfigDrive = &cp
	}
	h.mu.Unlock()
	h.notify(c)
	return "/fake/" + id + "/config.iso", err
}

// Start implements agent.Hypervisor.
func (h *Hypervisor) Start(ctx context.Context, spec agent.VMSpec) error {
	h.mu.Lock()
	c, err := h.record("Start", spec.ID, "")
	if err == nil {
		v := h.vms[spec.ID]
		switch {
		case v != nil && (v.State == agent.VMRunning || v.State == agent.VMPaused):
			err = fmt.Errorf("vm %s (pid %d): %w", spec.ID, v.PID, agent.ErrAlreadyRunning)
		case spec.Root.Path == "":
			err = fmt.Errorf("vm %s: no root disk", spec.ID)
		default:
			v = h.vmLocked(spec.ID)
			h.nextPID++
			v.State, v.PID, v.Reason, v.Spec = agent.VMRunning, h.nextPID, "", spec
			v.Disks = slices.Clone(spec.ExtraDisks)
			v.Starts++
			if !v.Suspended {
				v.Boots++
			}
			v.Suspended = false
		}
	}
	delay := h.StartDelay
	h.mu.Unlock()
	if err == nil && delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
	h.notify(c)
	return err
}

// Stop implements agent.Hypervisor.
func (h *Hypervisor) Stop(ctx context.Context, id string) error {
	h.mu.Lock()
	c, err := h.record("Stop", id, "")
	stopped := false
	if err == nil {
		if v := h.vms[id]; v != nil && v.State == agent.VMRunning {
			v.State, v.PID, v.Reason = agent.VMShutoff, 0, "guest shutdown"
			stopped = true
		}
	}
	h.mu.Unlock()
	if stopped {
		h.emit(agent.VMEvent{ID: id, Kind: agent.EventExited, Detail: "guest shutdown"})
	}
	h.notify(c)
	return err
}

// Reboot implements agent.Hypervisor.
func (h *Hypervisor) Reboot(ctx context.Context, id string, hard bool) error {
	arg := "soft"
	if hard {
		arg = "hard"
	}
	h.mu.Lock()
	c, err := h.record("Reboot", id, arg)
	if err == nil {
		v := h.vms[id]
		switch {
		case v == nil || v.State != agent.VMRunning:
			err = fmt.Errorf("vm %s not running", id)
		case hard:
			v.Boots++
		default:
			h.nextPID++
			v.PID = h.nextPID
			v.Starts++
			v.Boots++
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// Delete implements agent.Hypervisor.
func (h *Hypervisor) Delete(ctx context.Context, id string) error {
	h.mu.Lock()
	c, err := h.record("Delete", id, "")
	if err == nil {
		delete(h.vms, id)
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// AttachDisk implements agent.Hypervisor.
func (h *Hypervisor) AttachDisk(ctx context.Context, id string, d agent.Disk) error {
	h.mu.Lock()
	c, err := h.record("AttachDisk", id, d.ID)
	if err == nil {
		v := h.vms[id]
		switch {
		case v == nil:
			err = fmt.Errorf("vm %s not found", id)
		case !slices.ContainsFunc(v.Disks, func(x agent.Disk) bool { return x.ID == d.ID }):
			v.Disks = append(v.Disks, d)
		}
	}
	h.mu.Unlock()
	h.notify(c)
	return err
}

// DetachDisk implements agent.Hypervisor. On a running VM a disk marked
// with HangDetach waits, as the real one keeps asking the guest, until
// timeout (then ErrDetachTimeout), ctx's end, or HangDetach(false).
func (h *Hypervisor) DetachDisk(ctx context.Context, id, diskID string, timeout time.Duration) error {
	h.mu.Lock()
	c, err := h.record("DetachDisk", id, diskID)
	var rel chan struct{}
	if v := h.vms[id]; err == nil && v != nil && v.State == agent.VMRunning {
		rel = h.hang[diskID]
	}
	h.mu.Unlock()
	if err == nil && rel != nil {
		t := time.NewTimer(timeout)
		select {
		case <-rel:
		case <-t.C:
			err = fmt.Errorf("vm %s disk %s after %s: %w", id, diskID, timeout, ErrDetachTimeout)
		case <-ctx.Done():
			err = fmt.Errorf("vm %s disk %s: %w", id, diskID, ctx.Err())
		}
		t.Stop()
	}
	if err == nil {
		h.mu.Lock()
		if v := h.vms[id]; v != nil {
			v.Disks = slices.DeleteFunc(v.Disks, func(x agent.Disk) bool { return x.ID == diskID })
		}
		h.mu.Unlock()
	}
	h.notify(c)
	return err
}

// Events implements agent.Hypervisor.
func (h *Hypervisor) Events() <-chan agent.VMEvent { return h.events }

// ConsoleLog returns a console log like the test guest's: one boot line
// per boot with the config drive's host name and uuid.
func (h *Hypervisor) ConsoleLog(id string, maxBytes int64) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[id]
	if !ok {
		return "", fmt.Errorf("vm %s not found", id)
	}
	host := "guest"
	if v.ConfigDrive != nil {
		host = v.ConfigDrive.Hostname
	}
	var b strings.Builder
	for range v.Boots {
		fmt.Fprintf(&b, "PEERSTACK-BOOT hostname=%s uuid=%s\nPEERSTACK-READY hostname=%s\n", host, id, host)
	}
	s := b.String()
	if maxBytes > 0 && int64(len(s)) > maxBytes {
		s = s[int64(len(s))-maxBytes:]
	}
	return s, nil
}
