package nodetest

import (
	"encoding/base64"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestQEMUBootVolumeSnapshot snapshots a running server booted from a
// volume, with a real QEMU guest: the guest writes a marker to its disk,
// the image is made while it runs on (same QEMU process), and a new
// server booted from the image reads the marker back.
func TestQEMUBootVolumeSnapshot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newQMEnv(t)
	n := e.c.Node(0)
	create := func(body map[string]any) string {
		t.Helper()
		st, out := e.json("POST", "/compute/v2.1/servers", map[string]any{"server": body})
		if st != http.StatusAccepted {
			t.Fatalf("create %v = %d %v", body["name"], st, out)
		}
		id := out["server"].(map[string]any)["id"].(string)
		e.mu.Lock()
		e.uuids = append(e.uuids, id)
		e.mu.Unlock()
		return id
	}
	ud := func(s string) string { return base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\n" + s)) }

	// 900 MiB into the 1 GiB disk: past the image's own data.
	id := create(map[string]any{"name": "vsrc", "imageRef": "", "flavorRef": "1", "networks": "none",
		"user_data": ud("printf PS-MARK-%s $(hostname) | dd of=/dev/vda bs=1M seek=900 conv=fsync\n"),
		"block_device_mapping_v2": []any{map[string]any{"uuid": e.image, "boot_index": 0, "source_type": "image",
			"destination_type": "volume", "volume_size": 1, "delete_on_termination": true}}})
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(id, "PEERSTACK-USERDATA-DONE rc=0", 1)
	pid := onePID(t, id)

	st, body := e.json("POST", "/compute/v2.1/servers/"+id+"/action", map[string]any{"createImage": map[string]any{"name": "vsnap"}})
	if st != http.StatusAccepted {
		t.Fatalf("createImage of a volume-backed server = %d %v", st, body)
	}
	var img *statedb.Image
	Eventually(t, 180*time.Second, "snapshot image active", func() bool {
		for _, im := range n.State().Images() {
			if im.Properties["instance_uuid"] == id {
				if im.Status == statedb.ImageKilled {
					t.Fatalf("snapshot image killed: %+v", n.State().InstanceActions(id)[0])
				}
				img = im
				return im.Status == statedb.ImageActive
			}
		}
		return false
	})
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	if got := onePID(t, id); got != pid {
		t.Fatalf("QEMU pid %d after the snapshot, was %d: the guest did not run on", got, pid)
	}
	if img.VirtualSize != 1<<30 || img.Size == 0 || img.MinDiskGB != 1 || img.DiskFormat != "qcow2" {
		t.Fatalf("snapshot image = %+v", img)
	}

	copyID := create(map[string]any{"name": "vcopy", "imageRef": img.ID, "flavorRef": "1", "networks": "none",
		"user_data": ud("echo READ-$(dd if=/dev/vda bs=1M skip=900 count=1 2>/dev/null | head -c 12)\n")})
	e.waitState(copyID, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(copyID, "READ-PS-MARK-vsrc", 1)
	for _, s := range []string{copyID, id} {
		if st, body := e.json("DELETE", "/compute/v2.1/servers/"+s, nil); st != http.StatusNoContent {
			t.Fatalf("delete = %d %v", st, body)
		}
	}
}
