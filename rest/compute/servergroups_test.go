package compute_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

const mv263, mv264 = "compute 2.63", "compute 2.64"

// TestServerGroupShapes: up to 2.63 a group is created with and shows
// "policies" and "metadata"; from 2.64 it takes "policy" and "rules" and
// shows them instead, whichever version created it. A group with
// max_server_per_host rides CreateServerGroupWithRules, one without the
// older CreateServerGroup.
func TestServerGroupShapes(t *testing.T) {
	e := newEnv(t)
	create := func(hdr, body string) (map[string]any, statedb.CmdType) {
		t.Helper()
		before := e.b.Index()
		r := e.member.Do("POST", api+"/os-server-groups", body, "OpenStack-API-Version", hdr)
		if r.Status != 200 {
			t.Fatalf("create at %s %s = %d %s", hdr, body, r.Status, r.Body)
		}
		applied := e.b.AppliedSince(before)
		if len(applied) != 1 {
			t.Fatalf("create at %s applied %d commands; want 1", hdr, len(applied))
		}
		return r.JSON(t)["server_group"].(map[string]any), applied[0].Type
	}
	keys := func(m map[string]any) []string {
		var out []string
		for _, k := range []string{"policies", "metadata", "policy", "rules"} {
			if _, ok := m[k]; ok {
				out = append(out, k)
			}
		}
		return out
	}

	old, typ := create(mv263, `{"server_group": {"name": "old", "policies": ["anti-affinity"]}}`)
	if got := keys(old); !reflect.DeepEqual(got, []string{"policies", "metadata"}) || typ != statedb.CmdCreateServerGroup {
		t.Fatalf("2.63 group = %v (keys %v) by %d; want policies and metadata by CreateServerGroup", old, got, typ)
	}
	plain, typ := create(mv264, `{"server_group": {"name": "plain", "policy": "soft-anti-affinity"}}`)
	if plain["policy"] != "soft-anti-affinity" || len(plain["rules"].(map[string]any)) != 0 || !reflect.DeepEqual(keys(plain), []string{"policy", "rules"}) || typ != statedb.CmdCreateServerGroup {
		t.Fatalf("2.64 group without rules = %v by %d", plain, typ)
	}
	empty, typ := create(mv264, `{"server_group": {"name": "empty", "policy": "affinity", "rules": {}}}`)
	if empty["policy"] != "affinity" || len(empty["rules"].(map[string]any)) != 0 || typ != statedb.CmdCreateServerGroup {
		t.Fatalf("2.64 group with empty rules = %v by %d", empty, typ)
	}
	// The number as a JSON integer or as the string the openstack client sends.
	for _, v := range []string{`2`, `"2"`, `"02"`} {
		g, typ := create(mv264, `{"server_group": {"name": "ruled", "policy": "anti-affinity", "rules": {"max_server_per_host": `+v+`}}}`)
		raw, _ := json.Marshal(g["rules"])
		if g["policy"] != "anti-affinity" || string(raw) != `{"max_server_per_host":2}` || typ != statedb.CmdCreateGroupWithRules {
			t.Fatalf("2.64 group with max_server_per_host %s = %v (rules %s) by %d", v, g, raw, typ)
		}
		if sg, _ := e.b.State().ServerGroup(g["id"].(string)); sg.MaxServerPerHost != 2 {
			t.Fatalf("stored group = %+v; want max_server_per_host 2", sg)
		}
	}

	// Show and list render every group in the request's version.
	id := old["id"].(string)
	for _, tc := range []struct {
		hdr  string
		want []string
	}{{"", []string{"policies", "metadata"}}, {mv263, []string{"policies", "metadata"}}, {mv264, []string{"policy", "rules"}}} {
		r := e.member.Do("GET", api+"/os-server-groups/"+id, nil, "OpenStack-API-Version", tc.hdr)
		if got := keys(r.JSON(t)["server_group"].(map[string]any)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("show at %q has %v; want %v", tc.hdr, got, tc.want)
		}
		var list struct {
			Groups []map[string]any `json:"server_groups"`
		}
		e.member.Do("GET", api+"/os-server-groups", nil, "OpenStack-API-Version", tc.hdr).Decode(t, &list)
		if len(list.Groups) != 6 {
			t.Fatalf("list at %q = %d groups; want 6", tc.hdr, len(list.Groups))
		}
		for _, g := range list.Groups {
			if got := keys(g); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("list at %q: %v has %v; want %v", tc.hdr, g["name"], got, tc.want)
			}
			if g["name"] == "ruled" && tc.hdr == mv264 && g["rules"].(map[string]any)["max_server_per_host"] != 2.0 {
				t.Errorf("list at 2.64 shows rules %v", g["rules"])
			}
		}
	}
}

// TestServerGroupRulesValidation: what Nova's 2.64 schema and controller
// refuse is a 400 in Nova's words, and writes nothing.
func TestServerGroupRulesValidation(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		hdr, rules, policy string
		msg                string
	}{
		{mv264, `{"max_server_per_host": 2}`, "affinity", "Only anti-affinity policy supports rules."},
		{mv264, `{"max_server_per_host": 2}`, "soft-anti-affinity", "Only anti-affinity policy supports rules."},
		{mv264, `{"max_server_per_host": 0}`, "anti-affinity", "Invalid input for field/attribute max_server_per_host. Value: 0. 0 is less than the minimum of 1"},
		{mv264, `{"max_server_per_host": -3}`, "anti-affinity", "-3 is less than the minimum of 1"},
		{mv264, `{"max_server_per_host": "0"}`, "anti-affinity", "less than the minimum of 1"},
		{mv264, `{"max_server_per_host": "foo"}`, "anti-affinity", "Invalid input for field/attribute max_server_per_host. Value: foo. 'foo' does not match '^[0-9]*$'"},
		{mv264, `{"max_server_per_host": ""}`, "anti-affinity", "does not match"},
		{mv264, `{"max_server_per_host": "-2"}`, "anti-affinity", "does not match"},
		{mv264, `{"max_server_per_host": 2.5}`, "anti-affinity", "is not of type 'integer', 'string'"},
		{mv264, `{"max_server_per_host": 1e3}`, "anti-affinity", "is not of type 'integer', 'string'"},
		{mv264, `{"max_server_per_host": true}`, "anti-affinity", "is not of type 'integer', 'string'"},
		{mv264, `{"max_server_per_host": null}`, "anti-affinity", "is not of type 'integer', 'string'"},
		{mv264, `{"max_server_per_host": 99999999999999999999}`, "anti-affinity", "greater than the maximum"},
		{mv264, `{"unknown_key": "3"}`, "anti-affinity", "Additional properties are not allowed ('unknown_key' was unexpected)"},
		{mv264, `{"max_server_per_host": 2, "x": 1}`, "anti-affinity", "('x' was unexpected)"},
		{mv264, `[2]`, "anti-affinity", "Invalid input for field/attribute rules. Value: [2]. [2] is not of type 'object'"},
		{mv264, `null`, "anti-affinity", "Value: None. None is not of type 'object'"},
		{mv264, `"max_server_per_host=2"`, "anti-affinity", "is not of type 'object'"},
		{mv264, ``, "best-effort", "Invalid input for field/attribute policy. Value: best-effort. 'best-effort' is not one of ['affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity']"},
		{mv263, `{"max_server_per_host": 2}`, "", "Additional properties are not allowed ('rules' was unexpected)"},
		{mv263, ``, "anti-affinity", "Additional properties are not allowed ('policy' was unexpected)"},
	} {
		sg := `"name": "g"`
		if tc.policy != "" {
			sg += `, "policy": "` + tc.policy + `"`
		}
		if tc.hdr == mv263 {
			sg += `, "policies": ["anti-affinity"]`
		}
		if tc.rules != "" {
			sg += `, "rules": ` + tc.rules
		}
		body := `{"server_group": {` + sg + `}}`
		before := e.b.Index()
		r := e.member.Do("POST", api+"/os-server-groups", body, "OpenStack-API-Version", tc.hdr)
		if r.Status != 400 || !strings.Contains(string(r.Body), `"badRequest"`) || !strings.Contains(string(r.Body), tc.msg) {
			t.Errorf("create at %s %s = %d %s; want 400 with %q", tc.hdr, body, r.Status, r.Body, tc.msg)
		}
		if n := len(e.b.AppliedSince(before)); n != 0 {
			t.Errorf("create at %s %s applied %d commands", tc.hdr, body, n)
		}
	}
	if gs := e.b.State().ServerGroups(); len(gs) != 0 {
		t.Fatalf("refused creates left %d groups", len(gs))
	}
}
