package nodetest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// fakeVM finds the fake VM of a server on any host.
func (f *FakeAgents) fakeVM(c *Cluster, id string) (agenttest.VM, bool) {
	for i := 0; i < c.Len(); i++ {
		if v, ok := f.Hypervisor(i).VM(id); ok {
			return v, true
		}
	}
	return agenttest.VM{}, false
}

// TestComputeRescueSnapshotCLI runs rescue/unrescue and server image
// create with the real openstack client, at 2.1 and 2.79: the states it
// waits on, Nova's refusals, the snapshot image's life (queued → saving
// → active) and a server booted from the snapshot.
func TestComputeRescueSnapshotCLI(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 3, Options{Agent: fa.Options})
	f := c.Follower()
	base := newCPCLI(t, c, f)
	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var image, other map[string]any
	base.json(&image, "image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare",
		"--property", "hw_architecture=x86_64", "--public", "r-img")
	base.json(&other, "image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "--public", "r-rescue")
	imageID, rescueID := fmt.Sprint(image["id"]), fmt.Sprint(other["id"])

	for _, mv := range []string{"2.1", "2.79"} {
		t.Run(mv, func(t *testing.T) {
			o := &cpCLI{t: t, env: append(append([]string{}, base.env...), "OS_COMPUTE_API_VERSION="+mv)}
			name := "rvm-" + strings.ReplaceAll(mv, ".", "")
			var server map[string]any
			o.json(&server, "server", "create", "--flavor", "m1.tiny", "--image", imageID, "--wait", name)
			id := fmt.Sprint(server["id"])
			status := func() string {
				var s map[string]any
				o.json(&s, "server", "show", id)
				return fmt.Sprint(s["status"])
			}
			waitStatus := func(want string) {
				t.Helper()
				c.Eventually(30*time.Second, name+" "+want, func() bool { return status() == want })
			}

			o.run("server", "rescue", id)
			waitStatus("RESCUE")
			if v, ok := fa.fakeVM(c, id); !ok || v.Rescue == nil || !strings.Contains(v.Rescue.Path, imageID) {
				t.Fatalf("fake vm after rescue = %+v, %v; want booted from image %s", v, ok, imageID)
			}
			if e := o.fail("server", "rescue", id); !strings.Contains(e, "Cannot 'rescue' instance "+id+" while it is in vm_state rescued") {
				t.Fatalf("rescue of a rescued server: %s", e)
			}
			if e := o.fail("server", "image", "create", "--name", "nope", id); !strings.Contains(e, "vm_state rescued") {
				t.Fatalf("snapshot of a rescued server: %s", e)
			}
			o.run("server", "unrescue", id)
			waitStatus("ACTIVE")
			if v, _ := fa.fakeVM(c, id); v.Rescue != nil {
				t.Fatalf("fake vm after unrescue still rescued: %+v", v)
			}
			if e := o.fail("server", "unrescue", id); !strings.Contains(e, "Cannot 'unrescue' instance "+id+" while it is in vm_state active") {
				t.Fatalf("unrescue of an active server: %s", e)
			}
			o.run("server", "stop", id)
			waitStatus("SHUTOFF")
			o.run("server", "rescue", "--image", rescueID, id)
			waitStatus("RESCUE")
			if v, _ := fa.fakeVM(c, id); v.Rescue == nil || !strings.Contains(v.Rescue.Path, rescueID) {
				t.Fatalf("fake vm after rescue --image = %+v; want booted from %s", v, rescueID)
			}
			o.run("server", "unrescue", id)
			waitStatus("ACTIVE")

			var snap map[string]any
			o.json(&snap, "server", "image", "create", "--name", "snap-"+name, "--wait", id)
			snapID := fmt.Sprint(snap["id"])
			var shown map[string]any
			o.json(&shown, "image", "show", snapID)
			props := fmt.Sprint(shown["properties"])
			if shown["status"] != "active" || shown["disk_format"] != "qcow2" || shown["visibility"] != "private" ||
				!strings.Contains(props, "image_type") || !strings.Contains(props, id) || !strings.Contains(props, "hw_architecture") {
				t.Fatalf("snapshot image = %v", shown)
			}
			if st := status(); st != "ACTIVE" {
				t.Fatalf("server after its snapshot = %s", st)
			}
			var fromSnap map[string]any
			o.json(&fromSnap, "server", "create", "--flavor", "m1.tiny", "--image", snapID, "--wait", name+"-copy")
			if fromSnap["status"] != "ACTIVE" {
				t.Fatalf("server from the snapshot = %v", fromSnap)
			}

			var events []map[string]any
			o.json(&events, "server", "event", "list", id)
			var actions []string
			for _, e := range events {
				actions = append(actions, fmt.Sprint(e["Action"]))
			}
			if want := "createImage unrescue rescue stop unrescue rescue create"; strings.Join(actions, " ") != want {
				t.Fatalf("server event list actions = %v; want %s", actions, want)
			}
			o.run("server", "delete", "--wait", id, name+"-copy")
		})
	}
}

// TestComputeRescueBackToBack sends the next request as soon as the
// previous one is accepted: rescue then delete, snapshot then delete,
// rescue then unrescue at once (refused while rescuing), and checks that
// nothing is left in a transitional state.
func TestComputeRescueBackToBack(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	ctx := t.Context()
	n := c.Node(0)
	imageID := cpSeedImage(ctx, t, n)
	api := newCPAPI(t, c)
	boot := func(name string) string {
		t.Helper()
		id, err := api.createServer(0, map[string]any{"name": name, "imageRef": imageID, "flavorRef": "1"})
		if err != nil {
			t.Fatal(err)
		}
		c.Eventually(30*time.Second, name+" active", func() bool {
			i, ok := n.State().Instance(id)
			return ok && i.VMState == statedb.VMActive && i.TaskState == ""
		})
		return id
	}
	action := func(id string, body any) (int, map[string]any) {
		t.Helper()
		return api.do(0, "POST", "/servers/"+id+"/action", body)
	}
	gone := func(id string) {
		t.Helper()
		c.Eventually(30*time.Second, id+" gone", func() bool {
			_, ok := n.State().Instance(id)
			_, vm := fa.fakeVM(c, id)
			return !ok && !vm
		})
	}

	a := boot("b2b-rescue")
	if st, body := action(a, map[string]any{"rescue": map[string]any{"rescue_image_ref": "not-a-uuid"}}); st != http.StatusBadRequest {
		t.Fatalf("rescue with a bad image ref = %d %v", st, body)
	}
	if st, body := action(a, map[string]any{"rescue": map[string]any{"bogus": 1}}); st != http.StatusBadRequest {
		t.Fatalf("rescue with an unknown field = %d %v", st, body)
	}
	if st, body := action(a, map[string]any{"rescue": map[string]any{"adminPass": "pw"}}); st != http.StatusOK || body["adminPass"] != "pw" {
		t.Fatalf("rescue = %d %v", st, body)
	}
	// Right behind the rescue: refused while it runs, else accepted.
	switch st, body := action(a, map[string]any{"unrescue": nil}); {
	case st == http.StatusConflict && strings.Contains(fmt.Sprint(body), "task_state rescuing"):
	case st == http.StatusAccepted:
	default:
		t.Fatalf("unrescue right after rescue = %d %v", st, body)
	}
	if st, body := api.do(0, "DELETE", "/servers/"+a, nil); st != http.StatusNoContent {
		t.Fatalf("delete while rescuing = %d %v", st, body)
	}
	gone(a)
	if acts := n.State().InstanceActions(a); len(acts) < 3 || acts[0].Action != "delete" || !acts[0].Finished() {
		t.Fatalf("history of the deleted server = %+v; want delete, rescue, create, all ended", acts)
	}

	b := boot("b2b-snap")
	st, body := action(b, map[string]any{"createImage": map[string]any{"name": "b2b", "metadata": map[string]any{"k": "v"}}})
	if st != http.StatusAccepted {
		t.Fatalf("createImage = %d %v", st, body)
	}
	switch st, body := action(b, map[string]any{"createImage": map[string]any{"name": "again"}}); {
	case st == http.StatusConflict && strings.Contains(fmt.Sprint(body), "task_state image_snapshot"):
	case st == http.StatusAccepted:
	default:
		t.Fatalf("createImage right after createImage = %d %v", st, body)
	}
	if st, body := api.do(0, "DELETE", "/servers/"+b, nil); st != http.StatusNoContent {
		t.Fatalf("delete while snapshotting = %d %v", st, body)
	}
	gone(b)
	for _, img := range n.State().Images() {
		if img.Properties["instance_uuid"] == b && img.Status != statedb.ImageActive && img.Status != statedb.ImageKilled &&
			img.Status != statedb.ImageQueued {
			t.Fatalf("snapshot image of a deleted server left %s", img.Status)
		}
	}

	d := boot("b2b-both")
	if st, body := action(d, map[string]any{"rescue": nil}); st != http.StatusOK {
		t.Fatalf("rescue = %d %v", st, body)
	}
	c.Eventually(30*time.Second, "rescued", func() bool {
		i, _ := n.State().Instance(d)
		return i.VMState == statedb.VMRescued && i.TaskState == ""
	})
	if st, body := action(d, map[string]any{"unrescue": nil}); st != http.StatusAccepted {
		t.Fatalf("unrescue = %d %v", st, body)
	}
	switch st, body := action(d, map[string]any{"createImage": map[string]any{"name": "x"}}); {
	case st == http.StatusConflict && strings.Contains(fmt.Sprint(body), "task_state unrescuing"):
	case st == http.StatusAccepted:
	default:
		t.Fatalf("createImage right after unrescue = %d %v", st, body)
	}
	c.Eventually(30*time.Second, "unrescued", func() bool {
		i, _ := n.State().Instance(d)
		return i.VMState == statedb.VMActive && i.TaskState == "" && i.PowerState == statedb.PowerRunning
	})
	for _, a := range n.State().InstanceActions(d) {
		if !a.Finished() || a.Events[0].Result != statedb.ResultSuccess {
			t.Fatalf("action %s left %+v", a.Action, a.Events)
		}
	}
}
