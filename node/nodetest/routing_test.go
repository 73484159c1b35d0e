package nodetest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRoutingOpenstackCLI runs the real openstack client 6.0 against a
// follower through the router and floating ip commands: an external flat
// network, a router with a gateway, an interface and an extra route,
// floating IPs created, moved between fixed IPs and deleted, and the
// refusals Neutron gives.
func TestRoutingOpenstackCLI(t *testing.T) {
	c := NewCluster(t, 3)
	env := c.OpenStackEnv(t, c.Follower())
	osc := newOSC(t, env)
	run, fails := osc.run, osc.fails
	obj := func(args ...string) map[string]any {
		t.Helper()
		var m map[string]any
		out := run(append(args, "-f", "json")...)
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("openstack %s: output %q is not JSON: %v", strings.Join(args, " "), out, err)
		}
		return m
	}

	ext := obj("network", "create", "--external", "--provider-network-type", "flat", "--provider-physical-network", "physnet1", "ext")
	if ext["router:external"] != true || ext["provider:network_type"] != "flat" || ext["provider:physical_network"] != "physnet1" {
		t.Errorf("external network = %v", ext)
	}
	obj("subnet", "create", "--network", "ext", "--subnet-range", "203.0.113.0/24", "--no-dhcp", "--gateway", "203.0.113.1",
		"--allocation-pool", "start=203.0.113.100,end=203.0.113.199", "ext-sub")
	obj("network", "create", "net1")
	sub := obj("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1")

	r := obj("router", "create", "r1")
	if r["status"] != "ACTIVE" || r["name"] != "r1" {
		t.Errorf("router create = %v", r)
	}
	run("router", "set", "--external-gateway", "ext", "r1")
	run("router", "add", "subnet", "r1", "sub1")
	run("router", "set", "--route", "destination=192.168.0.0/24,gateway=10.0.0.9", "r1")
	r = obj("router", "show", "r1")
	if gw := fmt.Sprint(r["external_gateway_info"]); !strings.Contains(gw, fmt.Sprint(ext["id"])) || !strings.Contains(gw, "enable_snat") {
		t.Errorf("router gateway = %s", gw)
	}
	if !strings.Contains(fmt.Sprint(r["routes"]), "192.168.0.0/24") || !strings.Contains(fmt.Sprint(r["interfaces_info"]), "10.0.0.1") {
		t.Errorf("router show: routes %v, interfaces %v", r["routes"], r["interfaces_info"])
	}
	run("router", "unset", "--route", "destination=192.168.0.0/24,gateway=10.0.0.9", "r1")
	run("router", "set", "--external-gateway", "ext", "--disable-snat", "r1")
	if gw := fmt.Sprint(obj("router", "show", "r1")["external_gateway_info"]); !strings.Contains(gw, "enable_snat:false") {
		t.Errorf("after --disable-snat: %s", gw)
	}
	var routers []map[string]any
	if err := json.Unmarshal([]byte(run("router", "list", "-f", "json")), &routers); err != nil || len(routers) != 1 {
		t.Errorf("router list = %v (%v)", routers, err)
	}

	p1 := obj("port", "create", "--network", "net1", "p1")
	f1 := obj("floating", "ip", "create", "ext", "--port", "p1")
	if f1["port_id"] != p1["id"] || f1["status"] != "DOWN" || !strings.HasPrefix(fmt.Sprint(f1["floating_ip_address"]), "203.0.113.1") {
		t.Errorf("floating ip create = %v", f1)
	}
	f2 := obj("floating", "ip", "create", "ext", "--floating-ip-address", "203.0.113.150")
	fails("already has a floating IP", "floating", "ip", "set", "--port", "p1", fmt.Sprint(f2["id"]))
	fails("allocation pool", "floating", "ip", "create", "ext", "--floating-ip-address", "203.0.113.5")
	run("floating", "ip", "unset", "--port", fmt.Sprint(f1["id"]))
	run("floating", "ip", "set", "--port", "p1", fmt.Sprint(f2["id"]))
	show := obj("floating", "ip", "show", "203.0.113.150")
	if show["port_id"] != p1["id"] || !strings.Contains(fmt.Sprint(show["port_details"]), fmt.Sprint(p1["mac_address"])) {
		t.Errorf("floating ip show = %v", show)
	}
	var fips []map[string]any
	if err := json.Unmarshal([]byte(run("floating", "ip", "list", "-f", "json")), &fips); err != nil || len(fips) != 2 {
		t.Errorf("floating ip list = %v (%v)", fips, err)
	}

	// server add/remove floating ip find the server's port by device_id.
	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	obj("image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "--public", "fip-img")
	srv := obj("server", "create", "--flavor", "m1.tiny", "--image", "fip-img", "--network", "net1", "fipvm")
	run("floating", "ip", "unset", "--port", fmt.Sprint(f2["id"]))
	run("server", "add", "floating", "ip", "fipvm", "203.0.113.150")
	show = obj("floating", "ip", "show", "203.0.113.150")
	if details := fmt.Sprint(show["port_details"]); show["port_id"] == nil || show["port_id"] == p1["id"] || !strings.Contains(details, fmt.Sprint(srv["id"])) {
		t.Errorf("after server add floating ip: port %v, details %s; want the server's port", show["port_id"], details)
	}
	run("server", "remove", "floating", "ip", "fipvm", "203.0.113.150")
	if show = obj("floating", "ip", "show", "203.0.113.150"); show["port_id"] != nil {
		t.Errorf("after server remove floating ip: port %v", show["port_id"])
	}
	run("floating", "ip", "set", "--port", "p1", fmt.Sprint(f2["id"]))
	if show = obj("floating", "ip", "show", "203.0.113.150"); show["port_id"] != p1["id"] || show["router_id"] != r["id"] {
		t.Errorf("after floating ip set --port p1: port %v router %v; want %v %v", show["port_id"], show["router_id"], p1["id"], r["id"])
	}

	fails("still has ports", "router", "delete", "r1")
	fails("required by one or more floating IPs", "router", "remove", "subnet", "r1", "sub1")
	run("floating", "ip", "delete", fmt.Sprint(f1["id"]), fmt.Sprint(f2["id"]))

	// A port as an interface.
	obj("network", "create", "net2")
	obj("subnet", "create", "--network", "net2", "--subnet-range", "10.0.2.0/24", "sub2")
	obj("port", "create", "--network", "net2", "--fixed-ip", "subnet=sub2,ip-address=10.0.2.254", "rp")
	run("router", "add", "port", "r1", "rp")
	if ports := run("port", "list", "--router", "r1", "-f", "value", "-c", "Name"); !strings.Contains(ports, "rp") {
		t.Errorf("router ports = %q", ports)
	}
	run("router", "remove", "port", "r1", "rp")
	run("router", "remove", "subnet", "r1", "sub1")
	run("router", "unset", "--external-gateway", "r1")
	run("router", "delete", "r1")
	if _, ok := c.Node(c.Follower()).State().Subnet(fmt.Sprint(sub["id"])); !ok {
		t.Error("the subnet went with the router")
	}
	run("network", "delete", "ext")
}
