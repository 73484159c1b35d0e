package agent

import (
	"fmt"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestAgentDiffDay2 pins what the agent does for rescue, snapshot and
// resize states, and that a task under way is never reported away.
func TestAgentDiffDay2(t *testing.T) {
	const (
		run = statedb.DesiredRunning
		stp = statedb.DesiredStopped
		rsc = statedb.DesiredRescued
		del = statedb.DesiredDeleted
	)
	running := VMStatus{State: VMRunning, PID: 42}
	shutoff := VMStatus{State: VMShutoff}
	snap := func(i *statedb.Instance) { i.SnapshotImage = "img" }
	resize := func(stopped, confirming bool) func(*statedb.Instance) {
		return func(i *statedb.Instance) {
			i.Resize = &statedb.ResizeState{WasStopped: stopped, Confirming: confirming}
		}
	}
	cases := []struct {
		name   string
		inst   *statedb.Instance
		actual VMStatus
		want   string
	}{
		{"rescue requested", inst("a", rsc, statedb.VMActive, statedb.TaskRescuing, 1), running, "rescue rescued/1"},
		{"rescue of a stopped server", inst("a", rsc, statedb.VMStopped, statedb.TaskRescuing, 4), shutoff, "rescue rescued/1"},
		{"rescued and running: nothing", inst("a", rsc, statedb.VMRescued, "", 1), running, ""},
		{"rescued vm stopped outside: reported, not restarted", inst("a", rsc, statedb.VMRescued, "", 1), shutoff, "report rescued/4"},
		{"failed rescue: not retried", inst("a", rsc, statedb.VMError, "", 0), shutoff, ""},
		{"unrescue requested", inst("a", run, statedb.VMRescued, statedb.TaskUnrescuing, 1), running, "unrescue active/1"},
		{"rescued then deleted", inst("a", del, statedb.VMRescued, statedb.TaskDeleting, 1), running, "delete deleted/0"},
		{"snapshot requested", inst("a", run, statedb.VMActive, statedb.TaskImageSnapshot, 1, snap), running, "snapshot active/1"},
		{"snapshot of a stopped server", inst("a", stp, statedb.VMStopped, statedb.TaskImageSnapshot, 4, snap), shutoff, "snapshot stopped/4"},
		{"snapshot task, vm gone: nothing reported", inst("a", run, statedb.VMActive, statedb.TaskImageSnapshot, 1, snap), shutoff, "snapshot active/1"},
		{"resize requested", inst("a", run, statedb.VMActive, statedb.TaskResizePrep, 1, resize(false, false)), running, "resize resized/1"},
		{"resize of a stopped server", inst("a", stp, statedb.VMStopped, statedb.TaskResizePrep, 4, resize(true, false)), shutoff, "resize resized/4"},
		{"verify resize: nothing", inst("a", run, statedb.VMResized, "", 1, resize(false, false)), running, ""},
		{"revert requested", inst("a", run, statedb.VMResized, statedb.TaskResizeReverting, 1, resize(false, false)), running, "revert_resize active/1"},
		{"revert of a stopped server", inst("a", stp, statedb.VMResized, statedb.TaskResizeReverting, 4, resize(true, false)), shutoff, "revert_resize stopped/4"},
		{"confirmed", inst("a", run, statedb.VMResized, "", 1, resize(false, true)), running, "confirm_resize active/1"},
		{"confirmed, off", inst("a", stp, statedb.VMResized, "", 4, resize(true, true)), shutoff, "confirm_resize stopped/4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.actual.ID = c.inst.ID
			acts := diffInstances("me", []*statedb.Instance{c.inst}, map[string]VMStatus{c.inst.ID: c.actual})
			got := ""
			if len(acts) > 1 {
				t.Fatalf("diffInstances = %d actions; want at most 1", len(acts))
			}
			if len(acts) == 1 {
				got = fmt.Sprintf("%s %s/%d", acts[0].Op, acts[0].Report.VMState, acts[0].Report.PowerState)
				if acts[0].Report.TaskState != "" && acts[0].Op != opDelete {
					t.Errorf("report keeps task state %q", acts[0].Report.TaskState)
				}
			}
			if got != c.want {
				t.Errorf("diffInstances(%s/%s, %s) = %q; want %q", c.inst.VMState, c.inst.TaskState, c.actual.State, got, c.want)
			}
		})
	}
}
