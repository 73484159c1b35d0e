package nodetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// bfvBody is a server create that boots from a new volume of sizeGB made
// from image, as `openstack server create --boot-from-volume` sends it.
func bfvBody(name, image, network string, sizeGB int, dot bool) map[string]any {
	var networks any = "none"
	if network != "" {
		networks = []any{map[string]any{"uuid": network}}
	}
	return map[string]any{"server": map[string]any{
		"name": name, "imageRef": "", "flavorRef": "1", "networks": networks,
		"block_device_mapping_v2": []any{map[string]any{"uuid": image, "boot_index": "0", "source_type": "image",
			"destination_type": "volume", "volume_size": sizeGB, "delete_on_termination": dot}},
	}}
}

// bfv creates a server booting from a new volume through node i.
func (e *agEnv) bfv(i int, name string, dot bool) string {
	e.t.Helper()
	st, body := e.do(i, "POST", "/servers", bfvBody(name, e.image, e.net, 1, dot))
	if st != http.StatusAccepted {
		e.t.Fatalf("create %s through node %d = %d %v", name, i, st, body)
	}
	return body["server"].(map[string]any)["id"].(string)
}

// rootOf returns the boot volume of server id as node 0 sees it.
func (e *agEnv) rootOf(id string) *statedb.Volume {
	e.t.Helper()
	inst, ok := e.inst(id)
	if !ok || inst.RootVolume == "" {
		e.t.Fatalf("server %s has no boot volume (%v)", id, ok)
	}
	v, ok := e.c.Node(0).State().Volume(inst.RootVolume)
	if !ok {
		e.t.Fatalf("boot volume %s of %s missing", inst.RootVolume, id)
	}
	return v
}

// deleteServer deletes a server through node 0 and waits until it is gone
// everywhere.
func (e *agEnv) deleteServer(id string) {
	e.t.Helper()
	if st, body := e.do(0, "DELETE", "/servers/"+id, nil); st != http.StatusNoContent {
		e.t.Fatalf("delete %s = %d %v", id, st, body)
	}
	e.c.Eventually(20*time.Second, "server "+id+" gone", func() bool {
		for _, n := range e.c.Running() {
			if _, ok := n.State().Instance(id); ok {
				return false
			}
		}
		return true
	})
}

// TestBootFromVolumeFakeAgents boots servers from new volumes on a
// 3-host cluster with local storage: the server's placement chooses the
// volume's host (whichever host took the request), whose agent makes the
// volume from the image and runs the server; deleting the server keeps or
// deletes the volume per delete_on_termination.
func TestBootFromVolumeFakeAgents(t *testing.T) {
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	project, _ := e.c.Node(0).State().ProjectByName("admin")
	hostID := func(i int) string { return e.c.Node(i).ID() }

	// Kept: through node 1; the host the server is placed on makes the
	// file and runs the VM.
	id := e.bfv(1, "bfv-keep", false)
	e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	v := e.rootOf(id)
	h := e.hostOf(id)
	if h < 0 || v.Host != hostID(h) {
		t.Fatalf("server on node %d, volume on %s; want the volume on the server's host", h, v.Host)
	}
	if a := v.Attachment(); v.Status != statedb.VolumeInUse || a == nil || a.State != statedb.AttachAttached || a.HostID != hostID(h) || a.Device != statedb.RootDevice {
		t.Fatalf("boot volume = %s %+v; want in-use, attached on node %d as %s", v.Status, a, h, statedb.RootDevice)
	}
	if size, from, ok := fa.Volumes(h).File(v.Path); !ok || size != 1 || from != "/fake/images/"+e.image+".qcow2" {
		t.Fatalf("volume file on node %d = %d GB from %q (%v); want 1 GB from the image", h, size, from, ok)
	}
	vm, _ := fa.Hypervisor(h).VM(id)
	if vm.Spec.Root.Path != v.Path || vm.RootDisk != nil {
		t.Fatalf("vm root = %+v (overlay %v); want the boot volume %s", vm.Spec.Root, vm.RootDisk, v.Path)
	}
	st, show := e.do(2, "GET", "/servers/"+id, nil)
	srv, _ := show["server"].(map[string]any)
	if st != http.StatusOK || srv["image"] != "" || !strings.Contains(jsonString(srv["os-extended-volumes:volumes_attached"]), v.ID) {
		t.Fatalf("server show = %d %v; want no image and the boot volume attached", st, show)
	}
	st, vb := apiCall(t, e.c, "GET", e.c.URL(2)+"/volume/v3/"+project.ID+"/volumes/"+v.ID, e.token, "")
	vol, _ := vb["volume"].(map[string]any)
	atts, _ := vol["attachments"].([]any)
	if st != http.StatusOK || vol["status"] != "in-use" || vol["bootable"] != "true" || len(atts) != 1 ||
		atts[0].(map[string]any)["server_id"] != id || !strings.Contains(jsonString(vol["volume_image_metadata"]), e.image) {
		t.Fatalf("volume show = %d %v; want in-use, bootable, attached to %s, made from %s", st, vb, id, e.image)
	}
	e.deleteServer(id)
	waitVolume(e.c, v.ID, "available, detached", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeAvailable && len(v.Attachments) == 0
	})
	if _, _, ok := fa.Volumes(h).File(v.Path); !ok {
		t.Fatal("the kept volume's file was removed")
	}

	// Deleted on termination: through node 2.
	id = e.bfv(2, "bfv-drop", true)
	e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	v = e.rootOf(id)
	if h = e.hostOf(id); h < 0 || v.Host != hostID(h) {
		t.Fatalf("server on node %d, volume on %s; want the volume on the server's host", h, v.Host)
	}
	before := fa.Volumes(h).Calls()
	e.deleteServer(id)
	waitVolume(e.c, v.ID, "deleted", func(_ *statedb.Volume, ok bool) bool { return !ok })
	if _, _, ok := fa.Volumes(h).File(v.Path); ok {
		t.Fatal("the volume's file is still there after delete_on_termination")
	}
	if calls := fa.Volumes(h).Calls(); !slices.Contains(before, "Create:"+v.ID) || !slices.Equal(calls[len(before):], []string{"Delete:" + v.ID}) {
		t.Fatalf("volume calls on node %d = %v; want its create, then one delete", h, calls)
	}

	// The volume cannot be made: the server goes to ERROR with the cause.
	for i := range 3 {
		fa.Volumes(i).Fail("Create", errors.New("no space left on device"))
	}
	id = e.bfv(0, "bfv-fail", false)
	e.waitAll([]string{id}, "ERROR", agIs(statedb.VMError, statedb.PowerNoState))
	st, show = e.do(1, "GET", "/servers/"+id, nil)
	srv, _ = show["server"].(map[string]any)
	fault, _ := srv["fault"].(map[string]any)
	if msg, _ := fault["message"].(string); st != http.StatusOK || srv["status"] != "ERROR" || !strings.Contains(msg, "no space left on device") {
		t.Fatalf("server show = %d %v; want ERROR with the volume's failure as fault", st, show)
	}
	v = e.rootOf(id)
	if v.Status != statedb.VolumeError || fa.Hypervisor(0).Count("Start", id)+fa.Hypervisor(1).Count("Start", id)+fa.Hypervisor(2).Count("Start", id) != 0 {
		t.Fatalf("volume %s; want error and no start", v.Status)
	}
	e.deleteServer(id)
	waitVolume(e.c, v.ID, "error, detached", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeError && len(v.Attachments) == 0
	})
}

// TestBootFromVolumePlacedByScheduler: the host that takes the request
// does not decide where a boot volume on local storage lives. Through a
// disabled host (which takes no servers) a boot-from-volume server still
// lands on an enabled one, with its volume made there; created and
// deleted back to back, it leaves no volume behind.
func TestBootFromVolumePlacedByScheduler(t *testing.T) {
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	if st, body := e.do(0, "PUT", "/os-services/disable", map[string]any{"host": "host1", "binary": "nova-compute"}); st != http.StatusOK {
		t.Fatalf("disable host1 = %d %v", st, body)
	}
	e.c.Eventually(10*time.Second, "host1 disabled everywhere", func() bool {
		m, ok := e.c.Node(1).State().MemberByName("host1")
		return ok && m.Disabled
	})
	for range 3 {
		id := e.bfv(1, "bfv-away", true)
		e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
		v := e.rootOf(id)
		h := e.hostOf(id)
		if h == 1 || v.Host != e.c.Node(h).ID() || v.Status != statedb.VolumeInUse {
			t.Fatalf("server on node %d, volume %s on %s; want both on an enabled host (not node 1)", h, v.Status, v.Host)
		}
		if _, _, ok := fa.Volumes(h).File(v.Path); !ok {
			t.Fatalf("no volume file at %s on node %d", v.Path, h)
		}
		e.deleteServer(id)
		waitVolume(e.c, v.ID, "deleted with its server", func(_ *statedb.Volume, ok bool) bool { return !ok })
	}
	// Create then delete at once, before it can be placed or its volume
	// made: nothing stays behind.
	var vols []string
	for i := range 5 {
		id := e.bfv(i%3, fmt.Sprint("bfv-quick-", i), true)
		inst, ok := e.c.Node(i % 3).State().Instance(id) // the creating host applied it
		if !ok || inst.RootVolume == "" {
			t.Fatalf("server %s has no boot volume on the host that created it", id)
		}
		vols = append(vols, inst.RootVolume)
		if st, body := e.do(i%3, "DELETE", "/servers/"+id, nil); st != http.StatusNoContent {
			t.Fatalf("delete %s = %d %v", id, st, body)
		}
	}
	for _, id := range vols {
		waitVolume(e.c, id, "gone with its server", func(_ *statedb.Volume, ok bool) bool { return !ok })
	}
}

// TestBootFromVolumeOpenStackCLI drives boot from volume with the real
// openstack client through a follower: --boot-from-volume and the
// --block-device form.
func TestBootFromVolumeOpenStackCLI(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is needed (apt-get install python3-openstackclient): %v", err)
	}
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	f := e.c.Follower()
	env := e.c.OpenStackEnv(t, f)

	var srv map[string]any
	oscJSON(t, env, &srv, "server", "create", "--image", e.image, "--boot-from-volume", "1", "--flavor", "1",
		"--network", e.net, "--wait", "bfv-cli")
	id, _ := srv["id"].(string)
	if srv["status"] != "ACTIVE" || srv["image"] != "N/A (booted from volume)" {
		t.Fatalf("server create printed status %v image %v; want ACTIVE, booted from volume", srv["status"], srv["image"])
	}
	v := e.rootOf(id)
	if h := e.hostOf(id); h < 0 || v.Host != e.c.Node(h).ID() {
		t.Fatalf("volume on %s, server on node %d; want the volume on the server's host", v.Host, h)
	}
	oscJSON(t, env, &srv, "server", "show", "bfv-cli")
	if !strings.Contains(jsonString(srv["volumes_attached"]), v.ID) {
		t.Fatalf("server show volumes_attached = %v; want %s", srv["volumes_attached"], v.ID)
	}
	var vol map[string]any
	oscJSON(t, env, &vol, "volume", "show", v.ID)
	if vol["status"] != "in-use" || vol["size"] != float64(1) || vol["bootable"] != "true" ||
		!strings.Contains(jsonString(vol["attachments"]), id) {
		t.Fatalf("volume show = %v; want in-use, 1 GB, bootable, attached to %s", vol, id)
	}
	osc(t, env, "server", "delete", "--wait", "bfv-cli")
	oscJSON(t, env, &vol, "volume", "show", v.ID)
	if vol["status"] != "available" {
		t.Fatalf("volume after server delete = %v; want available (not deleted on termination)", vol["status"])
	}
	osc(t, env, "volume", "delete", v.ID)
	waitVolume(e.c, v.ID, "deleted", func(_ *statedb.Volume, ok bool) bool { return !ok })

	oscJSON(t, env, &srv, "server", "create", "--image", e.image, "--flavor", "1", "--network", e.net, "--wait",
		"--block-device", "source_type=image,uuid="+e.image+",destination_type=volume,volume_size=2,delete_on_termination=true,boot_index=0",
		"bd-cli")
	id, _ = srv["id"].(string)
	v = e.rootOf(id)
	if srv["status"] != "ACTIVE" || v.SizeGB != 2 || !v.Attachment().DeleteOnTermination {
		t.Fatalf("server %v with boot volume %+v; want ACTIVE on a 2 GB volume deleted on termination", srv["status"], v)
	}
	osc(t, env, "server", "delete", "--wait", "bd-cli")
	waitVolume(e.c, v.ID, "deleted with its server", func(_ *statedb.Volume, ok bool) bool { return !ok })
}

// TestQEMUBootFromVolume boots the repo's guest image in real QEMU from a
// volume made from it, and deletes both.
func TestQEMUBootFromVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newQMEnv(t)
	st, body := e.json("POST", "/compute/v2.1/servers", bfvBody("qemu-bfv", e.image, "", 1, true))
	if st != http.StatusAccepted {
		t.Fatalf("create = %d %v", st, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	e.mu.Lock()
	e.uuids = append(e.uuids, id)
	e.mu.Unlock()
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(id, "PEERSTACK-BOOT hostname=qemu-bfv uuid="+id, 1)
	inst, _ := e.c.Node(0).State().Instance(id)
	v, ok := e.c.Node(0).State().Volume(inst.RootVolume)
	if !ok || v.Status != statedb.VolumeInUse {
		t.Fatalf("boot volume %s = %+v; want in-use", inst.RootVolume, v)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(onePID(t, id)) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), v.Path) {
		t.Fatalf("QEMU command line (%v) does not open the boot volume %s:\n%s", err, v.Path, strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	if st, body := e.json("DELETE", "/compute/v2.1/servers/"+id, nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %v", st, body)
	}
	Eventually(t, 60*time.Second, "server and boot volume gone", func() bool {
		sn := e.c.Node(0).State()
		_, inst := sn.Instance(id)
		_, vol := sn.Volume(v.ID)
		return !inst && !vol
	})
	if _, err := os.Stat(v.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("boot volume file after delete: %v; want removed", err)
	}
}

// jsonString is v as JSON, for looking for an id in a nested value.
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestAttachDeleteOnTerminationCLI: `openstack server add volume --tag
// --enable-delete-on-termination` at microversion 2.79 through a follower;
// the volume shows both and goes with its server.
func TestAttachDeleteOnTerminationCLI(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is needed (apt-get install python3-openstackclient): %v", err)
	}
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	f := e.c.Follower()
	env := append(e.c.OpenStackEnv(t, f), "OS_COMPUTE_API_VERSION=2.79")
	onlyHost(t, e.c, f) // local storage: server and volumes on one host

	var srv, vol map[string]any
	oscJSON(t, env, &srv, "server", "create", "--image", e.image, "--flavor", "1", "--network", e.net, "--wait", "dot-cli")
	keep := map[string]string{}
	for _, name := range []string{"goes", "stays"} {
		oscJSON(t, env, &vol, "volume", "create", "--size", "1", name)
		keep[name], _ = vol["id"].(string)
		waitVolume(e.c, keep[name], name+" available", func(v *statedb.Volume, ok bool) bool {
			return ok && v.Status == statedb.VolumeAvailable
		})
	}
	var att map[string]any
	oscJSON(t, env, &att, "server", "add", "volume", "--tag", "data", "--enable-delete-on-termination", "dot-cli", "goes")
	if att["Tag"] != "data" || att["Delete On Termination"] != true {
		t.Fatalf("server add volume printed %v; want tag data, delete on termination", att)
	}
	osc(t, env, "server", "add", "volume", "dot-cli", "stays")
	for _, id := range keep {
		waitVolume(e.c, id, "in-use", func(v *statedb.Volume, ok bool) bool { return ok && v.Status == statedb.VolumeInUse })
	}
	var list []map[string]any
	oscJSON(t, env, &list, "server", "volume", "list", "dot-cli")
	if len(list) != 2 {
		t.Fatalf("server volume list = %v; want two", list)
	}
	osc(t, env, "server", "delete", "--wait", "dot-cli")
	waitVolume(e.c, keep["goes"], "deleted with its server", func(_ *statedb.Volume, ok bool) bool { return !ok })
	waitVolume(e.c, keep["stays"], "available", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeAvailable && len(v.Attachments) == 0
	})
}
