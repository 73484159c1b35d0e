package nodetest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// sdkSnapshotResizeScript runs openstacksdk's snapshot, resize and rescue
// flows: the cloud layer's create_image_snapshot with wait, the compute
// proxy's resize, confirm and revert, rescue and unrescue; it prints what
// it saw as JSON.
const sdkSnapshotResizeScript = `
import json, sys, time, openstack
conn = openstack.connect(cloud="peerstack")
img = conn.image.find_image(sys.argv[1])
tiny = conn.compute.find_flavor("m1.tiny")
big = conn.compute.find_flavor("sdk.big")
net = conn.create_network("sdk2net")
conn.create_subnet(net.id, cidr="10.8.0.0/24", ip_version=4)
srv = conn.create_server("sdk2vm", image=img.id, flavor=tiny.id, auto_ip=False, wait=True, timeout=60)
def wait(status):
    deadline = time.time() + 30
    while time.time() < deadline:
        s = conn.compute.get_server(srv.id)
        if s.status == status:
            return s
        time.sleep(0.2)
    raise SystemExit("server never reached " + status + ", is " + s.status)
snap = conn.create_image_snapshot("sdk-snap", srv.id, wait=True, timeout=60)
snap = conn.image.get_image(snap.id)
conn.compute.resize_server(srv, big.id)
wait("VERIFY_RESIZE")
conn.compute.revert_server_resize(srv)
reverted = wait("ACTIVE")
conn.compute.resize_server(srv, big.id)
wait("VERIFY_RESIZE")
conn.compute.confirm_server_resize(srv)
confirmed = wait("ACTIVE")
conn.compute.rescue_server(srv)
wait("RESCUE")
conn.compute.unrescue_server(srv)
wait("ACTIVE")
actions = [a["action"] for a in conn.compute.get("/servers/%s/os-instance-actions" % srv.id).json()["instanceActions"]]
conn.delete_server(srv.id, wait=True, timeout=60)
print(json.dumps({"snap_status": snap.status, "snap_type": (snap.properties or {}).get("image_type", ""),
                  "reverted": reverted.flavor.name, "confirmed": confirmed.flavor.name, "actions": actions}))
`

// TestComputeSnapshotResizeOpenStackSDK runs snapshot, resize and rescue
// through openstacksdk at the microversion it negotiates (2.79).
func TestComputeSnapshotResizeOpenStackSDK(t *testing.T) {
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
	o.run("image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "--public", "sdk2-img")
	o.run("flavor", "create", "--vcpus", "2", "--ram", "256", "--disk", "2", "sdk.big")
	out := runClient(t, o.env, "/usr/bin/python3", "-c", sdkSnapshotResizeScript, "sdk2-img")
	var got struct {
		SnapStatus string   `json:"snap_status"`
		SnapType   string   `json:"snap_type"`
		Reverted   string   `json:"reverted"`
		Confirmed  string   `json:"confirmed"`
		Actions    []string `json:"actions"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &got); err != nil {
		t.Fatalf("sdk output %q: %v", out, err)
	}
	if got.SnapStatus != "active" || got.SnapType != "snapshot" || got.Reverted != "m1.tiny" || got.Confirmed != "sdk.big" {
		t.Fatalf("openstacksdk saw %+v", got)
	}
	want := []string{"unrescue", "rescue", "confirmResize", "resize", "revertResize", "resize", "createImage", "create"}
	if len(got.Actions) != len(want) {
		t.Fatalf("actions = %v; want %v", got.Actions, want)
	}
	for i := range want {
		if got.Actions[i] != want[i] {
			t.Fatalf("actions = %v; want %v", got.Actions, want)
		}
	}
}
