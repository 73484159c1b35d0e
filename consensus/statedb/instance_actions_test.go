package statedb

import (
	"errors"
	"testing"
)

// activeOn creates instance id placed on h1 and reported active.
func (cs *cstore) activeOn(id string) {
	cs.t.Helper()
	cs.create(tiny, id)
	cs.must(CmdPlaceInstances, PlaceInstancesCmd{HostCaps: map[string]HostCap{"h1": {VCPUs: 8, RAMMB: 8192, DiskGB: 80}},
		Placements: []PlacementRec{{id, "h1"}}})
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: id, HostID: "h1", VMState: VMActive, PowerState: PowerRunning,
		LaunchedAt: t0})
}

func TestServerActionsStatesAndLock(t *testing.T) {
	cs := newCStore(t, "h1")
	cs.activeOn("a")
	owner := ActionBy{RequestID: "req-x", UserID: "u1", ProjectID: "p1"}
	admin := ActionBy{UserID: "adm", ProjectID: "admin", Admin: true}
	act := func(action string, by ActionBy) error {
		return cs.do(CmdServerAction, ServerActionCmd{ID: "a", Action: action, By: by})
	}
	wantErr := func(err error, kind Kind, msg string) {
		t.Helper()
		var e *Error
		if !errors.As(err, &e) || e.Kind != kind || e.Msg != msg {
			t.Fatalf("err = %v, want %s %q", err, kind, msg)
		}
	}
	wantErr(act(ActionUnpause, owner), KindConflict, "Cannot 'unpause' instance a while it is in vm_state active")
	wantErr(act(ActionResume, owner), KindConflict, "Cannot 'resume' instance a while it is in vm_state active")
	if err := act(ActionPause, owner); err != nil {
		t.Fatal(err)
	}
	if i := cs.inst("a"); i.TaskState != TaskPausing || i.Desired != DesiredPaused {
		t.Fatalf("after pause: task %q desired %q", i.TaskState, i.Desired)
	}
	wantErr(act(ActionSuspend, owner), KindConflict, "Cannot 'suspend' instance a while it is in task_state pausing")
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMPaused, PowerState: PowerPaused})
	acts := cs.s.Snapshot().InstanceActions("a")
	if len(acts) != 2 || acts[0].Action != "pause" || acts[0].RequestID != "req-x" || acts[0].UserID != "u1" ||
		acts[0].Events[0].Result != ResultSuccess || acts[0].Events[0].FinishTime.IsZero() || acts[1].Action != "create" {
		t.Fatalf("actions = %+v", acts)
	}

	// Locked by an admin of another project: the owner can neither act nor unlock.
	if err := act(ActionLock, admin); err != nil {
		t.Fatal(err)
	}
	if i := cs.inst("a"); !i.Locked || i.LockedBy != "admin" {
		t.Fatalf("lock: %+v", i)
	}
	wantErr(act(ActionUnpause, owner), KindConflict, "Instance a is locked")
	wantErr(cs.do(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionStop, By: owner}), KindConflict, "Instance a is locked")
	wantErr(act(ActionUnlock, owner), KindForbidden,
		"Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override to be performed.")
	if err := act(ActionUnpause, admin); err != nil {
		t.Fatalf("admin unpause of a locked server: %v", err)
	}
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMActive, PowerState: PowerRunning})
	if err := act(ActionUnlock, admin); err != nil {
		t.Fatal(err)
	}
	// Locked by its owner: the owner unlocks.
	if err := cs.do(CmdServerAction, ServerActionCmd{ID: "a", Action: ActionLock, Reason: "why", By: owner}); err != nil {
		t.Fatal(err)
	}
	if i := cs.inst("a"); i.LockedBy != "owner" || i.LockedReason != "why" {
		t.Fatalf("owner lock: %+v", i)
	}
	if err := act(ActionUnlock, owner); err != nil {
		t.Fatal(err)
	}

	cs.must(CmdInstanceAction, InstanceActionCmd{ID: "a", Action: ActionStop, By: owner})
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", VMState: VMStopped, PowerState: PowerShutdown})
	wantErr(act(ActionPause, owner), KindConflict, "Cannot 'pause' instance a while it is in vm_state stopped")
	wantErr(act(ActionSuspend, owner), KindConflict, "Cannot 'suspend' instance a while it is in vm_state stopped")
	wantErr(act("explode", owner), KindInvalid, `unknown server action "explode"`)
}

func TestDeletedInstanceLeavesUsage(t *testing.T) {
	cs := newCStore(t, "h1")
	cs.activeOn("a")
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "a"})
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "a", HostID: "h1", Gone: true})
	sn := cs.s.Snapshot()
	if _, ok := sn.Instance("a"); ok {
		t.Fatal("instance survived")
	}
	us := sn.DeletedUsage("p1")
	if len(us) != 1 || us[0].ID != "a" || !us[0].StartedAt.Equal(t0) || !us[0].TerminatedAt.After(t0) || us[0].VCPUs != 1 {
		t.Fatalf("usage = %+v", us)
	}
	// h1 reported no version: a host of an older release may still be
	// applying, and it drops the history, so every host does.
	if acts := sn.InstanceActions("a"); len(acts) != 0 {
		t.Fatalf("actions of a removed instance kept while a host may be older: %+v", acts)
	}
	cs.must(CmdRegisterMember, Member{ID: "h1", Name: "name-h1", Version: wave2})
	cs.activeOn("b")
	cs.must(CmdDeleteInstance, DeleteCmd{ID: "b"})
	cs.must(CmdReportInstance, ReportInstanceCmd{InstanceID: "b", HostID: "h1", Gone: true})
	sn = cs.s.Snapshot()
	acts := sn.InstanceActions("b")
	if len(acts) == 0 || acts[0].Action != "delete" {
		t.Fatalf("actions of a removed instance = %+v; want its history, delete first", acts)
	}
	for _, a := range acts {
		if !a.Finished() {
			t.Fatalf("action %s of a removed instance left open: %+v", a.Action, a.Events)
		}
	}
	if p, ok := sn.DeletedInstanceProject("b"); !ok || p != "p1" {
		t.Fatalf("DeletedInstanceProject = %q, %v", p, ok)
	}
}
