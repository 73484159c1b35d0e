package compute_test

import (
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// bootBDM is the block device mapping of `openstack server create
// --image IMG --boot-from-volume SIZE` (OSC 6.0 sends boot_index "0").
func bootBDM(image string, size any) []map[string]any {
	return []map[string]any{{"uuid": image, "boot_index": "0", "source_type": "image", "destination_type": "volume", "volume_size": size}}
}

func TestServerBootFromNewVolume(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 1, 0, map[string]string{"hw_architecture": "x86_64"}, true)
	net := e.network(e.demo.ID, "net1", false, true)
	e.b.MustApply(t, statedb.CmdCreateFlavor, statedb.Flavor{ID: "0", Name: "m1.nodisk", VCPUs: 1, RAMMB: 128, Public: true})

	// OSC --boot-from-volume: imageRef "", a flavor without disk.
	id := e.createServer(e.member, map[string]any{"name": "bfv", "imageRef": "", "flavorRef": "0",
		"networks": []map[string]string{{"uuid": net}}, "block_device_mapping_v2": bootBDM(img, 1)})
	sn := e.b.State()
	inst, _ := sn.Instance(id)
	if inst.RootVolume == "" || inst.ImageID != "" || inst.Arch != "x86_64" || inst.VMState != statedb.VMBuilding {
		t.Fatalf("server = root %q image %q arch %q %s; want a boot volume, no image, x86_64, building", inst.RootVolume, inst.ImageID, inst.Arch, inst.VMState)
	}
	v, ok := sn.Volume(inst.RootVolume)
	if !ok {
		t.Fatalf("boot volume %s missing", inst.RootVolume)
	}
	a := v.Attachment()
	if v.Status != statedb.VolumeCreating || v.SizeGB != 1 || v.ImageID != img || !v.Bootable || v.Name != "" || v.ProjectID != e.demo.ID ||
		v.UserID != e.memberID || v.Host != "host1" || v.Path != "/vols/vol-"+v.ID+".qcow2" || v.Format != "qcow2" || v.VolumeType != "local" ||
		a == nil || a.ServerID != id || a.DeleteOnTermination {
		t.Fatalf("boot volume = %+v; want 1 GB creating from the image on host1, reserved for %s, kept on termination", v, id)
	}
	var got struct {
		Server struct {
			Image           any                 `json:"image"`
			VolumesAttached []map[string]string `json:"os-extended-volumes:volumes_attached"`
			Status          string              `json:"status"`
		} `json:"server"`
	}
	e.member.Do("GET", api+"/servers/"+id, nil).Decode(t, &got)
	if got.Server.Image != "" || len(got.Server.VolumesAttached) != 1 || got.Server.VolumesAttached[0]["id"] != v.ID || got.Server.Status != "BUILD" {
		t.Fatalf("server show = %+v; want image \"\", the boot volume attached, BUILD", got.Server)
	}

	// --image X --block-device source_type=image,uuid=X,...: novaclient
	// adds X as a local boot device too; strings for size and the flag.
	bdm := []map[string]any{
		{"uuid": img, "source_type": "image", "destination_type": "local", "boot_index": 0, "delete_on_termination": true},
		{"uuid": img, "source_type": "image", "destination_type": "volume", "volume_size": "2", "delete_on_termination": "true", "boot_index": 0},
	}
	id2 := e.createServer(e.member, map[string]any{"name": "bd", "imageRef": img, "flavorRef": "1", "max_count": 2,
		"networks": "none", "block_device_mapping_v2": bdm})
	var roots []string
	for _, inst := range e.b.State().Instances() {
		if inst.Reservation == "" || !strings.HasPrefix(inst.Name, "bd-") {
			continue
		}
		v, _ := e.b.State().Volume(inst.RootVolume)
		if v == nil || v.SizeGB != 2 || !v.Attachment().DeleteOnTermination || inst.ImageID != "" {
			t.Fatalf("server %s boot volume = %+v; want its own 2 GB volume deleted on termination", inst.ID, v)
		}
		roots = append(roots, v.ID)
	}
	if len(roots) != 2 || roots[0] == roots[1] || id2 == "" {
		t.Fatalf("max_count 2 made boot volumes %v; want two distinct", roots)
	}
}

func TestServerBootVolumeBadInput(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	minDisk := e.image(e.demo.ID, "private", 3, 0, nil, true)
	ramImg := e.image(e.demo.ID, "private", 0, 4096, nil, true)
	queued := e.image(e.demo.ID, "private", 0, 0, nil, false)
	foreign := e.image(e.other.ID, "private", 0, 0, nil, true)
	huge := e.b.NewID()
	e.b.MustApply(t, statedb.CmdCreateImage, statedb.Image{ID: huge, Name: "huge", ProjectID: e.demo.ID, Visibility: "private", DiskFormat: "qcow2", ContainerFormat: "bare"})
	e.b.MustApply(t, statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: huge, HostID: "host1"})
	e.b.MustApply(t, statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: huge, Size: 1 << 20, VirtualSize: 3 << 30,
		SHA256: strings.Repeat("0", 64), Holders: []string{"host1"}})
	missing := "6f1c9b5e-1f1a-4c55-9d83-0e8f5e0c7a11"
	e.b.MustApply(t, statedb.CmdCreateVolume, statedb.CreateVolumeCmd{Volume: statedb.Volume{ID: missing[:35] + "2", ProjectID: e.demo.ID,
		SizeGB: 1, Format: "qcow2", Host: "host1", Path: "/vols/x"}})
	e.b.MustApply(t, statedb.CmdReportVolume, statedb.ReportVolumeCmd{VolumeID: missing[:35] + "2", HostID: "host1", Status: statedb.VolumeAvailable})
	avail := missing[:35] + "2"
	body := func(bdm []map[string]any, mod ...func(m map[string]any)) map[string]any {
		m := map[string]any{"name": "vm", "imageRef": "", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": bdm}
		for _, f := range mod {
			f(m)
		}
		return map[string]any{"server": m}
	}
	with := func(k string, v any) []map[string]any {
		b := bootBDM(img, 1)
		if v == nil {
			delete(b[0], k)
		} else {
			b[0][k] = v
		}
		return b
	}
	tests := []struct {
		name string
		body map[string]any
		msg  string
	}{
		{"volume_size missing", body(with("volume_size", nil)), "volume_size is required"},
		{"volume_size 0", body(bootBDM(img, 0)), "less than the minimum of 1"},
		{"volume_size negative string", body(bootBDM(img, "-1")), "'-1' does not match '^[0-9]*$'"},
		{"volume_size negative", body(bootBDM(img, -1)), "less than the minimum of 1"},
		{"volume_size junk", body(bootBDM(img, "big")), "volume_size"},
		{"volume_size huge", body(bootBDM(img, 100000)), "greater than the maximum"},
		{"below min_disk", body(bootBDM(minDisk, 2)), "Volume is smaller than the minimum size specified in image metadata. Volume size is 2147483648 bytes, minimum size is 3221225472 bytes."},
		{"below virtual size", body(bootBDM(huge, 2)), "Volume is smaller than the image"},
		{"min_ram", body(bootBDM(ramImg, 1)), "Flavor's memory is too small"},
		{"unknown image", body(bootBDM(missing, 1)), "Image " + missing + " could not be found."},
		{"not a uuid", body(bootBDM("cirros", 1)), "Image cirros could not be found."},
		{"image not visible", body(bootBDM(foreign, 1)), "Image " + foreign + " could not be found."},
		{"image not active", body(bootBDM(queued, 1)), "is not active"},
		{"source blank", body([]map[string]any{{"boot_index": 0, "source_type": "blank", "destination_type": "volume", "volume_size": 1}}), "source_type blank is not supported"},
		{"source snapshot", body([]map[string]any{{"boot_index": "0", "uuid": missing, "source_type": "snapshot", "destination_type": "volume", "delete_on_termination": false}}), "source_type snapshot is not supported"},
		{"swap", body(append(bootBDM(img, 1), map[string]any{"boot_index": -1, "source_type": "blank", "destination_type": "local", "guest_format": "swap", "volume_size": 1})), "source_type blank is not supported"},
		{"two boot volumes", body(append(bootBDM(img, 1), bootBDM(img, 2)...)), "Boot sequence"},
		{"local image differs", body(append(bootBDM(img, 1), map[string]any{"boot_index": 0, "uuid": minDisk, "source_type": "image", "destination_type": "local"})), "Boot sequence"},
		{"imageRef differs", body(bootBDM(img, 1), func(m map[string]any) { m["imageRef"] = minDisk }), "not both"},
		{"not a boot device", body(with("boot_index", 1)), "boot_index 0"},
		{"bad delete_on_termination", body(with("delete_on_termination", "maybe")), "delete_on_termination"},
		{"unknown volume type", body(with("volume_type", "ssd")), "Volume type ssd could not be found."},
		{"unknown key", body(with("tag", "x")), "Additional properties"},
		{"existing volume twice", body([]map[string]any{{"boot_index": 0, "uuid": avail, "source_type": "volume", "destination_type": "volume"}},
			func(m map[string]any) { m["max_count"] = 2 }), "max_count must be 1"},
	}
	before := e.b.State()
	for _, tt := range tests {
		r := e.member.Do("POST", api+"/servers", tt.body)
		if r.Status != 400 {
			t.Errorf("%s: create = %d %s; want 400", tt.name, r.Status, r.Body)
			continue
		}
		if msg := errMessage(t, r, "badRequest"); !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: message %q; want it to contain %q", tt.name, msg, tt.msg)
		}
	}
	after := e.b.State()
	if len(after.Instances()) != len(before.Instances()) || len(after.Volumes()) != len(before.Volumes()) {
		t.Fatalf("failed creates left %d instances and %d volumes; want %d and %d",
			len(after.Instances()), len(after.Volumes()), len(before.Instances()), len(before.Volumes()))
	}

	// The existing volume as root: reserved, in-use at once.
	id := e.createServer(e.member, map[string]any{"name": "vol", "flavorRef": "1", "networks": "none",
		"block_device_mapping_v2": []map[string]any{{"boot_index": "0", "uuid": avail, "source_type": "volume", "destination_type": "volume", "delete_on_termination": true}}})
	v, _ := e.b.State().Volume(avail)
	if v.Status != statedb.VolumeInUse || v.Attachment() == nil || v.Attachment().ServerID != id || !v.Attachment().DeleteOnTermination {
		t.Fatalf("existing boot volume = %+v; want in-use for %s, deleted on termination", v, id)
	}
}
