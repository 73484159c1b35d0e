package network_test

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestNetworkDiscovery(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/network", "/network/"} {
		m := mustStatus(t, e.anon.Do("GET", p, nil), 200)
		vs := items(m, "versions")
		if len(vs) != 1 || vs[0]["id"] != "v2.0" || vs[0]["status"] != "CURRENT" {
			t.Fatalf("GET %s = %v; want one CURRENT v2.0", p, m)
		}
		links := fmt.Sprint(vs[0]["links"])
		if !strings.Contains(links, e.srv.URL+"/network/v2.0/") {
			t.Errorf("GET %s links = %s; want self %s/network/v2.0/", p, links, e.srv.URL)
		}
	}
	res := mustStatus(t, e.anon.Do("GET", "/network/v2.0/", nil), 200)
	if got := len(items(res, "resources")); got != 5 {
		t.Errorf("resources = %v; want networks, subnets, ports, routers, floatingips", res)
	}
	neutronError(t, e.anon.Do("GET", "/network/v2.0/networks", nil), 401, "HTTPUnauthorized")
	ext := mustStatus(t, e.demo.Do("GET", "/network/v2.0/extensions", nil), 200)
	var aliases []string
	for _, x := range items(ext, "extensions") {
		aliases = append(aliases, str(x, "alias"))
	}
	for _, want := range []string{"external-net", "provider", "binding", "net-mtu", "standard-attr-tag", "router", "ext-gw-mode", "extraroute", "dvr"} {
		if !slices.Contains(aliases, want) {
			t.Errorf("extensions %v lack %s", aliases, want)
		}
	}
	mustStatus(t, e.demo.Do("GET", "/network/v2.0/extensions/provider", nil), 200)
	neutronError(t, e.demo.Do("GET", "/network/v2.0/extensions/l3-ha", nil), 404, "ExtensionNotFound")
}

var (
	macRE  = regexp.MustCompile(`^fa:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$`)
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// TestNetworkOSCWire replays the requests the openstack client 6.0 sends
// (api/openstack-cli-wire-sequences.txt) and checks what it reads.
func TestNetworkOSCWire(t *testing.T) {
	e := newEnv(t)
	c := e.demo

	// openstack network create net1
	r := c.Do("POST", "/network/v2.0/networks", `{"network": {"admin_state_up": true, "name": "net1"}}`)
	n := obj(mustStatus(t, r, 201), "network")
	netID := str(n, "id")
	want := map[string]any{"name": "net1", "admin_state_up": true, "status": "ACTIVE", "shared": false,
		"router:external": false, "mtu": float64(1450), "port_security_enabled": true,
		"tenant_id": e.demoProject.ID, "project_id": e.demoProject.ID, "revision_number": float64(1), "description": ""}
	for k, v := range want {
		if !reflect.DeepEqual(n[k], v) {
			t.Errorf("network[%s] = %#v; want %#v", k, n[k], v)
		}
	}
	for _, k := range []string{"subnets", "tags", "availability_zones"} {
		if _, ok := n[k].([]any); !ok {
			t.Errorf("network[%s] = %#v; want a list", k, n[k])
		}
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339, str(n, k)); err != nil {
			t.Errorf("network[%s] = %q: %v", k, n[k], err)
		}
	}
	if _, ok := n["provider:segmentation_id"]; ok || !uuidRE.MatchString(netID) {
		t.Errorf("tenant view of network = %v; want a uuid and no provider attributes", n)
	}

	// openstack subnet create --network net1 --subnet-range 10.0.0.0/24 sub1
	neutronError(t, c.Do("GET", "/network/v2.0/networks/net1", nil), 404, "NetworkNotFound")
	found := items(mustStatus(t, c.Do("GET", "/network/v2.0/networks?name=net1", nil), 200), "networks")
	if len(found) != 1 || found[0]["id"] != netID {
		t.Fatalf("networks?name=net1 = %v; want net1", found)
	}
	r = c.Do("POST", "/network/v2.0/subnets", fmt.Sprintf(`{"subnet": {"name": "sub1", "network_id": %q, "cidr": "10.0.0.0/24", "ip_version": 4}}`, netID))
	s := obj(mustStatus(t, r, 201), "subnet")
	if s["gateway_ip"] != "10.0.0.1" || s["enable_dhcp"] != true || s["ip_version"] != float64(4) || s["cidr"] != "10.0.0.0/24" {
		t.Errorf("subnet = %v; want gateway 10.0.0.1, dhcp on", s)
	}
	if got := fmt.Sprint(s["allocation_pools"]); got != "[map[end:10.0.0.254 start:10.0.0.2]]" {
		t.Errorf("allocation_pools = %s; want .2-.254", got)
	}
	if fmt.Sprint(s["dns_nameservers"]) != "[]" || fmt.Sprint(s["host_routes"]) != "[]" {
		t.Errorf("dns_nameservers/host_routes = %v/%v; want empty lists", s["dns_nameservers"], s["host_routes"])
	}
	n = obj(mustStatus(t, c.Do("GET", "/network/v2.0/networks/"+netID, nil), 200), "network")
	if fmt.Sprint(n["subnets"]) != "["+str(s, "id")+"]" || n["revision_number"] != float64(2) {
		t.Errorf("network after subnet = subnets %v revision %v", n["subnets"], n["revision_number"])
	}

	// openstack port create --network net1 p1
	neutronError(t, c.Do("GET", "/network/v2.0/networks/net1", nil), 404, "NetworkNotFound")
	r = c.Do("POST", "/network/v2.0/ports", fmt.Sprintf(`{"port": {"network_id": %q, "name": "p1", "admin_state_up": true}}`, netID))
	p := obj(mustStatus(t, r, 201), "port")
	if p["status"] != "DOWN" || !macRE.MatchString(str(p, "mac_address")) || firstIP(p) != "10.0.0.2" ||
		p["network_id"] != netID || p["device_id"] != "" || p["binding:vnic_type"] != "normal" {
		t.Errorf("port = %v; want DOWN, fa:16:3e MAC, 10.0.0.2", p)
	}
	if _, ok := p["binding:host_id"]; ok {
		t.Errorf("tenant port view shows binding:host_id: %v", p)
	}

	// openstack port list
	m := mustStatus(t, c.Do("GET", "/network/v2.0/ports?fields=id&fields=name&fields=mac_address&fields=fixed_ips&fields=status", nil), 200)
	ports := items(m, "ports")
	if len(ports) != 1 {
		t.Fatalf("port list = %v; want p1", m)
	}
	var keys []string
	for k := range ports[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if fmt.Sprint(keys) != "[fixed_ips id mac_address name status]" {
		t.Errorf("port list with fields= returned keys %v", keys)
	}

	// openstack port show p1 / port delete p1
	neutronError(t, c.Do("GET", "/network/v2.0/ports/p1", nil), 404, "PortNotFound")
	byName := items(mustStatus(t, c.Do("GET", "/network/v2.0/ports?name=p1", nil), 200), "ports")
	if len(byName) != 1 || byName[0]["id"] != p["id"] {
		t.Fatalf("ports?name=p1 = %v", byName)
	}
	mustStatus(t, c.Do("GET", "/network/v2.0/ports/"+str(p, "id"), nil), 200)
	mustStatus(t, c.Do("DELETE", "/network/v2.0/ports/"+str(p, "id"), nil), 204)
	neutronError(t, c.Do("GET", "/network/v2.0/ports/"+str(p, "id"), nil), 404, "PortNotFound")

	// openstack network create --external public (admin), network list
	r = e.admin.Do("POST", "/network/v2.0/networks", `{"network": {"router:external": true, "name": "public", "admin_state_up": true}}`)
	pub := obj(mustStatus(t, r, 201), "network")
	if pub["router:external"] != true || pub["provider:network_type"] != "vxlan" || pub["provider:segmentation_id"] != float64(1001) {
		t.Errorf("external network (admin view) = %v", pub)
	}
	nets := items(mustStatus(t, c.Do("GET", "/network/v2.0/networks", nil), 200), "networks")
	if got := ids(nets); !slices.Contains(got, netID) || !slices.Contains(got, str(pub, "id")) || len(got) != 2 {
		t.Errorf("network list = %v; want net1 and the external network", got)
	}
	// The subnet name lookup of `router add subnet` works too.
	neutronError(t, c.Do("GET", "/network/v2.0/subnets/sub1", nil), 404, "SubnetNotFound")
	if got := items(mustStatus(t, c.Do("GET", "/network/v2.0/subnets?name=sub1", nil), 200), "subnets"); len(got) != 1 {
		t.Errorf("subnets?name=sub1 = %v", got)
	}
}

func TestNetworkProviderAttributes(t *testing.T) {
	e := newEnv(t)
	neutronError(t, e.demo.Do("POST", "/network/v2.0/networks", `{"network":{"name":"x","provider:segmentation_id":5000}}`), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/networks", `{"network":{"name":"x","provider:network_type":"vxlan"}}`), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/networks", `{"network":{"name":"x","shared":true}}`), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/networks", `{"network":{"name":"x","router:external":true}}`), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/networks", fmt.Sprintf(`{"network":{"name":"x","project_id":%q}}`, e.otherProject.ID)), 403, "PolicyNotAuthorized")

	n := create(t, e.admin, "networks", "network", map[string]any{"name": "seg", "provider:network_type": "vxlan",
		"provider:segmentation_id": 5000, "project_id": e.demoProject.ID, "mtu": 1400})
	if n["provider:segmentation_id"] != float64(5000) || n["mtu"] != float64(1400) || n["project_id"] != e.demoProject.ID {
		t.Errorf("admin create with segmentation id = %v", n)
	}
	neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", `{"network":{"name":"dup","provider:segmentation_id":5000}}`), 409, "TunnelIdInUse")
	neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", `{"network":{"name":"v","provider:network_type":"vlan"}}`), 400, "InvalidInput")
	neutronError(t, e.admin.Do("POST", "/network/v2.0/networks", `{"network":{"name":"v","provider:segmentation_id":16777216}}`), 400, "InvalidInput")

	// The owner sees it without provider attributes and cannot move it.
	got := obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/networks/"+str(n, "id"), nil), 200), "network")
	if _, ok := got["provider:segmentation_id"]; ok {
		t.Errorf("tenant sees provider attributes: %v", got)
	}
	neutronError(t, e.demo.Do("PUT", "/network/v2.0/networks/"+str(n, "id"), `{"network":{"provider:segmentation_id":6000}}`), 403, "PolicyNotAuthorized")
	upd := obj(mustStatus(t, e.admin.Do("PUT", "/network/v2.0/networks/"+str(n, "id"), `{"network":{"provider:segmentation_id":6000,"name":"moved"}}`), 200), "network")
	if upd["provider:segmentation_id"] != float64(6000) || upd["name"] != "moved" || upd["revision_number"] != float64(2) {
		t.Errorf("admin update = %v", upd)
	}
	// Filters on admin-only attributes work for the admin.
	list := items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/networks?provider:segmentation_id=6000", nil), 200), "networks")
	if len(list) != 1 || list[0]["id"] != n["id"] {
		t.Errorf("filter by segmentation id = %v", ids(list))
	}
	// The owner renames its network.
	r := obj(mustStatus(t, e.demo.Do("PUT", "/network/v2.0/networks/"+str(n, "id"), `{"network":{"name":"mine","admin_state_up":false}}`), 200), "network")
	if r["name"] != "mine" || r["admin_state_up"] != false {
		t.Errorf("owner update = %v", r)
	}
	neutronError(t, e.reader.Do("PUT", "/network/v2.0/networks/"+str(n, "id"), `{"network":{"name":"x"}}`), 403, "PolicyNotAuthorized")
	neutronError(t, e.reader.Do("POST", "/network/v2.0/networks", `{"network":{"name":"x"}}`), 403, "PolicyNotAuthorized")
	if got := items(mustStatus(t, e.reader.Do("GET", "/network/v2.0/networks", nil), 200), "networks"); len(got) != 1 {
		t.Errorf("reader list = %v; want the demo network", ids(got))
	}
}

// TestNetworkIsolation: projects with overlapping CIDRs, shared networks,
// 404 for what another project owns.
func TestNetworkIsolation(t *testing.T) {
	e := newEnv(t)
	demoNet, demoSub := netWithSubnet(t, e.demo, "net", "10.0.0.0/24")
	otherNet, otherSub := netWithSubnet(t, e.other, "net", "10.0.0.0/24")
	shared := create(t, e.admin, "networks", "network", map[string]any{"name": "shared", "shared": true})
	sharedSub := create(t, e.admin, "subnets", "subnet", map[string]any{"network_id": shared["id"], "cidr": "172.16.0.0/24", "ip_version": 4})

	// Overlapping CIDRs give the same first address in each project.
	pd := create(t, e.demo, "ports", "port", map[string]any{"network_id": demoNet})
	po := create(t, e.other, "ports", "port", map[string]any{"network_id": otherNet})
	if firstIP(pd) != "10.0.0.2" || firstIP(po) != "10.0.0.2" {
		t.Errorf("first ports = %s, %s; want 10.0.0.2 in both projects", firstIP(pd), firstIP(po))
	}
	// Lists: own + shared.
	nets := ids(items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/networks", nil), 200), "networks"))
	sort.Strings(nets)
	want := []string{demoNet, str(shared, "id")}
	sort.Strings(want)
	if !reflect.DeepEqual(nets, want) {
		t.Errorf("demo network list = %v; want %v", nets, want)
	}
	subs := ids(items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/subnets", nil), 200), "subnets"))
	if len(subs) != 2 || !slices.Contains(subs, demoSub) || !slices.Contains(subs, str(sharedSub, "id")) {
		t.Errorf("demo subnet list = %v; want own and shared", subs)
	}
	if ps := ids(items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports", nil), 200), "ports")); len(ps) != 1 || ps[0] != pd["id"] {
		t.Errorf("demo port list = %v; want only its own port", ps)
	}
	all := items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/networks", nil), 200), "networks")
	if len(all) != 3 {
		t.Errorf("admin network list = %v; want all 3", ids(all))
	}
	// Foreign objects are 404 for every verb.
	for _, tt := range []struct{ method, path, body, typ string }{
		{"GET", "/network/v2.0/networks/" + otherNet, "", "NetworkNotFound"},
		{"PUT", "/network/v2.0/networks/" + otherNet, `{"network":{"name":"x"}}`, "NetworkNotFound"},
		{"DELETE", "/network/v2.0/networks/" + otherNet, "", "NetworkNotFound"},
		{"GET", "/network/v2.0/subnets/" + otherSub, "", "SubnetNotFound"},
		{"DELETE", "/network/v2.0/subnets/" + otherSub, "", "SubnetNotFound"},
		{"GET", "/network/v2.0/ports/" + str(po, "id"), "", "PortNotFound"},
		{"PUT", "/network/v2.0/ports/" + str(po, "id"), `{"port":{"name":"x"}}`, "PortNotFound"},
		{"DELETE", "/network/v2.0/ports/" + str(po, "id"), "", "PortNotFound"},
		{"POST", "/network/v2.0/subnets", fmt.Sprintf(`{"subnet":{"network_id":%q,"cidr":"10.9.0.0/24","ip_version":4}}`, otherNet), "NetworkNotFound"},
		{"POST", "/network/v2.0/ports", fmt.Sprintf(`{"port":{"network_id":%q}}`, otherNet), "NetworkNotFound"},
		{"GET", "/network/v2.0/networks/" + otherNet + "/tags", "", "NetworkNotFound"},
	} {
		var body any
		if tt.body != "" {
			body = tt.body
		}
		r := e.demo.Do(tt.method, tt.path, body)
		if r.Status != 404 {
			t.Errorf("%s %s as demo = %d %s; want 404", tt.method, tt.path, r.Status, r.Body)
			continue
		}
		neutronError(t, r, 404, tt.typ)
	}
	// Shared: ports yes (with an address from the pool), subnets and
	// changes no, explicit addresses no.
	sp := create(t, e.demo, "ports", "port", map[string]any{"network_id": shared["id"]})
	if firstIP(sp) != "172.16.0.2" || sp["project_id"] != e.demoProject.ID {
		t.Errorf("port on shared network = %v", sp)
	}
	neutronError(t, e.demo.Do("POST", "/network/v2.0/subnets", fmt.Sprintf(`{"subnet":{"network_id":%q,"cidr":"172.17.0.0/24","ip_version":4}}`, shared["id"])), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("PUT", "/network/v2.0/networks/"+str(shared, "id"), `{"network":{"name":"mine"}}`), 403, "PolicyNotAuthorized")
	neutronError(t, e.demo.Do("POST", "/network/v2.0/ports", fmt.Sprintf(`{"port":{"network_id":%q,"fixed_ips":[{"ip_address":"172.16.0.50"}]}}`, shared["id"])), 403, "PolicyNotAuthorized")
	// Port security and address pairs are the network owner's too (the
	// wire would otherwise pass any source): refused, nothing written.
	before := len(items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/ports", nil), 200), "ports"))
	for _, tt := range []struct{ method, path, body, rule string }{
		{"POST", "/network/v2.0/ports", fmt.Sprintf(`{"port":{"network_id":%q,"port_security_enabled":false}}`, shared["id"]), "create_port:port_security_enabled"},
		{"POST", "/network/v2.0/ports", fmt.Sprintf(`{"port":{"network_id":%q,"allowed_address_pairs":[{"ip_address":"172.16.0.1"}]}}`, shared["id"]), "create_port:allowed_address_pairs"},
		{"PUT", "/network/v2.0/ports/" + str(sp, "id"), `{"port":{"allowed_address_pairs":[{"ip_address":"0.0.0.0/0"}]}}`, "update_port:allowed_address_pairs"},
		{"PUT", "/network/v2.0/ports/" + str(sp, "id"), `{"port":{"port_security_enabled":false,"security_groups":[]}}`, "update_port:port_security_enabled"},
	} {
		r := e.demo.Do(tt.method, tt.path, tt.body)
		neutronError(t, r, 403, "PolicyNotAuthorized")
		if want := "(rule:" + strings.SplitN(tt.rule, ":", 2)[0] + " and rule:" + tt.rule + ") is disallowed by policy"; !strings.Contains(string(r.Body), want) {
			t.Errorf("%s %s = %s; want %q", tt.method, tt.path, r.Body, want)
		}
	}
	if after := len(items(mustStatus(t, e.admin.Do("GET", "/network/v2.0/ports", nil), 200), "ports")); after != before {
		t.Errorf("ports after refused creates = %d; want %d", after, before)
	}
	got := obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports/"+str(sp, "id"), nil), 200), "port")
	if got["port_security_enabled"] != true || len(got["allowed_address_pairs"].([]any)) != 0 {
		t.Errorf("port after refused updates = %v", got)
	}
	// The owner (here the admin) may; unchanged values pass for anyone.
	mustStatus(t, e.admin.Do("PUT", "/network/v2.0/ports/"+str(sp, "id"), `{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.9"},{"ip_address":"172.16.0.16/29","mac_address":"fa:16:3e:00:00:99"}]}}`), 200)
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/ports/"+str(sp, "id"), `{"port":{"port_security_enabled":true,"name":"n"}}`), 200)
	// The stored pairs sent back in another spelling or order, or fewer of
	// them, are no new pair; a new one, or one taken back, is.
	spMAC := strings.ToUpper(str(sp, "mac_address"))
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/ports/"+str(sp, "id"), fmt.Sprintf(`{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.20/29","mac_address":"FA:16:3E:00:00:99"},{"ip_address":"172.16.0.9/32","mac_address":%q}]}}`, spMAC)), 200)
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/ports/"+str(sp, "id"), `{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.16/29","mac_address":"fa:16:3e:00:00:99"},{"ip_address":"172.16.0.9"}]}}`), 200)
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/ports/"+str(sp, "id"), `{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.9"}]}}`), 200)
	for _, body := range []string{
		`{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.9"},{"ip_address":"172.16.0.16/29","mac_address":"fa:16:3e:00:00:99"}]}}`,
		`{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.9","mac_address":"fa:16:3e:00:00:99"}]}}`,
		`{"port":{"allowed_address_pairs":[{"ip_address":"172.16.0.8/29"}]}}`,
	} {
		neutronError(t, e.demo.Do("PUT", "/network/v2.0/ports/"+str(sp, "id"), body), 403, "PolicyNotAuthorized")
	}
	got = obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports/"+str(sp, "id"), nil), 200), "port")
	if pairs, _ := got["allowed_address_pairs"].([]any); len(pairs) != 1 || fmt.Sprint(pairs[0]) != fmt.Sprintf("map[ip_address:172.16.0.9 mac_address:%s]", str(sp, "mac_address")) {
		t.Errorf("pairs after a narrowing and refused widenings = %v", got["allowed_address_pairs"])
	}
	// Unsharing while another project has a port there is refused.
	neutronError(t, e.admin.Do("PUT", "/network/v2.0/networks/"+str(shared, "id"), `{"network":{"shared":false}}`), 409, "NetworkInUse")
}
