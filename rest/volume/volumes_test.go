package volume_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/resttest"
)

// cinderTime is Cinder's timestamp: no zone.
var cinderTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$`)

func TestVolumeVersions(t *testing.T) {
	e := newEnv(t, "")
	anon := &resttest.Client{T: t, Base: e.url}
	for _, tt := range []struct {
		path   string
		status int
	}{{"/volume", 300}, {"/volume/", 300}, {"/volume/v3", 200}, {"/volume/v3/", 200}} {
		r := anon.Do("GET", tt.path, nil)
		if r.Status != tt.status {
			t.Fatalf("GET %s = %d %s; want %d", tt.path, r.Status, r.Body, tt.status)
		}
		v := get(r.JSON(t), "versions", 0)
		if str(v, "id") != "v3.0" || str(v, "version") != "3.0" || str(v, "min_version") != "3.0" ||
			str(v, "status") != "CURRENT" || str(v, "links", 0, "href") != e.url+"/volume/v3/" {
			t.Fatalf("GET %s versions = %s", tt.path, r.Body)
		}
	}
	// Unauthenticated API calls are 401 in Cinder's shape.
	fault(t, anon.Do("GET", e.base+"/volumes/detail", nil), 401, "unauthorized", "authentication")
}

// TestVolumeOSCSequence replays what `openstack volume create/list/show/
// set --size/delete` send with the agent's
// reports applied as the host would.
func TestVolumeOSCSequence(t *testing.T) {
	e := newEnv(t, "")
	before := e.b.Now()

	// openstack volume create --size 1 vol1
	r := e.admin.Do("POST", e.base+"/volumes", `{"volume": {"size": 1, "consistencygroup_id": null, "snapshot_id": null, "name": "vol1", "description": null, "volume_type": null, "availability_zone": null, "metadata": {}, "imageRef": null, "source_volid": null, "backup_id": null}}`)
	if r.Status != http.StatusAccepted {
		t.Fatalf("create = %d %s; want 202", r.Status, r.Body)
	}
	v := get(r.JSON(t), "volume")
	id := str(v, "id")
	if id == "" || str(v, "name") != "vol1" || str(v, "status") != "creating" || get(v, "size") != float64(1) ||
		str(v, "volume_type") != "local" || str(v, "bootable") != "false" || get(v, "metadata") == nil ||
		str(v, "availability_zone") != "nova" || str(v, "os-vol-tenant-attr:tenant_id") != e.seed.Project.ID ||
		get(v, "os-vol-host-attr:host") != nil || get(v, "attachments") == nil ||
		get(v, "encrypted") != false || get(v, "multiattach") != false || str(v, "user_id") != e.seed.Admin.ID {
		t.Fatalf("created volume = %s", r.Body)
	}
	if !cinderTime.MatchString(str(v, "created_at")) {
		t.Fatalf("created_at = %q; want Cinder's format without a zone", str(v, "created_at"))
	}
	if str(v, "links", 0, "href") != e.url+e.base+"/volumes/"+id {
		t.Fatalf("links = %v", get(v, "links"))
	}
	// Local storage: the leader chooses the host, and the host's agent
	// the path.
	st := e.vol(id)
	if st.Host != "" || st.Path != "" || st.Format != "qcow2" || st.CreatedAt.Before(before) || st.Status != statedb.VolumeCreating {
		t.Fatalf("state volume = %+v; want creating without a host or path", st)
	}
	e.place(id)
	if r := e.admin.Do("GET", e.base+"/volumes/"+id, nil); str(r.JSON(t), "volume", "os-vol-host-attr:host") != "host1@local#local" {
		t.Fatalf("placed volume = %s; want on host1", r.Body)
	}

	// Extending before the host made the file is refused.
	fault(t, e.admin.Do("POST", e.base+"/volumes/"+id+"/action", `{"os-extend":{"new_size":2}}`), 400, "badRequest", "current status is: creating")
	e.report(e.made(id))
	if st := e.vol(id); st.Host != "host1" || st.Path != "/data/host1/volumes/vol-"+id+".qcow2" {
		t.Fatalf("state volume = %+v; want on host1 at the path it reported", st)
	}

	// openstack volume list
	r = e.admin.Do("GET", e.base+"/volumes/detail", nil)
	if r.Status != 200 || str(r.JSON(t), "volumes", 0, "id") != id || str(r.JSON(t), "volumes", 0, "status") != "available" {
		t.Fatalf("list = %d %s", r.Status, r.Body)
	}
	// openstack volume show vol1: by name is 404, then the filtered list.
	fault(t, e.admin.Do("GET", e.base+"/volumes/vol1", nil), 404, "itemNotFound", "vol1")
	r = e.admin.Do("GET", e.base+"/volumes/detail?all_tenants=1&name=vol1", nil)
	if vols := get(r.JSON(t), "volumes").([]any); len(vols) != 1 || str(vols[0], "id") != id {
		t.Fatalf("list by name = %s", r.Body)
	}
	// The SDK's form.
	r = e.admin.Do("GET", e.base+"/volumes?name=vol1", nil, "OpenStack-API-Version", "volume 3.0")
	if vols := get(r.JSON(t), "volumes").([]any); len(vols) != 1 || str(vols[0], "id") != id || str(vols[0], "name") != "vol1" {
		t.Fatalf("SDK list by name = %s", r.Body)
	}
	if r.Header.Get("OpenStack-API-Version") != "volume 3.0" {
		t.Fatalf("version header = %q", r.Header.Get("OpenStack-API-Version"))
	}
	r = e.admin.Do("GET", e.base+"/volumes/"+id, nil)
	if r.Status != 200 || str(r.JSON(t), "volume", "id") != id {
		t.Fatalf("show = %d %s", r.Status, r.Body)
	}

	// openstack volume set --size 2 vol1
	e.b.Advance(time.Minute)
	r = e.admin.Do("POST", e.base+"/volumes/"+id+"/action", `{"os-extend": {"new_size": 2}}`)
	if r.Status != http.StatusAccepted || len(r.Body) != 0 {
		t.Fatalf("extend = %d %q; want 202 with no body", r.Status, r.Body)
	}
	if st := e.vol(id); st.Status != statedb.VolumeExtending || st.SizeGB != 2 {
		t.Fatalf("after extend: %s %d GB; want extending 2", st.Status, st.SizeGB)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", Status: statedb.VolumeAvailable})
	r = e.admin.Do("GET", e.base+"/volumes/"+id, nil)
	if v := get(r.JSON(t), "volume"); str(v, "status") != "available" || get(v, "size") != float64(2) || !cinderTime.MatchString(str(v, "updated_at")) {
		t.Fatalf("after extend report = %s", r.Body)
	}
	fault(t, e.admin.Do("POST", e.base+"/volumes/"+id+"/action", `{"os-extend":{"new_size":1}}`), 400, "badRequest", "greater than current size")
	fault(t, e.admin.Do("POST", e.base+"/volumes/"+id+"/action", `{"os-extend":{"new_size":101}}`), 400, "badRequest", "maximum volume size of 100 GB")

	// openstack volume set --name/--description/--property
	r = e.admin.Do("PUT", e.base+"/volumes/"+id, `{"volume":{"name":"vol1b","description":"d","metadata":{"k":"v"}}}`)
	if v := get(r.JSON(t), "volume"); r.Status != 200 || str(v, "name") != "vol1b" || str(v, "description") != "d" || str(v, "metadata", "k") != "v" {
		t.Fatalf("update = %d %s", r.Status, r.Body)
	}

	// openstack volume delete vol1b
	r = e.admin.Do("DELETE", e.base+"/volumes/"+id, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("delete = %d %s; want 202", r.Status, r.Body)
	}
	if st := e.vol(id); st.Status != statedb.VolumeDeleting {
		t.Fatalf("after delete: %s; want deleting", st.Status)
	}
	fault(t, e.admin.Do("DELETE", e.base+"/volumes/"+id, nil), 400, "badRequest", "current status is: deleting")
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", Status: statedb.VolumeDeleted})
	fault(t, e.admin.Do("GET", e.base+"/volumes/"+id, nil), 404, "itemNotFound", id)
}

func TestVolumeTypesAndZones(t *testing.T) {
	for _, tt := range []struct{ storage, want, other string }{{"", "local", "nfs"}, {"nfs://srv/export", "nfs", "local"}} {
		e := newEnv(t, tt.storage)
		r := e.demo.Do("GET", vpath(e.demoP, "/types?is_public=None"), nil)
		types, _ := get(r.JSON(t), "volume_types").([]any)
		if r.Status != 200 || len(types) != 1 || str(types[0], "name") != tt.want ||
			str(types[0], "extra_specs", "volume_backend_name") != tt.want || get(types[0], "is_public") != true {
			t.Fatalf("type list with storage %q = %d %s; want one type %q", tt.storage, r.Status, r.Body, tt.want)
		}
		tid := str(types[0], "id")
		for _, ref := range []string{tid, tt.want} {
			r = e.demo.Do("GET", vpath(e.demoP, "/types/"+ref), nil)
			if r.Status != 200 || str(r.JSON(t), "volume_type", "id") != tid {
				t.Fatalf("type show %s = %d %s", ref, r.Status, r.Body)
			}
		}
		fault(t, e.demo.Do("GET", vpath(e.demoP, "/types/"+tt.other), nil), 404, "itemNotFound", tt.other)
		// Create by type name and id works; another type is Cinder's 404.
		for _, ref := range []string{tt.want, tid} {
			r = e.demo.Do("POST", vpath(e.demoP, "/volumes"), `{"volume":{"size":1,"volume_type":"`+ref+`"}}`)
			if r.Status != 202 || str(r.JSON(t), "volume", "volume_type") != tt.want {
				t.Fatalf("create with type %s = %d %s", ref, r.Status, r.Body)
			}
		}
		fault(t, e.demo.Do("POST", vpath(e.demoP, "/volumes"), `{"volume":{"size":1,"volume_type":"`+tt.other+`"}}`), 404, "itemNotFound", tt.other)

		r = e.demo.Do("GET", vpath(e.demoP, "/os-availability-zone"), nil)
		if r.Status != 200 || str(r.JSON(t), "availabilityZoneInfo", 0, "zoneName") != "nova" ||
			get(r.JSON(t), "availabilityZoneInfo", 0, "zoneState", "available") != true {
			t.Fatalf("az list = %d %s", r.Status, r.Body)
		}
	}
}

func TestVolumeCreateBadInput(t *testing.T) {
	e := newEnv(t, "")
	long := strings.Repeat("x", 256)
	tests := []struct {
		name, body string
		status     int
		key, msg   string
	}{
		{"not json", `{"volume":`, 400, "badRequest", "Malformed"},
		{"no volume", `{"size":1}`, 400, "badRequest", "'volume'"},
		{"null volume", `{"volume":null}`, 400, "badRequest", "'volume'"},
		{"no size", `{"volume":{"name":"a"}}`, 400, "badRequest", "size"},
		{"null size", `{"volume":{"size":null}}`, 400, "badRequest", "size"},
		{"zero size", `{"volume":{"size":0}}`, 400, "badRequest", "positive"},
		{"negative size", `{"volume":{"size":-1}}`, 400, "badRequest", "positive"},
		{"too large", `{"volume":{"size":101}}`, 400, "badRequest", "maximum volume size of 100 GB"},
		{"huge", `{"volume":{"size":99999999999999999999}}`, 400, "badRequest", "size"},
		{"fraction", `{"volume":{"size":1.5}}`, 400, "badRequest", "1.5 is not of type 'integer', 'string'"},
		{"word", `{"volume":{"size":"one"}}`, 400, "badRequest", "'one' does not match '^[0-9]+$'"},
		{"bool", `{"volume":{"size":true}}`, 400, "badRequest", "True is not of type 'integer', 'string'"},
		{"long name", `{"volume":{"size":1,"name":"` + long + `"}}`, 400, "badRequest", "name"},
		{"long description", `{"volume":{"size":1,"description":"` + long + `"}}`, 400, "badRequest", "description"},
		{"metadata not strings", `{"volume":{"size":1,"metadata":{"a":1}}}`, 400, "badRequest", "Malformed"},
		{"metadata empty key", `{"volume":{"size":1,"metadata":{"":"v"}}}`, 400, "badRequest", "metadata"},
		{"other zone", `{"volume":{"size":1,"availability_zone":"az9"}}`, 400, "badRequest", "az9"},
		{"from snapshot", `{"volume":{"size":1,"snapshot_id":"s1"}}`, 400, "badRequest", "snapshot_id"},
		{"clone", `{"volume":{"size":1,"source_volid":"v1"}}`, 400, "badRequest", "source_volid"},
		{"multiattach", `{"volume":{"size":1,"multiattach":true}}`, 400, "badRequest", "multiattach"},
		{"unknown type", `{"volume":{"size":1,"volume_type":"gold"}}`, 404, "itemNotFound", "gold"},
		{"unknown image", `{"volume":{"size":1,"imageRef":"nope"}}`, 400, "badRequest", "image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(e.b.State().Volumes())
			fault(t, e.demo.Do("POST", vpath(e.demoP, "/volumes"), tt.body), tt.status, tt.key, tt.msg)
			if got := len(e.b.State().Volumes()); got != n {
				t.Fatalf("a refused create left %d volumes; want %d", got, n)
			}
		})
	}
	// An oversized body is Cinder's overLimit.
	big := `{"volume":{"size":1,"description":"` + strings.Repeat("x", 2<<20) + `"}}`
	fault(t, e.demo.Do("POST", vpath(e.demoP, "/volumes"), big), 413, "overLimit", "too large")
	// Sizes as strings are accepted, as Cinder does.
	r := e.demo.Do("POST", vpath(e.demoP, "/volumes"), `{"volume":{"size":"3","display_name":"old-style"}}`)
	if r.Status != 202 || get(r.JSON(t), "volume", "size") != float64(3) || str(r.JSON(t), "volume", "name") != "old-style" {
		t.Fatalf("create with a string size = %d %s", r.Status, r.Body)
	}
}

func TestVolumeFromImage(t *testing.T) {
	e := newEnv(t, "")
	mk := func(name string, vis string, size int64, minDisk int, finish bool) string {
		id := e.b.NewID()
		e.b.MustApply(t, statedb.CmdCreateImage, statedb.Image{ID: id, Name: name, ProjectID: e.otherP.ID,
			Visibility: vis, DiskFormat: "qcow2", ContainerFormat: "bare", MinDiskGB: minDisk})
		if finish {
			e.b.MustApply(t, statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: id, HostID: "host1"})
			e.b.MustApply(t, statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: id, Size: size / 2,
				VirtualSize: size, SHA256: strings.Repeat("a", 64), Holders: []string{"host1"}})
		}
		return id
	}
	pub := mk("pub", "public", 1<<30+1, 0, true)
	priv := mk("priv", "private", 1<<20, 0, true)
	queued := mk("queued", "public", 0, 0, false)
	mindisk := mk("mindisk", "public", 1<<20, 5, true)

	r := e.demo.Do("POST", vpath(e.demoP, "/volumes"), `{"volume":{"size":2,"name":"boot","imageRef":"`+pub+`"}}`)
	if r.Status != 202 {
		t.Fatalf("create from image = %d %s", r.Status, r.Body)
	}
	v := get(r.JSON(t), "volume")
	if str(v, "bootable") != "true" || str(v, "volume_image_metadata", "image_id") != pub || str(v, "volume_image_metadata", "image_name") != "pub" {
		t.Fatalf("bootable volume = %s", r.Body)
	}
	if st := e.vol(str(v, "id")); !st.Bootable || st.ImageID != pub {
		t.Fatalf("state = %+v", st)
	}
	for _, tt := range []struct{ name, img, size, msg string }{
		{"image larger than volume", pub, "1", "needs 2 GB"},
		{"min_disk", mindisk, "2", "needs 5 GB"},
		{"other project's private image", priv, "1", "unable to access"},
		{"not active", queued, "1", "not active"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fault(t, e.demo.Do("POST", vpath(e.demoP, "/volumes"), `{"volume":{"size":`+tt.size+`,"imageRef":"`+tt.img+`"}}`), 400, "badRequest", tt.msg)
		})
	}
}

func TestVolumePolicy(t *testing.T) {
	e := newEnv(t, "")
	id := e.available(e.demo, e.demoP, "mine", 1)
	otherID := e.available(e.other, e.otherP, "theirs", 1)

	// Another project's volume is invisible: 404 everywhere.
	for _, tt := range []struct{ method, path, body string }{
		{"GET", "/volumes/" + id, ""},
		{"PUT", "/volumes/" + id, `{"volume":{"name":"x"}}`},
		{"DELETE", "/volumes/" + id, ""},
		{"POST", "/volumes/" + id + "/action", `{"os-extend":{"new_size":2}}`},
	} {
		var body any
		if tt.body != "" {
			body = tt.body
		}
		fault(t, e.other.Do(tt.method, vpath(e.otherP, tt.path), body), 404, "itemNotFound", id)
	}
	// A reader sees but cannot change.
	if r := e.reader.Do("GET", vpath(e.demoP, "/volumes/"+id), nil); r.Status != 200 {
		t.Fatalf("reader show = %d %s", r.Status, r.Body)
	}
	fault(t, e.reader.Do("POST", vpath(e.demoP, "/volumes"), `{"volume":{"size":1}}`), 403, "forbidden", "")
	fault(t, e.reader.Do("DELETE", vpath(e.demoP, "/volumes/"+id), nil), 403, "forbidden", "")
	// Only an administrator may reset a status.
	fault(t, e.demo.Do("POST", vpath(e.demoP, "/volumes/"+id+"/action"), `{"os-reset_status":{"status":"error"}}`), 403, "forbidden", "")
	if r := e.admin.Do("POST", e.base+"/volumes/"+id+"/action", `{"os-reset_status":{"status":"error"}}`); r.Status != 202 || e.vol(id).Status != "error" {
		t.Fatalf("admin reset = %d %s, status %s", r.Status, r.Body, e.vol(id).Status)
	}
	// A URL naming another project is refused for members.
	fault(t, e.demo.Do("GET", vpath(e.otherP, "/volumes/detail"), nil), 400, "badRequest", "Malformed request url")

	list := func(c *resttest.Client, path string) []string {
		t.Helper()
		r := c.Do("GET", path, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s = %d %s", path, r.Status, r.Body)
		}
		var ids []string
		for _, v := range get(r.JSON(t), "volumes").([]any) {
			ids = append(ids, str(v, "id"))
			if c != e.admin && get(v, "os-vol-host-attr:host") != nil {
				t.Errorf("non-admin sees os-vol-host-attr:host: %v", v)
			}
		}
		return ids
	}
	if got := list(e.demo, vpath(e.demoP, "/volumes/detail?all_tenants=1")); len(got) != 1 || got[0] != id {
		t.Fatalf("member all_tenants list = %v; want only %s", got, id)
	}
	if got := list(e.admin, e.base+"/volumes/detail"); len(got) != 0 {
		t.Fatalf("admin list without all_tenants = %v; want its own project's (none)", got)
	}
	if got := list(e.admin, e.base+"/volumes/detail?all_tenants=True"); len(got) != 2 {
		t.Fatalf("admin all_tenants list = %v; want both", got)
	}
	if got := list(e.admin, e.base+"/volumes/detail?all_tenants=1&project_id="+e.otherP.ID); len(got) != 1 || got[0] != otherID {
		t.Fatalf("admin all_tenants project list = %v; want %s", got, otherID)
	}
}

func TestVolumeListPaging(t *testing.T) {
	e := newEnv(t, "")
	want := map[string]bool{}
	for i := range 5 {
		e.b.Advance(time.Second)
		want[e.create(e.demo, e.demoP, "v"+string(rune('a'+i)), 1+i)] = true
	}
	seen := map[string]bool{}
	next := vpath(e.demoP, "/volumes/detail?limit=2")
	pages := 0
	for next != "" {
		r := e.demo.Do("GET", next, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s = %d %s", next, r.Status, r.Body)
		}
		pages++
		vols := get(r.JSON(t), "volumes").([]any)
		if len(vols) > 2 {
			t.Fatalf("page of %d; want at most 2", len(vols))
		}
		for _, v := range vols {
			if seen[str(v, "id")] {
				t.Fatalf("volume %s on two pages", str(v, "id"))
			}
			seen[str(v, "id")] = true
		}
		next = ""
		if href := str(r.JSON(t), "volumes_links", 0, "href"); href != "" {
			u, err := url.Parse(href)
			if err != nil || !strings.HasPrefix(href, e.url) {
				t.Fatalf("next link %q", href)
			}
			next = u.RequestURI()
		}
	}
	if pages != 3 || len(seen) != 5 {
		t.Fatalf("paging took %d pages and saw %d volumes; want 3 and 5", pages, len(seen))
	}
	// Default order is newest first; sort=name:asc is by name.
	r := e.demo.Do("GET", vpath(e.demoP, "/volumes/detail"), nil)
	if str(r.JSON(t), "volumes", 0, "name") != "ve" {
		t.Fatalf("default order starts with %q; want the newest, ve", str(r.JSON(t), "volumes", 0, "name"))
	}
	r = e.demo.Do("GET", vpath(e.demoP, "/volumes?sort=name:asc&limit=1"), nil)
	if str(r.JSON(t), "volumes", 0, "name") != "va" {
		t.Fatalf("sort=name:asc starts with %q; want va", str(r.JSON(t), "volumes", 0, "name"))
	}
	r = e.demo.Do("GET", vpath(e.demoP, "/volumes/detail?sort_key=size&sort_dir=asc&status=creating"), nil)
	if vols := get(r.JSON(t), "volumes").([]any); len(vols) != 5 || get(vols[0], "size") != float64(1) {
		t.Fatalf("sort_key=size = %s", r.Body)
	}
	fault(t, e.demo.Do("GET", vpath(e.demoP, "/volumes/detail?marker=nope"), nil), 404, "itemNotFound", "nope")
	fault(t, e.demo.Do("GET", vpath(e.demoP, "/volumes/detail?sort=password"), nil), 400, "badRequest", "sort")
	fault(t, e.demo.Do("GET", vpath(e.demoP, "/volumes/detail?limit=-1"), nil), 400, "badRequest", "limit")
}

func TestVolumeMicroversion(t *testing.T) {
	e := newEnv(t, "")
	for _, tt := range []struct {
		hdr, val string
		status   int
	}{
		{"OpenStack-API-Version", "volume 3.0", 200},
		{"OpenStack-API-Version", "volume latest", 200},
		{"OpenStack-API-Version", "compute 2.60", 200},
		{"OpenStack-API-Version", "volume 3.60", 406},
		{"X-OpenStack-Volume-API-Version", "3.27", 406},
	} {
		r := e.demo.Do("GET", vpath(e.demoP, "/volumes"), nil, tt.hdr, tt.val)
		if r.Status != tt.status {
			t.Fatalf("%s: %s = %d %s; want %d", tt.hdr, tt.val, r.Status, r.Body, tt.status)
		}
		if tt.status == 406 {
			fault(t, r, 406, "notAcceptable", "not supported")
		}
	}
}

func TestVolumeActions(t *testing.T) {
	e := newEnv(t, "")
	id := e.available(e.demo, e.demoP, "a", 1)
	for _, tt := range []struct{ body, msg string }{
		{`{}`, "exactly one action"},
		{`{"os-extend":{"new_size":2},"os-reset_status":{"status":"error"}}`, "exactly one action"},
		{`{"os-frobnicate":{}}`, "There is no such action: os-frobnicate"},
		{`{"os-extend":null}`, "new_size"},
		{`{"os-extend":{"new_size":"x"}}`, "'x' does not match '^[0-9]+$'"},
		{`{"os-extend":{"new_size":0}}`, "positive"},
		{`{"os-extend":[1]}`, "Malformed"},
		{`{"os-reset_status":{}}`, "needs a status"},
	} {
		fault(t, e.admin.Do("POST", vpath(e.demoP, "/volumes/"+id+"/action"), tt.body), 400, "badRequest", tt.msg)
	}
	if r := e.demo.Do("POST", vpath(e.demoP, "/volumes/"+id+"/action"), `{"os-extend":{"new_size":"4"}}`); r.Status != 202 || e.vol(id).SizeGB != 4 {
		t.Fatalf("extend with a string size = %d %s", r.Status, r.Body)
	}
	// A failed extend goes to error_extending with the reason shown.
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", Status: statedb.VolumeError, Error: "disk full"})
	r := e.demo.Do("GET", vpath(e.demoP, "/volumes/"+id), nil)
	if v := get(r.JSON(t), "volume"); str(v, "status") != "error_extending" || str(v, "error_reason") != "disk full" || get(v, "size") != float64(1) {
		t.Fatalf("after a failed extend = %s", r.Body)
	}
}
