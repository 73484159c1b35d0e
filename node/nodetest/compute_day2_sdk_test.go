package nodetest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sdkDay2Script boots a server through openstacksdk's cloud layer (which
// negotiates the highest common microversion), pauses, unpauses, locks
// and unlocks it through the compute proxy, reads its actions and
// deletes it (the project's only network is picked: 2.37's "auto"), printing what it saw as JSON.
const sdkDay2Script = `
import json, sys, time, openstack
conn = openstack.connect(cloud="peerstack")
img = conn.image.find_image(sys.argv[1])
flv = conn.compute.find_flavor("m1.tiny")
net = conn.create_network("sdknet")
conn.create_subnet(net.id, cidr="10.9.0.0/24", ip_version=4)
srv = conn.create_server("sdkvm", image=img.id, flavor=flv.id, auto_ip=False, wait=True, timeout=60)
ver = conn.compute.get_endpoint_data().max_microversion
def wait(status):
    deadline = time.time() + 30
    while time.time() < deadline:
        s = conn.compute.get_server(srv.id)
        if s.status == status:
            return s
        time.sleep(0.2)
    raise SystemExit("server never reached " + status)
conn.compute.pause_server(srv)
paused = wait("PAUSED")
conn.compute.unpause_server(srv)
wait("ACTIVE")
conn.compute.lock_server(srv, locked_reason="sdk")
locked = conn.compute.get_server(srv.id)
conn.compute.unlock_server(srv)
actions = [a["action"] for a in conn.compute.get("/servers/%s/os-instance-actions" % srv.id).json()["instanceActions"]]
conn.delete_server(srv.id, wait=True, timeout=60)
print(json.dumps({"version": "%d.%d" % tuple(ver), "paused_power": paused.power_state, "locked": locked.is_locked,
                  "reason": locked.to_dict().get("locked_reason") or "", "flavor": locked.flavor.name, "actions": actions}))
`

func TestComputeDay2OpenStackSDK(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import openstack").Run(); err != nil {
		t.Fatalf("openstacksdk is required (python3-openstacksdk): %v", err)
	}
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	o := newCPCLI(t, c, 0)
	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	o.run("image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "--public", "sdk-img")
	out := runClient(t, o.env, "/usr/bin/python3", "-c", sdkDay2Script, "sdk-img")
	var got struct {
		Version     string   `json:"version"`
		PausedPower int      `json:"paused_power"`
		Locked      bool     `json:"locked"`
		Reason      string   `json:"reason"`
		Flavor      string   `json:"flavor"`
		Actions     []string `json:"actions"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &got); err != nil {
		t.Fatalf("sdk output %q: %v", out, err)
	}
	// This openstacksdk posts server actions without a microversion, so
	// the lock reason is ignored as Nova ignores it below 2.73.
	if got.Version != "2.79" || got.PausedPower != 3 || !got.Locked || got.Flavor != "m1.tiny" {
		t.Fatalf("openstacksdk saw %+v", got)
	}
	t.Logf("openstacksdk negotiated %s; lock reason read back %q", got.Version, got.Reason)
	if want := "unlock lock unpause pause create"; strings.Join(got.Actions, " ") != want {
		t.Fatalf("server actions = %v; want %s", got.Actions, want)
	}
}
