package compute_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

const mv279 = "compute 2.79"

func TestPowerActionsLockAndBadInput(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.place(id, "host1", true)
	type step struct {
		who    string // member, admin, alien
		body   string
		hdr    string // OpenStack-API-Version, "" for 2.1
		status int
		msg    string // substring of the error message
	}
	steps := []step{
		{"member", `{"unpause": null}`, "", 409, "Cannot 'unpause' instance " + id + " while it is in vm_state active"},
		{"member", `{"resume": null}`, "", 409, "Cannot 'resume' instance " + id + " while it is in vm_state active"},
		{"member", `{"lock": {"locked_reason": "x"}}`, "", 202, ""}, // before 2.73 the body is ignored
		{"member", `{"unlock": "anything"}`, "", 202, ""},
		{"member", `{"lock": "now"}`, mv279, 400, "is not of type"},
		{"member", `{"lock": {"locked_reason": 7}}`, mv279, 400, "locked_reason"},
		{"member", `{"lock": {"locked_reason": "` + strings.Repeat("r", 256) + `"}}`, mv279, 400, "too long"},
		{"member", `{"lock": {"reason": "x"}}`, mv279, 400, "Additional properties"},
		{"alien", `{"pause": null}`, "", 404, "could not be found"},
		{"admin", `{"lock": {"locked_reason": "maint"}}`, mv279, 202, ""},
		{"member", `{"pause": null}`, "", 409, "Instance " + id + " is locked"},
		{"member", `{"os-stop": null}`, "", 409, "Instance " + id + " is locked"},
		{"member", `{"unlock": null}`, "", 403, "unlock_override"},
		{"admin", `{"pause": null}`, "", 202, ""},
		{"admin", `{"unlock": null}`, "", 202, ""},
		{"member", `{"lock": null}`, "", 202, ""},
		{"member", `{"unlock": null}`, "", 202, ""},
	}
	for i, st := range steps {
		c := e.member
		switch st.who {
		case "admin":
			c = e.admin
		case "alien":
			c = e.alien
		}
		var hdr []string
		if st.hdr != "" {
			hdr = []string{"OpenStack-API-Version", st.hdr}
		}
		r := c.Do("POST", api+"/servers/"+id+"/action", st.body, hdr...)
		if r.Status != st.status {
			t.Fatalf("step %d: %s %s = %d %s; want %d", i, st.who, st.body, r.Status, r.Body, st.status)
		}
		if st.msg != "" {
			key := map[int]string{400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest"}[st.status]
			if msg := errMessage(t, r, key); !strings.Contains(msg, st.msg) {
				t.Fatalf("step %d: message %q; want %q", i, msg, st.msg)
			}
		}
	}
	// Admin paused it: the state waits for the agent; nothing is stuck
	// that a report does not clear.
	if inst, _ := e.b.State().Instance(id); inst.TaskState != statedb.TaskPausing || inst.Locked {
		t.Fatalf("after the steps: task %q locked %v", inst.TaskState, inst.Locked)
	}
	e.report(id, "host1", statedb.VMPaused, statedb.PowerPaused)
	s := serverOf(t, e.member.Do("GET", api+"/servers/"+id, nil, "OpenStack-API-Version", mv279))
	if s["status"] != "PAUSED" || s["OS-EXT-STS:power_state"] != 3.0 || s["locked"] != false || s["locked_reason"] != nil {
		t.Fatalf("server at 2.79 = %v", s)
	}
	if r := e.member.Do("DELETE", api+"/servers/"+id, nil); r.Status != 204 {
		t.Fatalf("delete = %d %s", r.Status, r.Body)
	}
}

func TestInstanceActionsAndUsage(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.place(id, "host1", true)
	if r := e.member.Do("POST", api+"/servers/"+id+"/action", `{"os-stop": null}`); r.Status != 202 {
		t.Fatalf("stop = %d %s", r.Status, r.Body)
	}
	var list struct {
		Actions []map[string]any `json:"instanceActions"`
	}
	e.member.Do("GET", api+"/servers/"+id+"/os-instance-actions", nil).Decode(t, &list)
	if len(list.Actions) != 2 || list.Actions[0]["action"] != "stop" || list.Actions[1]["action"] != "create" {
		t.Fatalf("actions = %v", list.Actions)
	}
	req := fmt.Sprint(list.Actions[0]["request_id"])
	var member, admin, member251 struct {
		Action map[string]any `json:"instanceAction"`
	}
	e.member.Do("GET", api+"/servers/"+id+"/os-instance-actions/"+req, nil).Decode(t, &member)
	e.admin.Do("GET", api+"/servers/"+id+"/os-instance-actions/"+req, nil).Decode(t, &admin)
	e.member.Do("GET", api+"/servers/"+id+"/os-instance-actions/"+req, nil, "OpenStack-API-Version", "compute 2.51").Decode(t, &member251)
	if _, ok := member.Action["events"]; ok {
		t.Fatalf("a member saw events at 2.1: %v", member.Action)
	}
	evs, _ := admin.Action["events"].([]any)
	if len(evs) != 1 || evs[0].(map[string]any)["event"] != "compute_stop_instance" || evs[0].(map[string]any)["result"] != nil {
		t.Fatalf("admin events of an unfinished stop = %v", admin.Action)
	}
	if ev, _ := member251.Action["events"].([]any); len(ev) != 1 {
		t.Fatalf("member events at 2.51 = %v", member251.Action)
	} else if _, ok := ev[0].(map[string]any)["traceback"]; ok {
		t.Fatalf("a member saw the traceback: %v", ev[0])
	}
	if r := e.member.Do("GET", api+"/servers/"+id+"/os-instance-actions/req-nope", nil); r.Status != 404 {
		t.Fatalf("unknown action = %d", r.Status)
	}
	if r := e.alien.Do("GET", api+"/servers/"+id+"/os-instance-actions", nil); r.Status != 404 {
		t.Fatalf("another project's actions = %d", r.Status)
	}

	// Usage: list is admin only; show is the caller's project.
	u := api + "/os-simple-tenant-usage"
	if r := e.member.Do("GET", u, nil); r.Status != 403 {
		t.Fatalf("member usage list = %d", r.Status)
	}
	for _, q := range []string{"?start=yesterday", "?end=2020-13-01T00:00:00", "?start=2030-01-01T00:00:00&end=2020-01-01T00:00:00"} {
		if r := e.admin.Do("GET", u+q, nil); r.Status != 400 {
			t.Fatalf("usage %s = %d %s; want 400", q, r.Status, r.Body)
		}
	}
	if r := e.alien.Do("GET", u+"/"+e.demo.ID, nil); r.Status != 403 {
		t.Fatalf("another project's usage = %d %s", r.Status, r.Body)
	}
	period := "?start=2000-01-01T00:00:00&end=2100-01-01T00:00:00"
	var shown struct {
		Usage map[string]any `json:"tenant_usage"`
	}
	e.member.Do("GET", u+"/"+e.demo.ID+period, nil).Decode(t, &shown)
	if srv, _ := shown.Usage["server_usages"].([]any); len(srv) != 1 || shown.Usage["total_hours"].(float64) <= 0 {
		t.Fatalf("usage show = %v", shown.Usage)
	}
	if r := e.admin.Do("GET", u+period+"&marker=nope", nil, "OpenStack-API-Version", mv279); r.Status != 400 {
		t.Fatalf("usage with an unknown marker = %d", r.Status)
	}
	var page struct {
		Usages []map[string]any `json:"tenant_usages"`
	}
	e.admin.Do("GET", u+period+"&detailed=1&marker="+id, nil, "OpenStack-API-Version", mv279).Decode(t, &page)
	if len(page.Usages) != 0 {
		t.Fatalf("usage after the last marker = %v", page.Usages)
	}
}

func TestTagsByVersion(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	hdr := []string{"OpenStack-API-Version", mv279}
	r := e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "t", "imageRef": img, "flavorRef": "1",
		"networks": "none", "tags": []string{"a"}}})
	if r.Status != 400 {
		t.Fatalf("tags at create at 2.1 = %d", r.Status)
	}
	r = e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "t", "imageRef": img, "flavorRef": "1"}}, hdr...)
	if r.Status != 400 || !strings.Contains(errMessage(t, r, "badRequest"), "'networks' is a required property") {
		t.Fatalf("create without networks at 2.79 = %d %s", r.Status, r.Body)
	}
	r = e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "t", "imageRef": img, "flavorRef": "1",
		"networks": "none", "tags": []string{"a", "b/c"}}}, hdr...)
	if r.Status != 400 {
		t.Fatalf("bad tag at create = %d", r.Status)
	}
	id := e.createServerHdr(map[string]any{"name": "t", "imageRef": img, "flavorRef": "1", "networks": "none", "tags": []string{"a"}}, hdr...)
	tags := api + "/servers/" + id + "/tags"
	if r := e.member.Do("GET", tags, nil); r.Status != 404 {
		t.Fatalf("tags at 2.1 = %d", r.Status)
	}
	if r := e.member.Do("PUT", tags+"/b", nil, hdr...); r.Status != 201 {
		t.Fatalf("add tag = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("PUT", tags+"/a,b", nil, hdr...); r.Status != 400 {
		t.Fatalf("add bad tag = %d", r.Status)
	}
	if r := e.member.Do("DELETE", tags+"/zzz", nil, hdr...); r.Status != 404 {
		t.Fatalf("delete missing tag = %d", r.Status)
	}
	var got struct {
		Tags []string `json:"tags"`
	}
	e.member.Do("GET", tags, nil, hdr...).Decode(t, &got)
	if strings.Join(got.Tags, ",") != "a,b" {
		t.Fatalf("tags = %v", got.Tags)
	}
	if r := e.member.Do("PUT", tags, map[string]any{"tags": []string{"x"}}, hdr...); r.Status != 200 {
		t.Fatalf("replace tags = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", tags+"/x", nil, hdr...); r.Status != 204 {
		t.Fatalf("check tag = %d", r.Status)
	}
}

// createServerHdr posts a server as the member with headers.
func (e *env) createServerHdr(body map[string]any, hdr ...string) string {
	e.t.Helper()
	r := e.member.Do("POST", api+"/servers", map[string]any{"server": body}, hdr...)
	if r.Status != 202 {
		e.t.Fatalf("create server %v = %d %s", body, r.Status, r.Body)
	}
	var out struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	r.Decode(e.t, &out)
	return out.Server.ID
}
