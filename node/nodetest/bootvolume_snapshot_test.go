package nodetest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// sdkVolumeSnapshotScript snapshots a volume-backed server with
// openstacksdk's cloud layer (create_image_snapshot with wait) and boots a
// server from the image on a new volume (create_server with
// boot_from_volume and wait); it prints what it saw as JSON.
const sdkVolumeSnapshotScript = `
import json, sys, openstack
conn = openstack.connect(cloud="peerstack")
srv_id, net_id = sys.argv[1], sys.argv[2]
snap = conn.create_image_snapshot("sdk-bfv-snap", srv_id, wait=True, timeout=60)
snap = conn.image.get_image(snap.id)
copy = conn.create_server("sdk-bfv-copy", image=snap.id, flavor="m1.tiny", boot_from_volume=True, volume_size=1,
                          network=net_id, auto_ip=False, wait=True, timeout=60)
vols = [v["id"] for v in (copy.volumes or [])]
conn.delete_server(copy.id, wait=True, timeout=60)
print(json.dumps({"id": snap.id, "status": snap.status, "disk_format": snap.disk_format, "min_disk": snap.min_disk,
                  "props": snap.properties or {}, "instance_uuid": snap.instance_uuid,
                  "copy_status": copy.status, "copy_volumes": vols}))
`

// TestBootVolumeSnapshotClients snapshots a server booted from a volume
// with the real openstack client and with openstacksdk: the image is a
// private qcow2 copy of the boot volume, sized for it (min_disk), with
// Nova's snapshot properties; a server boots from it on a local disk and
// on a new volume made from it; deleting the image leaves the server and
// its boot volume as they were.
func TestBootVolumeSnapshotClients(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is needed (apt-get install python3-openstackclient): %v", err)
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import openstack").Run(); err != nil {
		t.Fatalf("openstacksdk is required (python3-openstacksdk): %v", err)
	}
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	env := e.c.OpenStackEnv(t, e.c.Follower())

	var srv map[string]any
	oscJSON(t, env, &srv, "server", "create", "--image", e.image, "--boot-from-volume", "1", "--flavor", "1",
		"--network", e.net, "--wait", "bfv-snap")
	id, _ := srv["id"].(string)
	root := e.rootOf(id)

	var snap map[string]any
	oscJSON(t, env, &snap, "server", "image", "create", "--name", "bfv-img", "--wait", id)
	snapID, _ := snap["id"].(string)
	var shown map[string]any
	oscJSON(t, env, &shown, "image", "show", snapID)
	props := jsonString(shown["properties"])
	if shown["status"] != "active" || shown["disk_format"] != "qcow2" || shown["visibility"] != "private" || shown["min_disk"] != float64(1) ||
		!strings.Contains(props, `"image_type":"snapshot"`) || !strings.Contains(props, `"instance_uuid":"`+id+`"`) ||
		!strings.Contains(props, `"base_image_ref":"`+e.image+`"`) {
		t.Fatalf("snapshot image of a volume-backed server = %v", shown)
	}
	if !fa.snapshotted(e.c, id, snapID) {
		t.Fatalf("no host's hypervisor copied the root disk of %s into %s", id, snapID)
	}
	oscJSON(t, env, &srv, "server", "show", id)
	if srv["status"] != "ACTIVE" || srv["OS-EXT-STS:task_state"] != nil {
		t.Fatalf("server after its snapshot = %v / %v; want ACTIVE, no task", srv["status"], srv["OS-EXT-STS:task_state"])
	}

	// The image boots: on a local disk, and on a new volume made from it.
	oscJSON(t, env, &srv, "server", "create", "--image", snapID, "--flavor", "1", "--network", e.net, "--wait", "from-img")
	if srv["status"] != "ACTIVE" {
		t.Fatalf("server from the snapshot = %v", srv["status"])
	}
	oscJSON(t, env, &srv, "server", "create", "--image", snapID, "--boot-from-volume", "1", "--flavor", "1",
		"--network", e.net, "--wait", "from-img-bfv")
	copyID, _ := srv["id"].(string)
	if v := e.rootOf(copyID); srv["status"] != "ACTIVE" || v.ImageID != snapID || v.ID == root.ID {
		t.Fatalf("server on a volume from the snapshot = %v on %+v", srv["status"], v)
	}
	osc(t, env, "server", "delete", "--wait", "from-img", "from-img-bfv")

	// Deleting the image touches neither the server nor its boot volume.
	osc(t, env, "image", "delete", snapID)
	if v := e.rootOf(id); v.Status != statedb.VolumeInUse || v.ID != root.ID {
		t.Fatalf("boot volume after the image's delete = %+v", v)
	}

	// openstacksdk's cloud layer, at the version it negotiates.
	out := runClient(t, env, "/usr/bin/python3", "-c", sdkVolumeSnapshotScript, id, e.net)
	var got struct {
		Status       string            `json:"status"`
		DiskFormat   string            `json:"disk_format"`
		MinDisk      int               `json:"min_disk"`
		Props        map[string]string `json:"props"`
		InstanceUUID string            `json:"instance_uuid"`
		CopyStatus   string            `json:"copy_status"`
		CopyVolumes  []string          `json:"copy_volumes"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &got); err != nil {
		t.Fatalf("sdk output %q: %v", out, err)
	}
	if got.Status != "active" || got.MinDisk != 1 || got.Props["image_type"] != "snapshot" || got.InstanceUUID != id || got.DiskFormat != "qcow2" ||
		got.CopyStatus != "ACTIVE" || len(got.CopyVolumes) != 1 {
		t.Fatalf("openstacksdk saw %+v", got)
	}
	osc(t, env, "server", "delete", "--wait", id)
}

// snapshotted reports whether some host's fake hypervisor copied server
// id's root disk for image.
func (f *FakeAgents) snapshotted(c *Cluster, id, image string) bool {
	for i := 0; i < c.Len(); i++ {
		for _, call := range f.Hypervisor(i).Calls() {
			if call.Op == "SnapshotRoot" && call.ID == id && call.Arg == image {
				return true
			}
		}
	}
	return false
}

// TestBootVolumeSnapshotGophercloud snapshots a volume-backed server
// through gophercloud v2's own packages at 2.1 (the image id from
// Location) and 2.79 (from the body), and boots a server on a new volume
// made from the image.
func TestBootVolumeSnapshotGophercloud(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	ctx := t.Context()
	img := cpSeedImage(ctx, t, c.Node(0))
	cc := cpGophercloud(ctx, t, c, 0)
	bootFrom := func(image string) []servers.BlockDevice {
		return []servers.BlockDevice{{UUID: image, SourceType: servers.SourceImage, DestinationType: servers.DestinationVolume,
			VolumeSize: 1, BootIndex: 0, DeleteOnTermination: true}}
	}
	for _, mv := range []string{"", "2.79"} {
		cc.Microversion = mv
		active := func(id string) {
			t.Helper()
			c.Eventually(20*time.Second, mv+" server "+id+" ACTIVE", func() bool {
				s, err := servers.Get(ctx, cc, id).Extract()
				return err == nil && s.Status == "ACTIVE" && s.TaskState == ""
			})
		}
		srv, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "gcv-" + mv, FlavorRef: "1", Networks: "none",
			BlockDevice: bootFrom(img)}, nil).Extract()
		if err != nil {
			t.Fatalf("%s: servers.Create on a volume: %v", mv, err)
		}
		active(srv.ID)
		imageID, err := servers.CreateImage(ctx, cc, srv.ID, servers.CreateImageOpts{Name: "gcv-snap"}).ExtractImageID()
		if err != nil || imageID == "" {
			t.Fatalf("%s: CreateImage of a volume-backed server = %q, %v", mv, imageID, err)
		}
		c.Eventually(20*time.Second, "snapshot active", func() bool {
			i, ok := c.Node(0).State().Image(imageID)
			return ok && i.Status == statedb.ImageActive && i.MinDiskGB == 1 && i.Properties["base_image_ref"] == img
		})
		active(srv.ID)
		cp, err := servers.Create(ctx, cc, servers.CreateOpts{Name: "gcv-copy-" + mv, FlavorRef: "1", Networks: "none",
			BlockDevice: bootFrom(imageID)}, nil).Extract()
		if err != nil {
			t.Fatalf("%s: servers.Create from the snapshot: %v", mv, err)
		}
		active(cp.ID)
		in, _ := c.Node(0).State().Instance(cp.ID)
		if v, ok := c.Node(0).State().Volume(in.RootVolume); !ok || v.ImageID != imageID {
			t.Fatalf("%s: boot volume of the copy = %+v; want one made from %s", mv, v, imageID)
		}
		for _, id := range []string{cp.ID, srv.ID} {
			if err := servers.Delete(ctx, cc, id).ExtractErr(); err != nil {
				t.Fatalf("%s: Delete: %v", mv, err)
			}
		}
	}
}
