package nodetest

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestQEMURescueSnapshotResize runs the day-2 actions on one host with
// real QEMU guests through the compute API: rescue boots the image with
// the root disk as vdb and unrescue boots the root disk again; a snapshot
// of the running server becomes an active image a second server boots
// from; a resize grows the root disk and a revert shrinks it back.
func TestQEMURescueSnapshotResize(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newQMEnv(t)
	n := e.c.Node(0)
	id := e.create("qemu-day2")
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	disk := func(dev string, gb int) string {
		return fmt.Sprintf("PEERSTACK-DISK %s sectors=%d", dev, (int64(gb)<<30)/512)
	}
	e.waitConsole(id, disk("vda", 1), 1)
	post := func(body map[string]any) (int, map[string]any) {
		t.Helper()
		return e.json("POST", "/compute/v2.1/servers/"+id+"/action", body)
	}

	if st, body := post(map[string]any{"rescue": nil}); st != http.StatusOK {
		t.Fatalf("rescue = %d %v", st, body)
	}
	e.waitState(id, statedb.VMRescued, statedb.PowerRunning)
	e.waitConsole(id, disk("vdb", 1), 1) // the root disk, second
	e.action(id, map[string]any{"unrescue": nil})
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(id, disk("vda", 1), 2)
	onePID(t, id)

	st, body := e.json("POST", "/compute/v2.1/servers/"+id+"/action", map[string]any{"createImage": map[string]any{"name": "day2-snap"}})
	if st != http.StatusAccepted {
		t.Fatalf("createImage = %d %v", st, body)
	}
	var snapID string
	Eventually(t, 180*time.Second, "snapshot active", func() bool {
		for _, img := range n.State().Images() {
			if img.Properties["instance_uuid"] == id {
				if img.Status == statedb.ImageKilled {
					t.Fatalf("snapshot image killed: %+v", n.State().InstanceActions(id)[0])
				}
				snapID = img.ID
				return img.Status == statedb.ImageActive
			}
		}
		return false
	})
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	img, _ := n.State().Image(snapID)
	if img.VirtualSize != 1<<30 || img.Size == 0 || img.SHA256 == "" {
		t.Fatalf("snapshot image = %+v", img)
	}
	st, body = e.json("POST", "/compute/v2.1/servers", map[string]any{"server": map[string]any{
		"name": "from-snap", "imageRef": snapID, "flavorRef": "1", "networks": "none"}})
	if st != http.StatusAccepted {
		t.Fatalf("create from the snapshot = %d %v", st, body)
	}
	copyID := body["server"].(map[string]any)["id"].(string)
	e.mu.Lock()
	e.uuids = append(e.uuids, copyID)
	e.mu.Unlock()
	e.waitState(copyID, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(copyID, "PEERSTACK-READY hostname=from-snap", 1)
	if st, body := e.json("DELETE", "/compute/v2.1/servers/"+copyID, nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %v", st, body)
	}

	if st, body := e.json("POST", "/compute/v2.1/flavors", map[string]any{"flavor": map[string]any{
		"name": "day2.grow", "id": "day2g", "vcpus": 1, "ram": 192, "disk": 2}}); st != http.StatusOK {
		t.Fatalf("flavor create = %d %v", st, body)
	}
	e.action(id, map[string]any{"resize": map[string]any{"flavorRef": "day2g"}})
	e.waitState(id, statedb.VMResized, statedb.PowerRunning)
	e.waitConsole(id, disk("vda", 2), 1)
	e.action(id, map[string]any{"revertResize": nil})
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(id, disk("vda", 1), 3)
	if inst, _ := n.State().Instance(id); inst.Flavor.ID != "1" || inst.Resize != nil {
		t.Fatalf("after revert: flavor %s, resize %+v", inst.Flavor.ID, inst.Resize)
	}
	acts := n.State().InstanceActions(id)
	var names []string
	for _, a := range acts {
		names = append(names, a.Action)
		if !a.Finished() || a.Events[0].Result != statedb.ResultSuccess {
			t.Errorf("action %s: %+v (%s)", a.Action, a.Events, a.Message)
		}
	}
	if got := strings.Join(names, " "); got != "revertResize resize createImage unrescue rescue create" {
		t.Fatalf("actions = %s", got)
	}
}
