package statedb

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// Instance actions (Nova's os-instance-actions), the power and lock
// actions beyond stop/start/reboot, and the usage records deleted
// instances leave behind for os-simple-tenant-usage.
//
// Every server action is one InstanceAction row with one event; the event
// finishes when the host agent reports the instance out of its task state
// (or at once for actions without one, such as lock).

const (
	tblInstanceActions = "instance_actions"
	tblInstanceUsage   = "instance_usage"
)

var instanceActionTables = []table{
	idTable(tblInstanceActions, func() any { return &InstanceAction{} }, "InstanceID"),
	idTable(tblInstanceUsage, func() any { return &InstanceUsage{} }, "ProjectID"),
}

// Power states beyond computes.go's, as Nova numbers them.
const (
	PowerPaused    = 3
	PowerSuspended = 7
)

// VM states beyond computes.go's.
const (
	VMPaused    = "paused"
	VMSuspended = "suspended"
)

// Desired power states beyond computes.go's: the agent pauses (QMP stop)
// or suspends (memory saved to the VM's directory, process gone).
const (
	DesiredPaused    = "paused"
	DesiredSuspended = "suspended"
)

// Task states of the actions here.
const (
	TaskPausing    = "pausing"
	TaskUnpausing  = "unpausing"
	TaskSuspending = "suspending"
	TaskResuming   = "resuming"
)

// Server actions of CmdServerAction.
const (
	ActionPause   = "pause"
	ActionUnpause = "unpause"
	ActionSuspend = "suspend"
	ActionResume  = "resume"
	ActionLock    = "lock"
	ActionUnlock  = "unlock"
)

// Event results.
const (
	ResultSuccess = "Success"
	ResultError   = "Error"
)

// InstanceAction is one action taken on a server. ID is the request id.
type InstanceAction struct {
	ID         string        `json:"id"`
	InstanceID string        `json:"instance_id"`
	Action     string        `json:"action"` // Nova's name: create, delete, stop, start, reboot, pause...
	RequestID  string        `json:"request_id"`
	UserID     string        `json:"user_id"`
	ProjectID  string        `json:"project_id"`
	StartTime  time.Time     `json:"start_time"`
	UpdatedAt  time.Time     `json:"updated_at"`
	Message    string        `json:"message,omitempty"`
	Events     []ActionEvent `json:"events"`
	Seq        uint64        `json:"seq"` // log index that recorded it: orders actions of the same instant
}

// ActionEvent is one step of an action.
type ActionEvent struct {
	Event      string    `json:"event"` // compute_<action>_instance
	StartTime  time.Time `json:"start_time"`
	FinishTime time.Time `json:"finish_time,omitempty"`
	Result     string    `json:"result,omitempty"` // "" while running
	Host       string    `json:"host,omitempty"`
	Traceback  string    `json:"traceback,omitempty"`
}

// Finished reports whether every event of the action ended.
func (a *InstanceAction) Finished() bool {
	for _, e := range a.Events {
		if e.Result == "" {
			return false
		}
	}
	return true
}

// InstanceUsage is what a deleted instance leaves for usage reports.
type InstanceUsage struct {
	ID           string    `json:"id"` // instance id
	Name         string    `json:"name"`
	ProjectID    string    `json:"project_id"`
	UserID       string    `json:"user_id"`
	FlavorName   string    `json:"flavor_name"`
	VCPUs        int       `json:"vcpus"`
	RAMMB        int       `json:"ram_mb"`
	DiskGB       int       `json:"disk_gb"`
	StartedAt    time.Time `json:"started_at"` // launched_at, else created_at
	TerminatedAt time.Time `json:"terminated_at"`
}

// ActionBy names who asked for an action.
type ActionBy struct {
	RequestID string `json:"request_id,omitempty"`
	UserID    string `json:"user_id,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	Admin     bool   `json:"admin,omitempty"`
}

// ServerActionCmd is one of the server actions of this file.
type ServerActionCmd struct {
	ID     string   `json:"id"`
	Action string   `json:"action"`
	Reason string   `json:"reason,omitempty"` // lock
	By     ActionBy `json:"by"`
}

// InstanceActions lists a server's actions, newest first.
func (sn *Snapshot) InstanceActions(instanceID string) []*InstanceAction {
	out := listBy[InstanceAction](sn, tblInstanceActions, "InstanceID", instanceID)
	sort.Slice(out, func(a, b int) bool {
		if !out[a].StartTime.Equal(out[b].StartTime) {
			return out[a].StartTime.After(out[b].StartTime)
		}
		if out[a].Seq != out[b].Seq {
			return out[a].Seq > out[b].Seq
		}
		return out[a].ID > out[b].ID
	})
	return out
}

// InstanceAction returns a server's action by request id.
func (sn *Snapshot) InstanceAction(instanceID, requestID string) (*InstanceAction, bool) {
	for _, a := range listBy[InstanceAction](sn, tblInstanceActions, "InstanceID", instanceID) {
		if a.RequestID == requestID {
			return a, true
		}
	}
	return nil, false
}

// DeletedUsage lists the usage records of deleted instances (of one
// project, or all with "").
func (sn *Snapshot) DeletedUsage(projectID string) []*InstanceUsage {
	if projectID == "" {
		return list[InstanceUsage](sn, tblInstanceUsage)
	}
	return listBy[InstanceUsage](sn, tblInstanceUsage, "ProjectID", projectID)
}

// maxActionsPerInstance bounds the action history kept per server.
const maxActionsPerInstance = 100

// recordAction starts an action with its one event on inst.
func recordAction(t *Txn, c *Command, inst *Instance, action string, by ActionBy, finished bool) error {
	id := c.ReqID
	if id == "" {
		id = inst.ID + "/" + action + "/" + c.Time.Format(time.RFC3339Nano)
	}
	reqID := by.RequestID
	if reqID == "" {
		reqID = "req-" + strings.TrimPrefix(c.ReqID, "req-")
	}
	user, project := by.UserID, by.ProjectID
	if user == "" {
		user = inst.UserID
	}
	if project == "" {
		project = inst.ProjectID
	}
	ev := ActionEvent{Event: "compute_" + action + "_instance", StartTime: c.Time, Host: inst.Host}
	if finished {
		ev.FinishTime, ev.Result = c.Time, ResultSuccess
	}
	if action == "create" || action == "delete" {
		ev.Event = map[string]string{"create": "conductor_schedule_and_build_instances", "delete": "compute_terminate_instance"}[action]
	}
	a := &InstanceAction{ID: id, InstanceID: inst.ID, Action: action, RequestID: reqID, UserID: user,
		ProjectID: project, StartTime: c.Time, UpdatedAt: c.Time, Events: []ActionEvent{ev}, Seq: t.Index}
	old := t.read().InstanceActions(inst.ID)
	for len(old) >= maxActionsPerInstance {
		if err := t.delete(tblInstanceActions, old[len(old)-1]); err != nil {
			return err
		}
		old = old[:len(old)-1]
	}
	return t.insert(tblInstanceActions, a)
}

// finishActions ends the open events of an instance's actions once the
// agent reports it out of its task state: Error when it ended in ERROR.
func finishActions(t *Txn, now time.Time, before, after *Instance) error {
	if after.TaskState != "" || (before.TaskState == "" && after.VMState != VMError) {
		return nil
	}
	for _, a := range t.read().InstanceActions(after.ID) {
		if a.Finished() {
			continue
		}
		cp := *a
		cp.Events = slices.Clone(a.Events)
		for i := range cp.Events {
			if cp.Events[i].Result != "" {
				continue
			}
			cp.Events[i].FinishTime, cp.Events[i].Result = now, ResultSuccess
			if after.Host != "" {
				cp.Events[i].Host = after.Host
			}
			if after.VMState == VMError {
				cp.Events[i].Result = ResultError
				if after.Fault != nil {
					cp.Events[i].Traceback = after.Fault.Details
					cp.Message = after.Fault.Message
				}
			}
		}
		cp.UpdatedAt = now
		if err := t.insert(tblInstanceActions, &cp); err != nil {
			return err
		}
	}
	return nil
}

// recordUsage keeps the usage of an instance being removed, and its
// action history with every event ended (listable by the deleted
// server's id, as Nova's from 2.21) once every member runs a release
// that keeps it.
func recordUsage(t *Txn, now time.Time, inst *Instance) error {
	start := inst.LaunchedAt
	if start.IsZero() {
		start = inst.CreatedAt
	}
	u := &InstanceUsage{ID: inst.ID, Name: inst.Name, ProjectID: inst.ProjectID, UserID: inst.UserID,
		FlavorName: inst.Flavor.Name, VCPUs: inst.Flavor.VCPUs, RAMMB: inst.Flavor.RAMMB, DiskGB: inst.Flavor.DiskGB,
		StartedAt: start, TerminatedAt: now}
	if err := t.insert(tblInstanceUsage, u); err != nil {
		return err
	}
	if !everyMemberAtLeast(t.read(), wave2) {
		// A host of an older release drops the history here: so does
		// every host until none is older, or their states would differ.
		for _, a := range listBy[InstanceAction](t.read(), tblInstanceActions, "InstanceID", inst.ID) {
			if err := t.delete(tblInstanceActions, a); err != nil {
				return err
			}
		}
		return nil
	}
	return finishDeletedActions(t, now, inst)
}

// LockedError is Nova's 409 for acting on a locked server.
func LockedError(id string) error { return Errorf(KindConflict, "Instance %s is locked", id) }

func applyServerAction(t *Txn, c *Command) error {
	r, err := decode[ServerActionCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	if inst.Desired == DesiredDeleted {
		return Errorf(KindConflict, "Cannot '%s' instance %s while it is in task_state %s", r.Action, inst.ID, TaskDeleting)
	}
	cp := *inst
	simple := func(from, task, desired string) error {
		if inst.VMState != from || inst.Host == "" {
			return vmStateConflict(r.Action, inst)
		}
		if inst.TaskState != "" {
			return taskStateConflict(r.Action, inst)
		}
		cp.TaskState, cp.Desired = task, desired
		return nil
	}
	if r.Action != ActionLock && r.Action != ActionUnlock && inst.Locked && !r.By.Admin {
		return LockedError(inst.ID)
	}
	switch r.Action {
	case ActionPause:
		err = simple(VMActive, TaskPausing, DesiredPaused)
	case ActionUnpause:
		err = simple(VMPaused, TaskUnpausing, DesiredRunning)
	case ActionSuspend:
		err = simple(VMActive, TaskSuspending, DesiredSuspended)
		if err != nil && inst.VMState == VMPaused && inst.TaskState == "" && inst.Host != "" {
			cp.TaskState, cp.Desired, err = TaskSuspending, DesiredSuspended, nil // Nova suspends a paused server too
		}
	case ActionResume:
		err = simple(VMSuspended, TaskResuming, DesiredRunning)
	case ActionLock:
		if !inst.Locked {
			cp.Locked, cp.LockedBy, cp.LockedReason = true, "owner", r.Reason
			if r.By.Admin && r.By.ProjectID != inst.ProjectID {
				cp.LockedBy = "admin"
			}
		}
	case ActionUnlock:
		if inst.Locked && inst.LockedBy == "admin" && !r.By.Admin {
			return Errorf(KindForbidden, "Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override to be performed.")
		}
		cp.Locked, cp.LockedBy, cp.LockedReason = false, "", ""
	default:
		return Errorf(KindInvalid, "unknown server action %q", r.Action)
	}
	if err != nil {
		return err
	}
	cp.UpdatedAt = c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, r.Action, r.By, r.Action == ActionLock || r.Action == ActionUnlock)
}

// MaxInstanceTags is Nova's limit of tags per server.
const MaxInstanceTags = 50

// SetInstanceTagsCmd replaces a server's tags (Replace), or adds Add and
// removes Remove (each must exist).
type SetInstanceTagsCmd struct {
	ID      string   `json:"id"`
	Replace bool     `json:"replace,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	Add     []string `json:"add,omitempty"`
	Remove  []string `json:"remove,omitempty"`
	By      ActionBy `json:"by"`
}

func applySetInstanceTags(t *Txn, c *Command) error {
	r, err := decode[SetInstanceTagsCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	tags := slices.Clone(inst.Tags)
	if r.Replace {
		tags = nil
		for _, tag := range r.Tags {
			if !slices.Contains(tags, tag) {
				tags = append(tags, tag)
			}
		}
	}
	for _, tag := range r.Add {
		if !slices.Contains(tags, tag) {
			tags = append(tags, tag)
		}
	}
	for _, tag := range r.Remove {
		i := slices.Index(tags, tag)
		if i < 0 {
			return Errorf(KindNotFound, "Tag %s could not be found.", tag)
		}
		tags = slices.Delete(tags, i, i+1)
	}
	if len(tags) > MaxInstanceTags {
		return Errorf(KindInvalid, "Instance %s has too many tags: the limit is %d", inst.ID, MaxInstanceTags)
	}
	sort.Strings(tags)
	cp := *inst
	cp.Tags, cp.UpdatedAt = tags, c.Time
	return t.insert(tblInstances, &cp)
}
