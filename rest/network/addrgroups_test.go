package network_test

import (
	"fmt"
	"slices"
	"testing"
)

// TestAddressGroupsOSCWire replays `openstack address group create
// --address 10.0.0.0/24 office`, `address group set/unset --address`,
// `security group rule create --remote-address-group office sg` and the
// deletes, with Neutron's errors.
func TestAddressGroupsOSCWire(t *testing.T) {
	e := newEnv(t)
	c := e.demo
	g := obj(mustStatus(t, c.Do("POST", "/network/v2.0/address-groups", `{"address_group": {"name": "office", "addresses": ["10.0.0.0/24"]}}`), 201), "address_group")
	id := str(g, "id")
	if g["project_id"] != e.demoProject.ID || fmt.Sprint(g["addresses"]) != "[10.0.0.0/24]" {
		t.Fatalf("created = %v", g)
	}
	found := items(mustStatus(t, c.Do("GET", "/network/v2.0/address-groups?name=office", nil), 200), "address_groups")
	if len(found) != 1 || found[0]["id"] != id {
		t.Fatalf("lookup by name = %v", found)
	}
	if got := items(mustStatus(t, e.other.Do("GET", "/network/v2.0/address-groups", nil), 200), "address_groups"); len(got) != 0 {
		t.Errorf("another project sees %v", got)
	}
	neutronError(t, e.other.Do("GET", "/network/v2.0/address-groups/"+id, nil), 404, "AddressGroupNotFound")

	one := "/network/v2.0/address-groups/" + id
	// openstacksdk sends {"addresses": [...]}; the wrapped form works too.
	g = obj(mustStatus(t, c.Do("PUT", one+"/add_addresses", `{"addresses": ["192.0.2.9"]}`), 200), "address_group")
	g = obj(mustStatus(t, c.Do("PUT", one+"/add_addresses", `{"address_group": {"addresses": ["2001:db8::/64"]}}`), 200), "address_group")
	if fmt.Sprint(g["addresses"]) != "[10.0.0.0/24 192.0.2.9/32 2001:db8::/64]" {
		t.Fatalf("after add = %v", g["addresses"])
	}
	neutronError(t, c.Do("PUT", one+"/add_addresses", `{"addresses": ["10.0.0.0/24"]}`), 400, "AddressesAlreadyExist")
	neutronError(t, c.Do("PUT", one+"/remove_addresses", `{"addresses": ["198.51.100.0/24"]}`), 404, "AddressesNotFound")
	neutronError(t, c.Do("PUT", one+"/add_addresses", `{"addresses": ["not-an-ip"]}`), 400, "InvalidInput")
	g = obj(mustStatus(t, c.Do("PUT", one+"/remove_addresses", `{"addresses": ["192.0.2.9/32"]}`), 200), "address_group")
	if fmt.Sprint(g["addresses"]) != "[10.0.0.0/24 2001:db8::/64]" {
		t.Fatalf("after remove = %v", g["addresses"])
	}
	g = obj(mustStatus(t, c.Do("PUT", one, `{"address_group": {"name": "hq", "description": "head office"}}`), 200), "address_group")
	if g["name"] != "hq" || g["description"] != "head office" {
		t.Errorf("after set = %v", g)
	}
	neutronError(t, e.reader.Do("PUT", one+"/add_addresses", `{"addresses": ["10.9.0.0/16"]}`), 403, "PolicyNotAuthorized")

	sg := create(t, c, "security-groups", "security_group", map[string]any{"name": "sg"})
	body := fmt.Sprintf(`{"security_group_rule": {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "security_group_id": %q, "remote_address_group_id": %q, "ethertype": "IPv4"}}`, sg["id"], id)
	r := obj(mustStatus(t, c.Do("POST", "/network/v2.0/security-group-rules", body), 201), "security_group_rule")
	if r["remote_address_group_id"] != id || r["remote_ip_prefix"] != nil {
		t.Fatalf("rule = %v", r)
	}
	neutronError(t, c.Do("POST", "/network/v2.0/security-group-rules", fmt.Sprintf(`{"security_group_rule": {"direction": "ingress", "security_group_id": %q, "remote_address_group_id": %q, "remote_ip_prefix": "10.0.0.0/8"}}`, sg["id"], id)),
		400, "SecurityGroupMultipleRemoteEntites")
	// Another project's rule cannot name it.
	osg := create(t, e.other, "security-groups", "security_group", map[string]any{"name": "sg"})
	neutronError(t, e.other.Do("POST", "/network/v2.0/security-group-rules", fmt.Sprintf(`{"security_group_rule": {"direction": "ingress", "security_group_id": %q, "remote_address_group_id": %q}}`, osg["id"], id)),
		404, "AddressGroupNotFound")
	neutronError(t, c.Do("DELETE", one, nil), 409, "AddressGroupInUse")
	mustStatus(t, c.Do("DELETE", "/network/v2.0/security-group-rules/"+str(r, "id"), nil), 204)
	mustStatus(t, c.Do("DELETE", one, nil), 204)
	neutronError(t, c.Do("GET", one, nil), 404, "AddressGroupNotFound")

	exts := items(mustStatus(t, c.Do("GET", "/network/v2.0/extensions", nil), 200), "extensions")
	if !slices.ContainsFunc(exts, func(x map[string]any) bool { return x["alias"] == "address-group" }) {
		t.Error("the address-group extension is not listed")
	}
}
