package nodetest

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestAddressGroupAndNetPortSecurityCLI runs the real openstack client
// against a follower: address groups and a rule naming one, and a
// network created without port security whose ports inherit it.
func TestAddressGroupAndNetPortSecurityCLI(t *testing.T) {
	c := NewCluster(t, 3)
	osc := newOSC(t, c.OpenStackEnv(t, c.Follower()))
	run, fails := osc.run, osc.fails
	asJSON := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("output %q is not JSON: %v", out, err)
		}
	}

	var ag map[string]any
	asJSON(run("address", "group", "create", "--address", "10.0.0.0/24", "--address", "192.0.2.7", "office", "-f", "json"), &ag)
	if fmt.Sprint(ag["addresses"]) != "[10.0.0.0/24 192.0.2.7/32]" {
		t.Errorf("address group create = %v", ag)
	}
	run("address", "group", "set", "--address", "198.51.100.0/24", "office")
	run("address", "group", "unset", "--address", "192.0.2.7/32", "office")
	asJSON(run("address", "group", "show", "office", "-f", "json"), &ag)
	if fmt.Sprint(ag["addresses"]) != "[10.0.0.0/24 198.51.100.0/24]" {
		t.Errorf("after set/unset = %v", ag["addresses"])
	}
	run("security", "group", "create", "ssh")
	var r map[string]any
	asJSON(run("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "--remote-address-group", "office", "ssh", "-f", "json"), &r)
	if r["remote_address_group_id"] != ag["id"] {
		t.Errorf("rule = %v; want remote address group %v", r, ag["id"])
	}
	fails("in use", "address", "group", "delete", "office")
	run("security", "group", "rule", "delete", fmt.Sprint(r["id"]))
	run("address", "group", "delete", "office")

	var n map[string]any
	asJSON(run("network", "create", "--disable-port-security", "nosec", "-f", "json"), &n)
	if n["port_security_enabled"] != false {
		t.Errorf("network create --disable-port-security = %v", n["port_security_enabled"])
	}
	run("subnet", "create", "--network", "nosec", "--subnet-range", "10.7.0.0/24", "nosec-sub")
	var p map[string]any
	asJSON(run("port", "create", "--network", "nosec", "p1", "-f", "json"), &p)
	if p["port_security_enabled"] != false || fmt.Sprint(p["security_group_ids"]) != "[]" {
		t.Errorf("port on nosec = security %v groups %v; want off, none", p["port_security_enabled"], p["security_group_ids"])
	}
	run("network", "set", "--enable-port-security", "nosec")
	asJSON(run("port", "create", "--network", "nosec", "p2", "-f", "json"), &p)
	if p["port_security_enabled"] != true {
		t.Errorf("port after network set --enable-port-security = %v", p["port_security_enabled"])
	}
}
