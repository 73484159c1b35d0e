package nodetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fail runs one openstack command that must fail and returns its
// standard error.
func (o *cpCLI) fail(args ...string) string {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openstack", args...)
	cmd.Env = o.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		o.t.Fatalf("openstack %s succeeded; want a failure\nstdout: %s", strings.Join(args, " "), stdout.String())
	}
	return stderr.String()
}

// TestComputeDay2OpenStackCLI runs what people do after the first boot
// with the real openstack client, at microversion 2.1 and at 2.79: pause,
// suspend, lock, their refusals, server events, usage, tags and the
// identity catalog resources.
func TestComputeDay2OpenStackCLI(t *testing.T) {
	fa := &FakeAgents{ResyncInterval: 200 * time.Millisecond}
	c := NewCluster(t, 3, Options{Agent: fa.Options})
	f := c.Follower()
	base := newCPCLI(t, c, f)

	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var image map[string]any
	base.json(&image, "image", "create", "--file", img, "--disk-format", "raw", "--container-format", "bare", "--public", "d2-img")
	imageID, _ := image["id"].(string)

	// The catalog as Keystone resources.
	var services []map[string]any
	base.json(&services, "service", "list")
	if !strings.Contains(fmt.Sprint(services), "nova") || !strings.Contains(fmt.Sprint(services), "compute") {
		t.Fatalf("service list = %v", services)
	}
	var svc map[string]any
	base.json(&svc, "service", "show", "compute")
	var endpoints []map[string]any
	base.json(&endpoints, "endpoint", "list", "--service", "compute", "--interface", "public")
	if len(endpoints) != 1 || !strings.HasSuffix(fmt.Sprint(endpoints[0]["URL"]), "/compute/v2.1") ||
		endpoints[0]["Service Name"] != "nova" {
		t.Fatalf("endpoint list = %v", endpoints)
	}
	var ep map[string]any
	base.json(&ep, "endpoint", "show", fmt.Sprint(endpoints[0]["ID"]))
	if ep["service_id"] != svc["id"] || ep["region"] != "RegionOne" {
		t.Fatalf("endpoint show = %v; service %v", ep, svc)
	}

	for _, mv := range []string{"2.1", "2.79"} {
		t.Run(mv, func(t *testing.T) {
			o := &cpCLI{t: t, env: append(append([]string{}, base.env...), "OS_COMPUTE_API_VERSION="+mv)}
			name := "d2vm-" + strings.ReplaceAll(mv, ".", "")
			create := []string{"server", "create", "--flavor", "m1.tiny", "--image", imageID, "--wait"}
			if mv != "2.1" {
				create = append(create, "--nic", "none", "--tag", "blue")
			}
			var server map[string]any
			o.json(&server, append(create, name)...)
			if server["status"] != "ACTIVE" {
				t.Fatalf("server create = %v", server)
			}
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
			o.run("server", "pause", id)
			waitStatus("PAUSED")
			if s := show(); fmt.Sprint(s["OS-EXT-STS:power_state"]) != "Paused" && fmt.Sprint(s["OS-EXT-STS:power_state"]) != "3" {
				t.Fatalf("power state of a paused server = %v", s["OS-EXT-STS:power_state"])
			}
			if e := o.fail("server", "pause", id); !strings.Contains(e, "Cannot 'pause' instance "+id+" while it is in vm_state paused") || !strings.Contains(e, "409") {
				t.Fatalf("pause of a paused server: %s", e)
			}
			o.run("server", "unpause", id)
			waitStatus("ACTIVE")
			o.run("server", "suspend", id)
			waitStatus("SUSPENDED")
			if e := o.fail("server", "unpause", id); !strings.Contains(e, "while it is in vm_state suspended") {
				t.Fatalf("unpause of a suspended server: %s", e)
			}
			o.run("server", "resume", id)
			waitStatus("ACTIVE")

			lock := []string{"server", "lock", id}
			if mv == "2.79" {
				lock = []string{"server", "lock", "--reason", "maintenance", id}
			}
			o.run(lock...)
			s := show()
			if mv == "2.79" {
				if s["locked"] != true || s["locked_reason"] != "maintenance" || !strings.Contains(fmt.Sprint(s["tags"]), "blue") {
					t.Fatalf("server show at 2.79 = %v", s)
				}
				if fl, ok := s["flavor"].(map[string]any); !ok || fl["original_name"] != "m1.tiny" || fl["vcpus"] != 1.0 {
					t.Fatalf("embedded flavor at 2.79 = %#v", s["flavor"])
				}
			}
			o.run("server", "unlock", id)
			o.run("server", "stop", id)
			waitStatus("SHUTOFF")
			if e := o.fail("server", "pause", id); !strings.Contains(e, "Cannot 'pause' instance "+id+" while it is in vm_state stopped") {
				t.Fatalf("pause of a stopped server: %s", e)
			}
			if e := o.fail("server", "resume", id); !strings.Contains(e, "Cannot 'resume' instance "+id+" while it is in vm_state stopped") {
				t.Fatalf("resume of a stopped server: %s", e)
			}

			var events []map[string]any
			o.json(&events, "server", "event", "list", id)
			var actions []string
			for _, e := range events {
				actions = append(actions, fmt.Sprint(e["Action"]))
			}
			want := "stop unlock lock resume suspend unpause pause create"
			if strings.Join(actions, " ") != want {
				t.Fatalf("server event list actions = %v; want %s", actions, want)
			}
			var ev map[string]any
			o.json(&ev, "server", "event", "show", id, fmt.Sprint(events[5]["Request ID"]))
			if ev["action"] != "unpause" || !strings.Contains(fmt.Sprint(ev["events"]), "compute_unpause_instance") ||
				!strings.Contains(fmt.Sprint(ev["events"]), "Success") {
				t.Fatalf("server event show = %v", ev)
			}

			var usage []map[string]any
			o.json(&usage, "usage", "list")
			if len(usage) != 1 || usageServers(usage[0]["Servers"]) < 1 {
				t.Fatalf("usage list = %v", usage)
			}
			var mine map[string]any
			o.json(&mine, "usage", "show", "--project", "admin")
			if usageServers(mine["Servers"]) < 1 {
				t.Fatalf("usage show = %v", mine)
			}
			o.run("server", "delete", "--wait", id)
		})
	}
	// Deleted servers still count in the period.
	var usage []map[string]any
	base.json(&usage, "usage", "list")
	raw, _ := json.Marshal(usage)
	if len(usage) != 1 || usageServers(usage[0]["Servers"]) != 2 {
		t.Fatalf("usage list after the deletes = %s; want the 2 deleted servers", raw)
	}
}

// usageServers reads the "Servers" column of usage list/show: a count,
// or the server usages themselves in -f json.
func usageServers(v any) int {
	switch v := v.(type) {
	case []any:
		return len(v)
	case float64:
		return int(v)
	case string:
		var n int
		_, _ = fmt.Sscan(v, &n)
		return n
	}
	return -1
}
