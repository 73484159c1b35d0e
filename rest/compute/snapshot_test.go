package compute_test

import (
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestCreateImageVolumeBacked: createImage of a server booted from a
// volume makes a queued qcow2 image sized for the boot volume with the
// properties of the volume's image; while the boot volume is extending it
// answers Nova's 409 and writes nothing.
func TestCreateImageVolumeBacked(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 1, 64, map[string]string{"hw_architecture": "x86_64"}, true)
	e.b.MustApply(t, statedb.CmdCreateFlavor, statedb.Flavor{ID: "0", Name: "m1.nodisk", VCPUs: 1, RAMMB: 128, Public: true})
	id := e.createServer(e.member, map[string]any{"name": "bfv", "imageRef": "", "flavorRef": "0",
		"networks": "none", "block_device_mapping_v2": bootBDM(img, 3)})
	e.place(id, "host1", false)
	inst, _ := e.b.State().Instance(id)
	e.b.MustApply(t, statedb.CmdReportVolume, statedb.ReportVolumeCmd{VolumeID: inst.RootVolume, HostID: "host1", Status: statedb.VolumeAvailable})
	e.report(id, "host1", statedb.VMActive, statedb.PowerRunning)
	action := func(name string) (int, string) {
		r := e.member.Do("POST", api+"/servers/"+id+"/action", map[string]any{"createImage": map[string]any{"name": name}},
			"OpenStack-API-Version", "compute 2.45")
		return r.Status, string(r.Body)
	}

	e.b.MustApply(t, statedb.CmdExtendVolume, statedb.ExtendVolumeCmd{ID: inst.RootVolume, NewSizeGB: 4})
	images := len(e.b.State().Images())
	st, body := action("while-extending")
	if st != 409 || !strings.Contains(body, `"conflictingRequest"`) || !strings.Contains(body, "boot volume "+inst.RootVolume+" is extending") {
		t.Fatalf("createImage while the boot volume extends = %d %s", st, body)
	}
	if i, _ := e.b.State().Instance(id); len(e.b.State().Images()) != images || i.TaskState != "" {
		t.Fatalf("a refused createImage wrote state: %d images (was %d), task %q", len(e.b.State().Images()), images, i.TaskState)
	}
	e.b.MustApply(t, statedb.CmdReportVolume, statedb.ReportVolumeCmd{VolumeID: inst.RootVolume, HostID: "host1", Status: statedb.VolumeAvailable})

	st, body = action("bfv-snap")
	if st != 202 || !strings.Contains(body, `"image_id"`) {
		t.Fatalf("createImage of a volume-backed server = %d %s", st, body)
	}
	i, _ := e.b.State().Instance(id)
	snap, ok := e.b.State().Image(i.SnapshotImage)
	if !ok || snap.Status != statedb.ImageQueued || snap.DiskFormat != "qcow2" || snap.MinDiskGB != 4 || snap.MinRAMMB != 64 ||
		snap.Properties["base_image_ref"] != img || snap.Properties["hw_architecture"] != "x86_64" || snap.Properties["instance_uuid"] != id {
		t.Fatalf("snapshot image of a volume-backed server = %+v", snap)
	}
}
