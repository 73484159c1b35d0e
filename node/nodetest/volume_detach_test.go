package nodetest

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// volumeAPI sends a Block Storage request for the admin project to node i.
func volumeAPI(t *testing.T, c *Cluster, i int, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	p, ok := c.Node(0).State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	return apiCall(t, c, method, c.URL(i)+"/volume/v3/"+p.ID+path, token, body)
}

// newAPIVolume creates a 1 GB volume through node i and waits until it is
// available.
func newAPIVolume(t *testing.T, c *Cluster, i int, token, name string) string {
	t.Helper()
	st, body := volumeAPI(t, c, i, token, "POST", "/volumes", `{"volume":{"size":1,"name":"`+name+`"}}`)
	if st != http.StatusAccepted {
		t.Fatalf("create volume %s = %d %v", name, st, body)
	}
	id := body["volume"].(map[string]any)["id"].(string)
	c.Eventually(60*time.Second, "volume "+name+" available", func() bool {
		v, ok := c.Node(i).State().Volume(id)
		return ok && v.Status == statedb.VolumeAvailable
	})
	return id
}

// volumeStatus reads status and error_reason through node i's API.
func volumeStatus(t *testing.T, c *Cluster, i int, token, id string) (status, reason string) {
	t.Helper()
	st, body := volumeAPI(t, c, i, token, "GET", "/volumes/"+id, "")
	if st != http.StatusOK {
		t.Fatalf("show volume %s = %d %v", id, st, body)
	}
	v := body["volume"].(map[string]any)
	status, _ = v["status"].(string)
	reason, _ = v["error_reason"].(string)
	return status, reason
}

// TestVolumeDetachGiveUpFakeAgents: `server remove volume` on a guest
// that ignores the unplug ends in-use with the reason (not detaching for
// good); asking again is accepted at every step and, once the guest lets
// go, the volume is available.
func TestVolumeDetachGiveUpFakeAgents(t *testing.T) {
	fa := &FakeAgents{}
	e := newAgEnv(t, fa, quiet())
	srv, err := e.create(0, "detach-me")
	if err != nil {
		t.Fatal(err)
	}
	e.waitAll([]string{srv}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	h := e.hostOf(srv)  // local storage: the volume must live on the server's host
	onlyHost(t, e.c, h) // so placement puts the volume there, as an operator would by disabling the others
	vol := newAPIVolume(t, e.c, h, e.token, "dv1")
	att := "/servers/" + srv + "/os-volume_attachments"
	if st, body := e.do(h, "POST", att, map[string]any{"volumeAttachment": map[string]any{"volumeId": vol}}); st != http.StatusOK {
		t.Fatalf("attach = %d %v", st, body)
	}
	waitStatus(e.c, vol, statedb.VolumeInUse)

	fa.Hypervisor(h).HangDetach(vol, true)
	for i := range 3 { // the first, then twice more while detaching
		if st, body := e.do(i, "DELETE", att+"/"+vol, nil); st != http.StatusAccepted {
			t.Fatalf("remove volume #%d through node %d = %d %v; want 202", i+1, i, st, body)
		}
	}
	// The agent gives up after its budget: in-use again, with the reason.
	e.c.Eventually(30*time.Second, "detach given up", func() bool {
		st, reason := volumeStatus(t, e.c, 1, e.token, vol)
		return st == statedb.VolumeInUse && reason != ""
	})
	if _, reason := volumeStatus(t, e.c, 2, e.token, vol); !strings.Contains(reason, "did not release") {
		t.Errorf("error_reason after a give-up = %q; want the guest's refusal", reason)
	}
	if st, _ := e.do(0, "GET", att+"/"+vol, nil); st != http.StatusOK {
		t.Errorf("attachment after a give-up = %d; want 200 (still attached)", st)
	}

	// The user asks again, and this time the guest lets go.
	fa.Hypervisor(h).HangDetach(vol, false)
	if st, body := e.do(2, "DELETE", att+"/"+vol, nil); st != http.StatusAccepted {
		t.Fatalf("remove volume after a give-up = %d %v; want 202", st, body)
	}
	waitVolume(e.c, vol, "available, detached, no reason", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeAvailable && len(v.Attachments) == 0 && v.ErrorReason == ""
	})
	if st, _ := e.do(0, "DELETE", att+"/"+vol, nil); st != http.StatusNotFound {
		t.Errorf("remove a detached volume = %d; want 404", st)
	}
}

// TestVolumeDetachQEMU removes a volume from a real TCG guest right after
// it was attached, as `openstack server add volume` then `server remove
// volume` do, while the guest boots and once it is up, and logs the time
// from the remove request to available.
func TestVolumeDetachQEMU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newQMEnv(t)
	id := e.create("qemu-detach")
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)

	// Round 0 runs while the guest still boots (ACTIVE comes with QEMU's
	// start): its unplug requests go unanswered until the kernel is up.
	for round := 0; round <= 2; round++ {
		if round == 1 {
			e.waitConsole(id, "PEERSTACK-READY", 1)
		}
		vol := newAPIVolume(t, e.c, 0, e.token, "qd")
		att := "/compute/v2.1/servers/" + id + "/os-volume_attachments"
		if st, body := e.json("POST", att, map[string]any{"volumeAttachment": map[string]any{"volumeId": vol}}); st != http.StatusOK {
			t.Fatalf("attach = %d %v", st, body)
		}
		Eventually(t, 60*time.Second, "volume in-use", func() bool {
			v, ok := e.c.Node(0).State().Volume(vol)
			return ok && v.Status == statedb.VolumeInUse
		})
		start := time.Now()
		if st, body := e.json("DELETE", att+"/"+vol, nil); st != http.StatusAccepted {
			t.Fatalf("remove volume = %d %v", st, body)
		}
		// A client repeating the request meanwhile is accepted.
		if st, body := e.json("DELETE", att+"/"+vol, nil); st != http.StatusAccepted && st != http.StatusNotFound {
			t.Fatalf("repeated remove volume = %d %v; want 202 (or 404 once detached)", st, body)
		}
		asks := 1
		Eventually(t, 5*time.Minute, "volume available", func() bool {
			v, ok := e.c.Node(0).State().Volume(vol)
			if ok && v.Status == statedb.VolumeInUse && v.ErrorReason != "" {
				// Given up (a very slow boot outlasted the budget): in-use
				// with the reason, and the user asks again.
				if round > 0 || asks == 3 {
					t.Fatalf("detach given up after %d requests: %s", asks, v.ErrorReason)
				}
				t.Logf("detach given up (%s); asking again", v.ErrorReason)
				if st, body := e.json("DELETE", att+"/"+vol, nil); st != http.StatusAccepted {
					t.Fatalf("remove volume after a give-up = %d %v; want 202", st, body)
				}
				asks++
			}
			return ok && v.Status == statedb.VolumeAvailable
		})
		when := "guest READY"
		if round == 0 {
			when = "guest booting"
		}
		t.Logf("round %d (%s): remove volume right after attach → available in %s (TCG)", round, when, time.Since(start).Round(time.Millisecond))
		if v, _ := e.c.Node(0).State().Volume(vol); len(v.Attachments) != 0 || v.ErrorReason != "" {
			t.Errorf("volume after detach = %+v; want no attachment and no reason", v)
		}
	}
}

// onlyHost disables every host but node i's (openstack compute service set
// --disable), so placement can choose only it.
func onlyHost(t *testing.T, c *Cluster, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := c.Node(i)
	for _, m := range n.State().Members() {
		if _, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdSetHostEnabled, statedb.SetHostEnabledCmd{ID: m.ID, Disabled: m.ID != n.ID(), Reason: "test: one host"}); err != nil {
			t.Fatal(err)
		}
	}
}
