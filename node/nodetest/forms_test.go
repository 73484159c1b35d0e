package nodetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// formRow is one integer or boolean attribute of one endpoint, with the
// spellings its real service accepts (and the value it then stores) and
// the ones it refuses (and a part of the message it refuses them with).
type formRow struct {
	service string // network, compute, volume, image, identity: the error shape
	method  string
	path    string                                           // under the node's URL; {project} is the admin project
	body    func(v string, n int) string                     // the body with the attribute's JSON value v; n is unique per request
	stored  func(f *formEnv, resp map[string]any, n int) any // the value the service kept
	attr    string
	accept  []formAccept
	reject  []formReject
}

type formAccept struct {
	in   string // the attribute's JSON value as a client sends it
	want any    // what the service stores (as JSON decodes it)
}

type formReject struct {
	in  string
	msg string
}

// formTable drives TestFormsTable: every row's accepted and refused forms
// become one subtest each.
var formTable = []formRow{
	{service: "network", method: "POST", path: "/network/v2.0/networks", attr: "mtu",
		body:   func(v string, n int) string { return fmt.Sprintf(`{"network":{"name":"n%d","mtu":%s}}`, n, v) },
		stored: field("network", "mtu"),
		accept: []formAccept{{`1400`, 1400.0}, {`"1400"`, 1400.0}, {`" 1400 "`, 1400.0}, {`"1_400"`, 1400.0}, {`1400.7`, 1400.0}},
		reject: []formReject{{`"abc"`, "Invalid input for operation: 'abc' is not an integer."}, {`"1400.5"`, "is not an integer"},
			{`[1400]`, "is not an integer"}, {`"-1"`, "Invalid input for mtu. Reason: '-1' should be non-negative."}}},
	{service: "network", method: "PUT", path: "/network/v2.0/networks/{net}", attr: "mtu",
		body:   func(v string, _ int) string { return fmt.Sprintf(`{"network":{"mtu":%s}}`, v) },
		stored: field("network", "mtu"),
		accept: []formAccept{{`"1450"`, 1450.0}, {`1400`, 1400.0}},
		reject: []formReject{{`"mtu"`, "'mtu' is not an integer"}}},
	{service: "network", method: "POST", path: "/network/v2.0/networks", attr: "admin_state_up",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"network":{"name":"n%d","admin_state_up":%s}}`, n, v)
		},
		stored: field("network", "admin_state_up"),
		accept: []formAccept{{`false`, false}, {`"False"`, false}, {`"false"`, false}, {`"0"`, false}, {`0`, false},
			{`"no"`, false}, {`"True"`, true}, {`"t"`, true}, {`1`, true}},
		reject: []formReject{{`"maybe"`, "'maybe' cannot be converted to boolean"}, {`2`, "'2' cannot be converted to boolean"},
			{`1.0`, "cannot be converted to boolean"}}},
	{service: "network", method: "POST", path: "/network/v2.0/networks", attr: "shared",
		body:   func(v string, n int) string { return fmt.Sprintf(`{"network":{"name":"n%d","shared":%s}}`, n, v) },
		stored: field("network", "shared"),
		accept: []formAccept{{`"True"`, true}, {`"yes"`, true}, {`"off"`, false}},
		reject: []formReject{{`"sure"`, "'sure' cannot be converted to boolean"}}},
	{service: "network", method: "POST", path: "/network/v2.0/networks", attr: "router:external",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"network":{"name":"n%d","router:external":%s}}`, n, v)
		},
		stored: field("network", "router:external"),
		accept: []formAccept{{`"true"`, true}, {`"n"`, false}},
		reject: []formReject{{`"external"`, "'external' cannot be converted to boolean"}}},
	{service: "network", method: "POST", path: "/network/v2.0/networks", attr: "provider:segmentation_id",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"network":{"name":"n%d","provider:network_type":"vxlan","provider:segmentation_id":%s}}`, n, v)
		},
		stored: field("network", "provider:segmentation_id"),
		accept: []formAccept{{`"5001"`, 5001.0}, {`5002`, 5002.0}},
		reject: []formReject{{`"five"`, "'five' is not an integer"}}},
	{service: "network", method: "POST", path: "/network/v2.0/subnets", attr: "ip_version",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"subnet":{"network_id":"{net}","cidr":"10.%d.0.0/24","ip_version":%s}}`, n%250, v)
		},
		stored: field("subnet", "ip_version"),
		accept: []formAccept{{`4`, 4.0}, {`"4"`, 4.0}, {`4.0`, 4.0}},
		reject: []formReject{{`"four"`, "'four' is not an integer"}, {`"5"`, "Invalid input for ip_version. Reason: 5 is not in [4, 6]."}}},
	{service: "network", method: "POST", path: "/network/v2.0/subnets", attr: "enable_dhcp",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"subnet":{"network_id":"{net}","cidr":"10.%d.0.0/24","ip_version":4,"enable_dhcp":%s}}`, n%250, v)
		},
		stored: field("subnet", "enable_dhcp"),
		accept: []formAccept{{`"False"`, false}, {`"1"`, true}},
		reject: []formReject{{`"dhcp"`, "'dhcp' cannot be converted to boolean"}}},
	{service: "network", method: "POST", path: "/network/v2.0/ports", attr: "admin_state_up",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"port":{"network_id":"{net}","name":"p%d","admin_state_up":%s}}`, n, v)
		},
		stored: field("port", "admin_state_up"),
		accept: []formAccept{{`"False"`, false}, {`"on"`, true}},
		reject: []formReject{{`"up"`, "'up' cannot be converted to boolean"}}},

	{service: "compute", method: "POST", path: "/compute/v2.1/servers", attr: "min_count",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"server":{"name":"s%d","imageRef":"{image}","flavorRef":"1","networks":"none","min_count":%s,"max_count":2}}`, n, v)
		},
		stored: serverCount,
		accept: []formAccept{{`2`, 2}, {`"2"`, 2}, {`"02"`, 2}, {`"2\n"`, 2}},
		reject: []formReject{{`"two"`, "Invalid input for field/attribute min_count. Value: two. 'two' does not match '^[0-9]*$'"},
			{`" 2"`, "does not match '^[0-9]*$'"}, {`"-1"`, "does not match '^[0-9]*$'"},
			{`2.0`, "2.0 is not of type 'integer', 'string'"}, {`true`, "True is not of type 'integer', 'string'"},
			{`0`, "0 is less than the minimum of 1"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/servers", attr: "max_count",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"server":{"name":"s%d","imageRef":"{image}","flavorRef":"1","networks":"none","min_count":"1","max_count":%s}}`, n, v)
		},
		stored: serverCount,
		accept: []formAccept{{`"2"`, 2}, {`1`, 1}},
		reject: []formReject{{`"2.5"`, "'2.5' does not match '^[0-9]*$'"}, {`[2]`, "is not of type 'integer', 'string'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/servers", attr: "return_reservation_id",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"server":{"name":"s%d","imageRef":"{image}","flavorRef":"1","networks":"none","return_reservation_id":%s}}`, n, v)
		},
		stored: func(_ *formEnv, resp map[string]any, _ int) any { return resp["reservation_id"] != nil },
		accept: []formAccept{{`"True"`, true}, {`"yes"`, true}, {`"0"`, false}, {`false`, false}},
		reject: []formReject{{`"y"`, "'y' is not one of [True, 'True'"}, {`1`, "1 is not of type 'boolean', 'string'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/servers", attr: "config_drive",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"server":{"name":"s%d","imageRef":"{image}","flavorRef":"1","networks":"none","config_drive":%s}}`, n, v)
		},
		stored: func(f *formEnv, _ map[string]any, n int) any {
			inst := f.instance(fmt.Sprintf("s%d", n))
			return inst != nil && inst.ConfigDrive
		},
		accept: []formAccept{{`"True"`, true}, {`"yes"`, true}, {`"off"`, false}, {`""`, false}},
		reject: []formReject{{`"maybe"`, "'maybe' is not one of"}, {`1`, "1 is not of type 'boolean', 'string'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/servers", attr: "block_device_mapping_v2[].volume_size",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"server":{"name":"s%d","imageRef":"","flavorRef":"1","networks":"none","block_device_mapping_v2":[`+
				`{"uuid":"{image}","boot_index":"0","source_type":"image","destination_type":"volume","volume_size":%s,"delete_on_termination":"True"}]}}`, n, v)
		},
		stored: func(f *formEnv, _ map[string]any, n int) any {
			inst := f.instance(fmt.Sprintf("s%d", n))
			if inst == nil {
				return nil
			}
			v, ok := f.c.Node(0).State().Volume(inst.RootVolume)
			if !ok {
				return nil
			}
			return v.SizeGB
		},
		accept: []formAccept{{`"1"`, 1}, {`2`, 2}},
		reject: []formReject{{`"one"`, "Invalid input for field/attribute volume_size. Value: one. 'one' does not match '^[0-9]*$'"},
			{`1.5`, "1.5 is not of type 'integer', 'string'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/servers", attr: "block_device_mapping_v2[].boot_index",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"server":{"name":"s%d","imageRef":"","flavorRef":"1","networks":"none","block_device_mapping_v2":[`+
				`{"uuid":"{image}","boot_index":%s,"source_type":"image","destination_type":"volume","volume_size":1}]}}`, n, v)
		},
		stored: func(f *formEnv, _ map[string]any, n int) any {
			inst := f.instance(fmt.Sprintf("s%d", n))
			return inst != nil && inst.RootVolume != ""
		},
		accept: []formAccept{{`"0"`, true}, {`0`, true}},
		reject: []formReject{{`"first"`, "'first' does not match '^-?[0-9]+$'"}, {`0.0`, "0.0 is not of type 'integer', 'string'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "ram",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":%s,"vcpus":1,"disk":1}}`, n, v)
		},
		stored: field("flavor", "ram"),
		accept: []formAccept{{`512`, 512.0}, {`"512"`, 512.0}},
		reject: []formReject{{`"512MB"`, "'512MB' does not match '^[0-9]*$'"}, {`512.5`, "is not of type 'integer', 'string'"},
			{`0`, "0 is less than the minimum of 1"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "vcpus",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":64,"vcpus":%s,"disk":1}}`, n, v)
		},
		stored: field("flavor", "vcpus"),
		accept: []formAccept{{`"2"`, 2.0}},
		reject: []formReject{{`"two"`, "does not match '^[0-9]*$'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "disk",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":64,"vcpus":1,"disk":%s}}`, n, v)
		},
		stored: field("flavor", "disk"),
		accept: []formAccept{{`"0"`, 0.0}, {`"10"`, 10.0}},
		reject: []formReject{{`"-1"`, "does not match '^[0-9]*$'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "swap",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":64,"vcpus":1,"disk":1,"swap":%s}}`, n, v)
		},
		stored: field("flavor", "swap"),
		accept: []formAccept{{`"128"`, 128.0}, {`""`, ""}},
		reject: []formReject{{`"1k"`, "does not match '^[0-9]*$'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "OS-FLV-EXT-DATA:ephemeral",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":64,"vcpus":1,"disk":1,"OS-FLV-EXT-DATA:ephemeral":%s}}`, n, v)
		},
		stored: field("flavor", "OS-FLV-EXT-DATA:ephemeral"),
		accept: []formAccept{{`"5"`, 5.0}},
		reject: []formReject{{`"5G"`, "does not match '^[0-9]*$'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "rxtx_factor",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":64,"vcpus":1,"disk":1,"rxtx_factor":%s}}`, n, v)
		},
		stored: field("flavor", "rxtx_factor"),
		accept: []formAccept{{`"1.5"`, 1.5}, {`2.5`, 2.5}, {`"2"`, 2.0}},
		reject: []formReject{{`"1e3"`, "'1e3' does not match"}, {`true`, "True is not of type 'number', 'string'"}}},
	{service: "compute", method: "POST", path: "/compute/v2.1/flavors", attr: "os-flavor-access:is_public",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"flavor":{"name":"f%d","ram":64,"vcpus":1,"disk":1,"os-flavor-access:is_public":%s}}`, n, v)
		},
		stored: field("flavor", "os-flavor-access:is_public"),
		accept: []formAccept{{`"False"`, false}, {`"TRUE"`, true}, {`"no"`, false}},
		reject: []formReject{{`"nope"`, "'nope' is not one of"}, {`0`, "0 is not of type 'boolean', 'string'"}}},

	{service: "volume", method: "POST", path: "/volume/v3/{project}/volumes", attr: "size",
		body:   func(v string, n int) string { return fmt.Sprintf(`{"volume":{"name":"v%d","size":%s}}`, n, v) },
		stored: field("volume", "size"),
		accept: []formAccept{{`1`, 1.0}, {`"1"`, 1.0}, {`"2\n"`, 2.0}},
		reject: []formReject{{`"one"`, "Invalid input for field/attribute size. Value: one. 'one' does not match '^[0-9]+$'"},
			{`1.5`, "1.5 is not of type 'integer', 'string'"}, {`" 1"`, "does not match '^[0-9]+$'"}}},
	{service: "volume", method: "POST", path: "/volume/v3/{project}/volumes", attr: "multiattach",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"volume":{"name":"v%d","size":1,"multiattach":%s}}`, n, v)
		},
		stored: field("volume", "multiattach"),
		accept: []formAccept{{`"False"`, false}, {`"f"`, false}, {`"n"`, false}},
		reject: []formReject{{`"maybe"`, "'maybe' is not one of"}, {`0`, "0 is not of type 'boolean', 'string'"}}},

	{service: "image", method: "POST", path: "/image/v2/images", attr: "min_disk",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"name":"i%d","disk_format":"qcow2","container_format":"bare","min_disk":%s}`, n, v)
		},
		stored: func(_ *formEnv, resp map[string]any, _ int) any { return resp["min_disk"] },
		accept: []formAccept{{`1`, 1.0}, {`2.0`, 2.0}},
		reject: []formReject{{`"1"`, "'1' is not of type 'integer'"}, {`1.5`, "1.5 is not of type 'integer'"}}},
	{service: "image", method: "POST", path: "/image/v2/images", attr: "min_ram",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"name":"i%d","disk_format":"qcow2","container_format":"bare","min_ram":%s}`, n, v)
		},
		stored: func(_ *formEnv, resp map[string]any, _ int) any { return resp["min_ram"] },
		accept: []formAccept{{`512`, 512.0}},
		reject: []formReject{{`"512"`, "'512' is not of type 'integer'"}}},
	{service: "image", method: "POST", path: "/image/v2/images", attr: "protected",
		body: func(v string, n int) string {
			return fmt.Sprintf(`{"name":"i%d","disk_format":"qcow2","container_format":"bare","protected":%s}`, n, v)
		},
		stored: func(_ *formEnv, resp map[string]any, _ int) any { return resp["protected"] },
		accept: []formAccept{{`false`, false}},
		reject: []formReject{{`"true"`, "'true' is not of type 'boolean'"}, {`0`, "0 is not of type 'boolean'"}}},

	{service: "identity", method: "POST", path: "/identity/v3/users", attr: "enabled",
		body:   func(v string, n int) string { return fmt.Sprintf(`{"user":{"name":"u%d","enabled":%s}}`, n, v) },
		stored: field("user", "enabled"),
		accept: []formAccept{{`false`, false}, {`true`, true}},
		reject: []formReject{{`"true"`, "Invalid input for field 'enabled': 'true' is not of type 'boolean'"}, {`1`, "1 is not of type 'boolean'"}}},
	{service: "identity", method: "POST", path: "/identity/v3/projects", attr: "enabled",
		body:   func(v string, n int) string { return fmt.Sprintf(`{"project":{"name":"p%d","enabled":%s}}`, n, v) },
		stored: field("project", "enabled"),
		accept: []formAccept{{`false`, false}},
		reject: []formReject{{`"False"`, "'False' is not of type 'boolean'"}}},
}

// field reads resp[key][attr].
func field(key, attr string) func(*formEnv, map[string]any, int) any {
	return func(_ *formEnv, resp map[string]any, _ int) any {
		obj, _ := resp[key].(map[string]any)
		return obj[attr]
	}
}

// serverCount counts the servers the request made: s<n> or s<n>-<i>.
func serverCount(f *formEnv, _ map[string]any, n int) any {
	count := 0
	for _, inst := range f.c.Node(0).State().Instances() {
		if name := fmt.Sprintf("s%d", n); inst.Name == name || strings.HasPrefix(inst.Name, name+"-") {
			count++
		}
	}
	return count
}

// instance finds a server by name.
func (f *formEnv) instance(name string) *statedb.Instance {
	for _, inst := range f.c.Node(0).State().Instances() {
		if inst.Name == name {
			return inst
		}
	}
	return nil
}

// formEnv is the one-host cluster the table runs against, with an image
// to boot and a network for subnets and ports.
type formEnv struct {
	c       *Cluster
	token   string
	project string
	image   string
	network string
	n       int
}

func (f *formEnv) expand(s string) string {
	return strings.NewReplacer("{project}", f.project, "{image}", f.image, "{net}", f.network).Replace(s)
}

// objects counts the objects of every kind the table creates.
func (f *formEnv) objects() [9]int {
	sn := f.c.Node(0).State()
	return [9]int{len(sn.Networks()), len(sn.Subnets()), len(sn.Ports()), len(sn.Instances()), len(sn.Flavors()),
		len(sn.Volumes()), len(sn.Images()), len(sn.Users()), len(sn.Projects())}
}

// do sends one request and returns its status, raw body and JSON body.
func (f *formEnv) do(t *testing.T, method, path, body string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.c.URL(0)+f.expand(path), strings.NewReader(f.expand(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", f.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, string(raw), m
}

// errorShape checks that a refusal has the service's own error body.
func errorShape(t *testing.T, service, raw string, m map[string]any) {
	t.Helper()
	var ok bool
	switch service {
	case "network":
		_, ok = m["NeutronError"].(map[string]any)
	case "compute", "volume":
		_, ok = m["badRequest"].(map[string]any)
	case "identity":
		e, isMap := m["error"].(map[string]any)
		ok = isMap && e["code"] == 400.0
	case "image":
		ok = strings.HasPrefix(raw, "400 Bad Request")
	}
	if !ok {
		t.Errorf("%s error body %q is not in the service's shape", service, raw)
	}
}

// TestFormsTable runs every row of formTable against a real in-process
// host: each accepted spelling gives a 2xx and the right stored value,
// each refused one a 400 in the service's shape and words, writing nothing.
func TestFormsTable(t *testing.T) {
	c := NewCluster(t, 1)
	f := &formEnv{c: c, token: c.AdminToken(0), image: cpSeedImage(t.Context(), t, c.Node(0))}
	p, ok := c.Node(0).State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	f.project = p.ID
	st, raw, m := f.do(t, "POST", "/network/v2.0/networks", `{"network":{"name":"forms"}}`)
	if st != http.StatusCreated {
		t.Fatalf("network create = %d %s", st, raw)
	}
	f.network = m["network"].(map[string]any)["id"].(string)

	for _, row := range formTable {
		for _, a := range row.accept {
			t.Run(fmt.Sprintf("%s %s %s accepts %s", row.service, row.path, row.attr, a.in), func(t *testing.T) {
				f.n++
				n := f.n
				st, raw, m := f.do(t, row.method, row.path, row.body(a.in, n))
				if st < 200 || st > 299 {
					t.Fatalf("%s %s with %s = %s = %d %s; want 2xx", row.method, row.path, row.attr, a.in, st, raw)
				}
				if got := row.stored(f, m, n); got != a.want {
					t.Errorf("%s = %s stored %v (%T); want %v (%T) [%s]", row.attr, a.in, got, got, a.want, a.want, raw)
				}
			})
		}
		for _, r := range row.reject {
			t.Run(fmt.Sprintf("%s %s %s refuses %s", row.service, row.path, row.attr, r.in), func(t *testing.T) {
				f.n++
				before := f.objects()
				st, raw, m := f.do(t, row.method, row.path, row.body(r.in, f.n))
				if st != http.StatusBadRequest {
					t.Fatalf("%s %s with %s = %s = %d %s; want 400", row.method, row.path, row.attr, r.in, st, raw)
				}
				if !strings.Contains(raw, r.msg) {
					t.Errorf("%s = %s: body %s; want it to contain %q", row.attr, r.in, raw, r.msg)
				}
				errorShape(t, row.service, raw, m)
				if after := f.objects(); after != before {
					t.Errorf("%s = %s was refused but the objects went from %v to %v", row.attr, r.in, before, after)
				}
			})
		}
	}
}
