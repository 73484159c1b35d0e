package nodetest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/compute"
	"github.com/peerstack/peerstack/rest/dashboard"
)

// TestConsoleInternalRoutesNeedGrant: a member's certificate alone does
// not open another host's console routes (the log, the interactive
// attach); a grant minted for one host does not serve another; the
// public API, which mints the grant, still reads a console across hosts.
func TestConsoleInternalRoutesNeedGrant(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	n0 := c.Node(0)
	project, ok := n0.State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	const x, y, z = 0, 1, 2
	id := activeServer(ctx, t, c, n0, project.ID, c.Node(x).ID())
	c.Eventually(10*time.Second, "the server on every host", func() bool {
		for i := range 3 {
			if inst, ok := c.Node(i).State().Instance(id); !ok || inst.Host == "" {
				return false
			}
		}
		return true
	})

	logAs := func(from int, grant string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", c.URL(x)+"/internal/v1/instances/"+id+"/console?length=5", nil)
		if grant != "" {
			req.Header.Set(compute.ConsoleGrantHeader, grant)
		}
		resp, err := c.hostClient(t, from).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	attachAs := func(from int, grant string) int {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		h := http.Header{}
		if grant != "" {
			h.Set(compute.ConsoleGrantHeader, grant)
		}
		u := "wss://" + c.Node(x).APIAddr() + dashboard.InternalConsolePath(id)
		conn, resp, err := websocket.Dial(actx, u, &websocket.DialOptions{HTTPClient: c.hostClient(t, from), HTTPHeader: h})
		if err == nil {
			conn.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("attach from host%d: %v", from, err)
		}
		return resp.StatusCode
	}
	mint := func(host int, inst string) string {
		g, err := compute.MintConsoleGrant(c.Node(host).State(), inst, c.Node(host).ID(), c.Node(host).Now())
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	if st, body := logAs(y, ""); st != http.StatusForbidden {
		t.Errorf("console log with a member certificate and no grant = %d %s; want 403", st, body)
	}
	if st := attachAs(y, ""); st != http.StatusForbidden {
		t.Errorf("console attach with a member certificate and no grant = %d; want 403", st)
	}
	gy := mint(y, id)
	if st, body := logAs(z, gy); st != http.StatusForbidden {
		t.Errorf("console log with another host's grant = %d %s; want 403", st, body)
	}
	if st := attachAs(z, gy); st != http.StatusForbidden {
		t.Errorf("console attach with another host's grant = %d; want 403", st)
	}
	if st, body := logAs(y, mint(y, "another-instance")); st != http.StatusForbidden {
		t.Errorf("console log with a grant for another instance = %d %s; want 403", st, body)
	}
	// The grant's own host is admitted (the fake hypervisor may have no
	// console to show: anything but 403).
	if st, body := logAs(y, gy); st == http.StatusForbidden {
		t.Errorf("console log with the host's own grant = 403 %s", body)
	} else {
		t.Logf("console log with the host's own grant: %d %s", st, body)
	}
	if st := attachAs(y, gy); st == http.StatusForbidden {
		t.Error("console attach with the host's own grant = 403")
	}
	// Through the public API of another host, the grant is made for the
	// caller: no refusal by the host that runs the server.
	st, out := apiCall(t, c, "POST", c.URL(y)+"/compute/v2.1/servers/"+id+"/action", c.AdminToken(y), `{"os-getConsoleOutput": {"length": 2}}`)
	t.Logf("console output through host%d: %d %v", y, st, out)
	if st == http.StatusForbidden || strings.Contains(jsonString(out), "grant") {
		t.Errorf("console output through host%d = %d %v; want no grant refusal", y, st, out)
	}
}

// TestHostCannotFinishAnotherHostsUpload: a member may finish or kill an
// image upload only if it holds that upload.
func TestHostCannotFinishAnotherHostsUpload(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	ld := c.Leader(10 * time.Second)
	n := c.Node(ld)
	project, _ := n.State().ProjectByName("admin")
	a, b := (ld+1)%3, (ld+2)%3
	img := n.NewID()
	if _, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdCreateImage, statedb.Image{ID: img, Name: "snap",
		ProjectID: project.ID, Visibility: "private", DiskFormat: "qcow2", ContainerFormat: "bare"}); err != nil {
		t.Fatal(err)
	}
	// Host a starts the upload, as a host saving a snapshot does.
	if st, body := c.forge(t, a, statedb.CmdStartImageUpload, nil, "", statedb.ImageUploadCmd{ID: img, HostID: c.Node(a).ID()}); st != http.StatusOK {
		t.Fatalf("start upload by host%d = %d %s", a, st, body)
	}
	finish := statedb.FinishImageUploadCmd{ID: img, Size: 1, VirtualSize: 1, SHA256: strings.Repeat("ef", 32), Holders: []string{c.Node(b).ID()}}
	if st, body := c.forge(t, b, statedb.CmdFinishImageUpload, nil, "", finish); st != http.StatusForbidden {
		t.Errorf("finish of host%d's upload by host%d = %d %s; want 403", a, b, st, body)
	}
	if st, body := c.forge(t, b, statedb.CmdKillImage, nil, "", statedb.ImageUploadCmd{ID: img, HostID: c.Node(b).ID()}); st != http.StatusForbidden {
		t.Errorf("kill of host%d's upload by host%d = %d %s; want 403", a, b, st, body)
	}
	if im, _ := n.State().Image(img); im.Status != statedb.ImageSaving {
		t.Fatalf("image status %s after refused commands; want saving", im.Status)
	}
	finish.Holders = []string{c.Node(a).ID()}
	if st, body := c.forge(t, a, statedb.CmdFinishImageUpload, nil, "", finish); st != http.StatusOK {
		t.Errorf("finish by the host holding the upload = %d %s; want 200", st, body)
	}
}
