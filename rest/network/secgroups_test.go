package network_test

import (
	"fmt"
	"slices"
	"testing"
)

// TestSecGroupOSCWire replays what `openstack security group create sg1`
// and `security group rule create --protocol tcp --dst-port 22 sg1` send.
func TestSecGroupOSCWire(t *testing.T) {
	e := newEnv(t)
	c := e.demo
	g := obj(mustStatus(t, c.Do("POST", "/network/v2.0/security-groups", `{"security_group": {"description": "sg1", "name": "sg1"}}`), 201), "security_group")
	rules := items(g, "security_group_rules")
	if str(g, "name") != "sg1" || g["stateful"] != true || len(rules) != 2 {
		t.Fatalf("created group = %v; want sg1, stateful, two egress rules", g)
	}
	for _, r := range rules {
		if r["direction"] != "egress" || r["remote_ip_prefix"] != nil || r["protocol"] != nil {
			t.Errorf("default rule of a new group = %v; want egress anywhere", r)
		}
	}
	neutronError(t, c.Do("GET", "/network/v2.0/security-groups/sg1", nil), 404, "SecurityGroupNotFound")
	found := items(mustStatus(t, c.Do("GET", "/network/v2.0/security-groups?name=sg1", nil), 200), "security_groups")
	if len(found) != 1 || found[0]["id"] != g["id"] {
		t.Fatalf("lookup by name = %v", found)
	}
	body := fmt.Sprintf(`{"security_group_rule": {"remote_ip_prefix": "0.0.0.0/0", "direction": "ingress", "port_range_min": 22, "port_range_max": 22, "security_group_id": %q, "protocol": "tcp", "ethertype": "IPv4"}}`, g["id"])
	r := obj(mustStatus(t, c.Do("POST", "/network/v2.0/security-group-rules", body), 201), "security_group_rule")
	if r["port_range_min"] != float64(22) || r["protocol"] != "tcp" || r["remote_ip_prefix"] != "0.0.0.0/0" {
		t.Errorf("rule = %v", r)
	}
	neutronError(t, c.Do("POST", "/network/v2.0/security-group-rules", body), 409, "SecurityGroupRuleExists")

	// The list made the project's default group, with Neutron's four rules.
	all := items(mustStatus(t, c.Do("GET", "/network/v2.0/security-groups", nil), 200), "security_groups")
	var def map[string]any
	for _, x := range all {
		if x["name"] == "default" {
			def = x
		}
	}
	if def == nil || len(items(def, "security_group_rules")) != 4 {
		t.Fatalf("groups = %v; want a default group with four rules", all)
	}
	// Others see neither group.
	if got := items(mustStatus(t, e.other.Do("GET", "/network/v2.0/security-groups", nil), 200), "security_groups"); len(got) != 1 || got[0]["name"] != "default" || got[0]["id"] == def["id"] {
		t.Errorf("other project sees %v; want only its own default group", got)
	}
	neutronError(t, e.other.Do("GET", "/network/v2.0/security-groups/"+str(g, "id"), nil), 404, "SecurityGroupNotFound")
	neutronError(t, e.reader.Do("POST", "/network/v2.0/security-groups", `{"security_group": {"name": "x"}}`), 403, "PolicyNotAuthorized")

	// set: name, description, stateful.
	u := obj(mustStatus(t, c.Do("PUT", "/network/v2.0/security-groups/"+str(g, "id"), `{"security_group": {"name": "sg2", "stateful": false}}`), 200), "security_group")
	if u["name"] != "sg2" || u["stateful"] != false {
		t.Errorf("updated = %v", u)
	}
	mustStatus(t, c.Do("DELETE", "/network/v2.0/security-group-rules/"+str(r, "id"), nil), 204)
	neutronError(t, c.Do("GET", "/network/v2.0/security-group-rules/"+str(r, "id"), nil), 404, "SecurityGroupRuleNotFound")
	mustStatus(t, c.Do("DELETE", "/network/v2.0/security-groups/"+str(g, "id"), nil), 204)
}

// TestSecGroupBadInput: Neutron's codes and types, nothing written.
func TestSecGroupBadInput(t *testing.T) {
	e := newEnv(t)
	c := e.demo
	g := create(t, c, "security-groups", "security_group", map[string]any{"name": "web"})
	gid := str(g, "id")
	foreign := create(t, e.other, "security-groups", "security_group", map[string]any{"name": "theirs"})
	netID, _ := netWithSubnet(t, c, "net", "10.0.0.0/24")
	p := create(t, c, "ports", "port", map[string]any{"network_id": netID, "security_groups": []string{gid}})
	defs := items(mustStatus(t, c.Do("GET", "/network/v2.0/security-groups?name=default", nil), 200), "security_groups")
	if len(defs) != 1 {
		t.Fatalf("default groups = %v", defs)
	}
	rule := func(extra string) string {
		return fmt.Sprintf(`{"security_group_rule": {"security_group_id": %q, "direction": "ingress"%s}}`, gid, extra)
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		typ                      string
	}{
		{"unknown protocol", "POST", "/security-group-rules", rule(`,"protocol":"tcpx"`), 400, "SecurityGroupRuleInvalidProtocol"},
		{"protocol 256", "POST", "/security-group-rules", rule(`,"protocol":256`), 400, "SecurityGroupRuleInvalidProtocol"},
		{"port range reversed", "POST", "/security-group-rules", rule(`,"protocol":"tcp","port_range_min":90,"port_range_max":80`), 400, "SecurityGroupInvalidPortRange"},
		{"port out of range", "POST", "/security-group-rules", rule(`,"protocol":"udp","port_range_min":1,"port_range_max":65536`), 400, "SecurityGroupInvalidPortValue"},
		{"port zero", "POST", "/security-group-rules", rule(`,"protocol":"tcp","port_range_min":0,"port_range_max":10`), 400, "SecurityGroupInvalidPortValue"},
		{"icmp type out of range", "POST", "/security-group-rules", rule(`,"protocol":"icmp","port_range_min":256`), 400, "SecurityGroupInvalidIcmpValue"},
		{"ports without protocol", "POST", "/security-group-rules", rule(`,"port_range_min":22,"port_range_max":22`), 400, "SecurityGroupProtocolRequiredWithPorts"},
		{"remote ip and group", "POST", "/security-group-rules", rule(fmt.Sprintf(`,"remote_ip_prefix":"10.0.0.0/8","remote_group_id":%q`, gid)), 400, "SecurityGroupRemoteGroupAndRemoteIpPrefix"},
		{"ethertype mismatch", "POST", "/security-group-rules", rule(`,"ethertype":"IPv6","remote_ip_prefix":"10.0.0.0/8"`), 400, "SecurityGroupRuleParameterConflict"},
		{"bad direction", "POST", "/security-group-rules", fmt.Sprintf(`{"security_group_rule": {"security_group_id": %q, "direction": "up"}}`, gid), 400, "InvalidInput"},
		{"port not a number", "POST", "/security-group-rules", rule(`,"protocol":"tcp","port_range_min":"x"`), 400, "InvalidInput"},
		{"remote group of another project", "POST", "/security-group-rules", rule(fmt.Sprintf(`,"remote_group_id":%q`, foreign["id"])), 404, "SecurityGroupNotFound"},
		{"rule on another project's group", "POST", "/security-group-rules", fmt.Sprintf(`{"security_group_rule": {"security_group_id": %q, "direction": "ingress"}}`, foreign["id"]), 404, "SecurityGroupNotFound"},
		{"egress duplicate", "POST", "/security-group-rules", fmt.Sprintf(`{"security_group_rule": {"security_group_id": %q, "direction": "egress"}}`, gid), 409, "SecurityGroupRuleExists"},
		{"group in use", "DELETE", "/security-groups/" + gid, "", 409, "SecurityGroupInUse"},
		{"default group", "DELETE", "/security-groups/" + str(defs[0], "id"), "", 409, "SecurityGroupCannotRemoveDefault"},
		{"second default", "POST", "/security-groups", `{"security_group": {"name": "default"}}`, 400, "SecurityGroupDefaultAlreadyExists"},
		{"port with foreign group", "PUT", "/ports/" + str(p, "id"), fmt.Sprintf(`{"port": {"security_groups": [%q]}}`, foreign["id"]), 404, "SecurityGroupNotFound"},
		{"disable port security with groups", "PUT", "/ports/" + str(p, "id"), `{"port": {"port_security_enabled": false}}`, 409, "PortSecurityPortHasSecurityGroup"},
		{"bad address pair", "PUT", "/ports/" + str(p, "id"), `{"port": {"allowed_address_pairs": [{"ip_address": "nope"}]}}`, 400, "InvalidInput"},
	}
	before := len(items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/security-group-rules", nil), 200), "security_group_rules"))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			neutronError(t, c.Do(tc.method, "/network/v2.0"+tc.path, tc.body), tc.status, tc.typ)
		})
	}
	after := len(items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/security-group-rules", nil), 200), "security_group_rules"))
	if after != before {
		t.Errorf("rules %d before, %d after refused requests", before, after)
	}
}

// TestPortSecurityAPI: port create/set with groups, --no-security-group,
// --disable-port-security and allowed address pairs; owner-only fields
// on a shared network.
func TestPortSecurityAPI(t *testing.T) {
	e := newEnv(t)
	c := e.demo
	netID, _ := netWithSubnet(t, c, "net", "10.0.0.0/24")
	g := create(t, c, "security-groups", "security_group", map[string]any{"name": "web"})
	p := create(t, c, "ports", "port", map[string]any{"network_id": netID})
	sgs, _ := p["security_groups"].([]any)
	if p["port_security_enabled"] != true || len(sgs) != 1 {
		t.Fatalf("new port = %v; want port security on and the default group", p)
	}
	// port set --no-security-group --disable-port-security
	u := obj(mustStatus(t, c.Do("PUT", "/network/v2.0/ports/"+str(p, "id"), `{"port": {"security_groups": [], "port_security_enabled": false}}`), 200), "port")
	if u["port_security_enabled"] != false || len(u["security_groups"].([]any)) != 0 {
		t.Fatalf("port = %v; want security off", u)
	}
	// port set --enable-port-security --security-group web --allowed-address ip-address=10.0.0.200
	u = obj(mustStatus(t, c.Do("PUT", "/network/v2.0/ports/"+str(p, "id"), fmt.Sprintf(`{"port": {"port_security_enabled": true, "security_groups": [%q], "allowed_address_pairs": [{"ip_address": "10.0.0.200"}]}}`, g["id"])), 200), "port")
	pairs, _ := u["allowed_address_pairs"].([]any)
	if len(pairs) != 1 || fmt.Sprint(u["security_groups"]) != fmt.Sprintf("[%s]", g["id"]) {
		t.Fatalf("port = %v", u)
	}
	if pair := pairs[0].(map[string]any); pair["mac_address"] != u["mac_address"] {
		t.Errorf("pair = %v; want the port's MAC", pair)
	}
	// port create --no-security-group; port create --disable-port-security
	n := create(t, c, "ports", "port", map[string]any{"network_id": netID, "security_groups": []string{}})
	if len(n["security_groups"].([]any)) != 0 || n["port_security_enabled"] != true {
		t.Errorf("port = %v; want no groups, security on", n)
	}
	d := create(t, c, "ports", "port", map[string]any{"network_id": netID, "port_security_enabled": false})
	if len(d["security_groups"].([]any)) != 0 || d["port_security_enabled"] != false {
		t.Errorf("port = %v; want no groups, security off", d)
	}

	// Shared network: a tenant of another project may create plain ports
	// but not claim MACs, addresses or devices.
	mustStatus(t, e.admin.Do("PUT", "/network/v2.0/networks/"+netID, `{"network": {"shared": true}}`), 200)
	mine := create(t, e.other, "ports", "port", map[string]any{"network_id": netID})
	for _, body := range []string{
		fmt.Sprintf(`{"port": {"network_id": %q, "mac_address": "fa:16:3e:11:22:33"}}`, netID),
		fmt.Sprintf(`{"port": {"network_id": %q, "device_id": %q, "device_owner": "compute:nova"}}`, netID, "victim"),
		fmt.Sprintf(`{"port": {"network_id": %q, "device_owner": "network:router_interface"}}`, netID),
		fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"ip_address": "10.0.0.99"}]}}`, netID),
	} {
		neutronError(t, e.other.Do("POST", "/network/v2.0/ports", body), 403, "PolicyNotAuthorized")
	}
	for _, body := range []string{`{"port": {"device_id": "victim"}}`, `{"port": {"device_owner": "network:dhcp"}}`, `{"port": {"mac_address": "fa:16:3e:11:22:33"}}`} {
		neutronError(t, e.other.Do("PUT", "/network/v2.0/ports/"+str(mine, "id"), body), 403, "PolicyNotAuthorized")
	}
	// The network owner may.
	create(t, c, "ports", "port", map[string]any{"network_id": netID, "device_id": "vm", "device_owner": "compute:nova", "mac_address": "fa:16:3e:11:22:34"})
	ext := mustStatus(t, c.Do("GET", "/network/v2.0/extensions", nil), 200)
	var aliases []string
	for _, x := range items(ext, "extensions") {
		aliases = append(aliases, str(x, "alias"))
	}
	for _, want := range []string{"security-group", "port-security", "allowed-address-pairs", "stateful-security-group"} {
		if !slices.Contains(aliases, want) {
			t.Errorf("extensions lack %s", want)
		}
	}
}

// TestNetworkPortSecurityOSCWire replays `openstack network create
// --disable-port-security nosec`, `port create --network nosec`, a port
// asking for port security, and `network set --enable-port-security`.
func TestNetworkPortSecurityOSCWire(t *testing.T) {
	e := newEnv(t)
	c := e.demo
	n := obj(mustStatus(t, c.Do("POST", "/network/v2.0/networks", `{"network": {"name": "nosec", "admin_state_up": true, "port_security_enabled": false}}`), 201), "network")
	if n["port_security_enabled"] != false {
		t.Fatalf("network = %v; want port_security_enabled false", n)
	}
	create(t, c, "subnets", "subnet", map[string]any{"network_id": n["id"], "cidr": "10.5.0.0/24", "ip_version": 4})
	p := obj(mustStatus(t, c.Do("POST", "/network/v2.0/ports", fmt.Sprintf(`{"port": {"network_id": %q, "name": "p1", "admin_state_up": true}}`, n["id"])), 201), "port")
	if p["port_security_enabled"] != false || len(p["security_groups"].([]any)) != 0 {
		t.Fatalf("port on nosec = %v %v; want port security off, no groups", p["port_security_enabled"], p["security_groups"])
	}
	neutronError(t, c.Do("POST", "/network/v2.0/ports", fmt.Sprintf(`{"port": {"network_id": %q, "security_groups": ["default"]}}`, n["id"])), 400, "PortSecurityAndIPRequiredForSecurityGroups")
	on := obj(mustStatus(t, c.Do("POST", "/network/v2.0/ports", fmt.Sprintf(`{"port": {"network_id": %q, "port_security_enabled": true}}`, n["id"])), 201), "port")
	if on["port_security_enabled"] != true || len(on["security_groups"].([]any)) != 1 {
		t.Fatalf("port asking for port security = %v %v; want on, the default group", on["port_security_enabled"], on["security_groups"])
	}
	u := obj(mustStatus(t, c.Do("PUT", "/network/v2.0/networks/"+str(n, "id"), `{"network": {"port_security_enabled": true}}`), 200), "network")
	if u["port_security_enabled"] != true {
		t.Fatalf("after network set --enable-port-security: %v", u["port_security_enabled"])
	}
	if got := obj(mustStatus(t, c.Do("GET", "/network/v2.0/ports/"+str(p, "id"), nil), 200), "port"); got["port_security_enabled"] != false {
		t.Errorf("an existing port followed the network: %v", got["port_security_enabled"])
	}
	later := create(t, c, "ports", "port", map[string]any{"network_id": n["id"]})
	if later["port_security_enabled"] != true {
		t.Errorf("new port after enabling = %v", later["port_security_enabled"])
	}
	def := create(t, c, "networks", "network", map[string]any{"name": "plain"})
	if def["port_security_enabled"] != true {
		t.Errorf("a network created without the attribute = %v; want true", def["port_security_enabled"])
	}
}
