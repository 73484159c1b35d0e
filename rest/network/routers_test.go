package network_test

import (
	"fmt"
	"strings"
	"testing"
)

// extNet creates the external flat network "ext" 203.0.113.0/24 (pool
// .100-.199, no DHCP) as admin.
func extNet(t *testing.T, e *env) (netID, subnetID string) {
	t.Helper()
	n := create(t, e.admin, "networks", "network", map[string]any{"name": "ext", "router:external": true,
		"provider:network_type": "flat", "provider:physical_network": "physnet1"})
	if n["provider:network_type"] != "flat" || n["provider:physical_network"] != "physnet1" || n["provider:segmentation_id"] != nil {
		t.Errorf("provider attributes = %v %v %v", n["provider:network_type"], n["provider:physical_network"], n["provider:segmentation_id"])
	}
	s := create(t, e.admin, "subnets", "subnet", map[string]any{"network_id": n["id"], "cidr": "203.0.113.0/24", "ip_version": 4,
		"enable_dhcp": false, "gateway_ip": "203.0.113.1",
		"allocation_pools": []map[string]string{{"start": "203.0.113.100", "end": "203.0.113.199"}}})
	return str(n, "id"), str(s, "id")
}

func TestRoutersAndFloatingIPs(t *testing.T) {
	e := newEnv(t)
	extID, _ := extNet(t, e)
	netID, subID := netWithSubnet(t, e.demo, "n1", "10.0.1.0/24")
	_, sub2 := netWithSubnet(t, e.demo, "n2", "10.0.2.0/24")

	// router create, gateway set, interface add.
	r := create(t, e.demo, "routers", "router", map[string]any{"name": "r1"})
	rid := str(r, "id")
	if r["external_gateway_info"] != nil || r["status"] != "ACTIVE" {
		t.Errorf("new router = %v", r)
	}
	url := "/network/v2.0/routers/" + rid
	r = obj(mustStatus(t, e.demo.Do("PUT", url, map[string]any{"router": map[string]any{
		"external_gateway_info": map[string]any{"network_id": extID}}}), 200), "router")
	gw, _ := r["external_gateway_info"].(map[string]any)
	if gw["network_id"] != extID || gw["enable_snat"] != true || fmt.Sprint(gw["external_fixed_ips"]) == "[]" {
		t.Errorf("gateway info = %v", gw)
	}
	info := mustStatus(t, e.demo.Do("PUT", url+"/add_router_interface", map[string]any{"subnet_id": subID}), 200)
	if info["id"] != rid || info["subnet_id"] != subID || info["network_id"] != netID || str(info, "port_id") == "" {
		t.Errorf("add_router_interface = %v", info)
	}
	ip := obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports/"+str(info, "port_id"), nil), 200), "port")
	if ip["device_owner"] != "network:router_interface" || firstIP(ip) != "10.0.1.1" {
		t.Errorf("interface port = %v", ip)
	}
	// extraroute through the interface.
	r = obj(mustStatus(t, e.demo.Do("PUT", url, map[string]any{"router": map[string]any{
		"routes": []map[string]string{{"destination": "192.168.0.0/24", "nexthop": "10.0.1.9"}}}}), 200), "router")
	if fmt.Sprint(r["routes"]) != "[map[destination:192.168.0.0/24 nexthop:10.0.1.9]]" {
		t.Errorf("routes = %v", r["routes"])
	}
	neutronError(t, e.demo.Do("PUT", url, map[string]any{"router": map[string]any{
		"routes": []map[string]string{{"destination": "192.168.1.0/24", "nexthop": "10.9.9.9"}}}}), 400, "InvalidRoutes")

	// Floating IP on a server port behind r1.
	vm := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID, "device_id": "vm1", "device_owner": "compute:nova"})
	f := create(t, e.demo, "floatingips", "floatingip", map[string]any{"floating_network_id": extID, "port_id": vm["id"]})
	if f["router_id"] != rid || f["fixed_ip_address"] != firstIP(vm) || f["status"] != "DOWN" || f["port_details"] == nil {
		t.Errorf("floating ip = %v", f)
	}
	fid := str(f, "id")
	lst := mustStatus(t, e.demo.Do("GET", "/network/v2.0/floatingips?floating_ip_address="+str(f, "floating_ip_address"), nil), 200)
	if got := ids(items(lst, "floatingips")); len(got) != 1 || got[0] != fid {
		t.Errorf("list by address = %v", got)
	}
	if got := items(mustStatus(t, e.other.Do("GET", "/network/v2.0/floatingips", nil), 200), "floatingips"); len(got) != 0 {
		t.Errorf("another project sees %v", ids(got))
	}
	// Disassociate with port_id null, associate again.
	f = obj(mustStatus(t, e.demo.Do("PUT", "/network/v2.0/floatingips/"+fid, map[string]any{"floatingip": map[string]any{"port_id": nil}}), 200), "floatingip")
	if f["port_id"] != nil || f["router_id"] != nil || f["port_details"] != nil {
		t.Errorf("after unset = %v", f)
	}
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/floatingips/"+fid, map[string]any{"floatingip": map[string]any{"port_id": vm["id"]}}), 200)

	// Bad input, with Neutron's codes and types.
	r2 := create(t, e.demo, "routers", "router", map[string]any{"name": "r2"})
	neutronError(t, e.demo.Do("PUT", "/network/v2.0/routers/"+str(r2, "id"), map[string]any{"router": map[string]any{
		"external_gateway_info": map[string]any{"network_id": netID}}}), 400, "BadRequest")
	vm2 := create(t, e.demo, "ports", "port", map[string]any{"network_id": netWithSubnetNet(t, e, sub2), "device_id": "vm2"})
	neutronError(t, e.demo.Do("POST", "/network/v2.0/floatingips", map[string]any{"floatingip": map[string]any{
		"floating_network_id": extID, "port_id": vm2["id"]}}), 404, "ExternalGatewayForFloatingIPNotFound")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/floatingips", map[string]any{"floatingip": map[string]any{
		"floating_network_id": extID, "port_id": vm["id"]}}), 409, "FloatingIPPortAlreadyAssociated")
	neutronError(t, e.admin.Do("POST", "/network/v2.0/floatingips", map[string]any{"floatingip": map[string]any{
		"floating_network_id": extID, "floating_ip_address": "203.0.113.7"}}), 400, "InvalidInput")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/floatingips", map[string]any{"floatingip": map[string]any{
		"floating_network_id": extID, "floating_ip_address": "203.0.113.150"}}), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("PUT", "/network/v2.0/routers/"+str(r2, "id")+"/add_router_interface", map[string]any{"subnet_id": subID}),
		409, "IpAddressAlreadyAllocated")
	neutronError(t, e.demo.Do("PUT", url+"/add_router_interface", map[string]any{"subnet_id": subID}), 400, "BadRequest")
	neutronError(t, e.demo.Do("PUT", url+"/add_router_interface", map[string]any{}), 400, "BadRequest")
	neutronError(t, e.demo.Do("DELETE", url, nil), 409, "RouterInUse")
	neutronError(t, e.demo.Do("PUT", url+"/remove_router_interface", map[string]any{"subnet_id": subID}), 409, "RouterInterfaceInUseByFloatingIP")
	neutronError(t, e.demo.Do("PUT", url+"/remove_router_interface", map[string]any{"subnet_id": sub2}), 404, "RouterInterfaceNotFoundForSubnet")
	neutronError(t, e.demo.Do("GET", "/network/v2.0/floatingips/nope", nil), 404, "FloatingIPNotFound")
	neutronError(t, e.demo.Do("GET", "/network/v2.0/routers/nope", nil), 404, "RouterNotFound")
	neutronError(t, e.other.Do("GET", url, nil), 404, "RouterNotFound")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/routers", map[string]any{"router": map[string]any{"ha": true}}), 400, "InvalidInput")
	neutronError(t, e.demo.Do("PUT", url, map[string]any{"router": map[string]any{
		"external_gateway_info": map[string]any{"network_id": extID, "enable_snat": false}}}), 403, "PolicyNotAuthorized")
	neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{
		"provider:network_type": "flat"}}), 400, "InvalidInput")
	neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", map[string]any{"network": map[string]any{
		"provider:network_type": "flat", "provider:physical_network": "physnet1"}}), 409, "FlatNetworkInUse")

	// Tear down in Neutron's order.
	mustStatus(t, e.demo.Do("DELETE", "/network/v2.0/floatingips/"+fid, nil), 204)
	mustStatus(t, e.demo.Do("PUT", url+"/remove_router_interface", map[string]any{"subnet_id": subID}), 409) // the route needs it
	mustStatus(t, e.demo.Do("PUT", url, map[string]any{"router": map[string]any{"routes": []any{}}}), 200)
	mustStatus(t, e.demo.Do("PUT", url+"/remove_router_interface", map[string]any{"subnet_id": subID}), 200)
	r = obj(mustStatus(t, e.demo.Do("PUT", url, map[string]any{"router": map[string]any{"external_gateway_info": map[string]any{}}}), 200), "router")
	if r["external_gateway_info"] != nil {
		t.Errorf("after unset gateway: %v", r["external_gateway_info"])
	}
	mustStatus(t, e.demo.Do("DELETE", url, nil), 204)
	mustStatus(t, e.admin.Do("DELETE", "/network/v2.0/networks/"+extID, nil), 204)
}

// netWithSubnetNet returns the network of a subnet.
func netWithSubnetNet(t *testing.T, e *env, subnetID string) string {
	t.Helper()
	s := obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/subnets/"+subnetID, nil), 200), "subnet")
	return str(s, "network_id")
}

// TestRouterGatewayFixedIP: an admin picks the router's gateway address
// and turns SNAT off; changing the address keeps the gateway port.
func TestRouterGatewayFixedIP(t *testing.T) {
	e := newEnv(t)
	extID, extSub := extNet(t, e)
	r := create(t, e.admin, "routers", "router", map[string]any{"name": "r", "external_gateway_info": map[string]any{
		"network_id": extID, "enable_snat": false,
		"external_fixed_ips": []map[string]string{{"subnet_id": extSub, "ip_address": "203.0.113.150"}}}})
	gw, _ := r["external_gateway_info"].(map[string]any)
	if gw["enable_snat"] != false || !strings.Contains(fmt.Sprint(gw["external_fixed_ips"]), "203.0.113.150") {
		t.Fatalf("gateway = %v", gw)
	}
	url := "/network/v2.0/routers/" + str(r, "id")
	r = obj(mustStatus(t, e.admin.Do("PUT", url, map[string]any{"router": map[string]any{"external_gateway_info": map[string]any{
		"network_id": extID, "external_fixed_ips": []map[string]string{{"ip_address": "203.0.113.151"}}}}}), 200), "router")
	gw, _ = r["external_gateway_info"].(map[string]any)
	if gw["enable_snat"] != true || !strings.Contains(fmt.Sprint(gw["external_fixed_ips"]), "203.0.113.151") {
		t.Errorf("after changing the address: %v", gw)
	}
	neutronError(t, e.admin.Do("POST", "/network/v2.0/routers", map[string]any{"router": map[string]any{"external_gateway_info": map[string]any{
		"network_id": extID, "external_fixed_ips": []map[string]string{{"ip_address": "203.0.113.151"}}}}}), 409, "IpAddressAlreadyAllocated")
	neutronError(t, e.admin.Do("PUT", url, map[string]any{"router": map[string]any{"external_gateway_info": map[string]any{"network_id": "nope"}}}),
		404, "NetworkNotFound")
}

// TestRoutingBadInput: malformed and refused router and floating IP
// requests get Neutron's status and type and apply nothing.
func TestRoutingBadInput(t *testing.T) {
	e := newEnv(t)
	extID, _ := extNet(t, e)
	netID, subID := netWithSubnet(t, e.demo, "n1", "10.0.1.0/24")
	r := create(t, e.demo, "routers", "router", map[string]any{"name": "r1"})
	rid := str(r, "id")
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/routers/"+rid, map[string]any{"router": map[string]any{
		"external_gateway_info": map[string]any{"network_id": extID}}}), 200)
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/routers/"+rid+"/add_router_interface", map[string]any{"subnet_id": subID}), 200)
	vm := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID, "device_id": "vm", "device_owner": "compute:nova"})
	f := create(t, e.demo, "floatingips", "floatingip", map[string]any{"floating_network_id": extID})
	fid := str(f, "id")
	router := func(body string) string { return `{"router":` + body + `}` }
	fip := func(body string) string { return `{"floatingip":` + body + `}` }
	tests := []struct {
		name, method, path, body string
		status                   int
		typ                      string
	}{
		{"router not an object", "POST", "/routers", `{"router":[]}`, 400, "InvalidInput"},
		{"router name not a string", "POST", "/routers", router(`{"name":5}`), 400, "InvalidInput"},
		{"router name too long", "POST", "/routers", router(fmt.Sprintf(`{"name":%q}`, strings.Repeat("r", 300))), 400, "InvalidInput"},
		{"new router with routes", "POST", "/routers", router(`{"routes":[{"destination":"10.9.0.0/24","nexthop":"10.0.1.9"}]}`), 400, "InvalidInput"},
		{"gateway not an object", "PUT", "/routers/" + rid, router(`{"external_gateway_info":"ext"}`), 400, "InvalidInput"},
		{"gateway without network", "PUT", "/routers/" + rid, router(`{"external_gateway_info":{"enable_snat":true}}`), 400, "InvalidInput"},
		{"gateway on a tenant network", "PUT", "/routers/" + rid, router(fmt.Sprintf(`{"external_gateway_info":{"network_id":%q}}`, netID)), 400, "BadRequest"},
		{"gateway fixed ip by tenant", "PUT", "/routers/" + rid, router(fmt.Sprintf(`{"external_gateway_info":{"network_id":%q,"external_fixed_ips":[{"ip_address":"203.0.113.150"}]}}`, extID)), 403, "PolicyNotAuthorized"},
		{"route garbage", "PUT", "/routers/" + rid, router(`{"routes":[{"destination":"x","nexthop":"10.0.1.9"}]}`), 400, "InvalidInput"},
		{"route not connected", "PUT", "/routers/" + rid, router(`{"routes":[{"destination":"10.9.0.0/24","nexthop":"192.0.2.1"}]}`), 400, "InvalidRoutes"},
		{"router project change", "PUT", "/routers/" + rid, router(`{"project_id":"x"}`), 400, "InvalidInput"},
		{"distributed false", "PUT", "/routers/" + rid, router(`{"distributed":false}`), 400, "InvalidInput"},
		{"interface both", "PUT", "/routers/" + rid + "/add_router_interface", fmt.Sprintf(`{"subnet_id":%q,"port_id":%q}`, subID, vm["id"]), 400, "BadRequest"},
		{"interface missing subnet", "PUT", "/routers/" + rid + "/add_router_interface", `{"subnet_id":"nope"}`, 404, "SubnetNotFound"},
		{"interface port in use", "PUT", "/routers/" + rid + "/add_router_interface", fmt.Sprintf(`{"port_id":%q}`, vm["id"]), 409, "PortInUse"},
		{"interface malformed", "PUT", "/routers/" + rid + "/add_router_interface", `{"subnet_id":`, 400, "InvalidInput"},
		{"router with interfaces", "DELETE", "/routers/" + rid, "", 409, "RouterInUse"},
		{"missing router", "PUT", "/routers/nope", router(`{"name":"x"}`), 404, "RouterNotFound"},

		{"fip without network", "POST", "/floatingips", fip(`{}`), 400, "InvalidInput"},
		{"fip on missing network", "POST", "/floatingips", fip(`{"floating_network_id":"nope"}`), 404, "NetworkNotFound"},
		{"fip on a tenant network", "POST", "/floatingips", fip(fmt.Sprintf(`{"floating_network_id":%q}`, netID)), 400, "BadRequest"},
		{"fip with subnet", "POST", "/floatingips", fip(fmt.Sprintf(`{"floating_network_id":%q,"subnet_id":"x"}`, extID)), 400, "InvalidInput"},
		{"fip port not a string", "PUT", "/floatingips/" + fid, fip(`{"port_id":7}`), 400, "InvalidInput"},
		{"fip missing port", "PUT", "/floatingips/" + fid, fip(`{"port_id":"nope"}`), 404, "PortNotFound"},
		{"fip wrong fixed ip", "PUT", "/floatingips/" + fid, fip(fmt.Sprintf(`{"port_id":%q,"fixed_ip_address":"10.0.1.200"}`, vm["id"])), 400, "BadRequest"},
		{"fip on the router's port", "PUT", "/floatingips/" + fid, fip(`{"port_id":"` + routerPort(t, e, rid) + `"}`), 400, "BadRequest"},
		{"fip address change", "PUT", "/floatingips/" + fid, fip(`{"floating_ip_address":"203.0.113.160"}`), 400, "InvalidInput"},
		{"fip port deleted directly", "DELETE", "/ports/" + routerPort(t, e, rid), "", 409, "ServicePortInUse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.b.Index()
			var body any
			if tt.body != "" {
				body = tt.body
			}
			r := e.demo.Do(tt.method, "/network/v2.0"+tt.path, body)
			neutronError(t, r, tt.status, tt.typ)
			for _, a := range e.b.AppliedSince(before) {
				if a.Err == nil {
					t.Errorf("%s %s = %d but command %d was applied", tt.method, tt.path, r.Status, a.Type)
				}
			}
		})
	}
}

// routerPort is the id of a router's first interface port.
func routerPort(t *testing.T, e *env, routerID string) string {
	t.Helper()
	ps := items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports?device_id="+routerID+"&device_owner=network:router_interface", nil), 200), "ports")
	if len(ps) == 0 {
		t.Fatal("router has no interface port")
	}
	return str(ps[0], "id")
}
