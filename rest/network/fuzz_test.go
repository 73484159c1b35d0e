package network_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/network"
	"github.com/peerstack/peerstack/rest/resttest"
)

// fuzzTarget is a network API over a bootstrapped state with one network
// and subnet of the demo project, and tokens of its member and the admin.
type fuzzTarget struct {
	h                  http.Handler
	member, admin      string
	netID, subnetID    string
	memberID, demoProj string
}

func newFuzzTarget(f *testing.F) *fuzzTarget {
	b := resttest.New()
	seed := b.Bootstrap(f, statedb.Settings{}, "secret")
	p, u := b.ProjectUser(f, "demo", "demo", "pw", "member")
	ft := &fuzzTarget{member: b.Token(u.ID, p.ID), admin: b.Token(seed.Admin.ID, seed.Project.ID), memberID: u.ID, demoProj: p.ID}
	ft.netID, ft.subnetID = "net-1", "sub-1"
	b.MustApply(f, statedb.CmdCreateNetwork, statedb.Network{ID: ft.netID, Name: "n", ProjectID: p.ID, AdminStateUp: true})
	b.MustApply(f, statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: ft.subnetID, NetworkID: ft.netID,
		ProjectID: p.ID, CIDR: "10.0.0.0/16", EnableDHCP: true}, GatewayAuto: true, PoolsAuto: true})
	srv := rest.NewServer(b, resttest.Logger(nil))
	srv.Mount(network.Service(b))
	ft.h = srv.Handler()
	return ft
}

// post sends body and fails on 5xx, on a 201 that is not the object, or
// on an error that is not a NeutronError.
func (ft *fuzzTarget) post(t *testing.T, coll, key, token, body string) {
	req := httptest.NewRequest(http.MethodPost, "/network/v2.0/"+coll, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", token)
	rec := httptest.NewRecorder()
	ft.h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("POST %s %q = %d %s", coll, body, rec.Code, rec.Body)
	}
	var m map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("POST %s %q = %d with a body that is not an object: %s", coll, body, rec.Code, rec.Body)
	}
	switch {
	case rec.Code == http.StatusCreated && m[key]["id"] == nil:
		t.Fatalf("POST %s %q = 201 without an id: %s", coll, body, rec.Body)
	case rec.Code != http.StatusCreated && m["NeutronError"]["type"] == nil:
		t.Fatalf("POST %s %q = %d without a NeutronError: %s", coll, body, rec.Code, rec.Body)
	}
}

var commonSeeds = []string{`null`, `[]`, `{}`, `{`, ``, `"x"`, `{"network":null}`, `{"subnet":[]}`, `{"port":1}`}

func FuzzNetworkCreate(f *testing.F) {
	for _, s := range append(commonSeeds,
		`{"network":{"name":"net1","admin_state_up":true}}`,
		`{"network":{"name":"public","router:external":true,"shared":true}}`,
		`{"network":{"name":"p","provider:network_type":"vxlan","provider:segmentation_id":4000,"mtu":1400}}`,
		`{"network":{"provider:segmentation_id":-1,"mtu":1e99,"tags":["a",""]}}`,
		`{"network":{"name":7,"project_id":"x","tenant_id":"y"}}`,
		`{"network":{"provider:physical_network":"physnet1","provider:network_type":"flat"}}`,
		// The forms the real clients send: numbers and booleans as strings.
		`{"network":{"name":"s","mtu":"1400","admin_state_up":"True","shared":"false","port_security_enabled":"1"}}`,
		`{"network":{"mtu":" +1_400 ","router:external":"yes","provider:segmentation_id":"4001"}}`,
		`{"network":{"mtu":1400.9,"admin_state_up":0,"vlan_transparent":"maybe"}}`,
		`{"network":{"mtu":"0x10","shared":1.0,"provider:segmentation_id":true}}`,
	) {
		f.Add(s, false)
		f.Add(s, true)
	}
	ft := newFuzzTarget(f)
	f.Fuzz(func(t *testing.T, body string, admin bool) {
		tok := ft.member
		if admin {
			tok = ft.admin
		}
		ft.post(t, "networks", "network", tok, body)
	})
}

func FuzzSubnetCreate(f *testing.F) {
	ft := newFuzzTarget(f)
	for _, s := range append(commonSeeds,
		`{"subnet":{"name":"s","network_id":"net-1","cidr":"10.1.0.0/24","ip_version":4}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.2.0.0/24","gateway_ip":null,"allocation_pools":[{"start":"10.2.0.5","end":"10.2.0.9"}]}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.3.0.0/24","gateway_ip":"10.3.0.7","allocation_pools":[{"start":"10.3.0.5","end":"10.3.0.9"}]}}`,
		`{"subnet":{"network_id":"net-1","cidr":"2001:db8::/64","ip_version":6,"ipv6_address_mode":"dhcpv6-stateful"}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.4.0.0/24","dns_nameservers":["1.1.1.1","x"],"host_routes":[{"destination":"0.0.0.0/0","nexthop":"10.4.0.1"}]}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.5.0.0/24","allocation_pools":[{"start":"10.5.0.9","end":"10.5.0.1"}],"gateway_ip":17}}`,
		`{"subnet":{"network_id":"nope","cidr":"::/0","ip_version":6}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.6.0.0/24","allocation_pools":[null,{}]}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.7.0.0/24","ip_version":"4","enable_dhcp":"False"}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.8.0.0/24","ip_version":"6_","enable_dhcp":"on","prefixlen":"24"}}`,
		`{"subnet":{"network_id":"net-1","cidr":"10.9.0.0/24","ip_version":4.0,"use_default_subnetpool":"no"}}`,
	) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		ft.post(t, "subnets", "subnet", ft.member, body)
	})
}

func FuzzPortCreate(f *testing.F) {
	ft := newFuzzTarget(f)
	for _, s := range append(commonSeeds,
		`{"port":{"network_id":"net-1","name":"p1","admin_state_up":true}}`,
		`{"port":{"network_id":"net-1","fixed_ips":[{"subnet_id":"sub-1","ip_address":"10.0.0.9"}]}}`,
		`{"port":{"network_id":"net-1","fixed_ips":[{"ip_address":"10.0.0.1"},{"ip_address":"::1"}]}}`,
		`{"port":{"network_id":"net-1","fixed_ips":[],"mac_address":"fa:16:3e:00:00:01","binding:host_id":"host1"}}`,
		`{"port":{"network_id":"net-1","fixed_ips":[{}],"mac_address":"ff:ff:ff:ff:ff:ff","binding:vnic_type":"direct"}}`,
		`{"port":{"network_id":"net-1","fixed_ips":null,"device_id":"vm","device_owner":"compute:nova","tags":["x"]}}`,
		`{"port":{"network_id":"net-1","admin_state_up":"TRUE","port_security_enabled":"f"}}`,
		`{"port":{"network_id":"net-1","admin_state_up":[true],"port_security_enabled":{}}}`,
	) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		ft.post(t, "ports", "port", ft.member, body)
	})
}
