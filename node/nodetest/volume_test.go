package nodetest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest"
)

// apiCall sends a JSON request with a token and returns status and body.
func apiCall(t *testing.T, c *Cluster, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s %s = %d, body %q is not JSON", method, url, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, m
}

// report proposes an agent report through node n, as its agent would (a
// host may report only for itself).
func report(ctx context.Context, t *testing.T, n *node.Node, r statedb.ReportVolumeCmd) {
	t.Helper()
	if _, err := rest.Propose(ctx, n, statedb.CmdReportVolume, r); err != nil {
		t.Fatalf("report %+v through %s: %v", r, n.Name(), err)
	}
}

// waitVolume waits until every running node sees volume id pass cond.
func waitVolume(c *Cluster, id, what string, cond func(v *statedb.Volume, ok bool) bool) {
	c.t.Helper()
	c.Eventually(10*time.Second, "volume "+id+" "+what+" everywhere", func() bool {
		for _, n := range c.Running() {
			v, ok := n.State().Volume(id)
			if !cond(v, ok) {
				return false
			}
		}
		return true
	})
}

func waitStatus(c *Cluster, id, status string) {
	c.t.Helper()
	waitVolume(c, id, status, func(v *statedb.Volume, ok bool) bool { return ok && v.Status == status })
}

// activeServer creates a server through the compute commands, waits for
// the leader's scheduler to place it (on host: the test disables the
// other hosts first) and reports it active as host's agent would.
func activeServer(ctx context.Context, t *testing.T, c *Cluster, n *node.Node, projectID, host string) string {
	t.Helper()
	for _, m := range n.State().Members() {
		if _, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdSetHostEnabled, statedb.SetHostEnabledCmd{ID: m.ID, Disabled: m.ID != host, Reason: "volume test"}); err != nil {
			t.Fatal(err)
		}
	}
	id := n.NewID()
	_, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
		Instance: statedb.Instance{ID: id, Name: "vm-" + id[:8], ProjectID: projectID, UserID: "u",
			Flavor: statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1}}}}})
	if err != nil {
		t.Fatalf("create server: %v", err)
	}
	c.Eventually(10*time.Second, "server "+id+" placed", func() bool {
		inst, ok := n.State().Instance(id)
		return ok && inst.Host != ""
	})
	if inst, _ := n.State().Instance(id); inst.Host != host {
		t.Fatalf("server placed on %s; want %s", inst.Host, host)
	}
	if _, err := rest.Propose(ctx, c.ByID(host), statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: id, HostID: host,
		VMState: "active", PowerState: statedb.PowerRunning}); err != nil {
		t.Fatalf("report server active: %v", err)
	}
	return id
}

// TestVolumeAPIStateTransitions drives a volume through its life from the
// API of a follower, with the host reports proposed by the test as the
// hosts' agents would, and checks every node agrees at each step.
func TestVolumeAPIStateTransitions(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	f := c.Follower()
	fn := c.Node(f)
	tok := c.AdminToken(f)
	project, ok := fn.State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	base := c.URL(f) + "/volume/v3/" + project.ID

	st, body := apiCall(t, c, "POST", base+"/volumes", tok, `{"volume":{"size":1,"name":"v1"}}`)
	if st != http.StatusAccepted {
		t.Fatalf("create = %d %v", st, body)
	}
	id, _ := body["volume"].(map[string]any)["id"].(string)
	// Local storage: created without a host; the leader places it, and
	// the host's agent chooses the path.
	if v, ok := fn.State().Volume(id); !ok || v.Status != statedb.VolumeCreating || v.Path != "" {
		t.Fatalf("volume right after create on %s = %+v; want creating, without a path", fn.Name(), v)
	}
	waitVolume(c, id, "placed", func(v *statedb.Volume, ok bool) bool { return ok && v.Host != "" })
	v, _ := fn.State().Volume(id)
	vi := slices.IndexFunc(c.Running(), func(n *node.Node) bool { return n.ID() == v.Host })
	if vi < 0 {
		t.Fatalf("volume placed on %s, which is no running node", v.Host)
	}
	vn := c.Running()[vi]
	store, err := vn.VolumeStore()
	if err != nil {
		t.Fatal(err)
	}
	path, _ := store.Path(statedb.VolumeFileBase(id), "qcow2")

	// Only the volume's host may report it made.
	other := c.Running()[(vi+1)%len(c.Running())]
	report(ctx, t, other, statedb.ReportVolumeCmd{VolumeID: id, HostID: other.ID(), Status: statedb.VolumeAvailable, Path: "/elsewhere"})
	report(ctx, t, vn, statedb.ReportVolumeCmd{VolumeID: id, HostID: vn.ID(), Status: statedb.VolumeAvailable, Path: path})
	waitStatus(c, id, statedb.VolumeAvailable)
	if v, _ = fn.State().Volume(id); v.Path != path {
		t.Fatalf("volume path = %q; want %q, reported by its host", v.Path, path)
	}

	// Attach to a server on the volume's host (local storage); the
	// attach goes through the leader-forwarding path of the follower.
	srv := activeServer(ctx, t, c, fn, project.ID, vn.ID())
	st, body = apiCall(t, c, "POST", c.URL(f)+"/compute/v2.1/servers/"+srv+"/os-volume_attachments", tok,
		`{"volumeAttachment":{"volumeId":"`+id+`","device":null}}`)
	if st != http.StatusOK {
		t.Fatalf("attach = %d %v", st, body)
	}
	waitStatus(c, id, statedb.VolumeAttaching)
	v, _ = fn.State().Volume(id)
	att := v.Attachment()
	report(ctx, t, vn, statedb.ReportVolumeCmd{VolumeID: id, HostID: vn.ID(), AttachmentID: att.ID, AttachmentState: statedb.AttachAttached})
	waitStatus(c, id, statedb.VolumeInUse)

	// Online extend: the attachment's host resizes.
	st, body = apiCall(t, c, "POST", base+"/volumes/"+id+"/action", tok, `{"os-extend":{"new_size":2}}`)
	if st != http.StatusAccepted {
		t.Fatalf("extend = %d %v", st, body)
	}
	waitStatus(c, id, statedb.VolumeExtending)
	report(ctx, t, vn, statedb.ReportVolumeCmd{VolumeID: id, HostID: vn.ID(), Status: statedb.VolumeAvailable})
	waitVolume(c, id, "in-use at 2 GB", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeInUse && v.SizeGB == 2
	})

	// The server is deleted with the volume attached: the leader releases it.
	if _, err := rest.Propose(adminContext(ctx, t, fn), fn, statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: srv}); err != nil {
		t.Fatal(err)
	}
	if _, err := rest.Propose(ctx, vn, statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: srv, HostID: vn.ID(), Gone: true}); err != nil {
		t.Fatal(err)
	}
	waitVolume(c, id, "released", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeAvailable && len(v.Attachments) == 0
	})

	// Delete; the host removes the file and reports.
	st, body = apiCall(t, c, "DELETE", base+"/volumes/"+id, tok, "")
	if st != http.StatusAccepted {
		t.Fatalf("delete = %d %v", st, body)
	}
	waitStatus(c, id, statedb.VolumeDeleting)
	report(ctx, t, vn, statedb.ReportVolumeCmd{VolumeID: id, HostID: vn.ID(), Status: statedb.VolumeDeleted})
	waitVolume(c, id, "gone", func(_ *statedb.Volume, ok bool) bool { return !ok })
}

// fakeVolumeAgent stands in for a host's volume agent: it makes, grows and
// deletes the files of the volumes whose host is n with the real
// VolumeStore (qemu-img on the local dir) and reports, until ctx ends.
func fakeVolumeAgent(ctx context.Context, t *testing.T, n *node.Node) {
	store, err := n.VolumeStore()
	if err != nil {
		t.Errorf("volume store of %s: %v", n.Name(), err)
		return
	}
	rep := func(r statedb.ReportVolumeCmd) {
		r.HostID = n.ID()
		if _, err := rest.Propose(ctx, n, statedb.CmdReportVolume, r); err != nil && ctx.Err() == nil {
			t.Logf("fake agent %s: report %+v: %v", n.Name(), r, err)
		}
	}
	for ctx.Err() == nil {
		for _, v := range n.State().VolumesOnHost(n.ID()) {
			switch v.Status {
			case statedb.VolumeCreating:
				_, err := store.Create(ctx, statedb.VolumeFileBase(v.ID), v.SizeGB, v.Format, "")
				if err != nil && !errors.Is(err, storage.ErrVolumeExists) {
					rep(statedb.ReportVolumeCmd{VolumeID: v.ID, Status: statedb.VolumeError, Error: err.Error()})
					continue
				}
				path, _ := store.Path(statedb.VolumeFileBase(v.ID), v.Format)
				rep(statedb.ReportVolumeCmd{VolumeID: v.ID, Status: statedb.VolumeAvailable, Path: path})
			case statedb.VolumeExtending:
				if err := store.Extend(ctx, v.Path, v.SizeGB); err != nil {
					rep(statedb.ReportVolumeCmd{VolumeID: v.ID, Status: statedb.VolumeError, Error: err.Error()})
					continue
				}
				rep(statedb.ReportVolumeCmd{VolumeID: v.ID, Status: statedb.VolumeAvailable})
			case statedb.VolumeDeleting:
				if err := store.Delete(ctx, v.Path); err != nil {
					rep(statedb.ReportVolumeCmd{VolumeID: v.ID, Status: statedb.VolumeErrorDeleting, Error: err.Error()})
					continue
				}
				rep(statedb.ReportVolumeCmd{VolumeID: v.ID, Status: statedb.VolumeDeleted})
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// osc runs the real openstack client with the clouds.yaml and returns its
// stdout.
func osc(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openstack", args...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("openstack %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func oscJSON(t *testing.T, env []string, v any, args ...string) {
	t.Helper()
	out := osc(t, env, append(args, "-f", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("openstack %s: output %q is not JSON: %v", strings.Join(args, " "), out, err)
	}
}

// TestVolumeOpenStackCLI drives the volume API of a follower with the real
// openstack client, while a stand-in agent on each host makes the files
// with the real VolumeStore.
func TestVolumeOpenStackCLI(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		t.Fatalf("the openstack client is needed (apt-get install python3-openstackclient): %v", err)
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img is needed (apt-get install qemu-utils): %v", err)
	}
	c := NewCluster(t, 3)
	f := c.Follower()
	fn := c.Node(f)
	ctx, cancel := context.WithCancel(t.Context())
	var agents sync.WaitGroup
	for _, n := range c.Running() {
		agents.Go(func() { fakeVolumeAgent(ctx, t, n) })
	}
	t.Cleanup(func() { cancel(); agents.Wait() })

	env := c.OpenStackEnv(t, f)

	var vol map[string]any
	oscJSON(t, env, &vol, "volume", "create", "--size", "1", "v1")
	id, _ := vol["id"].(string)
	// The client shows the volume as it reads it back: creating, maybe
	// already placed, or even made.
	if vol["name"] != "v1" || vol["size"] != float64(1) || vol["type"] != "local" ||
		vol["status"] != "creating" && vol["status"] != "available" {
		t.Fatalf("volume create printed %v", vol)
	}
	waitStatus(c, id, statedb.VolumeAvailable)
	v, _ := fn.State().Volume(id)
	vn := c.Running()[slices.IndexFunc(c.Running(), func(n *node.Node) bool { return n.ID() == v.Host })]
	oscJSON(t, env, &vol, "volume", "show", id)
	if vol["os-vol-host-attr:host"] != vn.Name()+"@local#local" {
		t.Fatalf("volume show = %v; want on %s, where placement put it", vol, vn.Name())
	}
	store, err := vn.VolumeStore()
	if err != nil {
		t.Fatal(err)
	}
	if info, err := store.Info(t.Context(), v.Path); err != nil || info.VirtualSize != storage.GiB {
		t.Fatalf("volume file on %s = %+v, %v; want 1 GiB", vn.Name(), info, err)
	}

	var list []map[string]any
	oscJSON(t, env, &list, "volume", "list")
	if len(list) != 1 || list[0]["ID"] != id || list[0]["Name"] != "v1" || list[0]["Status"] != "available" || list[0]["Size"] != float64(1) {
		t.Fatalf("volume list = %v", list)
	}
	oscJSON(t, env, &vol, "volume", "show", "v1")
	if vol["id"] != id || vol["status"] != "available" || vol["bootable"] != "false" || vol["type"] != "local" {
		t.Fatalf("volume show = %v", vol)
	}

	osc(t, env, "volume", "set", "--size", "2", "v1")
	waitVolume(c, id, "available at 2 GB", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeAvailable && v.SizeGB == 2
	})
	if info, err := store.Info(t.Context(), v.Path); err != nil || info.VirtualSize != 2*storage.GiB {
		t.Fatalf("volume file after set --size 2 = %+v, %v; want 2 GiB", info, err)
	}
	oscJSON(t, env, &vol, "volume", "show", "v1")
	if vol["size"] != float64(2) {
		t.Fatalf("volume show after extend: size %v; want 2", vol["size"])
	}

	var types []map[string]any
	oscJSON(t, env, &types, "volume", "type", "list")
	if len(types) != 1 || types[0]["Name"] != "local" {
		t.Fatalf("volume type list = %v; want the one type local", types)
	}

	osc(t, env, "volume", "delete", "v1")
	waitVolume(c, id, "gone", func(_ *statedb.Volume, ok bool) bool { return !ok })
	if _, err := os.Stat(v.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("volume file after delete: %v; want removed", err)
	}
	oscJSON(t, env, &list, "volume", "list")
	if len(list) != 0 {
		t.Fatalf("volume list after delete = %v", list)
	}
}
