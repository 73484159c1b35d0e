package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/hv/netdev"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/rest"
)

// agEnv is a cluster whose hosts run real agents over fake hypervisors,
// driven through the compute API as the admin.
type agEnv struct {
	t     testing.TB
	c     *Cluster
	fa    *FakeAgents
	hc    *http.Client
	token string
	image string
	net   string
	idx   map[string]int // member id → node index
}

func newAgEnv(t testing.TB, fa *FakeAgents, opts Options) *agEnv {
	t.Helper()
	opts.Agent = fa.Options
	edit := opts.Config
	opts.Config = func(i int, cfg *node.Config) {
		cfg.HostSource = func(live node.HostSource) node.HostSource { return agBigHosts{live} }
		if edit != nil {
			edit(i, cfg)
		}
	}
	c := NewCluster(t, 3, opts)
	e := &agEnv{t: t, c: c, fa: fa, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{}}
	for i := range 3 {
		e.idx[c.Node(i).ID()] = i
	}
	e.seed(t.Context())
	return e
}

// agBigHosts reports the live hosts with room for a few hundred m1.tiny
// each (the real 8 vCPUs × 4 would cap the cluster at 96).
type agBigHosts struct{ live node.HostSource }

func (h agBigHosts) Members() []gossip.Member {
	ms := h.live.Members()
	for j := range ms {
		ms[j].Meta.VCPUs, ms[j].Meta.RAMMB = 128, 1<<20
	}
	return ms
}

// seed makes an active public image and a network with a DHCP subnet,
// owned by the admin project.
func (e *agEnv) seed(ctx context.Context) {
	e.t.Helper()
	n := e.c.Node(0)
	p, ok := n.State().ProjectByName("admin")
	if !ok {
		e.t.Fatal("no admin project")
	}
	e.image, e.net = n.NewID(), n.NewID()
	for _, step := range []struct {
		typ     statedb.CmdType
		payload any
	}{
		{statedb.CmdCreateImage, statedb.Image{ID: e.image, Name: "guest", ProjectID: p.ID, Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"}},
		{statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: e.image, HostID: n.ID()}},
		{statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: e.image, Size: 1 << 20, VirtualSize: 1 << 20,
			SHA256: strings.Repeat("cd", 32), Holders: []string{n.ID()}}},
		{statedb.CmdCreateNetwork, statedb.Network{ID: e.net, Name: "agnet", ProjectID: p.ID, AdminStateUp: true}},
		{statedb.CmdCreateSubnet, statedb.CreateSubnetCmd{Subnet: statedb.Subnet{ID: n.NewID(), Name: "agsub", NetworkID: e.net,
			ProjectID: p.ID, IPVersion: 4, CIDR: "10.40.0.0/22", EnableDHCP: true}, GatewayAuto: true, PoolsAuto: true}},
	} {
		if _, err := rest.Propose(adminContext(ctx, e.t, n), n, step.typ, step.payload); err != nil {
			e.t.Fatalf("seed %d: %v", step.typ, err)
		}
	}
	e.c.Eventually(10*time.Second, "image and subnet everywhere", func() bool {
		for _, h := range e.c.Running() {
			if _, ok := h.State().Image(e.image); !ok || len(h.State().SubnetsOf(e.net)) == 0 {
				return false
			}
		}
		return true
	})
}

// do sends a compute API request to node i.
func (e *agEnv) do(i int, method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.c.URL(i)+"/compute/v2.1"+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s through node %d: %v", method, path, i, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// create makes a server with one port on the test network through node i.
// It may run in any goroutine.
func (e *agEnv) create(i int, name string) (string, error) {
	raw, _ := json.Marshal(map[string]any{"server": map[string]any{
		"name": name, "imageRef": e.image, "flavorRef": "1", "networks": []any{map[string]any{"uuid": e.net}},
		"user_data": "IyEvYmluL3NoCmVjaG8gaGk=",
	}})
	req, err := http.NewRequest("POST", e.c.URL(i)+"/compute/v2.1/servers", bytes.NewReader(raw))
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Auth-Token", e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("create %s through node %d: %w", name, i, err)
	}
	defer resp.Body.Close()
	var body struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &body) != nil || body.Server.ID == "" {
		return "", fmt.Errorf("create %s through node %d = %d %s", name, i, resp.StatusCode, b)
	}
	return body.Server.ID, nil
}

// createAll makes n servers through the 3 hosts in turn with conc
// concurrent clients; accepted[k] is when server k's 202 arrived.
func (e *agEnv) createAll(n, conc int, prefix string) (ids []string, accepted []time.Time) {
	e.t.Helper()
	ids, accepted = make([]string, n), make([]time.Time, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < n; k += conc {
				id, err := e.create(k%3, fmt.Sprintf("%s-%03d", prefix, k))
				if err != nil {
					errs <- err
					return
				}
				ids[k], accepted[k] = id, time.Now()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	return ids, accepted
}

func (e *agEnv) action(i int, id string, body map[string]any) {
	e.t.Helper()
	if st, resp := e.do(i, "POST", "/servers/"+id+"/action", body); st != http.StatusAccepted {
		e.t.Fatalf("action %v on %s through node %d = %d %v", body, id, i, st, resp)
	}
}

// inst reads an instance from node 0's state.
func (e *agEnv) inst(id string) (*statedb.Instance, bool) { return e.c.Node(0).State().Instance(id) }

// waitAll waits until every id satisfies cond on every running node.
func (e *agEnv) waitAll(ids []string, what string, cond func(*statedb.Instance, bool) bool) {
	e.t.Helper()
	e.c.Eventually(60*time.Second, fmt.Sprintf("%d servers %s", len(ids), what), func() bool {
		for _, n := range e.c.Running() {
			sn := n.State()
			for _, id := range ids {
				if i, ok := sn.Instance(id); !cond(i, ok) {
					return false
				}
			}
		}
		return true
	})
}

func agIs(vm string, power int) func(*statedb.Instance, bool) bool {
	return func(i *statedb.Instance, ok bool) bool {
		return ok && i.VMState == vm && i.PowerState == power && i.TaskState == ""
	}
}

// hostOf is the node index an instance runs on.
func (e *agEnv) hostOf(id string) int {
	e.t.Helper()
	i, ok := e.inst(id)
	if !ok || i.Host == "" {
		e.t.Fatalf("server %s is not placed", id)
	}
	return e.idx[i.Host]
}

func TestAgentServersOnThreeHosts(t *testing.T) {
	e := newAgEnv(t, &FakeAgents{}, Options{})
	const n = 100
	ids, _ := e.createAll(n, 4, "ag")
	e.waitAll(ids, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))

	// Spread over the 3 hosts; each started exactly once, on its own host.
	perHost := map[int]int{}
	for _, id := range ids {
		h := e.hostOf(id)
		perHost[h]++
		for j := range 3 {
			want := 0
			if j == h {
				want = 1
			}
			if got := e.fa.Hypervisor(j).Count("Start", id); got != want {
				t.Fatalf("server %s on host%d: host%d started it %d times; want %d", id, h, j, got, want)
			}
		}
		inst, _ := e.inst(id)
		if inst.LaunchedAt.IsZero() {
			t.Fatalf("server %s has no launched_at", id)
		}
	}
	for h := range 3 {
		if perHost[h] < 20 {
			t.Fatalf("servers per host = %v; want them spread over the 3 hosts", perHost)
		}
		if got := len(e.fa.Hypervisor(h).Running()); got != perHost[h] {
			t.Fatalf("host%d runs %d VMs; %d servers are placed there", h, got, perHost[h])
		}
	}
	// Ports plumbed and ACTIVE; every host knows the others' MACs (every
	// in-process host has the VTEP 127.0.0.1, so one flood entry).
	e.c.Eventually(30*time.Second, "ports ACTIVE", func() bool {
		for _, p := range e.c.Node(0).State().PortsOf(e.net) {
			if p.Status != statedb.PortActive {
				return false
			}
		}
		return true
	})
	e.c.Eventually(30*time.Second, "forwarding entries for every remote port", func() bool {
		for h := range 3 {
			d, ok := e.fa.Network(h).Last()
			if !ok || len(d.Networks) != 1 || len(d.Networks[0].Ports) != perHost[h] ||
				len(d.Networks[0].MACs) != n-perHost[h] || len(d.Networks[0].Remotes) == 0 {
				return false
			}
		}
		return true
	})

	// One server per host: every action through another host's API reaches
	// the fake of the right host, in order.
	var picks []string
	for h := range 3 {
		for _, id := range ids {
			if e.hostOf(id) == h {
				picks = append(picks, id)
				break
			}
		}
	}
	for _, id := range picks {
		h := e.hostOf(id)
		via := (h + 1) % 3
		e.action(via, id, map[string]any{"os-stop": nil})
		e.waitAll([]string{id}, "SHUTOFF", agIs(statedb.VMStopped, statedb.PowerShutdown))
		e.action(via, id, map[string]any{"os-start": nil})
		e.waitAll([]string{id}, "ACTIVE again", agIs(statedb.VMActive, statedb.PowerRunning))
		e.action(via, id, map[string]any{"reboot": map[string]any{"type": "SOFT"}})
		e.waitAll([]string{id}, "soft-rebooted", func(i *statedb.Instance, ok bool) bool { return ok && i.RebootDone == 1 && i.TaskState == "" })
		e.action(via, id, map[string]any{"reboot": map[string]any{"type": "HARD"}})
		e.waitAll([]string{id}, "hard-rebooted", func(i *statedb.Instance, ok bool) bool { return ok && i.RebootDone == 2 && i.TaskState == "" })
		want := []string{"CreateRootDisk", "WriteConfigDrive", "Start", "Stop", "CreateRootDisk", "WriteConfigDrive", "Start", "Reboot:soft", "Reboot:hard"}
		if got := e.fa.Hypervisor(h).Ops(id); !slices.Equal(got, want) {
			t.Errorf("host%d ops on %s = %v; want %v", h, id, got, want)
		}
		for j := range 3 {
			if j != h && len(e.fa.Hypervisor(j).Ops(id)) != 0 {
				t.Errorf("host%d acted on host%d's server %s: %v", j, h, id, e.fa.Hypervisor(j).Ops(id))
			}
		}
		// The console comes from the host that runs it, through any host.
		st, body := e.do(via, "POST", "/servers/"+id+"/action", map[string]any{"os-getConsoleOutput": map[string]any{"length": 2}})
		out, _ := body["output"].(string)
		inst, _ := e.inst(id)
		if st != http.StatusOK || !strings.Contains(out, "PEERSTACK-READY hostname="+strings.ReplaceAll(inst.Name, "_", "-")) ||
			strings.Count(out, "\n") != 2 {
			t.Errorf("console of %s through node %d = %d %q; want its last 2 lines", id, via, st, out)
		}
	}

	// Delete everything through all hosts: records, VMs and taps go.
	for k, id := range ids {
		if st, body := e.do((k+2)%3, "DELETE", "/servers/"+id, nil); st != http.StatusNoContent {
			t.Fatalf("delete %s = %d %v", id, st, body)
		}
	}
	e.waitAll(ids, "gone", func(_ *statedb.Instance, ok bool) bool { return !ok })
	for h := range 3 {
		if left := e.fa.Hypervisor(h).IDs(); len(left) != 0 {
			t.Errorf("host%d still has VMs %v", h, left)
		}
		// Delete is idempotent: a report lost in a leader change makes the
		// agent delete again, so at least one call per VM it ran.
		if got := e.fa.Hypervisor(h).Count("Delete", ""); got < perHost[h] {
			t.Errorf("host%d deleted %d VMs; want at least %d", h, got, perHost[h])
		}
	}
	e.c.Eventually(30*time.Second, "no tenant devices left", func() bool {
		for h := range 3 {
			if d, _ := e.fa.Network(h).Last(); len(d.Networks) != 0 {
				return false
			}
		}
		return true
	})
}

func TestAgentRestartAdoptsRunningVMs(t *testing.T) {
	e := newAgEnv(t, &FakeAgents{ResyncInterval: 200 * time.Millisecond}, Options{})
	ids, _ := e.createAll(9, 1, "rs")
	e.waitAll(ids, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	k := e.c.Follower()
	hv := e.fa.Hypervisor(k)
	before := hv.Running()
	if len(before) == 0 {
		t.Fatalf("host%d runs no VM", k)
	}

	// The daemon stops ("killed"): its VMs keep running.
	e.c.Stop(k)
	if got := hv.Running(); !slices.Equal(got, before) {
		t.Fatalf("VMs of the stopped host%d = %v; want %v still running", k, got, before)
	}
	recovers, before0 := hv.Count("Recover", ""), len(hv.Calls())
	e.c.Restart(t.Context(), k)
	e.c.Eventually(20*time.Second, "agent recovered and resynced", func() bool {
		return hv.Count("Recover", "") > recovers && hv.Count("List", "") > 3
	})
	lists := hv.Count("List", "")
	e.c.Eventually(20*time.Second, "a few more resyncs", func() bool { return hv.Count("List", "") >= lists+3 })
	// Since the restart the hypervisor was only read.
	for _, c := range hv.Calls()[before0:] {
		if c.Op != "List" && c.Op != "Recover" {
			t.Errorf("host%d hypervisor call after its restart: %+v; want only Recover and List", k, c)
		}
	}
	e.waitAll(ids, "still ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))

	// Still controllable: stop one through the restarted host.
	id := before[0]
	e.action(k, id, map[string]any{"os-stop": nil})
	e.waitAll([]string{id}, "SHUTOFF", agIs(statedb.VMStopped, statedb.PowerShutdown))
	if ops := hv.Ops(id); ops[len(ops)-1] != "Stop" {
		t.Errorf("ops on %s = %v; want a Stop last", id, ops)
	}
	// A VM that dies on its own is reported SHUTOFF and left stopped.
	other := before[len(before)-1]
	if other != id {
		hv.Crash(other, "killed by signal 9")
		e.waitAll([]string{other}, "SHUTOFF after a crash", agIs(statedb.VMStopped, statedb.PowerShutdown))
		if got := hv.Count("Start", other); got != 1 {
			t.Errorf("crashed %s started %d times; want 1 (no automatic restart)", other, got)
		}
	}
}

// BenchmarkAgentStart: from the compute API accepting a server (202) until
// the fake hypervisor of its host is told to start it, over 200 servers on
// 3 hosts (created by 8 concurrent clients through every host). The part
// until node 0 sees the placement (scheduler + Raft) and the part after it
// (the host's agent) are reported too.
func BenchmarkAgentStart(b *testing.B) {
	for range b.N {
		fa := &FakeAgents{ResyncInterval: 10 * time.Second}
		var mu sync.Mutex
		started := map[string]time.Time{}
		for h := range 3 {
			fa.Hypervisor(h).OnCall = func(c agenttest.Call) {
				if c.Op == "Start" {
					mu.Lock()
					started[c.ID] = c.At
					mu.Unlock()
				}
			}
		}
		e := newAgEnv(b, fa, quiet())
		// Watch node 0's state for placements.
		placed := map[string]time.Time{}
		watchCtx, stopWatch := context.WithCancel(context.Background())
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			st := e.c.Node(0).Consensus().Store()
			for {
				ch := st.Changed()
				now := time.Now()
				for _, i := range st.Snapshot().Instances() {
					if _, seen := placed[i.ID]; !seen && i.Host != "" {
						placed[i.ID] = now
					}
				}
				select {
				case <-watchCtx.Done():
					return
				case <-ch:
				}
			}
		}()
		const n = 200
		ids, accepted := e.createAll(n, 8, "bench")
		e.waitAll(ids, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
		stopWatch()
		<-watched
		total, place, agentPart := make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, n)
		mu.Lock()
		for k, id := range ids {
			total[k] = max(started[id].Sub(accepted[k]), 0)
			place[k] = max(placed[id].Sub(accepted[k]), 0)
			agentPart[k] = max(started[id].Sub(placed[id]), 0)
		}
		mu.Unlock()
		pct := func(xs []time.Duration, p int) float64 {
			slices.Sort(xs)
			return float64(xs[len(xs)*p/100].Microseconds()) / 1000
		}
		b.ReportMetric(pct(total, 50), "p50-ms")
		b.ReportMetric(pct(total, 99), "p99-ms")
		b.ReportMetric(pct(place, 50), "placed-p50-ms")
		b.ReportMetric(pct(agentPart, 50), "agent-p50-ms")
		b.ReportMetric(pct(agentPart, 99), "agent-p99-ms")
		e.c.StopAll()
	}
}

// TestAgentNetdevInNamespace runs one host's agent with the real hv/netdev
// in a network namespace of its own (and a fake hypervisor): a server's
// port becomes a bridge, a VXLAN device and a tap there, reported ACTIVE,
// and they go with the server.
func TestAgentNetdevInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns := fmt.Sprintf("psag-%d", os.Getpid())
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")

	hv := agenttest.NewHypervisor()
	opts := quiet()
	opts.Agent = func(int) node.AgentOptions {
		return node.AgentOptions{Hypervisor: hv, Images: agenttest.AnyImage{}, NetNS: "/run/netns/" + ns, ResyncInterval: time.Second}
	}
	c := NewCluster(t, 1, opts)
	e := &agEnv{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{c.Node(0).ID(): 0}}
	e.seed(t.Context())
	id, err := e.create(0, "nd-1")
	if err != nil {
		t.Fatal(err)
	}
	e.waitAll([]string{id}, "ACTIVE", agIs(statedb.VMActive, statedb.PowerRunning))
	sn := c.Node(0).State()
	ports := sn.PortsOfDevice(id)
	nw, _ := sn.Network(e.net)
	if len(ports) != 1 {
		t.Fatalf("ports of %s = %d; want 1", id, len(ports))
	}
	c.Eventually(20*time.Second, "port ACTIVE", func() bool {
		p, ok := c.Node(0).State().Port(ports[0].ID)
		return ok && p.Status == statedb.PortActive
	})
	tap := netdev.TapName(ports[0].ID)
	links := ip("-n", ns, "-d", "link", "show")
	for _, want := range []string{fmt.Sprintf("psbr%d", nw.VNI), fmt.Sprintf("psvx%d", nw.VNI), tap, fmt.Sprintf("vxlan id %d", nw.VNI)} {
		if !strings.Contains(links, want) {
			t.Errorf("namespace devices lack %q:\n%s", want, links)
		}
	}
	vm, _ := hv.VM(id)
	if len(vm.Spec.NICs) != 1 || vm.Spec.NICs[0].Tap != tap || vm.Spec.NICs[0].MAC != ports[0].MAC {
		t.Errorf("VM NICs = %+v; want tap %s with MAC %s", vm.Spec.NICs, tap, ports[0].MAC)
	}
	if st, body := e.do(0, "DELETE", "/servers/"+id, nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %v", st, body)
	}
	c.Eventually(20*time.Second, "devices removed", func() bool {
		out := ip("-n", ns, "link", "show")
		return !strings.Contains(out, tap) && !strings.Contains(out, fmt.Sprintf("psbr%d", nw.VNI))
	})
}

// TestAgentMissingQEMU: a host whose QEMU binary is missing keeps running;
// its servers go to ERROR with a fault that names the cause.
func TestAgentMissingQEMU(t *testing.T) {
	opts := quiet()
	opts.Agent = func(int) node.AgentOptions {
		return node.AgentOptions{QEMUBinary: "/nonexistent/qemu-system-x86_64", Network: "none", Images: agenttest.AnyImage{},
			ResyncInterval: time.Second}
	}
	c := NewCluster(t, 1, opts)
	e := &agEnv{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(0), idx: map[string]int{c.Node(0).ID(): 0}}
	e.seed(t.Context())
	st, body := e.do(0, "POST", "/servers", map[string]any{"server": map[string]any{
		"name": "noqemu", "imageRef": e.image, "flavorRef": "1", "networks": "none"}})
	if st != http.StatusAccepted {
		t.Fatalf("create = %d %v", st, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	e.waitAll([]string{id}, "ERROR", func(i *statedb.Instance, ok bool) bool { return ok && i.VMState == statedb.VMError })
	inst, _ := e.inst(id)
	if inst.Fault == nil || !strings.Contains(inst.Fault.Message, "qemu") || !strings.Contains(inst.Fault.Message, "/nonexistent/qemu-system-x86_64") {
		t.Errorf("fault = %+v; want it to name the missing QEMU binary", inst.Fault)
	}
	if st, body := e.do(0, "GET", "/servers/"+id, nil); st != http.StatusOK || body["server"].(map[string]any)["status"] != "ERROR" {
		t.Errorf("GET server = %d %v; want ERROR", st, body)
	}
	// The daemon still serves and deletes the failed server.
	if st, body := e.do(0, "DELETE", "/servers/"+id, nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %v", st, body)
	}
	e.waitAll([]string{id}, "gone", func(_ *statedb.Instance, ok bool) bool { return !ok })
}
