package compute_test

import (
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/resttest"
)

// TestRescueSnapshotResizeForms sends rescue, unrescue, createImage,
// resize, confirmResize and revertResize in the forms clients use and in
// bad ones: status codes, Nova's messages, and the state each leaves.
func TestRescueSnapshotResizeForms(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, map[string]string{"hw_architecture": "x86_64", "image_type": "base"}, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.place(id, "host1", true)
	action := func(body any, hdr ...string) (int, string) {
		r := e.member.Do("POST", api+"/servers/"+id+"/action", body, hdr...)
		return r.Status, string(r.Body)
	}
	inst := func() *statedb.Instance {
		i, _ := e.b.State().Instance(id)
		return i
	}
	for _, tc := range []struct {
		body any
		code int
		msg  string
	}{
		{map[string]any{"rescue": "now"}, 400, "is not of type 'object', 'null'"},
		{map[string]any{"rescue": map[string]any{"rescue_image_ref": "x"}}, 400, "is not a 'uuid'"},
		{map[string]any{"rescue": map[string]any{"rescue_image_ref": e.b.NewID()}}, 400, "could not be found"},
		{map[string]any{"rescue": map[string]any{"adminPass": 5}}, 400, "adminPass"},
		{map[string]any{"unrescue": nil}, 409, "Cannot 'unrescue' instance " + id + " while it is in vm_state active"},
		{map[string]any{"unrescue": map[string]any{"x": 1}}, 400, "It takes no arguments"},
		{map[string]any{"createImage": map[string]any{}}, 400, "'name' is a required property"},
		{map[string]any{"createImage": map[string]any{"name": " x"}}, 400, "whitespace"},
		{map[string]any{"createImage": map[string]any{"name": "x", "metadata": "no"}}, 400, "metadata"},
		{map[string]any{"resize": map[string]any{}}, 400, "'flavorRef' is a required property"},
		{map[string]any{"resize": map[string]any{"flavorRef": []int{2}}}, 400, "is not of type 'string', 'integer'"},
		{map[string]any{"resize": map[string]any{"flavorRef": "1"}}, 400, "When resizing, instances must change flavor!"},
		{map[string]any{"resize": map[string]any{"flavorRef": "2", "OS-DCF:diskConfig": "BIG"}}, 400, "is not one of ['AUTO', 'MANUAL']"},
		{map[string]any{"confirmResize": nil}, 409, "Cannot 'confirmResize' instance " + id + " while it is in vm_state active"},
		{map[string]any{"revertResize": nil}, 409, "Cannot 'revertResize' instance " + id + " while it is in vm_state active"},
	} {
		if st, body := action(tc.body); st != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%v = %d %s; want %d with %q", tc.body, st, body, tc.code, tc.msg)
		}
	}
	if i := inst(); i.TaskState != "" || i.VMState != statedb.VMActive || len(e.b.State().Images()) != 1 {
		t.Fatalf("refused actions changed the server: %s/%q, %d images", i.VMState, i.TaskState, len(e.b.State().Images()))
	}

	// rescue {null} → 200 {}; the server is rescuing from its own image.
	if st, body := action(map[string]any{"rescue": nil}); st != 200 || strings.Contains(body, "adminPass") {
		t.Fatalf("rescue = %d %s", st, body)
	}
	if i := inst(); i.TaskState != statedb.TaskRescuing || i.RescueImage != img || i.Desired != statedb.DesiredRescued {
		t.Fatalf("after rescue: %+v", i)
	}
	e.report(id, "host1", statedb.VMRescued, statedb.PowerRunning)
	if st, body := action(map[string]any{"createImage": map[string]any{"name": "x"}}); st != 409 || !strings.Contains(body, "vm_state rescued") {
		t.Fatalf("createImage while rescued = %d %s", st, body)
	}
	if st, body := action(map[string]any{"unrescue": nil}); st != 202 {
		t.Fatalf("unrescue = %d %s", st, body)
	}
	e.report(id, "host1", statedb.VMActive, statedb.PowerRunning)

	// createImage at 2.1: Location; at 2.45: {image_id}.
	r := e.member.Do("POST", api+"/servers/"+id+"/action", map[string]any{"createImage": map[string]any{"name": "snap1", "metadata": map[string]string{"k": "v"}}})
	loc := r.Header.Get("Location")
	if r.Status != 202 || !strings.Contains(loc, "/image/v2/images/") {
		t.Fatalf("createImage at 2.1 = %d %s, Location %q", r.Status, r.Body, loc)
	}
	snap, ok := e.b.State().Image(loc[strings.LastIndex(loc, "/")+1:])
	if !ok || snap.Status != statedb.ImageQueued || snap.Properties["k"] != "v" || snap.Properties["image_type"] != "snapshot" ||
		snap.Properties["instance_uuid"] != id || snap.Properties["hw_architecture"] != "x86_64" || snap.MinDiskGB != 1 || snap.Visibility != "private" {
		t.Fatalf("snapshot image = %+v", snap)
	}
	if i := inst(); i.TaskState != statedb.TaskImageSnapshot || i.SnapshotImage != snap.ID {
		t.Fatalf("after createImage: %s %s", i.TaskState, i.SnapshotImage)
	}
	if st, body := action(map[string]any{"createImage": map[string]any{"name": "snap2"}}); st != 409 || !strings.Contains(body, "task_state image_snapshot") {
		t.Fatalf("second createImage = %d %s", st, body)
	}
	e.b.MustApply(t, statedb.CmdFinishSnapshot, statedb.FinishSnapshotCmd{InstanceID: id, HostID: "host1", ImageID: snap.ID, Error: "disk full"})
	if i := inst(); i.TaskState != "" || i.VMState != statedb.VMActive {
		t.Fatalf("after a failed snapshot: %s/%q", i.VMState, i.TaskState)
	}
	if a := e.b.State().InstanceActions(id)[0]; a.Action != "createImage" || a.Events[0].Result != statedb.ResultError || a.Message != "disk full" {
		t.Fatalf("createImage action = %+v", a)
	}
	st, body := action(map[string]any{"createImage": map[string]any{"name": "snap3"}}, "OpenStack-API-Version", "compute 2.45")
	if st != 202 || !strings.Contains(body, `"image_id"`) {
		t.Fatalf("createImage at 2.45 = %d %s", st, body)
	}
	e.b.MustApply(t, statedb.CmdFinishSnapshot, statedb.FinishSnapshotCmd{InstanceID: id, HostID: "host1", ImageID: inst().SnapshotImage})

	// resize with a number, then revert; with a string, then confirm.
	if st, body := action(map[string]any{"resize": map[string]any{"flavorRef": 2}}); st != 202 {
		t.Fatalf("resize = %d %s", st, body)
	}
	if i := inst(); i.TaskState != statedb.TaskResizePrep || i.Flavor.ID != "2" || i.Claim().RAMMB != 128+2048 {
		t.Fatalf("after resize: %s %s claim %+v", i.TaskState, i.Flavor.ID, i.Claim())
	}
	e.report(id, "host1", statedb.VMResized, statedb.PowerRunning)
	if st, body := action(map[string]any{"revertResize": nil}); st != 202 {
		t.Fatalf("revertResize = %d %s", st, body)
	}
	e.report(id, "host1", statedb.VMActive, statedb.PowerRunning)
	if i := inst(); i.Flavor.ID != "1" || i.Resize != nil || i.Claim().RAMMB != 128 {
		t.Fatalf("after revert: flavor %s resize %+v", i.Flavor.ID, i.Resize)
	}
	if st, body := action(map[string]any{"resize": map[string]any{"flavorRef": "3"}}); st != 202 {
		t.Fatalf("resize = %d %s", st, body)
	}
	e.report(id, "host1", statedb.VMResized, statedb.PowerRunning)
	if st, body := action(map[string]any{"confirmResize": nil}); st != 204 {
		t.Fatalf("confirmResize = %d %s", st, body)
	}
	if st, body := action(map[string]any{"confirmResize": nil}); st != 409 {
		t.Fatalf("second confirmResize = %d %s", st, body)
	}
	e.report(id, "host1", statedb.VMActive, statedb.PowerRunning)
	if i := inst(); i.Flavor.ID != "3" || i.Resize != nil {
		t.Fatalf("after confirm: flavor %s resize %+v", i.Flavor.ID, i.Resize)
	}
	if st, body := action(map[string]any{"resize": map[string]any{"flavorRef": "2"}}); st != 400 || !strings.Contains(body, "Unable to resize disk down") {
		t.Fatalf("resize down = %d %s", st, body)
	}
	// A resize counts against the project's cores and RAM.
	if r := e.admin.Do("PUT", api+"/os-quota-sets/"+e.demo.ID, map[string]any{"quota_set": map[string]any{"cores": 2}}); r.Status != 200 {
		t.Fatalf("set quota = %d %s", r.Status, r.Body)
	}
	e.b.MustApply(t, statedb.CmdCreateFlavor, statedb.Flavor{ID: "4", Name: "wide", VCPUs: 4, RAMMB: 4096, DiskGB: 40, Public: true})
	if st, body := action(map[string]any{"resize": map[string]any{"flavorRef": "4"}}); st != 403 || !strings.Contains(body, "cores") {
		t.Fatalf("resize over the cores quota = %d %s", st, body)
	}
	if i := inst(); i.Flavor.ID != "3" || i.TaskState != "" {
		t.Fatalf("refused resize changed the server: %s %q", i.Flavor.ID, i.TaskState)
	}
}

// TestDeletedServerActions lists the actions of a deleted server: from
// 2.21 for its project and admins, not before, not for other projects.
func TestDeletedServerActions(t *testing.T) {
	e := newEnv(t)
	for _, m := range e.b.State().Members() { // every host runs a release that keeps the history
		cp := *m
		cp.Version = "0.2.0"
		e.b.MustApply(t, statedb.CmdRegisterMember, cp)
	}
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	id := e.createServer(e.member, map[string]any{"name": "gone", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.place(id, "host1", true)
	if r := e.member.Do("DELETE", api+"/servers/"+id, nil); r.Status != 204 {
		t.Fatalf("delete = %d %s", r.Status, r.Body)
	}
	e.b.MustApply(t, statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: id, HostID: "host1", Gone: true})
	if _, ok := e.b.State().Instance(id); ok {
		t.Fatal("server not removed")
	}
	path := api + "/servers/" + id + "/os-instance-actions"
	if r := e.member.Do("GET", path, nil); r.Status != 404 {
		t.Fatalf("actions of a deleted server at 2.1 = %d %s; want 404", r.Status, r.Body)
	}
	for _, who := range []string{"member", "admin"} {
		cl := map[string]*resttest.Client{"member": e.member, "admin": e.admin}[who]
		r := cl.Do("GET", path, nil, "OpenStack-API-Version", "compute 2.21")
		var out struct {
			InstanceActions []map[string]any `json:"instanceActions"`
		}
		r.Decode(t, &out)
		if r.Status != 200 || len(out.InstanceActions) != 2 || out.InstanceActions[0]["action"] != "delete" {
			t.Fatalf("%s: actions of a deleted server at 2.21 = %d %s", who, r.Status, r.Body)
		}
		req := out.InstanceActions[0]["request_id"].(string) // events: admins only before 2.51
		if r := cl.Do("GET", path+"/"+req, nil, "OpenStack-API-Version", "compute 2.21"); r.Status != 200 || who == "admin" && !strings.Contains(string(r.Body), "Success") {
			t.Fatalf("%s: delete action of a deleted server = %d %s", who, r.Status, r.Body)
		}
	}
	if r := e.alien.Do("GET", path, nil, "OpenStack-API-Version", "compute 2.21"); r.Status != 404 {
		t.Fatalf("another project's deleted server actions = %d %s; want 404", r.Status, r.Body)
	}
}
