package network_test

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestNetworkListPaging follows <coll>_links with limit/marker until the
// end and gets every network exactly once, in id order.
func TestNetworkListPaging(t *testing.T) {
	e := newEnv(t)
	var want []string
	for i := range 7 {
		n := create(t, e.demo, "networks", "network", map[string]any{"name": fmt.Sprintf("n%d", i)})
		want = append(want, str(n, "id"))
	}
	sort.Strings(want)
	var got []string
	path := "/network/v2.0/networks?limit=3"
	pages := 0
	for path != "" {
		pages++
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		m := mustStatus(t, e.demo.Do("GET", path, nil), 200)
		page := items(m, "networks")
		if len(page) > 3 {
			t.Fatalf("page of %d; want at most 3", len(page))
		}
		got = append(got, ids(page)...)
		path = ""
		if links, ok := m["networks_links"].([]any); ok {
			for _, l := range links {
				lm := l.(map[string]any)
				if lm["rel"] == "next" {
					u, err := url.Parse(str(lm, "href"))
					if err != nil || !strings.HasPrefix(str(lm, "href"), e.srv.URL+"/network/v2.0/networks?") {
						t.Fatalf("next link %v", lm)
					}
					path = u.RequestURI()
				}
			}
		}
	}
	if !reflect.DeepEqual(got, want) || pages != 3 {
		t.Errorf("paged ids = %v in %d pages; want %v in 3", got, pages, want)
	}
	// No links without a limit.
	if m := mustStatus(t, e.demo.Do("GET", "/network/v2.0/networks", nil), 200); m["networks_links"] != nil {
		t.Errorf("links without limit: %v", m["networks_links"])
	}
}

func TestNetworkListFilters(t *testing.T) {
	e := newEnv(t)
	create(t, e.demo, "networks", "network", map[string]any{"name": "alpha", "tags": []string{"red", "blue"}})
	b := create(t, e.demo, "networks", "network", map[string]any{"name": "beta", "admin_state_up": false, "tags": []string{"red"}})
	create(t, e.demo, "networks", "network", map[string]any{"name": "gamma"})
	names := func(q string) []string {
		t.Helper()
		var out []string
		for _, n := range items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/networks?"+q, nil), 200), "networks") {
			out = append(out, str(n, "name"))
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"name=alpha", []string{"alpha"}},
		{"name=alpha&name=gamma&sort_key=name", []string{"alpha", "gamma"}},
		{"name=nothing", nil},
		{"admin_state_up=False", []string{"beta"}},
		{"admin_state_up=true&sort_key=name&sort_dir=desc", []string{"gamma", "alpha"}},
		{"shared=False&sort_key=name", []string{"alpha", "beta", "gamma"}},
		{"id=" + str(b, "id"), []string{"beta"}},
		{"tags=red&sort_key=name", []string{"alpha", "beta"}},
		{"tags=red,blue", []string{"alpha"}},
		{"tags-any=blue,none", []string{"alpha"}},
		{"not-tags=red&sort_key=name", []string{"gamma"}},
		{"not-tags-any=blue&sort_key=name", []string{"beta", "gamma"}},
		{"mtu=1450&name=gamma", []string{"gamma"}},
		{"project_id=" + e.demoProject.ID + "&sort_key=name&limit=2", []string{"alpha", "beta"}},
		{"unknown_attribute=x&sort_key=name", []string{"alpha", "beta", "gamma"}},
		{"provider:segmentation_id=1000&sort_key=name", []string{"alpha", "beta", "gamma"}}, // hidden from tenants: ignored
	}
	for _, tt := range tests {
		if got := names(tt.query); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("networks?%s = %v; want %v", tt.query, got, tt.want)
		}
	}
}

func TestPortListFilters(t *testing.T) {
	e := newEnv(t)
	n1, s1 := netWithSubnet(t, e.demo, "n1", "10.0.0.0/24")
	n2, _ := netWithSubnet(t, e.demo, "n2", "10.1.0.0/24")
	create(t, e.demo, "ports", "port", map[string]any{"network_id": n1, "name": "p1", "device_id": "vm1"})
	p2 := create(t, e.demo, "ports", "port", map[string]any{"network_id": n1, "name": "p2"})
	create(t, e.demo, "ports", "port", map[string]any{"network_id": n2, "name": "p3", "device_id": "vm1"})
	names := func(q string) []string {
		t.Helper()
		var out []string
		for _, p := range items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports?"+q, nil), 200), "ports") {
			out = append(out, str(p, "name"))
		}
		sort.Strings(out)
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"network_id=" + n1, []string{"p1", "p2"}},
		{"network_id=" + n1 + "&network_id=" + n2, []string{"p1", "p2", "p3"}},
		{"device_id=vm1", []string{"p1", "p3"}},
		{"device_id=vm1&network_id=" + n2, []string{"p3"}},
		{"fixed_ips=ip_address%3D10.0.0.3", []string{"p2"}},
		{"fixed_ips=ip_address%3D10.0.0.3&fixed_ips=ip_address%3D10.1.0.2", []string{"p2", "p3"}},
		{"fixed_ips=subnet_id%3D" + s1, []string{"p1", "p2"}},
		{"fixed_ips=subnet_id%3D" + s1 + "&fixed_ips=ip_address%3D10.1.0.2", nil},
		{"fixed_ips=ip_address_substr%3D10.0.", []string{"p1", "p2"}},
		{"mac_address=" + url.QueryEscape(str(p2, "mac_address")), []string{"p2"}},
		{"status=DOWN", []string{"p1", "p2", "p3"}},
		{"status=ACTIVE", nil},
	}
	for _, tt := range tests {
		if got := names(tt.query); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ports?%s = %v; want %v", tt.query, got, tt.want)
		}
	}
}

func TestPortUpdateAndBinding(t *testing.T) {
	e := newEnv(t)
	netID, subID := netWithSubnet(t, e.demo, "net", "10.0.0.0/24")
	p := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID, "name": "p"})
	id := str(p, "id")
	// Tenant: rename, change addresses (keep .2, add .40).
	body := fmt.Sprintf(`{"port":{"name":"renamed","admin_state_up":false,"fixed_ips":[{"ip_address":"10.0.0.2"},{"subnet_id":%q,"ip_address":"10.0.0.40"}]}}`, subID)
	u := obj(mustStatus(t, e.demo.Do("PUT", "/network/v2.0/ports/"+id, body), 200), "port")
	if u["name"] != "renamed" || u["admin_state_up"] != false || fmt.Sprint(u["fixed_ips"]) != fmt.Sprintf("[map[ip_address:10.0.0.2 subnet_id:%s] map[ip_address:10.0.0.40 subnet_id:%s]]", subID, subID) ||
		u["revision_number"] != float64(2) {
		t.Errorf("updated port = %v", u)
	}
	// Admin binds it to a host by name; the view shows the name.
	b := obj(mustStatus(t, e.admin.Do("PUT", "/network/v2.0/ports/"+id, `{"port":{"binding:host_id":"host1"}}`), 200), "port")
	if b["binding:host_id"] != "host1" || b["binding:vif_type"] != "bridge" {
		t.Errorf("bound port (admin view) = %v", b)
	}
	if got, _ := e.b.State().Port(id); got.HostID != "host1" { // resttest's member id is host1 too
		t.Errorf("stored HostID = %q", got.HostID)
	}
	tv := obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/ports/"+id, nil), 200), "port")
	if _, ok := tv["binding:host_id"]; ok {
		t.Errorf("tenant sees the binding: %v", tv)
	}
	neutronError(t, e.demo.Do("PUT", "/network/v2.0/ports/"+id, `{"port":{"binding:host_id":"elsewhere"}}`), 403, "PolicyNotAuthorized")
	// Admin: MAC change (refused while bound, as in Neutron: nothing
	// changes), and a port created for a project with a binding.
	r := e.admin.Do("PUT", "/network/v2.0/ports/"+id, `{"port":{"mac_address":"FA:16:3E:AA:BB:CC"}}`)
	neutronError(t, r, 409, "PortBound")
	if got, _ := e.b.State().Port(id); !strings.Contains(string(r.Body), "port is already bound") || got.MAC == "fa:16:3e:aa:bb:cc" {
		t.Errorf("MAC change of a bound port = %s; stored MAC %s", r.Body, got.MAC)
	}
	mustStatus(t, e.admin.Do("PUT", "/network/v2.0/ports/"+id, `{"port":{"binding:host_id":""}}`), 200)
	m := obj(mustStatus(t, e.admin.Do("PUT", "/network/v2.0/ports/"+id, `{"port":{"mac_address":"FA:16:3E:AA:BB:CC"}}`), 200), "port")
	if m["mac_address"] != "fa:16:3e:aa:bb:cc" {
		t.Errorf("mac after update = %v", m["mac_address"])
	}
	ap := create(t, e.admin, "ports", "port", map[string]any{"network_id": netID, "project_id": e.demoProject.ID, "binding:host_id": "host1",
		"device_owner": "compute:nova", "device_id": "vm-7", "fixed_ips": []any{}})
	if ap["binding:host_id"] != "host1" || ap["project_id"] != e.demoProject.ID || fmt.Sprint(ap["fixed_ips"]) != "[]" {
		t.Errorf("admin-created port = %v", ap)
	}
	// Deleting a port frees its addresses at once.
	mustStatus(t, e.demo.Do("DELETE", "/network/v2.0/ports/"+id, nil), 204)
	again := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID, "fixed_ips": []map[string]any{{"ip_address": "10.0.0.40"}}})
	if firstIP(again) != "10.0.0.40" {
		t.Errorf("re-used address = %v", again["fixed_ips"])
	}
	if next := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID}); firstIP(next) != "10.0.0.2" {
		t.Errorf("lowest free after delete = %s; want 10.0.0.2", firstIP(next))
	}
}

func TestSubnetIPv6AndUpdate(t *testing.T) {
	e := newEnv(t)
	n := create(t, e.demo, "networks", "network", map[string]any{"name": "dual"})
	v4 := create(t, e.demo, "subnets", "subnet", map[string]any{"network_id": n["id"], "cidr": "192.168.9.0/24", "ip_version": 4,
		"gateway_ip": nil, "dns_nameservers": []string{"1.1.1.1"}, "host_routes": []map[string]string{{"destination": "10.50.0.0/16", "nexthop": "192.168.9.254"}},
		"enable_dhcp": false})
	if v4["gateway_ip"] != nil || fmt.Sprint(v4["allocation_pools"]) != "[map[end:192.168.9.254 start:192.168.9.1]]" || v4["enable_dhcp"] != false ||
		fmt.Sprint(v4["dns_nameservers"]) != "[1.1.1.1]" || fmt.Sprint(v4["host_routes"]) != "[map[destination:10.50.0.0/16 nexthop:192.168.9.254]]" {
		t.Errorf("subnet without gateway = %v", v4)
	}
	v6 := create(t, e.demo, "subnets", "subnet", map[string]any{"network_id": n["id"], "cidr": "2001:db8:5::/64", "ip_version": 6,
		"ipv6_address_mode": "dhcpv6-stateful"})
	if v6["gateway_ip"] != "2001:db8:5::1" || v6["ip_version"] != float64(6) || v6["ipv6_address_mode"] != "dhcpv6-stateful" ||
		fmt.Sprint(v6["allocation_pools"]) != "[map[end:2001:db8:5:0:ffff:ffff:ffff:ffff start:2001:db8:5::2]]" {
		t.Errorf("v6 subnet = %v", v6)
	}
	p := create(t, e.demo, "ports", "port", map[string]any{"network_id": n["id"]})
	var addrs []string
	for _, f := range p["fixed_ips"].([]any) {
		addrs = append(addrs, str(f.(map[string]any), "ip_address"))
	}
	if !slices.Equal(addrs, []string{"192.168.9.1", "2001:db8:5::2"}) {
		t.Errorf("dual-stack port addresses = %v", addrs)
	}
	p6 := create(t, e.demo, "ports", "port", map[string]any{"network_id": n["id"], "fixed_ips": []map[string]string{{"ip_address": "2001:db8:5::beef"}}})
	if firstIP(p6) != "2001:db8:5::beef" {
		t.Errorf("requested v6 = %v", p6["fixed_ips"])
	}
	// Update: set a gateway and new pools, rename.
	body := `{"subnet":{"name":"v4","gateway_ip":"192.168.9.100","allocation_pools":[{"start":"192.168.9.150","end":"192.168.9.160"}],"enable_dhcp":true}}`
	u := obj(mustStatus(t, e.demo.Do("PUT", "/network/v2.0/subnets/"+str(v4, "id"), body), 200), "subnet")
	if u["gateway_ip"] != "192.168.9.100" || u["name"] != "v4" || u["enable_dhcp"] != true || u["revision_number"] != float64(2) {
		t.Errorf("updated subnet = %v", u)
	}
	neutronError(t, e.demo.Do("PUT", "/network/v2.0/subnets/"+str(v4, "id"), `{"subnet":{"gateway_ip":"192.168.9.1"}}`), 409, "IpAddressAlreadyAllocated")
	u = obj(mustStatus(t, e.demo.Do("PUT", "/network/v2.0/subnets/"+str(v4, "id"), `{"subnet":{"gateway_ip":null}}`), 200), "subnet")
	if u["gateway_ip"] != nil {
		t.Errorf("gateway after null = %v", u["gateway_ip"])
	}
	// Delete: ports first, then subnets, then the network.
	for _, id := range []string{str(p, "id"), str(p6, "id")} {
		mustStatus(t, e.demo.Do("DELETE", "/network/v2.0/ports/"+id, nil), 204)
	}
	mustStatus(t, e.demo.Do("DELETE", "/network/v2.0/subnets/"+str(v6, "id"), nil), 204)
	mustStatus(t, e.demo.Do("DELETE", "/network/v2.0/networks/"+str(n, "id"), nil), 204)
	neutronError(t, e.demo.Do("GET", "/network/v2.0/subnets/"+str(v4, "id"), nil), 404, "SubnetNotFound")
}

func TestNetworkTags(t *testing.T) {
	e := newEnv(t)
	n := create(t, e.demo, "networks", "network", map[string]any{"name": "tagged"})
	base := "/network/v2.0/networks/" + str(n, "id") + "/tags"
	m := mustStatus(t, e.demo.Do("PUT", base, `{"tags":["b","a","b"]}`), 200)
	if fmt.Sprint(m["tags"]) != "[a b]" {
		t.Errorf("PUT tags = %v", m)
	}
	mustStatus(t, e.demo.Do("PUT", base+"/c", nil), 201)
	mustStatus(t, e.demo.Do("GET", base+"/c", nil), 204)
	neutronError(t, e.demo.Do("GET", base+"/z", nil), 404, "TagNotFound")
	mustStatus(t, e.demo.Do("DELETE", base+"/a", nil), 204)
	if m := mustStatus(t, e.demo.Do("GET", base, nil), 200); fmt.Sprint(m["tags"]) != "[b c]" {
		t.Errorf("tags = %v; want [b c]", m)
	}
	got := items(mustStatus(t, e.demo.Do("GET", "/network/v2.0/networks?tags=c", nil), 200), "networks")
	if len(got) != 1 || got[0]["id"] != n["id"] {
		t.Errorf("networks?tags=c = %v", ids(got))
	}
	neutronError(t, e.reader.Do("PUT", base+"/d", nil), 403, "PolicyNotAuthorized")
	neutronError(t, e.other.Do("PUT", base+"/d", nil), 404, "NetworkNotFound")
	mustStatus(t, e.demo.Do("DELETE", base, nil), 204)
	if m := mustStatus(t, e.demo.Do("GET", base, nil), 200); fmt.Sprint(m["tags"]) != "[]" {
		t.Errorf("tags after clear = %v", m)
	}
	// Ports and subnets have them too.
	_, subID := netWithSubnet(t, e.demo, "x", "10.0.0.0/24")
	mustStatus(t, e.demo.Do("PUT", "/network/v2.0/subnets/"+subID+"/tags/s", nil), 201)
	if s := obj(mustStatus(t, e.demo.Do("GET", "/network/v2.0/subnets/"+subID, nil), 200), "subnet"); fmt.Sprint(s["tags"]) != "[s]" {
		t.Errorf("subnet tags = %v", s["tags"])
	}
}
