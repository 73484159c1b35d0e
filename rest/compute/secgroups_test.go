package compute_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestServerSecurityGroups(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 1, 64, nil, true)
	net := e.network(e.demo.ID, "net1", false, true)

	// os-security-groups: list makes the default group; create a group
	// and an ingress rule the way novaclient does.
	r := e.member.Do("GET", api+"/os-security-groups", nil)
	if r.Status != 200 {
		t.Fatalf("list = %d %s", r.Status, r.Body)
	}
	groups := r.JSON(t)["security_groups"].([]any)
	if len(groups) != 1 || groups[0].(map[string]any)["name"] != "default" {
		t.Fatalf("groups = %v; want the default group", groups)
	}
	r = e.member.Do("POST", api+"/os-security-groups", `{"security_group": {"name": "web", "description": "w"}}`)
	if r.Status != 200 {
		t.Fatalf("create = %d %s", r.Status, r.Body)
	}
	web := r.JSON(t)["security_group"].(map[string]any)
	if rules := web["rules"].([]any); len(rules) != 0 {
		t.Errorf("new group rules = %v; want none (egress rules are not shown)", rules)
	}
	r = e.member.Do("POST", api+"/os-security-group-rules", fmt.Sprintf(`{"security_group_rule": {"parent_group_id": %q, "ip_protocol": "tcp", "from_port": 80, "to_port": 80, "cidr": "0.0.0.0/0"}}`, web["id"]))
	if r.Status != 200 {
		t.Fatalf("rule = %d %s", r.Status, r.Body)
	}
	rule := r.JSON(t)["security_group_rule"].(map[string]any)
	if rule["from_port"] != float64(80) || fmt.Sprint(rule["ip_range"]) != "map[cidr:0.0.0.0/0]" {
		t.Errorf("rule = %v", rule)
	}
	if r := e.member.Do("POST", api+"/os-security-group-rules", fmt.Sprintf(`{"security_group_rule": {"parent_group_id": %q, "ip_protocol": "tcp", "from_port": 90, "to_port": 80}}`, web["id"])); r.Status != 400 {
		t.Errorf("reversed range = %d %s; want 400", r.Status, r.Body)
	}

	// server create --security-group web
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1",
		"networks": []map[string]string{{"uuid": net}}, "security_groups": []map[string]string{{"name": "web"}}})
	sn := e.b.State()
	ports := sn.PortsOfDevice(id)
	if len(ports) != 1 || !slices.Equal(ports[0].SecurityGroups, []string{web["id"].(string)}) {
		t.Fatalf("ports = %+v; want one in group web", ports)
	}
	if r := e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "x", "imageRef": img, "flavorRef": "1",
		"networks": []map[string]string{{"uuid": net}}, "security_groups": []map[string]string{{"name": "nope"}}}}); r.Status != 400 {
		t.Errorf("unknown group = %d; want 400", r.Status)
	}

	// server add security group default; remove web.
	for _, step := range []struct{ body, want string }{
		{`{"addSecurityGroup": {"name": "default"}}`, "[web default]"},
		{`{"removeSecurityGroup": {"name": "web"}}`, "[default]"},
	} {
		if r := e.member.Do("POST", api+"/servers/"+id+"/action", step.body); r.Status != 202 {
			t.Fatalf("%s = %d %s", step.body, r.Status, r.Body)
		}
		r := e.member.Do("GET", api+"/servers/"+id, nil)
		var names []string
		for _, g := range r.JSON(t)["server"].(map[string]any)["security_groups"].([]any) {
			names = append(names, g.(map[string]any)["name"].(string))
		}
		if fmt.Sprint(names) != step.want {
			t.Errorf("after %s server groups = %v; want %s", step.body, names, step.want)
		}
	}
	if r := e.member.Do("POST", api+"/servers/"+id+"/action", `{"removeSecurityGroup": {"name": "web"}}`); r.Status != 400 {
		t.Errorf("removing a group the server lacks = %d; want 400", r.Status)
	}
	r = e.member.Do("GET", api+"/servers/"+id+"/os-security-groups", nil)
	if got := r.JSON(t)["security_groups"].([]any); len(got) != 1 || got[0].(map[string]any)["name"] != "default" {
		t.Errorf("server groups = %v", got)
	}
	if p, _ := e.b.State().Port(ports[0].ID); !slices.Equal(p.SecurityGroups, []string{statedb.DefaultSecGroupID(e.demo.ID)}) {
		t.Errorf("port groups = %v; want only default", p.SecurityGroups)
	}
	if r := e.alien.Do("GET", api+"/os-security-groups/"+web["id"].(string), nil); r.Status != 404 {
		t.Errorf("foreign group = %d; want 404", r.Status)
	}
	if r := e.member.Do("DELETE", api+"/os-security-groups/"+web["id"].(string), nil); r.Status != 202 {
		t.Errorf("delete = %d %s", r.Status, r.Body)
	}
}

// TestServerGroupsOnNetworkWithoutPortSecurity: on a network whose port
// security is off, a lone default group (by name, or by id as the
// openstack client sends it) is dropped as Nova drops it, and any other
// group is refused with Nova's 400; nothing is created.
func TestServerGroupsOnNetworkWithoutPortSecurity(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 1, 64, nil, true)
	open := e.network(e.demo.ID, "open", false, true)
	e.b.MustApply(t, statedb.CmdSetNetPortSecurity, statedb.SetNetworkPortSecurityCmd{ID: open, Enabled: false})
	guarded := e.network(e.demo.ID, "guarded", false, true)
	r := e.member.Do("POST", api+"/os-security-groups", `{"security_group": {"name": "web", "description": "w"}}`)
	if r.Status != 200 {
		t.Fatalf("create group = %d %s", r.Status, r.Body)
	}
	web := r.JSON(t)["security_group"].(map[string]any)["id"].(string)
	defaultID := statedb.DefaultSecGroupID(e.demo.ID)
	server := func(groups []string, nets ...string) map[string]any {
		body := map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1"}
		var ns []map[string]string
		for _, n := range nets {
			ns = append(ns, map[string]string{"uuid": n})
		}
		body["networks"] = ns
		if groups != nil {
			var gs []map[string]string
			for _, g := range groups {
				gs = append(gs, map[string]string{"name": g})
			}
			body["security_groups"] = gs
		}
		return body
	}
	for _, tc := range []struct {
		name   string
		groups []string
		nets   []string
		want   map[string][]string // network → its port's groups
	}{
		{"no group", nil, []string{open}, map[string][]string{open: {}}},
		{"default by name", []string{"default"}, []string{open}, map[string][]string{open: {}}},
		{"default by id", []string{defaultID}, []string{open}, map[string][]string{open: {}}},
		{"default on both networks", []string{"default"}, []string{open, guarded},
			map[string][]string{open: {}, guarded: {defaultID}}},
		{"web where port security is on", []string{"web"}, []string{guarded}, map[string][]string{guarded: {web}}},
	} {
		id := e.createServer(e.member, server(tc.groups, tc.nets...))
		ports := e.b.State().PortsOfDevice(id)
		if len(ports) != len(tc.want) {
			t.Fatalf("%s: %d ports; want %d", tc.name, len(ports), len(tc.want))
		}
		for _, p := range ports {
			if want := tc.want[p.NetworkID]; !slices.Equal(p.SecurityGroups, want) {
				t.Errorf("%s: port on %s has groups %v; want %v", tc.name, p.NetworkID, p.SecurityGroups, want)
			}
		}
	}
	before := len(e.b.State().Instances())
	for _, groups := range [][]string{{"web"}, {web}, {"default", "web"}} {
		for _, nets := range [][]string{{open}, {guarded, open}} {
			r := e.member.Do("POST", api+"/servers", map[string]any{"server": server(groups, nets...)})
			msg, _ := r.JSON(t)["badRequest"].(map[string]any)
			if r.Status != 400 || msg == nil || msg["message"] != "Network requires port_security_enabled and subnet associated in order to apply security groups." || msg["code"] != float64(400) {
				t.Errorf("groups %v on %v = %d %s; want Nova's 400 SecurityGroupCannotBeApplied", groups, nets, r.Status, r.Body)
			}
		}
	}
	if n := len(e.b.State().Instances()); n != before {
		t.Errorf("refused creates left %d servers", n-before)
	}
}
