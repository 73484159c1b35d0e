package network_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestNetworkBadInput: every bad request gets the right status and
// Neutron error type, and writes nothing.
func TestNetworkBadInput(t *testing.T) {
	e := newEnv(t)
	netID, subID := netWithSubnet(t, e.demo, "net", "10.0.0.0/24")
	tiny := create(t, e.demo, "networks", "network", map[string]any{"name": "tiny"})
	tinySub := create(t, e.demo, "subnets", "subnet", map[string]any{"network_id": tiny["id"], "cidr": "10.5.0.0/30", "ip_version": 4})
	create(t, e.demo, "ports", "port", map[string]any{"network_id": tiny["id"]}) // takes the only address .2
	used := create(t, e.demo, "ports", "port", map[string]any{"network_id": netID, "fixed_ips": []map[string]any{{"ip_address": "10.0.0.77"}}})
	create(t, e.demo, "ports", "port", map[string]any{"network_id": netID, "device_id": "vm-1", "device_owner": "compute:nova"})
	otherNet, _ := netWithSubnet(t, e.other, "foreign", "10.0.0.0/24")

	sub := func(body string) string { return `{"subnet":` + body + `}` }
	port := func(body string) string { return `{"port":` + body + `}` }
	tests := []struct {
		name, method, path, body string
		status                   int
		typ                      string
	}{
		{"overlapping pools", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","ip_version":4,
			"allocation_pools":[{"start":"10.1.0.10","end":"10.1.0.50"},{"start":"10.1.0.40","end":"10.1.0.60"}]}`, netID)), 400, "InvalidInput"},
		{"pool outside cidr", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","ip_version":4,
			"allocation_pools":[{"start":"10.2.0.10","end":"10.2.0.50"}]}`, netID)), 400, "InvalidInput"},
		{"gateway outside cidr", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","ip_version":4,"gateway_ip":"192.168.0.1"}`, netID)), 400, "InvalidInput"},
		{"gateway not a string", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","gateway_ip":17}`, netID)), 400, "InvalidInput"},
		{"gateway in pool", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","gateway_ip":"10.1.0.20",
			"allocation_pools":[{"start":"10.1.0.10","end":"10.1.0.50"}]}`, netID)), 409, "GatewayConflictWithAllocationPools"},
		{"invalid cidr", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/33","ip_version":4}`, netID)), 400, "InvalidInput"},
		{"garbage cidr", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"ten/8","ip_version":4}`, netID)), 400, "InvalidInput"},
		{"cidr version mismatch", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"2001:db8::/64","ip_version":4}`, netID)), 400, "InvalidInput"},
		{"ip_version 5", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","ip_version":5}`, netID)), 400, "InvalidInput"},
		{"overlapping subnet", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.0.0.128/25","ip_version":4}`, netID)), 400, "InvalidInput"},
		{"no cidr", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"ip_version":4}`, netID)), 400, "InvalidInput"},
		{"subnet pool", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"subnetpool_id":"x","ip_version":4}`, netID)), 400, "InvalidInput"},
		{"no network_id", "POST", "/subnets", sub(`{"cidr":"10.1.0.0/24","ip_version":4}`), 400, "InvalidInput"},
		{"foreign network subnet", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","ip_version":4}`, otherNet)), 404, "NetworkNotFound"},
		{"missing network subnet", "POST", "/subnets", sub(`{"network_id":"nope","cidr":"10.1.0.0/24","ip_version":4}`), 404, "NetworkNotFound"},
		{"bad dns", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"10.1.0.0/24","dns_nameservers":["dns"]}`, netID)), 400, "InvalidInput"},
		{"slaac", "POST", "/subnets", sub(fmt.Sprintf(`{"network_id":%q,"cidr":"2001:db8::/64","ip_version":6,"ipv6_address_mode":"slaac"}`, netID)), 400, "InvalidInput"},
		{"subnet cidr change", "PUT", "/subnets/" + subID, sub(`{"cidr":"10.9.0.0/24"}`), 400, "InvalidInput"},
		{"subnet update pool outside", "PUT", "/subnets/" + subID, sub(`{"allocation_pools":[{"start":"10.9.0.2","end":"10.9.0.9"}]}`), 400, "InvalidInput"},
		{"subnet in use", "DELETE", "/subnets/" + subID, "", 409, "SubnetInUse"},

		{"exhausted subnet", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q}`, tiny["id"])), 409, "IpAddressGenerationFailure"},
		{"exhausted subnet by id", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"subnet_id":%q}]}`, tiny["id"], tinySub["id"])), 409, "IpAddressGenerationFailure"},
		{"requested ip in use", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"ip_address":"10.0.0.77"}]}`, netID)), 409, "IpAddressAlreadyAllocated"},
		{"requested gateway", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"ip_address":"10.0.0.1"}]}`, netID)), 409, "IpAddressAlreadyAllocated"},
		{"requested ip outside", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"subnet_id":%q,"ip_address":"10.7.0.5"}]}`, netID, subID)), 400, "InvalidInput"},
		{"requested ip garbage", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"ip_address":"x"}]}`, netID)), 400, "InvalidInput"},
		{"subnet of other network", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"subnet_id":%q}]}`, netID, tinySub["id"])), 400, "InvalidInput"},
		{"missing subnet", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"fixed_ips":[{"subnet_id":"nope"}]}`, netID)), 404, "SubnetNotFound"},
		{"bad mac", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"mac_address":"01:02"}`, netID)), 400, "InvalidInput"},
		{"mac in use", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"mac_address":%q}`, netID, used["mac_address"])), 409, "MacAddressInUse"},
		{"foreign network port", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q}`, otherNet)), 404, "NetworkNotFound"},
		{"no network port", "POST", "/ports", port(`{"name":"x"}`), 400, "InvalidInput"},
		{"binding by tenant", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"binding:host_id":"host1"}`, netID)), 403, "PolicyNotAuthorized"},
		{"vnic direct", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"binding:vnic_type":"direct"}`, netID)), 400, "InvalidInput"},
		{"port network change", "PUT", "/ports/" + str(used, "id"), port(fmt.Sprintf(`{"network_id":%q}`, tiny["id"])), 400, "InvalidInput"},
		{"port mac change by tenant", "PUT", "/ports/" + str(used, "id"), port(`{"mac_address":"fa:16:3e:00:00:01"}`), 403, "PolicyNotAuthorized"},

		{"network in use", "DELETE", "/networks/" + netID, "", 409, "NetworkInUse"},
		{"mtu not an integer", "POST", "/networks", `{"network":{"name":"m","mtu":"1400a"}}`, 400, "InvalidInput"},
		{"mtu negative", "POST", "/networks", `{"network":{"name":"m","mtu":"-1"}}`, 400, "InvalidInput"},
		{"admin_state_up not a boolean", "POST", "/networks", `{"network":{"name":"m","admin_state_up":"maybe"}}`, 400, "InvalidInput"},
		{"mtu too small", "POST", "/networks", `{"network":{"name":"m","mtu":10}}`, 400, "InvalidInput"},
		{"description too long", "POST", "/ports", port(fmt.Sprintf(`{"network_id":%q,"description":%q}`, netID, strings.Repeat("d", 256))), 400, "InvalidInput"},
		{"name too long", "POST", "/networks", fmt.Sprintf(`{"network":{"name":%q}}`, strings.Repeat("a", 300)), 400, "InvalidInput"},
		{"malformed json", "POST", "/networks", `{"network":`, 400, "InvalidInput"},
		{"wrong envelope", "POST", "/networks", `{"net":{}}`, 400, "InvalidInput"},
		{"envelope not object", "POST", "/networks", `{"network":[1]}`, 400, "InvalidInput"},
		{"tenant and project differ", "POST", "/networks", `{"network":{"tenant_id":"a","project_id":"b"}}`, 400, "InvalidInput"},
		{"bad limit", "GET", "/networks?limit=x", "", 400, "InvalidInput"},
		{"bad marker", "GET", "/networks?marker=nope", "", 400, "InvalidInput"},
		{"bad sort_dir", "GET", "/networks?sort_key=name&sort_dir=up", "", 400, "InvalidInput"},
		{"bad fixed_ips filter", "GET", "/ports?fixed_ips=10.0.0.2", "", 400, "InvalidInput"},
		{"name lookup", "GET", "/networks/net", "", 404, "NetworkNotFound"},
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
