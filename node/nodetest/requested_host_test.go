package nodetest

import (
	"os/exec"
	"testing"
)

// TestServerCreateOnHostCLI: an admin picks the host of new servers with
// the real client: `server create --host` (compute 2.74) and the older
// `--availability-zone nova:<host>`; every such server lands there,
// although placement would otherwise spread them.
func TestServerCreateOnHostCLI(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is needed (apt-get install python3-openstackclient): %v", err)
	}
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	f := e.c.Follower()
	target := (f + 1) % 3
	name := e.c.Node(target).Name()
	env := append(e.c.OpenStackEnv(t, f), "OS_COMPUTE_API_VERSION=2.74")
	for i, how := range [][]string{
		{"--host", name}, {"--hypervisor-hostname", name}, {"--availability-zone", "nova:" + name},
		{"--host", name}, {"--host", name},
	} {
		var srv map[string]any
		args := append([]string{"server", "create", "--image", e.image, "--flavor", "1", "--network", e.net, "--wait"}, how...)
		oscJSON(t, env, &srv, append(args, "pinned-"+string(rune('a'+i)))...)
		id, _ := srv["id"].(string)
		if srv["status"] != "ACTIVE" || e.hostOf(id) != target {
			t.Fatalf("server created with %v: status %v on node %d; want ACTIVE on node %d (%s)", how, srv["status"], e.hostOf(id), target, name)
		}
	}
}
