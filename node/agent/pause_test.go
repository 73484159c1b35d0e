package agent

import (
	"fmt"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestAgentDiffPauseSuspend(t *testing.T) {
	const (
		run = statedb.DesiredRunning
		pau = statedb.DesiredPaused
		sus = statedb.DesiredSuspended
	)
	running := VMStatus{State: VMRunning, PID: 42}
	paused := VMStatus{State: VMPaused, PID: 42}
	shutoff := VMStatus{State: VMShutoff, Reason: "suspended"}
	cases := []struct {
		name   string
		inst   *statedb.Instance
		actual VMStatus
		want   string
	}{
		{"pause requested", inst("a", pau, statedb.VMActive, statedb.TaskPausing, 1), running, "pause paused/3"},
		{"pause requested, already paused", inst("a", pau, statedb.VMActive, statedb.TaskPausing, 1), paused, "report paused/3"},
		{"paused and paused: nothing", inst("a", pau, statedb.VMPaused, "", 3), paused, ""},
		{"paused server gone: stopped", inst("a", pau, statedb.VMPaused, "", 3), shutoff, "report stopped/4"},
		{"unpause requested", inst("a", run, statedb.VMPaused, statedb.TaskUnpausing, 3), paused, "unpause active/1"},
		{"unpause requested, already running", inst("a", run, statedb.VMPaused, statedb.TaskUnpausing, 3), running, "report active/1"},
		{"suspend requested", inst("a", sus, statedb.VMActive, statedb.TaskSuspending, 1), running, "suspend suspended/7"},
		{"suspend of a paused server", inst("a", sus, statedb.VMPaused, statedb.TaskSuspending, 3), paused, "suspend suspended/7"},
		{"suspended and down: nothing", inst("a", sus, statedb.VMSuspended, "", 7), shutoff, ""},
		{"resume requested: start restores", inst("a", run, statedb.VMSuspended, statedb.TaskResuming, 7), shutoff, "start active/1"},
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
				if acts[0].Report.TaskState != "" {
					t.Errorf("report keeps task state %q", acts[0].Report.TaskState)
				}
			}
			if got != c.want {
				t.Errorf("diffInstances(%s, %s) = %q; want %q", c.inst.VMState, c.actual.State, got, c.want)
			}
		})
	}
}
