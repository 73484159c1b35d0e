package nodetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
)

// TestSecGroupOpenstackCLI runs the real openstack client 6.0 against a
// follower: security groups and rules with the options people use, port
// security on ports, and Neutron's refusals.
func TestSecGroupOpenstackCLI(t *testing.T) {
	c := NewCluster(t, 3)
	f := c.Follower()
	env := c.OpenStackEnv(t, f)
	osc := newOSC(t, env)
	run, fails := osc.run, osc.fails
	asJSON := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("output %q is not JSON: %v", out, err)
		}
	}

	var sg map[string]any
	asJSON(run("security", "group", "create", "sg1", "-f", "json"), &sg)
	if sg["name"] != "sg1" || sg["stateful"] != true || strings.Count(fmt.Sprint(sg["rules"]), "egress") != 2 {
		t.Errorf("security group create = %v; want sg1, stateful, two egress rules", sg)
	}
	var stateless map[string]any
	asJSON(run("security", "group", "create", "--stateless", "--description", "no tracking", "sg-nt", "-f", "json"), &stateless)
	if stateless["stateful"] != false || stateless["description"] != "no tracking" {
		t.Errorf("stateless group = %v", stateless)
	}
	var r22, rICMP, rGroup, r6, rEgress map[string]any
	asJSON(run("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "sg1", "-f", "json"), &r22)
	if r22["port_range_min"] != float64(22) || r22["remote_ip_prefix"] != "0.0.0.0/0" || r22["direction"] != "ingress" {
		t.Errorf("tcp 22 rule = %v", r22)
	}
	asJSON(run("security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "--icmp-type", "8", "--icmp-code", "0", "sg1", "-f", "json"), &rICMP)
	if rICMP["port_range_min"] != float64(8) || rICMP["port_range_max"] != float64(0) {
		t.Errorf("icmp rule = %v", rICMP)
	}
	asJSON(run("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "5432", "--remote-group", "default", "sg1", "-f", "json"), &rGroup)
	if rGroup["remote_group_id"] == nil || rGroup["remote_ip_prefix"] != nil {
		t.Errorf("remote group rule = %v", rGroup)
	}
	asJSON(run("security", "group", "rule", "create", "--ethertype", "IPv6", "--protocol", "udp", "--dst-port", "80:81", "sg1", "-f", "json"), &r6)
	if r6["ether_type"] != "IPv6" || r6["port_range_max"] != float64(81) {
		t.Errorf("IPv6 rule = %v", r6)
	}
	asJSON(run("security", "group", "rule", "create", "--egress", "--protocol", "any", "--remote-ip", "10.0.0.0/8", "sg-nt", "-f", "json"), &rEgress)
	if rEgress["direction"] != "egress" || rEgress["protocol"] != nil || rEgress["remote_ip_prefix"] != "10.0.0.0/8" {
		t.Errorf("egress rule = %v", rEgress)
	}
	// The client checks reversed ranges itself; the server checks the rest.
	fails("Invalid value for port 70000", "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "1:70000", "sg1")
	fails("already exists", "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "sg1")
	fails("not supported", "security", "group", "rule", "create", "--protocol", "nonsense", "sg1")
	fails("Insufficient rights for removing default security group", "security", "group", "delete", "default")

	var list []map[string]any
	asJSON(run("security", "group", "rule", "list", "sg1", "-f", "json"), &list)
	if len(list) != 6 {
		t.Errorf("rule list = %v; want 2 egress + 4 created", list)
	}
	var show map[string]any
	asJSON(run("security", "group", "rule", "show", fmt.Sprint(r22["id"]), "-f", "json"), &show)
	if show["id"] != r22["id"] || show["security_group_id"] != sg["id"] {
		t.Errorf("rule show = %v", show)
	}
	run("security", "group", "rule", "delete", fmt.Sprint(r6["id"]))
	run("security", "group", "set", "--name", "web", "--description", "web tier", "sg1")
	var groupsOut []map[string]any
	asJSON(run("security", "group", "list", "-f", "json"), &groupsOut)
	names := map[any]bool{}
	for _, g := range groupsOut {
		names[g["Name"]] = true
	}
	if !names["web"] || !names["default"] || !names["sg-nt"] || names["sg1"] {
		t.Errorf("security group list = %v", groupsOut)
	}

	// Ports: --security-group, --no-security-group, --disable-port-security.
	run("network", "create", "net1")
	run("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1")
	var port map[string]any
	asJSON(run("port", "create", "--network", "net1", "--security-group", "web", "--allowed-address", "ip-address=10.0.0.200", "p1", "-f", "json"), &port)
	if !strings.Contains(fmt.Sprint(port["security_group_ids"]), fmt.Sprint(sg["id"])) || port["port_security_enabled"] != true ||
		!strings.Contains(fmt.Sprint(port["allowed_address_pairs"]), "10.0.0.200") {
		t.Errorf("port create = %v", port)
	}
	fails("in use", "security", "group", "delete", "web")
	fails("Port has security group associated", "port", "set", "--disable-port-security", "p1")
	run("port", "set", "--no-security-group", "--no-allowed-address", "--disable-port-security", "p1")
	asJSON(run("port", "show", "p1", "-f", "json"), &port)
	if port["port_security_enabled"] != false || len(port["security_group_ids"].([]any)) != 0 {
		t.Errorf("port after set = %v", port)
	}
	run("security", "group", "delete", "web")
}

// TestSecGroupGophercloud drives groups and rules with gophercloud v2.
func TestSecGroupGophercloud(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	f := c.Follower()
	provider, err := openstack.NewClient(c.URL(f) + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	provider.HTTPClient = *c.HTTPClient()
	if err := openstack.Authenticate(ctx, provider, gophercloud.AuthOptions{IdentityEndpoint: c.URL(f) + "/identity",
		Username: "admin", Password: c.AdminPassword, DomainName: "Default", TenantName: "admin"}); err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	nc, err := openstack.NewNetworkV2(provider, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := groups.Create(ctx, nc, groups.CreateOpts{Name: "gsg", Description: "d"}).Extract()
	if err != nil || g.Name != "gsg" || len(g.Rules) != 2 {
		t.Fatalf("groups.Create = %+v, %v", g, err)
	}
	r, err := rules.Create(ctx, nc, rules.CreateOpts{Direction: rules.DirIngress, EtherType: rules.EtherType4, SecGroupID: g.ID,
		Protocol: rules.ProtocolTCP, PortRangeMin: 443, PortRangeMax: 443, RemoteIPPrefix: "192.168.0.0/16"}).Extract()
	if err != nil || r.PortRangeMin != 443 || r.RemoteIPPrefix != "192.168.0.0/16" {
		t.Fatalf("rules.Create = %+v, %v", r, err)
	}
	_, err = rules.Create(ctx, nc, rules.CreateOpts{Direction: rules.DirIngress, EtherType: rules.EtherType4, SecGroupID: g.ID,
		Protocol: rules.ProtocolTCP, PortRangeMin: 443, PortRangeMax: 443, RemoteIPPrefix: "192.168.0.0/16"}).Extract()
	if !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("duplicate rule: %v; want 409", err)
	}
	pages, err := groups.List(nc, groups.ListOpts{Name: "gsg"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := groups.ExtractGroups(pages)
	if err != nil || len(all) != 1 || len(all[0].Rules) != 3 {
		t.Fatalf("groups.List = %+v, %v", all, err)
	}
	up := true
	n, err := networks.Create(ctx, nc, networks.CreateOpts{Name: "gnet", AdminStateUp: &up}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ports.Create(ctx, nc, ports.CreateOpts{NetworkID: n.ID, SecurityGroups: &[]string{g.ID}}).Extract()
	if err != nil || len(p.SecurityGroups) != 1 || p.SecurityGroups[0] != g.ID {
		t.Fatalf("ports.Create = %+v, %v", p, err)
	}
	if err := groups.Delete(ctx, nc, g.ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("deleting a group in use: %v; want 409", err)
	}
	if err := ports.Delete(ctx, nc, p.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := rules.Delete(ctx, nc, r.ID).ExtractErr(); err != nil {
		t.Fatalf("rules.Delete: %v", err)
	}
	if err := groups.Delete(ctx, nc, g.ID).ExtractErr(); err != nil {
		t.Fatalf("groups.Delete: %v", err)
	}
	if _, err := groups.Get(ctx, nc, g.ID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("groups.Get after delete: %v; want 404", err)
	}
}

// TestSecGroupServerCLI: server create --security-group and server
// add/remove security group with the real client at microversion 2.1.
func TestSecGroupServerCLI(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 3, Options{Agent: fa.Options})
	f := c.Follower()
	o := newCPCLI(t, c, f)
	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var image map[string]any
	o.json(&image, "image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "cli-img")
	var net map[string]any
	o.json(&net, "network", "create", "net1")
	o.run("subnet", "create", "--network", "net1", "--subnet-range", "10.0.0.0/24", "sub1")
	var sg map[string]any
	o.json(&sg, "security", "group", "create", "web")

	var server map[string]any
	o.json(&server, "server", "create", "--flavor", "m1.tiny", "--image", fmt.Sprint(image["id"]), "--nic", "net-id="+fmt.Sprint(net["id"]),
		"--security-group", "web", "--wait", "vm")
	groupsOf := func() string {
		var s map[string]any
		o.json(&s, "server", "show", "vm")
		return fmt.Sprint(s["security_groups"])
	}
	if g := groupsOf(); !strings.Contains(g, "web") || strings.Contains(g, "default") {
		t.Errorf("server groups = %s; want only web", g)
	}
	portGroups := func() []string {
		ports := c.Node(f).State().PortsOfDevice(fmt.Sprint(server["id"]))
		if len(ports) != 1 {
			t.Fatalf("server ports = %v", ports)
		}
		return ports[0].SecurityGroups
	}
	if pg := portGroups(); len(pg) != 1 || pg[0] != sg["id"] {
		t.Errorf("port groups = %v; want web", pg)
	}
	o.run("server", "add", "security", "group", "vm", "default")
	o.run("server", "remove", "security", "group", "vm", "web")
	if g := groupsOf(); !strings.Contains(g, "default") || strings.Contains(g, "web") {
		t.Errorf("server groups after add/remove = %s; want only default", g)
	}
	if pg := portGroups(); len(pg) != 1 || pg[0] == sg["id"] {
		t.Errorf("port groups after add/remove = %v; want default", pg)
	}
	o.run("security", "group", "delete", "web")
	o.run("server", "delete", "--wait", "vm")
}
