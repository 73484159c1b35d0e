package nodetest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
)

// hfTFence is T_fence in these tests: the smallest the setting takes.
const hfTFence = statedb.MinFenceTimeout

// newHAEnv is a 3-host cluster with fake agents on shared (NFS) storage
// and T_fence at hfTFence.
func newHAEnv(t testing.TB) (*agEnv, *FakeAgents) {
	t.Helper()
	fa := &FakeAgents{}
	opts := quiet()
	if os.Getenv("HF_DEBUG") != "" {
		opts = Options{}
	}
	opts.Config = func(i int, cfg *node.Config) {
		cfg.Storage = "nfs://nas.invalid/export"
		cfg.Agent.FenceInterval = 200 * time.Millisecond
	}
	e := newAgEnv(t, fa, opts)
	// An admin's settings change (a host may not propose one itself).
	body := fmt.Sprintf(`{"fence_timeout":%g}`, hfTFence.Seconds())
	req, err := http.NewRequest("PATCH", e.c.URL(0)+"/cluster/v1/settings", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("set fence_timeout: %d %s", resp.StatusCode, raw)
	}
	return e, fa
}

// serverOn returns a server of ids placed on a node other than 0, and
// that node's index.
func (e *agEnv) serverOffNode0(ids []string) (string, int) {
	e.t.Helper()
	for _, id := range ids {
		if h := e.hostOf(id); h != 0 {
			return id, h
		}
	}
	e.t.Fatalf("every one of %d servers runs on node 0", len(ids))
	return "", 0
}

// TestHostFailureRestartsHAServersElsewhere stops a host's daemon for good
// (as a power-off looks to the others): its compute service goes down,
// and after T_fence plus the margin its HA server runs on another host
// through the placement rule, with an action saying so; a server with a
// local disk stays there in ERROR with a fault, and a delete that waited
// for the host completes. The host then returns: it removes the VM of the
// server that moved, keeps the shared disk, and starts nothing that moved.
func TestHostFailureRestartsHAServersElsewhere(t *testing.T) {
	e, fa := newHAEnv(t)
	var ids []string
	for k := range 4 {
		ids = append(ids, e.bfv(k%3, "ha-"+string(rune('a'+k)), false))
	}
	e.waitAll(ids, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	ha, dead := e.serverOffNode0(ids)
	deadID := e.c.Node(dead).ID()
	// One server with a local root disk and one to delete, both on the
	// host that fails.
	var local, doomed string
	for k := 0; local == "" || doomed == ""; k++ {
		if k > 40 {
			t.Fatal("could not place a server on the failing host")
		}
		id, err := e.create(dead, "local-"+string(rune('a'+k)))
		if err != nil {
			t.Fatal(err)
		}
		e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
		switch {
		case e.hostOf(id) != dead:
		case local == "":
			local = id
		default:
			doomed = id
		}
	}
	root := e.rootOf(ha)
	if !e.c.Node(0).State().HA(mustInst(e, ha)) || e.c.Node(0).State().HA(mustInst(e, local)) {
		t.Fatal("HA policy: want the NFS-booted server HA and the image-booted one not")
	}

	stopped := time.Now()
	e.c.Stop(dead)
	st, body := e.do(0, "DELETE", "/servers/"+doomed, nil)
	if st != http.StatusNoContent {
		t.Fatalf("delete of a server on a down host = %d %v", st, body)
	}
	e.c.Eventually(30*time.Second, "failed host's compute service down", func() bool {
		st, body := e.do(0, "GET", "/os-services", nil)
		for _, s := range body["services"].([]any) {
			m := s.(map[string]any)
			if st == http.StatusOK && m["host"] == "host"+string(rune('0'+dead)) && m["state"] == "down" {
				return true
			}
		}
		return false
	})
	e.c.Eventually(60*time.Second, "HA server running on another host", func() bool {
		i, ok := e.inst(ha)
		return ok && i.Host != deadID && i.Host != "" && i.VMState == statedb.VMActive && i.TaskState == ""
	})
	moved := time.Since(stopped)
	if moved < hfTFence {
		t.Fatalf("HA server moved %v after its host stopped; the fence allows no move before T_fence (%v)", moved, hfTFence)
	}
	inst := mustInst(e, ha)
	newHost := e.idx[inst.Host]
	if !slices.Contains(fa.Hypervisor(newHost).Running(), ha) {
		t.Fatalf("HA server placed on node %d but its fake hypervisor runs %v", newHost, fa.Hypervisor(newHost).Running())
	}
	// Healthy hosts renew their leases: none fenced itself.
	for _, id := range ids {
		if h := e.hostOf(id); h != dead && fa.Hypervisor(h).Count("Stop", id) != 0 {
			t.Fatalf("server %s on healthy node %d was stopped: its host fenced itself", id, h)
		}
	}
	if h, ok := e.c.Node(0).State().HostHealth(deadID); !ok || !h.Fenced {
		t.Fatalf("failed host health = %+v; want fenced", h)
	}
	v := e.rootOf(ha)
	if a := v.Attachment(); a == nil || a.HostID != inst.Host {
		t.Fatalf("boot volume attachment = %+v; want it on the new host %s", a, inst.Host)
	}
	acts := e.c.Node(0).State().InstanceActions(ha)
	if len(acts) == 0 || acts[0].Action != "evacuate" {
		t.Fatalf("actions of the moved server = %+v; want an evacuate first", acts)
	}
	l := mustInst(e, local)
	if l.Host != deadID || l.VMState != statedb.VMError || l.Fault == nil || !strings.Contains(l.Fault.Message, "local disk") {
		t.Fatalf("local-disk server = host %s vm %s fault %+v; want ERROR on the failed host naming its local disk", l.Host, l.VMState, l.Fault)
	}
	e.c.Eventually(30*time.Second, "delete on the fenced host completed", func() bool {
		_, ok := e.inst(doomed)
		return !ok
	})

	// The host returns. Its fake hypervisor still "runs" the moved VM (an
	// in-process stop has no guard to kill it): it must go, and the shared
	// volume must stay.
	if !slices.Contains(fa.Hypervisor(dead).Running(), ha) {
		t.Fatal("the stopped host's fake hypervisor lost the VM before the host returned")
	}
	e.c.Restart(t.Context(), dead)
	e.c.Eventually(30*time.Second, "moved VM removed from the returning host", func() bool {
		return !slices.Contains(fa.Hypervisor(dead).IDs(), ha) && !slices.Contains(fa.Hypervisor(dead).IDs(), doomed)
	})
	e.c.Eventually(30*time.Second, "returning host up again", func() bool {
		return !e.c.Node(0).State().HostDown(deadID)
	})
	if n := fa.Hypervisor(dead).Count("Start", ha); n != 1 {
		t.Fatalf("the returning host started the moved server %d times in all; want only its first start", n)
	}
	for _, c := range fa.Volumes(dead).Calls() {
		if c == "Delete:"+root.ID {
			t.Fatal("the returning host deleted the shared boot volume the moved server uses")
		}
	}
	if i := mustInst(e, ha); i.Host != inst.Host || i.VMState != statedb.VMActive {
		t.Fatalf("moved server after the return = host %s %s; want it left on %s, active", i.Host, i.VMState, inst.Host)
	}
	// It takes new work.
	id := e.bfv(dead, "after-return", false)
	e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
}

func mustInst(e *agEnv, id string) *statedb.Instance {
	e.t.Helper()
	i, ok := e.inst(id)
	if !ok {
		e.t.Fatalf("server %s missing", id)
	}
	return i
}

// BenchmarkHostFailover measures, in-process with fake hypervisors, a
// host's daemon stopping for good → its HA server's VM started on another
// host, with T_fence at hfTFence (margin statedb.FenceMargin).
func BenchmarkHostFailover(b *testing.B) {
	var sum, worst time.Duration
	for range b.N {
		e, fa := newHAEnv(b)
		var ids []string
		for k := range 3 {
			ids = append(ids, e.bfv(k, "bench-"+string(rune('a'+k)), false))
		}
		e.waitAll(ids, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
		ha, dead := e.serverOffNode0(ids)
		stopped := time.Now()
		e.c.Stop(dead)
		var started time.Duration
		e.c.Eventually(60*time.Second, "HA server started elsewhere", func() bool {
			for i := range 3 {
				if i != dead && fa.Hypervisor(i).Count("Start", ha) > 0 {
					started = time.Since(stopped)
					return true
				}
			}
			return false
		})
		sum, worst = sum+started, max(worst, started)
		e.c.StopAll()
	}
	b.ReportMetric((sum / time.Duration(b.N)).Seconds(), "s-mean-poweroff-to-started")
	b.ReportMetric(worst.Seconds(), "s-max-poweroff-to-started")
	b.ReportMetric(hfTFence.Seconds(), "s-T_fence")
	b.ReportMetric(statedb.FenceMargin(hfTFence).Seconds(), "s-margin")
}
