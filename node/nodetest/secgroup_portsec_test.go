package nodetest

import (
	"encoding/json"
	"testing"
)

// TestServerCreateDefaultGroupWithoutPortSecurityCLI: with the real
// openstack client, `server create --security-group default` on a network
// whose port security is off boots (Nova drops a lone default group), and
// another group there is refused with Nova's 400.
func TestServerCreateDefaultGroupWithoutPortSecurityCLI(t *testing.T) {
	e := newAgEnv(t, &FakeAgents{}, quiet())
	o := newOSC(t, e.c.OpenStackEnv(t, e.c.Follower()))
	o.run("network", "create", "--disable-port-security", "open")
	o.run("subnet", "create", "--network", "open", "--subnet-range", "10.77.0.0/24", "open-sub")
	o.run("security", "group", "create", "web")

	var srv map[string]any
	out := o.run("server", "create", "--image", e.image, "--flavor", "1", "--network", "open", "--security-group", "default",
		"--wait", "-f", "json", "vm-open")
	if err := json.Unmarshal([]byte(out), &srv); err != nil || srv["status"] != "ACTIVE" {
		t.Fatalf("server create --security-group default on a network without port security = %s (%v); want ACTIVE", out, err)
	}
	ports := e.c.Node(0).State().PortsOfDevice(srv["id"].(string))
	if len(ports) != 1 || ports[0].PortSecurityEnabled || len(ports[0].SecurityGroups) != 0 {
		t.Errorf("ports = %+v; want one without port security or groups", ports)
	}
	o.fails("Network requires port_security_enabled and subnet associated in order to apply security groups",
		"server", "create", "--image", e.image, "--flavor", "1", "--network", "open", "--security-group", "web", "vm-web")
}
