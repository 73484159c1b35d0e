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
)

// TestComputeResizeCLI resizes with the real openstack client at 2.1 and
// 2.79: resize to a bigger flavor, confirm; resize again, revert; and
// Nova's refusals (same flavor, a smaller disk, confirm without a resize).
func TestComputeResizeCLI(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	base := newCPCLI(t, c, 0)
	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var image map[string]any
	base.json(&image, "image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "--public", "z-img")
	base.run("flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "2", "z.medium")
	n := c.Node(0)

	for _, mv := range []string{"2.1", "2.79"} {
		t.Run(mv, func(t *testing.T) {
			o := &cpCLI{t: t, env: append(append([]string{}, base.env...), "OS_COMPUTE_API_VERSION="+mv)}
			name := "zvm-" + strings.ReplaceAll(mv, ".", "")
			var server map[string]any
			o.json(&server, "server", "create", "--flavor", "m1.tiny", "--image", fmt.Sprint(image["id"]), "--wait", name)
			id := fmt.Sprint(server["id"])
			show := func() map[string]any {
				var s map[string]any
				o.json(&s, "server", "show", id)
				return s
			}
			waitStatus := func(want string) {
				t.Helper()
				c.Eventually(30*time.Second, name+" "+want, func() bool { return show()["status"] == want })
			}
			flavorName := func() string {
				s := show()
				if f, ok := s["flavor"].(map[string]any); ok {
					return fmt.Sprint(f["original_name"])
				}
				return fmt.Sprint(s["flavor"])
			}
			if e := o.fail("server", "resize", "--flavor", "m1.tiny", id); !strings.Contains(e, "When resizing, instances must change flavor!") {
				t.Fatalf("resize to the same flavor: %s", e)
			}
			if e := o.fail("server", "resize", "confirm", id); !strings.Contains(e, "vm_state active") {
				t.Fatalf("confirm without a resize: %s", e)
			}
			o.run("server", "resize", "--flavor", "z.medium", "--wait", id)
			waitStatus("VERIFY_RESIZE")
			inst, _ := n.State().Instance(id)
			if inst.Flavor.Name != "z.medium" || inst.Claim().RAMMB != 128+256 {
				t.Fatalf("resized instance: flavor %s, claim %+v; want z.medium claiming both flavors", inst.Flavor.Name, inst.Claim())
			}
			if v, _ := fa.fakeVM(c, id); v.RootGB != 2 || !v.ResizeKept || v.State != "running" {
				t.Fatalf("fake vm after resize = %+v", v)
			}
			o.run("server", "resize", "confirm", id)
			waitStatus("ACTIVE")
			if !strings.Contains(flavorName(), "z.medium") {
				t.Fatalf("flavor after confirm = %s", flavorName())
			}
			if inst, _ := n.State().Instance(id); inst.Resize != nil || inst.Claim().RAMMB != 256 {
				t.Fatalf("instance after confirm keeps its resize: %+v", inst.Resize)
			}
			if e := o.fail("server", "resize", "--flavor", "m1.tiny", id); !strings.Contains(e, "Unable to resize disk down") {
				t.Fatalf("resize to a smaller disk: %s", e)
			}

			o.run("flavor", "create", "--vcpus", "2", "--ram", "256", "--disk", "3", "z.large-"+name)
			o.run("server", "resize", "--flavor", "z.large-"+name, "--wait", id)
			waitStatus("VERIFY_RESIZE")
			o.run("server", "resize", "revert", id)
			waitStatus("ACTIVE")
			if !strings.Contains(flavorName(), "z.medium") {
				t.Fatalf("flavor after revert = %s", flavorName())
			}
			if v, _ := fa.fakeVM(c, id); v.ResizeKept || v.State != "running" || v.Spec.VCPUs != 1 {
				t.Fatalf("fake vm after revert = %+v", v)
			}

			var events []map[string]any
			o.json(&events, "server", "event", "list", id)
			var actions []string
			for _, e := range events {
				actions = append(actions, fmt.Sprint(e["Action"]))
			}
			if want := "revertResize resize confirmResize resize create"; strings.Join(actions, " ") != want {
				t.Fatalf("server event list actions = %v; want %s", actions, want)
			}
			o.run("server", "delete", "--wait", id)
		})
	}
}

// TestComputeResizeBackToBack reverts right behind the resize request,
// resizes a stopped server (it stays off), and deletes a server in
// VERIFY_RESIZE; string and number flavorRef forms are both taken.
func TestComputeResizeBackToBack(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	n := c.Node(0)
	imageID := cpSeedImage(t.Context(), t, n)
	api := newCPAPI(t, c)
	boot := func(name string) string {
		t.Helper()
		id, err := api.createServer(0, map[string]any{"name": name, "imageRef": imageID, "flavorRef": 1})
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
	settled := func(id, vmState string) *statedb.Instance {
		t.Helper()
		var got *statedb.Instance
		c.Eventually(30*time.Second, id+" "+vmState, func() bool {
			got, _ = n.State().Instance(id)
			return got != nil && got.VMState == vmState && got.TaskState == ""
		})
		return got
	}

	a := boot("rb-a")
	for _, bad := range []any{map[string]any{}, map[string]any{"flavorRef": ""}, map[string]any{"flavorRef": true},
		map[string]any{"flavorRef": "2", "extra": 1}, map[string]any{"flavorRef": "nope"}} {
		if st, body := action(a, map[string]any{"resize": bad}); st != http.StatusBadRequest {
			t.Fatalf("resize %v = %d %v; want 400", bad, st, body)
		}
	}
	if st, body := action(a, map[string]any{"resize": map[string]any{"flavorRef": 2}}); st != http.StatusAccepted {
		t.Fatalf("resize (number flavorRef) = %d %v", st, body)
	}
	switch st, body := action(a, map[string]any{"revertResize": nil}); {
	case st == http.StatusConflict && strings.Contains(fmt.Sprint(body), "resize_prep"):
		settled(a, statedb.VMResized)
		if st, body := action(a, map[string]any{"revertResize": nil}); st != http.StatusAccepted {
			t.Fatalf("revertResize = %d %v", st, body)
		}
	case st == http.StatusAccepted:
	default:
		t.Fatalf("revertResize right after resize = %d %v", st, body)
	}
	if got := settled(a, statedb.VMActive); got.Flavor.ID != "1" || got.Resize != nil || got.PowerState != statedb.PowerRunning {
		t.Fatalf("after revert: flavor %s resize %+v power %d", got.Flavor.ID, got.Resize, got.PowerState)
	}

	b := boot("rb-b")
	if st, body := action(b, map[string]any{"os-stop": nil}); st != http.StatusAccepted {
		t.Fatalf("stop = %d %v", st, body)
	}
	settled(b, statedb.VMStopped)
	if st, body := action(b, map[string]any{"resize": map[string]any{"flavorRef": "2"}}); st != http.StatusAccepted {
		t.Fatalf("resize (string flavorRef) = %d %v", st, body)
	}
	if got := settled(b, statedb.VMResized); got.PowerState != statedb.PowerShutdown {
		t.Fatalf("resized stopped server power = %d, want shut down", got.PowerState)
	}
	if v, _ := fa.fakeVM(c, b); v.State == "running" {
		t.Fatalf("a stopped server ran after its resize: %+v", v)
	}
	if st, body := action(b, map[string]any{"confirmResize": nil}); st != http.StatusNoContent {
		t.Fatalf("confirmResize = %d %v", st, body)
	}
	if got := settled(b, statedb.VMStopped); got.Resize != nil || got.Flavor.ID != "2" {
		t.Fatalf("after confirm: %+v %s", got.Resize, got.Flavor.ID)
	}

	d := boot("rb-d")
	if st, body := action(d, map[string]any{"resize": map[string]any{"flavorRef": "2"}}); st != http.StatusAccepted {
		t.Fatalf("resize = %d %v", st, body)
	}
	if st, body := api.do(0, "DELETE", "/servers/"+d, nil); st != http.StatusNoContent {
		t.Fatalf("delete while resizing = %d %v", st, body)
	}
	c.Eventually(30*time.Second, "deleted", func() bool {
		_, ok := n.State().Instance(d)
		_, vm := fa.fakeVM(c, d)
		return !ok && !vm
	})
}
