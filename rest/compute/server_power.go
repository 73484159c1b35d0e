package compute

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// actionBy names the caller of a server action for its instance action
// record and the lock rules.
func (s *service) actionBy(c *rest.Ctx) statedb.ActionBy {
	by := statedb.ActionBy{RequestID: c.ReqID, Admin: s.isAdmin(c)}
	if c.Cred != nil {
		by.UserID, by.ProjectID = c.Cred.UserID, c.Cred.ProjectID
	}
	return by
}

// powerActions are the server actions of statedb.CmdServerAction by
// their request body key.
var powerActions = map[string]string{
	"pause": statedb.ActionPause, "unpause": statedb.ActionUnpause,
	"suspend": statedb.ActionSuspend, "resume": statedb.ActionResume,
	"lock": statedb.ActionLock, "unlock": statedb.ActionUnlock,
}

// powerAction serves pause, unpause, suspend, resume, lock and unlock.
// As in Nova only lock from 2.73 validates its body ({"lock": null} or
// {"lock": {"locked_reason": …}}); the others, and lock before 2.73,
// ignore theirs.
func (s *service) powerAction(c *rest.Ctx, inst *statedb.Instance, action string, raw json.RawMessage) (any, error) {
	cmd := statedb.ServerActionCmd{ID: inst.ID, Action: powerActions[action], By: s.actionBy(c)}
	if action == "lock" && atLeast(c, 2, 73) && string(raw) != "null" {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil || m == nil {
			return nil, rest.BadRequest("Invalid input for field/attribute lock. Value: %s. %s is not of type 'object', 'null'", raw, raw)
		}
		for k, v := range m {
			if k != "locked_reason" {
				return nil, rest.BadRequest("Invalid input for field/attribute lock. Additional properties are not allowed ('%s' was unexpected)", k)
			}
			var reason string
			if json.Unmarshal(v, &reason) != nil {
				return nil, rest.BadRequest("Invalid input for field/attribute locked_reason. Value: %s. %s is not of type 'string'", v, v)
			}
			if len([]rune(reason)) > 255 {
				return nil, rest.BadRequest("Invalid input for field/attribute locked_reason. Value: %s. It is too long", reason)
			}
			cmd.Reason = reason
		}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdServerAction, cmd); err != nil {
		return nil, err
	}
	return accepted(), nil
}

// checkLocked refuses a non-admin's action on a locked server as Nova
// does.
func (s *service) checkLocked(c *rest.Ctx, inst *statedb.Instance) error {
	if inst.Locked && !s.isAdmin(c) {
		return rest.Conflictf("Instance %s is locked", inst.ID)
	}
	return nil
}

// ---- os-instance-actions ----

func (s *service) instanceActionView(c *rest.Ctx, a *statedb.InstanceAction) map[string]any {
	var msg any
	if a.Message != "" {
		msg = a.Message
	}
	out := map[string]any{
		"action": a.Action, "instance_uuid": a.InstanceID, "message": msg, "project_id": a.ProjectID,
		"request_id": a.RequestID, "start_time": a.StartTime.UTC().Format(timeUSG), "user_id": a.UserID,
	}
	if atLeast(c, 2, 58) {
		out["updated_at"] = a.UpdatedAt.UTC().Format(timeUSG)
	}
	return out
}

// listInstanceActions serves GET /servers/{id}/os-instance-actions.
func (s *service) listInstanceActions(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	id, err := s.actionsServer(c, sn)
	if err != nil {
		return nil, err
	}
	acts := sn.InstanceActions(id)
	if atLeast(c, 2, 58) {
		if m := c.Query("marker"); m != "" {
			i := indexOfAction(acts, m)
			if i < 0 {
				return nil, rest.BadRequest("Marker %s could not be found.", m)
			}
			acts = acts[i+1:]
		}
		if l := c.Query("limit"); l != "" {
			n, err := intValue("limit", json.RawMessage(`"`+l+`"`), rest.NovaInt)
			if err != nil {
				return nil, err
			}
			if n < len(acts) {
				acts = acts[:n]
			}
		}
	}
	out := make([]map[string]any, 0, len(acts))
	for _, a := range acts {
		out = append(out, s.instanceActionView(c, a))
	}
	return map[string]any{"instanceActions": out}, nil
}

func indexOfAction(acts []*statedb.InstanceAction, reqID string) int {
	for i, a := range acts {
		if a.RequestID == reqID {
			return i
		}
	}
	return -1
}

// getInstanceAction serves GET /servers/{id}/os-instance-actions/{req}:
// with its events for admins (from 2.51 for everyone, the traceback
// still for admins only).
func (s *service) getInstanceAction(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	id, err := s.actionsServer(c, sn)
	if err != nil {
		return nil, err
	}
	reqID := c.Var("request_id")
	a, ok := sn.InstanceAction(id, reqID)
	if !ok {
		return nil, rest.NotFoundf("Action %s not found", reqID)
	}
	out := s.instanceActionView(c, a)
	admin := s.isAdmin(c)
	if admin || atLeast(c, 2, 51) {
		evs := make([]map[string]any, 0, len(a.Events))
		for _, e := range a.Events {
			ev := map[string]any{"event": e.Event, "start_time": e.StartTime.UTC().Format(timeUSG),
				"finish_time": nil, "result": nil}
			if !e.FinishTime.IsZero() {
				ev["finish_time"] = e.FinishTime.UTC().Format(timeUSG)
			}
			if e.Result != "" {
				ev["result"] = e.Result
			}
			if admin {
				var tb any
				if e.Traceback != "" {
					tb = e.Traceback
				}
				ev["traceback"] = tb
			}
			if atLeast(c, 2, 62) {
				host := ""
				if e.Host != "" {
					host = s.newViewCtx(c, sn).hostName(e.Host)
				}
				if admin {
					ev["host"] = host
				}
				ev["hostId"] = hostID(a.ProjectID, host)
			}
			evs = append(evs, ev)
		}
		out["events"] = evs
	}
	return map[string]any{"instanceAction": out}, nil
}

// ---- os-simple-tenant-usage ----

var usageTimeFormats = []string{"2006-01-02T15:04:05", "2006-01-02T15:04:05.999999", "2006-01-02 15:04:05.999999",
	"2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05.999999Z07:00"}

func parseUsageTime(v string) (time.Time, bool) {
	for _, f := range usageTimeFormats {
		if t, err := time.Parse(f, v); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// usagePeriod reads start and end (default: now) as Nova does.
func (s *service) usagePeriod(c *rest.Ctx) (time.Time, time.Time, error) {
	now := s.b.Now().UTC()
	start, end := now, now
	if v := c.Query("start"); v != "" {
		t, ok := parseUsageTime(v)
		if !ok {
			return start, end, rest.BadRequest("Invalid start time.")
		}
		start = t
	}
	if v := c.Query("end"); v != "" {
		t, ok := parseUsageTime(v)
		if !ok {
			return start, end, rest.BadRequest("Invalid end time.")
		}
		end = t
	}
	if start.After(end) {
		return start, end, rest.BadRequest("Invalid start time. The start time cannot occur after the end time.")
	}
	return start, end, nil
}

// serverUsage is one server's share of a usage period.
type serverUsage struct {
	id, name, project, flavor, state string
	vcpus, ramMB, diskGB             int
	started, ended                   time.Time
}

// usages lists the servers (live and deleted) of a project ("" all) whose
// lifetime overlaps [start, end], in instance id order.
func usages(sn *statedb.Snapshot, project string, start, end time.Time) []serverUsage {
	var out []serverUsage
	add := func(u serverUsage) {
		if u.started.After(end) || (!u.ended.IsZero() && u.ended.Before(start)) {
			return
		}
		out = append(out, u)
	}
	insts := sn.Instances()
	if project != "" {
		insts = sn.InstancesOfProject(project)
	}
	for _, i := range insts {
		st := i.LaunchedAt
		if st.IsZero() {
			st = i.CreatedAt
		}
		add(serverUsage{id: i.ID, name: i.Name, project: i.ProjectID, flavor: i.Flavor.Name, state: i.VMState,
			vcpus: i.Flavor.VCPUs, ramMB: i.Flavor.RAMMB, diskGB: i.Flavor.DiskGB + i.Flavor.EphemeralGB, started: st})
	}
	for _, u := range sn.DeletedUsage(project) {
		add(serverUsage{id: u.ID, name: u.Name, project: u.ProjectID, flavor: u.FlavorName, state: "terminated",
			vcpus: u.VCPUs, ramMB: u.RAMMB, diskGB: u.DiskGB, started: u.StartedAt, ended: u.TerminatedAt})
	}
	sortUsages(out)
	return out
}

func sortUsages(us []serverUsage) {
	for i := 1; i < len(us); i++ {
		for j := i; j > 0 && us[j].id < us[j-1].id; j-- {
			us[j], us[j-1] = us[j-1], us[j]
		}
	}
}

// tenantUsage sums server usages of one project over [start, end].
func tenantUsage(project string, us []serverUsage, start, end, now time.Time, detailed bool) map[string]any {
	var hours, gb, mb, vcpus float64
	servers := []map[string]any{}
	for _, u := range us {
		from, to := u.started, end
		if from.Before(start) {
			from = start
		}
		if !u.ended.IsZero() && u.ended.Before(to) {
			to = u.ended
		}
		h := to.Sub(from).Hours()
		if h < 0 {
			h = 0
		}
		hours += h
		gb += h * float64(u.diskGB)
		mb += h * float64(u.ramMB)
		vcpus += h * float64(u.vcpus)
		if !detailed {
			continue
		}
		upTo := now
		var ended any
		if !u.ended.IsZero() {
			upTo, ended = u.ended, u.ended.UTC().Format(timeUSG)
		}
		servers = append(servers, map[string]any{
			"instance_id": u.id, "name": u.name, "tenant_id": u.project, "flavor": u.flavor, "state": u.state,
			"hours": h, "vcpus": u.vcpus, "memory_mb": u.ramMB, "local_gb": u.diskGB,
			"started_at": u.started.UTC().Format(timeUSG), "ended_at": ended, "uptime": int(upTo.Sub(u.started).Seconds()),
		})
	}
	out := map[string]any{
		"tenant_id": project, "start": start.Format(timeUSG), "stop": end.Format(timeUSG),
		"total_hours": hours, "total_local_gb_usage": gb, "total_memory_mb_usage": mb, "total_vcpus_usage": vcpus,
	}
	if detailed {
		out["server_usages"] = servers
	}
	return out
}

// pageUsages applies 2.40's marker (an instance id) and limit.
func pageUsages(c *rest.Ctx, us []serverUsage) ([]serverUsage, error) {
	if !atLeast(c, 2, 40) {
		return us, nil
	}
	if m := c.Query("marker"); m != "" {
		i := -1
		for k, u := range us {
			if u.id == m {
				i = k
			}
		}
		if i < 0 {
			return nil, rest.BadRequest("marker [%s] not found", m)
		}
		us = us[i+1:]
	}
	if l := c.Query("limit"); l != "" {
		n, err := intValue("limit", json.RawMessage(`"`+l+`"`), rest.NovaInt)
		if err != nil {
			return nil, err
		}
		if n < len(us) {
			us = us[:n]
		}
	}
	return us, nil
}

// listUsage serves GET /os-simple-tenant-usage (admin): one entry per
// project with servers in the period.
func (s *service) listUsage(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "os_compute_api:os-simple-tenant-usage:list"); err != nil {
		return nil, err
	}
	start, end, err := s.usagePeriod(c)
	if err != nil {
		return nil, err
	}
	detailed, _ := queryBool(c.Query("detailed"))
	us, err := pageUsages(c, usages(s.b.State(), "", start, end))
	if err != nil {
		return nil, err
	}
	byProject := map[string][]serverUsage{}
	var order []string
	for _, u := range us {
		if _, ok := byProject[u.project]; !ok {
			order = append(order, u.project)
		}
		byProject[u.project] = append(byProject[u.project], u)
	}
	now := s.b.Now().UTC()
	out := make([]map[string]any, 0, len(order))
	for _, p := range order {
		out = append(out, tenantUsage(p, byProject[p], start, end, now, detailed))
	}
	return map[string]any{"tenant_usages": out}, nil
}

// getUsage serves GET /os-simple-tenant-usage/{tenant_id}: the caller's
// own project, or any for an admin.
func (s *service) getUsage(c *rest.Ctx) (any, error) {
	project := c.Var("tenant_id")
	if err := rest.Check(s.b, c, rest.Read, project, false, "os_compute_api:os-simple-tenant-usage:show"); err != nil {
		if he, ok := err.(*rest.HTTPError); ok && he.Status == http.StatusNotFound {
			return nil, rest.Forbiddenf("Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed.")
		}
		return nil, err
	}
	start, end, err := s.usagePeriod(c)
	if err != nil {
		return nil, err
	}
	us, err := pageUsages(c, usages(s.b.State(), project, start, end))
	if err != nil {
		return nil, err
	}
	if len(us) == 0 {
		return map[string]any{"tenant_usage": map[string]any{}}, nil
	}
	return map[string]any{"tenant_usage": tenantUsage(project, us, start, end, s.b.Now().UTC(), true)}, nil
}
