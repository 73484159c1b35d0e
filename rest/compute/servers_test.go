package compute_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/resttest"
)

func serverOf(t *testing.T, r *resttest.Resp) map[string]any {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("get server = %d %s", r.Status, r.Body)
	}
	return r.JSON(t)["server"].(map[string]any)
}

func listNames(t *testing.T, r *resttest.Resp) []string {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("list servers = %d %s", r.Status, r.Body)
	}
	var out struct {
		Servers []struct{ Name string } `json:"servers"`
	}
	r.Decode(t, &out)
	var names []string
	for _, s := range out.Servers {
		names = append(names, s.Name)
	}
	return names
}

var (
	zTime   = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	usgTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$`)
)

func TestServerCreateAndShow(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 1, 64, map[string]string{"hw_architecture": "x86_64"}, true)
	net := e.network(e.demo.ID, "net1", false, true)
	if r := e.member.Do("POST", api+"/os-keypairs", map[string]any{"keypair": map[string]any{"name": "k"}}); r.Status != 200 {
		t.Fatal(r.Status)
	}
	ud := base64.StdEncoding.EncodeToString([]byte("#cloud-config\n"))
	r := e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{
		"name": "vm1", "imageRef": img, "flavorRef": "1", "user_data": ud, "key_name": "k", "min_count": 1, "max_count": 1,
		"networks": []map[string]string{{"uuid": net}}, "metadata": map[string]string{"role": "web"},
	}})
	if r.Status != 202 {
		t.Fatalf("create = %d %s", r.Status, r.Body)
	}
	created := r.JSON(t)["server"].(map[string]any)
	id, _ := created["id"].(string)
	if id == "" || created["adminPass"] == "" || created["OS-DCF:diskConfig"] != "MANUAL" || created["links"] == nil || created["security_groups"] == nil {
		t.Fatalf("create response = %v", created)
	}
	inst, ok := e.b.State().Instance(id)
	if !ok || inst.Arch != "x86_64" || inst.KeyData == "" || inst.UserData != ud || len(inst.PortIDs) != 1 || inst.Flavor.RAMMB != 128 {
		t.Fatalf("instance = %+v", inst)
	}

	s := serverOf(t, e.member.Do("GET", api+"/servers/"+id, nil))
	checks := map[string]any{
		"name": "vm1", "status": "BUILD", "tenant_id": e.demo.ID, "key_name": "k", "OS-EXT-STS:vm_state": "building",
		"OS-EXT-STS:task_state": "scheduling", "OS-EXT-STS:power_state": 0.0, "OS-EXT-AZ:availability_zone": "nova",
		"hostId": "", "OS-SRV-USG:launched_at": nil, "config_drive": "",
	}
	for k, want := range checks {
		if s[k] != want {
			t.Errorf("server[%q] = %#v; want %#v", k, s[k], want)
		}
	}
	if _, ok := s["OS-EXT-SRV-ATTR:host"]; ok {
		t.Error("a member sees OS-EXT-SRV-ATTR fields")
	}
	if !zTime.MatchString(s["created"].(string)) || !zTime.MatchString(s["updated"].(string)) {
		t.Errorf("created/updated = %v / %v; want RFC 3339 with Z", s["created"], s["updated"])
	}
	if s["image"].(map[string]any)["id"] != img || s["flavor"].(map[string]any)["id"] != "1" {
		t.Errorf("image/flavor = %v / %v", s["image"], s["flavor"])
	}
	if s["metadata"].(map[string]any)["role"] != "web" {
		t.Errorf("metadata = %v", s["metadata"])
	}
	addrs := s["addresses"].(map[string]any)["net1"].([]any)
	a := addrs[0].(map[string]any)
	if len(addrs) != 1 || a["version"] != 4.0 || !strings.HasPrefix(a["addr"].(string), "10.1.0.") || a["OS-EXT-IPS:type"] != "fixed" || a["OS-EXT-IPS-MAC:mac_addr"] == "" {
		t.Errorf("addresses = %v", s["addresses"])
	}
	if sg := s["security_groups"].([]any); len(sg) != 1 || sg[0].(map[string]any)["name"] != "default" {
		t.Errorf("security_groups = %v", sg)
	}

	// Admin view: placed and active.
	e.place(id, "host1", true)
	s = serverOf(t, e.admin.Do("GET", api+"/servers/"+id, nil))
	if s["status"] != "ACTIVE" || s["OS-EXT-SRV-ATTR:host"] != "host1" || s["OS-EXT-SRV-ATTR:hypervisor_hostname"] != "host1" ||
		!strings.HasPrefix(s["OS-EXT-SRV-ATTR:instance_name"].(string), "instance-") || s["OS-EXT-STS:power_state"] != 1.0 || s["hostId"] == "" {
		t.Errorf("admin view = %v", s)
	}
	if !usgTime.MatchString(fmt.Sprint(s["OS-SRV-USG:launched_at"])) {
		t.Errorf("launched_at = %v; want no zone", s["OS-SRV-USG:launched_at"])
	}

	// Several at once: Nova's names, one reservation.
	e.createServer(e.member, map[string]any{"name": "many", "imageRef": img, "flavorRef": "1", "max_count": 3, "networks": "none"})
	names := listNames(t, e.member.Do("GET", api+"/servers", nil))
	for _, n := range []string{"vm1", "many-1", "many-2", "many-3"} {
		if !strings.Contains(strings.Join(names, ","), n) {
			t.Errorf("list = %v; missing %s", names, n)
		}
	}
	// return_reservation_id.
	r = e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "rr", "imageRef": img, "flavorRef": "1",
		"networks": "none", "return_reservation_id": true}})
	if r.Status != 202 || !strings.HasPrefix(fmt.Sprint(r.JSON(t)["reservation_id"]), "r-") {
		t.Errorf("return_reservation_id = %d %s", r.Status, r.Body)
	}
}

func TestServerListFilters(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "public", 0, 0, nil, true)
	web1 := e.createServer(e.member, map[string]any{"name": "web-1", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.createServer(e.member, map[string]any{"name": "web-2", "imageRef": img, "flavorRef": "2", "networks": "none"})
	e.createServer(e.member, map[string]any{"name": "db", "imageRef": img, "flavorRef": "1", "networks": "none"})
	alienID := e.createServer(e.alien, map[string]any{"name": "web-alien", "imageRef": img, "flavorRef": "1", "networks": "none"})
	e.place(web1, "host1", true)

	tests := []struct {
		c     *resttest.Client
		query string
		want  string
	}{
		{e.member, "", "db,web-1,web-2"},
		{e.member, "?name=web", "web-1,web-2"},
		{e.member, "?name=" + url.QueryEscape("^web-1$"), "web-1"},
		{e.member, "?name=db", "db"},
		{e.member, "?name=" + url.QueryEscape("[bad"), ""},
		{e.member, "?status=ACTIVE", "web-1"},
		{e.member, "?status=build", "db,web-2"},
		{e.member, "?flavor=2", "web-2"},
		{e.member, "?host=host1", "db,web-1,web-2"}, // admin-only filter: ignored
		{e.admin, "", ""},
		{e.admin, "?all_tenants=1", "db,web-1,web-2,web-alien"},
		{e.admin, "?all_tenants=1&name=alien", "web-alien"},
		{e.admin, "?all_tenants=1&host=host1", "web-1"},
		{e.admin, "?all_tenants=1&project_id=" + e.other.ID, "web-alien"},
		{e.alien, "", "web-alien"},
	}
	for _, tt := range tests {
		for _, path := range []string{"/servers", "/servers/detail"} {
			names := listNames(t, tt.c.Do("GET", api+path+tt.query, nil))
			sortStrings(names)
			if got := strings.Join(names, ","); got != tt.want {
				t.Errorf("GET %s%s = %q; want %q", path, tt.query, got, tt.want)
			}
		}
	}
	if r := e.member.Do("GET", api+"/servers?all_tenants=1", nil); r.Status != 403 {
		t.Errorf("member all_tenants = %d; want 403", r.Status)
	}
	// Paging: limit with a next link, then the marker.
	r := e.member.Do("GET", api+"/servers/detail?limit=2", nil)
	m := r.JSON(t)
	if len(m["servers"].([]any)) != 2 || m["servers_links"] == nil {
		t.Fatalf("limit=2 = %s", r.Body)
	}
	next := m["servers_links"].([]any)[0].(map[string]any)["href"].(string)
	u, _ := url.Parse(next)
	if names := listNames(t, e.member.Do("GET", u.Path+"?"+u.RawQuery, nil)); len(names) != 1 {
		t.Fatalf("next page = %v; want 1 server", names)
	}
	// Another project's server is invisible: 404, not 403.
	if r := e.member.Do("GET", api+"/servers/"+alienID, nil); r.Status != 404 {
		t.Errorf("GET foreign server = %d; want 404", r.Status)
	}
	if r := e.member.Do("DELETE", api+"/servers/"+alienID, nil); r.Status != 404 {
		t.Errorf("DELETE foreign server = %d; want 404", r.Status)
	}
	if r := e.member.Do("GET", api+"/servers/web-1", nil); r.Status != 404 {
		t.Errorf("GET /servers/<name> = %d; want 404", r.Status)
	}
	if r := e.reader.Do("GET", api+"/servers/"+web1, nil); r.Status != 200 {
		t.Errorf("reader GET = %d; want 200", r.Status)
	}
	if r := e.reader.Do("DELETE", api+"/servers/"+web1, nil); r.Status != 403 {
		t.Errorf("reader DELETE = %d; want 403", r.Status)
	}
}

func sortStrings(xs []string) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
}

func TestServerCreateBadInput(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	bigImg := e.image(e.demo.ID, "private", 30, 0, nil, true)
	ramImg := e.image(e.demo.ID, "private", 0, 4096, nil, true)
	queued := e.image(e.demo.ID, "private", 0, 0, nil, false)
	foreignImg := e.image(e.other.ID, "private", 0, 0, nil, true)
	sharedImg := e.image(e.other.ID, "shared", 0, 0, nil, true)
	net := e.network(e.demo.ID, "net1", false, true)
	noSubnet := e.network(e.demo.ID, "bare", false, false)
	foreignNet := e.network(e.other.ID, "theirs", false, true)
	missing := "6f1c9b5e-1f1a-4c55-9d83-0e8f5e0c7a11"
	big := base64.StdEncoding.EncodeToString(make([]byte, 64<<10+1))
	ok := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": []map[string]string{{"uuid": net}}}
		mod(m)
		return map[string]any{"server": m}
	}
	tests := []struct {
		name   string
		body   any
		status int
		msg    string
	}{
		{"unknown flavor", ok(func(m map[string]any) { m["flavorRef"] = "99" }), 400, "Flavor 99 could not be found."},
		{"unknown image", ok(func(m map[string]any) { m["imageRef"] = missing }), 400, "Image " + missing + " could not be found."},
		{"foreign image", ok(func(m map[string]any) { m["imageRef"] = foreignImg }), 400, "could not be found"},
		{"shared not accepted", ok(func(m map[string]any) { m["imageRef"] = sharedImg }), 400, "could not be found"},
		{"bad image uuid", ok(func(m map[string]any) { m["imageRef"] = "cirros" }), 400, "imageRef"},
		{"image not active", ok(func(m map[string]any) { m["imageRef"] = queued }), 400, "is not active"},
		{"min_disk", ok(func(m map[string]any) { m["imageRef"] = bigImg }), 400, "Flavor's disk is too small"},
		{"min_ram", ok(func(m map[string]any) { m["imageRef"] = ramImg }), 400, "Flavor's memory is too small"},
		{"no image", ok(func(m map[string]any) { delete(m, "imageRef") }), 400, "Missing imageRef"},
		{"unknown network", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"uuid": missing}} }), 400, "Network " + missing + " could not be found."},
		{"foreign network", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"uuid": foreignNet}} }), 400, "could not be found"},
		{"network without subnet", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"uuid": noSubnet}} }), 400, "requires a subnet"},
		{"bad network uuid", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"uuid": "net1"}} }), 400, "network uuid is not in proper format"},
		{"network entry without uuid", ok(func(m map[string]any) { m["networks"] = []map[string]string{{}} }), 400, "missing 'uuid'"},
		{"bad fixed ip", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"uuid": net, "fixed_ip": "10.1.0.999"}} }), 400, "Invalid fixed IP"},
		{"unknown port", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"port": missing}} }), 400, "Port id"},
		{"network string junk", ok(func(m map[string]any) { m["networks"] = "some" }), 400, "networks"},
		{"network extra key", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"uuid": net, "tag": "x"}} }), 400, "Additional properties"},
		{"negative min", ok(func(m map[string]any) { m["min_count"] = -1 }), 400, "min_count"},
		{"zero max", ok(func(m map[string]any) { m["max_count"] = 0 }), 400, "max_count"},
		{"min over max", ok(func(m map[string]any) { m["min_count"] = 3; m["max_count"] = 2 }), 400, "min_count must be <= max_count"},
		{"absurd count", ok(func(m map[string]any) { m["max_count"] = 101 }), 400, "max_count"},
		{"count not a number", ok(func(m map[string]any) { m["max_count"] = "many" }), 400, "max_count"},
		{"count float", ok(func(m map[string]any) { m["max_count"] = 1.5 }), 400, "max_count"},
		{"user data not base64", ok(func(m map[string]any) { m["user_data"] = "!!!" }), 400, "valid base 64"},
		{"user data too big", ok(func(m map[string]any) { m["user_data"] = big }), 400, "User data too large"},
		{"unknown key", ok(func(m map[string]any) { m["key_name"] = "nope" }), 400, "Invalid key_name provided."},
		{"metadata not strings", ok(func(m map[string]any) { m["metadata"] = map[string]any{"a": 1} }), 400, "metadata"},
		{"metadata too many", ok(func(m map[string]any) {
			md := map[string]string{}
			for i := range 129 {
				md[fmt.Sprint(i)] = "v"
			}
			m["metadata"] = md
		}), 403, "Quota exceeded"},
		{"bad az", ok(func(m map[string]any) { m["availability_zone"] = "mars" }), 400, "availability zone"},
		{"unknown field", ok(func(m map[string]any) { m["description"] = "2.19 only" }), 400, "Additional properties are not allowed"},
		{"no name", ok(func(m map[string]any) { delete(m, "name") }), 400, "'name' is a required property"},
		{"padded name", ok(func(m map[string]any) { m["name"] = " vm" }), 400, "whitespace"},
		{"long name", ok(func(m map[string]any) { m["name"] = strings.Repeat("x", 256) }), 400, "name"},
		{"no flavor", ok(func(m map[string]any) { delete(m, "flavorRef") }), 400, "flavorRef"},
		{"bad group hint", map[string]any{"server": ok(func(map[string]any) {})["server"], "os:scheduler_hints": map[string]any{"group": missing}}, 400, "could not be found"},
		{"unknown top-level key", map[string]any{"server": ok(func(map[string]any) {})["server"], "extra": 1}, 400, "Additional properties are not allowed"},
		{"no server", map[string]any{}, 400, "'server' is a required property"},
		{"server not object", map[string]any{"server": "vm"}, 400, "server"},
		{"port with count", ok(func(m map[string]any) { m["networks"] = []map[string]string{{"port": missing}}; m["max_count"] = 2 }), 400, "single configured port"},
		{"bad bdm", ok(func(m map[string]any) {
			m["block_device_mapping_v2"] = []map[string]any{{"boot_index": 0, "source_type": "blank", "destination_type": "local"}}
		}), 400, "Block Device Mapping is Invalid"},
		{"bdm unknown volume", ok(func(m map[string]any) {
			delete(m, "imageRef")
			m["block_device_mapping_v2"] = []map[string]any{{"boot_index": 0, "uuid": missing, "source_type": "volume", "destination_type": "volume"}}
		}), 400, "Block Device Mapping is Invalid"},
	}
	before := len(e.b.State().Instances())
	for _, tt := range tests {
		r := e.member.Do("POST", api+"/servers", tt.body)
		if r.Status != tt.status {
			t.Errorf("%s: create = %d %s; want %d", tt.name, r.Status, r.Body, tt.status)
			continue
		}
		key := map[int]string{400: "badRequest", 403: "forbidden", 409: "conflictingRequest"}[tt.status]
		if msg := errMessage(t, r, key); !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: message %q; want it to contain %q", tt.name, msg, tt.msg)
		}
	}
	if after := len(e.b.State().Instances()); after != before {
		t.Fatalf("failed creates left %d instances", after-before)
	}
	if len(e.b.State().Ports()) != 0 {
		t.Fatal("failed creates left ports")
	}
	// Policy: a reader cannot create; an unscoped caller neither.
	if r := e.reader.Do("POST", api+"/servers", ok(func(map[string]any) {})); r.Status != 403 {
		t.Errorf("reader create = %d; want 403", r.Status)
	}
	// Shared image once accepted, a shared network, auto networks.
	e.b.MustApply(t, statedb.CmdAddImageMember, statedb.ImageMemberCmd{ImageID: sharedImg, MemberID: e.demo.ID})
	e.b.MustApply(t, statedb.CmdUpdateImageMember, statedb.ImageMemberCmd{ImageID: sharedImg, MemberID: e.demo.ID, Status: "accepted"})
	e.createServer(e.member, map[string]any{"name": "shared-img", "imageRef": sharedImg, "flavorRef": "1", "networks": "none"})
	sharedNet := e.network(e.other.ID, "public-ish", true, true)
	e.createServer(e.member, map[string]any{"name": "shared-net", "imageRef": img, "flavorRef": "1", "networks": []map[string]string{{"uuid": sharedNet}}})
	// Two usable networks now: auto (or none given) is ambiguous.
	if r := e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "amb", "imageRef": img, "flavorRef": "1"}}); r.Status != 409 {
		t.Errorf("ambiguous auto network = %d %s; want 409", r.Status, r.Body)
	}
}

func TestServerLifecycle(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	net := e.network(e.demo.ID, "net1", false, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": []map[string]string{{"uuid": net}}})
	action := func(body any) *resttest.Resp { return e.member.Do("POST", api+"/servers/"+id+"/action", body) }

	// Not placed yet: actions conflict, console conflicts.
	if r := action(map[string]any{"os-stop": nil}); r.Status != 409 {
		t.Fatalf("stop while building = %d; want 409", r.Status)
	}
	if r := action(map[string]any{"os-getConsoleOutput": map[string]any{}}); r.Status != 409 {
		t.Fatalf("console while unplaced = %d; want 409", r.Status)
	}
	e.place(id, "host1", true)
	if p := e.b.State().PortsOfDevice(id); len(p) != 1 || p[0].HostID != "host1" {
		t.Fatalf("port after placement = %+v; want bound to host1", p)
	}
	status := func() string { return serverOf(t, e.member.Do("GET", api+"/servers/"+id, nil))["status"].(string) }

	steps := []struct {
		body   any
		code   int
		report string // vm state the fake agent reports afterwards
		want   string
	}{
		{map[string]any{"os-start": nil}, 409, "", "ACTIVE"},
		{map[string]any{"os-stop": nil}, 202, statedb.VMStopped, "SHUTOFF"},
		{map[string]any{"os-stop": map[string]any{}}, 409, "", "SHUTOFF"},
		{map[string]any{"os-start": nil}, 202, statedb.VMActive, "ACTIVE"},
		{map[string]any{"reboot": map[string]any{"type": "SOFT"}}, 202, "", "REBOOT"},
		{map[string]any{"reboot": map[string]any{"type": "HARD"}}, 202, "", "HARD_REBOOT"},
		{map[string]any{"reboot": map[string]any{"type": "SOFT"}}, 409, statedb.VMActive, "ACTIVE"},
		{map[string]any{"reboot": map[string]any{}}, 400, "", "ACTIVE"},
		{map[string]any{"reboot": map[string]any{"type": "WARM"}}, 400, "", "ACTIVE"},
		{map[string]any{"os-stop": nil, "os-start": nil}, 400, "", "ACTIVE"},
		{map[string]any{"resize": map[string]any{"flavorRef": "nope"}}, 400, "", "ACTIVE"},
		{map[string]any{"os-stop": "now"}, 400, "", "ACTIVE"},
	}
	for i, st := range steps {
		r := action(st.body)
		if r.Status != st.code {
			t.Fatalf("step %d: action %v = %d %s; want %d", i, st.body, r.Status, r.Body, st.code)
		}
		if st.report != "" {
			power := statedb.PowerRunning
			if st.report == statedb.VMStopped {
				power = statedb.PowerShutdown
			}
			e.report(id, "host1", st.report, power)
		}
		if got := status(); got != st.want {
			t.Fatalf("step %d: status after %v = %s; want %s", i, st.body, got, st.want)
		}
	}
	if inst, _ := e.b.State().Instance(id); inst.RebootSeq != 2 || !inst.RebootHard {
		t.Fatalf("reboot seq = %d hard %v", inst.RebootSeq, inst.RebootHard)
	}

	// Console output from the host.
	e.b.mu.Lock()
	e.b.consoles[id] = "login: "
	e.b.mu.Unlock()
	r := action(map[string]any{"os-getConsoleOutput": map[string]any{"length": 50}})
	if r.Status != 200 || r.JSON(t)["output"] != "login: " {
		t.Fatalf("console = %d %s", r.Status, r.Body)
	}
	for _, body := range []any{map[string]any{"os-getConsoleOutput": nil}, map[string]any{"os-getConsoleOutput": map[string]any{"length": "-1"}}} {
		if r := action(body); r.Status != 200 {
			t.Fatalf("console %v = %d %s", body, r.Status, r.Body)
		}
	}
	if r := action(map[string]any{"os-getConsoleOutput": map[string]any{"length": -2}}); r.Status != 400 {
		t.Fatalf("console length -2 = %d; want 400", r.Status)
	}
	e.b.mu.Lock()
	lengths := fmt.Sprint(e.b.lengths)
	e.b.mu.Unlock()
	if lengths != "[50 -1 -1]" {
		t.Fatalf("console lengths asked = %s; want [50 -1 -1]", lengths)
	}

	// Rename and metadata.
	if s := serverOf(t, e.member.Do("PUT", api+"/servers/"+id, map[string]any{"server": map[string]any{"name": "renamed"}})); s["name"] != "renamed" {
		t.Fatalf("rename = %v", s["name"])
	}
	if r := e.member.Do("PUT", api+"/servers/"+id, map[string]any{"server": map[string]any{"flavorRef": "2"}}); r.Status != 400 {
		t.Fatalf("update unknown field = %d; want 400", r.Status)
	}
	md := api + "/servers/" + id + "/metadata"
	mdIs := func(r *resttest.Resp, want string) {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("metadata = %d %s", r.Status, r.Body)
		}
		m := r.JSON(t)["metadata"].(map[string]any)
		var keys []string
		for k, v := range m {
			keys = append(keys, k+"="+v.(string))
		}
		sortStrings(keys)
		if got := strings.Join(keys, ","); got != want {
			t.Fatalf("metadata = %q; want %q", got, want)
		}
	}
	mdIs(e.member.Do("PUT", md, map[string]any{"metadata": map[string]string{"a": "1", "b": "2"}}), "a=1,b=2")
	mdIs(e.member.Do("POST", md, map[string]any{"metadata": map[string]string{"b": "3", "c": "4"}}), "a=1,b=3,c=4")
	mdIs(e.member.Do("PUT", md, map[string]any{"metadata": map[string]string{"z": "9"}}), "z=9")
	mdIs(e.reader.Do("GET", md, nil), "z=9")
	if r := e.member.Do("PUT", md+"/k", map[string]any{"meta": map[string]string{"k": "v"}}); r.Status != 200 {
		t.Fatalf("put item = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("PUT", md+"/k", map[string]any{"meta": map[string]string{"j": "v"}}); r.Status != 400 {
		t.Fatalf("put mismatched item = %d; want 400", r.Status)
	}
	if r := e.member.Do("GET", md+"/k", nil); r.Status != 200 || r.JSON(t)["meta"].(map[string]any)["k"] != "v" {
		t.Fatalf("get item = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("DELETE", md+"/k", nil); r.Status != 204 {
		t.Fatalf("delete item = %d", r.Status)
	}
	if r := e.member.Do("GET", md+"/k", nil); r.Status != 404 {
		t.Fatalf("get deleted item = %d; want 404", r.Status)
	}
	if r := e.reader.Do("PUT", md, map[string]any{"metadata": map[string]string{}}); r.Status != 403 {
		t.Fatalf("reader sets metadata = %d; want 403", r.Status)
	}

	// Delete: 204, deleting until the host reports it gone, then 404.
	if r := e.member.Do("DELETE", api+"/servers/"+id, nil); r.Status != 204 {
		t.Fatalf("delete = %d", r.Status)
	}
	if s := serverOf(t, e.member.Do("GET", api+"/servers/"+id, nil)); s["OS-EXT-STS:task_state"] != "deleting" {
		t.Fatalf("task_state after delete = %v", s["OS-EXT-STS:task_state"])
	}
	e.b.MustApply(t, statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: id, HostID: "host1", Gone: true})
	if r := e.member.Do("GET", api+"/servers/"+id, nil); r.Status != 404 {
		t.Fatalf("GET after gone = %d; want 404", r.Status)
	}
	if len(e.b.State().Ports()) != 0 {
		t.Fatal("the server's port outlived it")
	}

	// A server that failed scheduling shows its fault and goes at once.
	id2 := e.createServer(e.member, map[string]any{"name": "doomed", "imageRef": img, "flavorRef": "3", "networks": "none"})
	e.b.Advance(time.Second)
	e.b.MustApply(t, statedb.CmdPlaceInstances, statedb.PlaceInstancesCmd{Failures: []statedb.PlacementFailure{{InstanceID: id2, Reason: statedb.NoValidHost}}})
	s := serverOf(t, e.member.Do("GET", api+"/servers/"+id2, nil))
	f, _ := s["fault"].(map[string]any)
	if s["status"] != "ERROR" || f == nil || f["code"] != 500.0 || f["message"] != statedb.NoValidHost || !zTime.MatchString(fmt.Sprint(f["created"])) {
		t.Fatalf("failed server = %v", s)
	}
	if r := e.member.Do("DELETE", api+"/servers/"+id2, nil); r.Status != 204 {
		t.Fatalf("delete failed server = %d", r.Status)
	}
	if r := e.member.Do("GET", api+"/servers/"+id2, nil); r.Status != 404 {
		t.Fatalf("unplaced server after delete = %d; want 404", r.Status)
	}
}

func TestServerGroups(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	r := e.member.Do("POST", api+"/os-server-groups", map[string]any{"server_group": map[string]any{"name": "g", "policies": []string{"anti-affinity"}}})
	if r.Status != 200 {
		t.Fatalf("create group = %d %s", r.Status, r.Body)
	}
	g := r.JSON(t)["server_group"].(map[string]any)
	gid := g["id"].(string)
	if fmt.Sprint(g["policies"]) != "[anti-affinity]" || fmt.Sprint(g["members"]) != "[]" {
		t.Fatalf("group = %v", g)
	}
	for _, body := range []any{
		map[string]any{"server_group": map[string]any{"name": "g", "policies": []string{"best-effort"}}},
		map[string]any{"server_group": map[string]any{"name": "g", "policies": []string{"affinity", "anti-affinity"}}},
		map[string]any{"server_group": map[string]any{"name": "g", "policy": "affinity"}},
		map[string]any{"server_group": map[string]any{"policies": []string{"affinity"}}},
	} {
		if r := e.member.Do("POST", api+"/os-server-groups", body); r.Status != 400 {
			t.Errorf("create group %v = %d; want 400", body, r.Status)
		}
	}
	body := map[string]any{"server": map[string]any{"name": "m", "imageRef": img, "flavorRef": "1", "networks": "none", "max_count": 2},
		"os:scheduler_hints": map[string]any{"group": gid}}
	if r := e.member.Do("POST", api+"/servers", body); r.Status != 202 {
		t.Fatalf("create in group = %d %s", r.Status, r.Body)
	}
	r = e.member.Do("GET", api+"/os-server-groups/"+gid, nil)
	if r.Status != 200 || len(r.JSON(t)["server_group"].(map[string]any)["members"].([]any)) != 2 {
		t.Fatalf("group after create = %d %s", r.Status, r.Body)
	}
	if r := e.alien.Do("GET", api+"/os-server-groups/"+gid, nil); r.Status != 404 {
		t.Fatalf("foreign group = %d; want 404", r.Status)
	}
	if r := e.alien.Do("POST", api+"/servers", map[string]any{"server": body["server"], "os:scheduler_hints": body["os:scheduler_hints"]}); r.Status != 400 {
		t.Fatalf("foreign group hint = %d; want 400", r.Status)
	}
	if r := e.member.Do("GET", api+"/os-server-groups", nil); r.Status != 200 || !strings.Contains(string(r.Body), gid) {
		t.Fatalf("list groups = %d %s", r.Status, r.Body)
	}
	if r := e.alien.Do("GET", api+"/os-server-groups", nil); strings.Contains(string(r.Body), gid) {
		t.Fatal("another project lists the group")
	}
	if r := e.admin.Do("GET", api+"/os-server-groups?all_projects=True", nil); !strings.Contains(string(r.Body), gid) {
		t.Fatal("admin all_projects misses the group")
	}
	if r := e.member.Do("DELETE", api+"/os-server-groups/"+gid, nil); r.Status != 204 {
		t.Fatalf("delete group = %d", r.Status)
	}
	if r := e.member.Do("GET", api+"/os-server-groups/"+gid, nil); r.Status != 404 {
		t.Fatalf("deleted group = %d", r.Status)
	}
}

func TestInternalConsoleNeedsClientCert(t *testing.T) {
	e := newEnv(t)
	if r := e.anon.Do("POST", "/internal/v1/instances/x/console?length=5", nil); r.Status != 403 {
		t.Fatalf("internal console without a client certificate = %d; want 403", r.Status)
	}
}

// TestServerFixedIPOnSharedNetwork: as in Neutron, only the network's
// owner or an admin picks a fixed IP on it: a tenant on another project's
// shared network (a provider LAN) gets 403 and nothing is written.
func TestServerFixedIPOnSharedNetwork(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	lan := e.network(e.other.ID, "lan", true, true)
	body := func(fixed string) map[string]any {
		nw := map[string]string{"uuid": lan}
		if fixed != "" {
			nw["fixed_ip"] = fixed
		}
		return map[string]any{"server": map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": []map[string]string{nw}}}
	}
	before, ports := len(e.b.State().Instances()), len(e.b.State().Ports())
	r := e.member.Do("POST", api+"/servers", body("10.1.0.7"))
	if r.Status != 403 || !strings.Contains(string(r.Body), "create_port:fixed_ips:ip_address") || !strings.Contains(string(r.Body), `"forbidden"`) {
		t.Errorf("fixed IP on another project's shared network = %d %s; want 403 naming the policy", r.Status, r.Body)
	}
	if n, p := len(e.b.State().Instances()), len(e.b.State().Ports()); n != before || p != ports {
		t.Errorf("instances %d → %d, ports %d → %d; want nothing written", before, n, ports, p)
	}
	e.createServer(e.member, body("")["server"].(map[string]any))
	// The network's owner picks an address on it.
	own := body("10.1.0.7")["server"].(map[string]any)
	own["imageRef"] = e.image(e.other.ID, "private", 0, 0, nil, true)
	e.createServer(e.alien, own)
}
