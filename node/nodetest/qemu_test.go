package nodetest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/qemu"
	"github.com/peerstack/peerstack/node"
)

// qmResync is the agents' resync interval in the QEMU tests: a QEMU killed
// from outside must show as SHUTOFF within it (plus a boot-free margin).
const qmResync = 2 * time.Second

// qmEnv is a 1-host cluster running real QEMU guests (TCG, no NICs) of the
// repo's test image, uploaded through the image API.
type qmEnv struct {
	t     testing.TB
	c     *Cluster
	hc    *http.Client
	token string
	image string

	mu    sync.Mutex
	uuids []string // every server created, for cleanup
}

// qmGuestImage returns build/guest.qcow2, building it (cached) if needed.
func qmGuestImage(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(root, "build", "guest.qcow2")
	if _, err := os.Stat(img); err != nil {
		cmd := exec.Command(filepath.Join(root, "scripts", "build-guest-image.sh"), "build")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the guest image: %v\n%s", err, out)
		}
	}
	return img
}

func newQMEnv(t testing.TB) *qmEnv {
	t.Helper()
	e := newQMCluster(t, 1)
	e.image = e.upload(qmGuestImage(t))
	return e
}

// newQMCluster starts a cluster of hosts hosts running real QEMU agents,
// with no image yet (a test may change the cluster settings first), and
// kills its servers' QEMUs at cleanup. Requests go through host 0.
func newQMCluster(t testing.TB, hosts int) *qmEnv {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("QEMU is required for this test (CI installs it): %v", err)
	}
	opts := quiet()
	if os.Getenv("PEERSTACK_TEST_LOG") != "" {
		opts.Logger = nil
	}
	c := NewCluster(t, hosts, Options{Logger: opts.Logger, Agent: func(int) node.AgentOptions {
		return node.AgentOptions{Network: "none", ResyncInterval: qmResync, StopTimeout: 20 * time.Second}
	}})
	e := &qmEnv{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(0)}
	// Runs before the cluster stops and its dirs go (cleanups are LIFO).
	t.Cleanup(e.killAll)
	return e
}

// req sends a request to the host and returns status and body.
func (e *qmEnv) req(method, path, ctype string, body io.Reader) (int, []byte) {
	e.t.Helper()
	r, err := http.NewRequest(method, e.c.URL(0)+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	r.Header.Set("X-Auth-Token", e.token)
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	resp, err := e.hc.Do(r)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (e *qmEnv) json(method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	raw, _ := json.Marshal(body)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(raw)
	}
	st, out := e.req(method, path, "application/json", rd)
	m := map[string]any{}
	_ = json.Unmarshal(out, &m)
	return st, m
}

// upload creates a public image from file through the image API.
func (e *qmEnv) upload(file string) string {
	e.t.Helper()
	st, body := e.json("POST", "/image/v2/images", map[string]any{"name": "peerstack-guest", "disk_format": "qcow2",
		"container_format": "bare", "visibility": "public"})
	if st != http.StatusCreated {
		e.t.Fatalf("create image = %d %v", st, body)
	}
	id := body["id"].(string)
	f, err := os.Open(file)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if st, out := e.req("PUT", "/image/v2/images/"+id+"/file", "application/octet-stream", f); st != http.StatusNoContent {
		e.t.Fatalf("upload image = %d %s", st, out)
	}
	return id
}

// create makes an m1.tiny server without NICs whose user data prints a
// marker, and returns its id.
func (e *qmEnv) create(name string) string {
	e.t.Helper()
	ud := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho user-data-ran-on-$(hostname)\n"))
	st, body := e.json("POST", "/compute/v2.1/servers", map[string]any{"server": map[string]any{
		"name": name, "imageRef": e.image, "flavorRef": "1", "networks": "none", "user_data": ud}})
	if st != http.StatusAccepted {
		e.t.Fatalf("create %s = %d %v", name, st, body)
	}
	id := body["server"].(map[string]any)["id"].(string)
	e.mu.Lock()
	e.uuids = append(e.uuids, id)
	e.mu.Unlock()
	return id
}

func (e *qmEnv) action(id string, body map[string]any) {
	e.t.Helper()
	if st, out := e.json("POST", "/compute/v2.1/servers/"+id+"/action", body); st != http.StatusAccepted {
		e.t.Fatalf("action %v on %s = %d %v", body, id, st, out)
	}
}

// console returns the server's console log through the compute API (the
// node's localConsole).
func (e *qmEnv) console(id string, length int) string {
	e.t.Helper()
	st, body := e.json("POST", "/compute/v2.1/servers/"+id+"/action", map[string]any{"os-getConsoleOutput": map[string]any{"length": length}})
	if st != http.StatusOK {
		e.t.Fatalf("console of %s = %d %v", id, st, body)
	}
	return body["output"].(string)
}

// waitConsole waits until the console holds want at least n times.
func (e *qmEnv) waitConsole(id, want string, n int) string {
	e.t.Helper()
	var out string
	Eventually(e.t, 180*time.Second, fmt.Sprintf("%d× %q on %s's console", n, want, id), func() bool {
		out = e.console(id, -1)
		return strings.Count(out, want) >= n
	})
	return out
}

func (e *qmEnv) waitState(id, vm string, power int) *statedb.Instance {
	e.t.Helper()
	var inst *statedb.Instance
	Eventually(e.t, 180*time.Second, fmt.Sprintf("%s %s/%d", id, vm, power), func() bool {
		i, ok := e.c.Node(0).State().Instance(id)
		if ok && i.VMState == statedb.VMError {
			e.t.Fatalf("server %s went to ERROR: %+v", id, i.Fault)
		}
		inst = i
		return ok && i.VMState == vm && i.PowerState == power && i.TaskState == ""
	})
	return inst
}

// qemuPIDs lists the QEMU processes whose command line names uuid.
func qemuPIDs(uuid string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(args[0], "qemu-system") && strings.Contains(string(b), uuid) {
			out = append(out, pid)
		}
	}
	return out
}

// killAll kills, by PID, every QEMU of a server this test created.
func (e *qmEnv) killAll() {
	e.mu.Lock()
	ids := append([]string(nil), e.uuids...)
	e.mu.Unlock()
	for _, id := range ids {
		for _, pid := range qemuPIDs(id) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// onePID returns the single QEMU of uuid, failing if there are none or more.
func onePID(t testing.TB, uuid string) int {
	t.Helper()
	pids := qemuPIDs(uuid)
	if len(pids) != 1 {
		t.Fatalf("QEMU processes of %s = %v; want exactly one", uuid, pids)
	}
	return pids[0]
}

func TestQEMULifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newQMEnv(t)
	id := e.create("qemu-life")
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	out := e.waitConsole(id, "PEERSTACK-READY", 1)
	for _, want := range []string{"PEERSTACK-BOOT hostname=qemu-life uuid=" + id, "user-data-ran-on-qemu-life", "PEERSTACK-USERDATA-DONE rc=0"} {
		if !strings.Contains(out, want) {
			t.Fatalf("console lacks %q:\n%s", want, out)
		}
	}
	if tail := e.console(id, 1); strings.Count(tail, "\n") > 1 || tail == "" {
		t.Errorf("console with length 1 = %q; want one line", tail)
	}
	onePID(t, id)

	e.action(id, map[string]any{"os-stop": nil})
	e.waitState(id, statedb.VMStopped, statedb.PowerShutdown)
	if pids := qemuPIDs(id); len(pids) != 0 {
		t.Fatalf("QEMU of a stopped server still runs: %v", pids)
	}
	e.action(id, map[string]any{"os-start": nil})
	e.waitState(id, statedb.VMActive, statedb.PowerRunning)
	e.waitConsole(id, "PEERSTACK-READY", 2)
	onePID(t, id)

	e.action(id, map[string]any{"reboot": map[string]any{"type": "HARD"}})
	Eventually(t, 60*time.Second, "hard reboot done", func() bool {
		i, _ := e.c.Node(0).State().Instance(id)
		return i.RebootDone == 1 && i.TaskState == ""
	})
	e.waitConsole(id, "PEERSTACK-BOOT hostname=qemu-life uuid="+id, 3)
	onePID(t, id)

	dir := filepath.Join(e.c.Dir(0), "instances", id)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("VM dir: %v", err)
	}
	if st, body := e.json("DELETE", "/compute/v2.1/servers/"+id, nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %v", st, body)
	}
	Eventually(t, 60*time.Second, "record gone", func() bool {
		_, ok := e.c.Node(0).State().Instance(id)
		return !ok
	})
	if pids := qemuPIDs(id); len(pids) != 0 {
		t.Errorf("QEMU of a deleted server still runs: %v", pids)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("VM dir after delete: %v; want it gone", err)
	}
}

func TestQEMURestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e := newQMEnv(t)
	a, b := e.create("qemu-a"), e.create("qemu-b")
	for _, id := range []string{a, b} {
		e.waitState(id, statedb.VMActive, statedb.PowerRunning)
		e.waitConsole(id, "PEERSTACK-READY", 1)
	}
	pa, pb := onePID(t, a), onePID(t, b)

	// The daemon goes away; the guests do not.
	e.c.Stop(0)
	for _, pid := range []int{pa, pb} {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("QEMU %d died with the daemon: %v", pid, err)
		}
	}
	e.c.Restart(t.Context(), 0)
	// Several resyncs later: still the same processes, one per server. (A
	// negative check: nothing to poll for, so it lets two resyncs pass.)
	time.Sleep(2*qmResync + time.Second)
	for id, pid := range map[string]int{a: pa, b: pb} {
		e.waitState(id, statedb.VMActive, statedb.PowerRunning)
		if got := onePID(t, id); got != pid {
			t.Fatalf("QEMU of %s is pid %d after the restart; want the adopted %d", id, got, pid)
		}
	}
	// Still controllable after the restart.
	e.action(a, map[string]any{"os-stop": nil})
	e.waitState(a, statedb.VMStopped, statedb.PowerShutdown)
	if pids := qemuPIDs(a); len(pids) != 0 {
		t.Fatalf("QEMU of stopped %s still runs: %v", a, pids)
	}
	// Killed from outside: SHUTOFF within the resync interval, not restarted.
	if err := syscall.Kill(pb, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	e.waitState(b, statedb.VMStopped, statedb.PowerShutdown)
	if d := time.Since(killed); d > qmResync*6/5+time.Second {
		t.Errorf("killed QEMU reported after %v; want within the resync interval %v", d, qmResync)
	}
	time.Sleep(qmResync + time.Second) // a negative check: one more resync
	if pids := qemuPIDs(b); len(pids) != 0 {
		t.Errorf("killed server was restarted: %v", pids)
	}
}

// qmReadyAt polls a console log file until it holds marker and returns when.
func qmReadyAt(tb testing.TB, file, marker string, timeout time.Duration) time.Time {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil && bytes.Contains(b, []byte(marker)) {
			return time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("%s: no %q after %v", file, marker, timeout)
	return time.Time{}
}

// qmMedian is the median of xs (which it sorts).
func qmMedian(xs []time.Duration) time.Duration {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// bootPeerstack creates a server and returns: create → QEMU spawned (the
// control-plane part) and create → PEERSTACK-READY on its console. It
// leaves the server running and returns its id.
func (e *qmEnv) bootPeerstack(name string) (id string, control, total time.Duration) {
	e.t.Helper()
	t0 := time.Now()
	id = e.create(name)
	var spawned time.Time
	Eventually(e.t, 60*time.Second, "QEMU spawned", func() bool {
		if len(qemuPIDs(id)) > 0 {
			spawned = time.Now()
			return true
		}
		return false
	})
	ready := qmReadyAt(e.t, filepath.Join(e.c.Dir(0), "instances", id, "console.log"), "PEERSTACK-READY", 300*time.Second)
	return id, spawned.Sub(t0), ready.Sub(t0)
}

// bootBare starts qemu-system-x86_64 itself with the command line the
// driver used for server id (spec.json through qemu.BuildArgs), on a fresh
// overlay and a copy of its config drive, and returns start → READY.
func (e *qmEnv) bootBare(id string, accel qemu.Accel) time.Duration {
	e.t.Helper()
	return e.bootBareOn(0, id, "", accel)
}

// bootBareOn is bootBare for server id on host, with the overlay backed by
// the file backing instead of the server's base image when it is not "".
func (e *qmEnv) bootBareOn(host int, id, backing string, accel qemu.Accel) time.Duration {
	e.t.Helper()
	vmDir := filepath.Join(e.c.Dir(host), "instances", id)
	raw, err := os.ReadFile(filepath.Join(vmDir, "spec.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var spec qemu.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		e.t.Fatal(err)
	}
	info, err := exec.Command("qemu-img", "info", "-U", "--output=json", spec.RootDisk.Path).Output()
	if err != nil {
		e.t.Fatal(err)
	}
	var ii struct {
		Backing string `json:"backing-filename"`
		Size    int64  `json:"virtual-size"`
	}
	_ = json.Unmarshal(info, &ii)
	if backing != "" {
		ii.Backing = backing
	}
	dir, err := os.MkdirTemp("", "qmb")
	if err != nil {
		e.t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := qemu.Paths{Dir: dir}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", ii.Backing, p.RootDisk(),
		strconv.FormatInt(ii.Size, 10)).CombinedOutput(); err != nil {
		e.t.Fatalf("overlay: %v %s", err, out)
	}
	cd, err := os.ReadFile(spec.ConfigDrive)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p.ConfigDrive(), cd, 0o600); err != nil {
		e.t.Fatal(err)
	}
	spec.RootDisk.Path, spec.ConfigDrive = p.RootDisk(), p.ConfigDrive()
	args, err := qemu.BuildArgs(spec, p, accel)
	if err != nil {
		e.t.Fatal(err)
	}
	t0 := time.Now()
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	return qmReadyAt(e.t, p.ConsoleLog(), "PEERSTACK-READY", 300*time.Second).Sub(t0)
}

// BenchmarkQEMUBoot: server create through the API → PEERSTACK-READY on
// the console, against bare qemu-system-x86_64 with the same arguments →
// the same marker, alternating (3 pairs per iteration). Reports both
// medians, their ratio, and the control-plane part (create → QEMU spawned).
func BenchmarkQEMUBoot(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	e := newQMEnv(b)
	accel := qemu.DetectAccel()
	var ps, bare, control []time.Duration
	for i := range b.N {
		for r := range 3 {
			id, c, tot := e.bootPeerstack(fmt.Sprintf("bench-%d-%d", i, r))
			ps, control = append(ps, tot), append(control, c)
			e.action(id, map[string]any{"os-stop": nil}) // free the CPU for the bare run
			e.waitState(id, statedb.VMStopped, statedb.PowerShutdown)
			bare = append(bare, e.bootBare(id, accel))
			if st, body := e.json("DELETE", "/compute/v2.1/servers/"+id, nil); st != http.StatusNoContent {
				b.Fatalf("delete = %d %v", st, body)
			}
		}
	}
	mp, mb := qmMedian(ps), qmMedian(bare)
	b.ReportMetric(mp.Seconds(), "peerstack-s")
	b.ReportMetric(mb.Seconds(), "bare-s")
	b.ReportMetric(mp.Seconds()/mb.Seconds(), "ratio")
	b.ReportMetric(float64(qmMedian(control).Milliseconds()), "control-ms")
}

// qmRSS is this process's resident set size in MB.
func qmRSS() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkQEMUDaemonRSS: the resident memory of the (in-process, 1-host)
// daemon while 10 idle guests run, and how much the 10 guests added to it.
func BenchmarkQEMUDaemonRSS(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for range b.N {
		e := newQMEnv(b)
		runtime.GC()
		before := qmRSS()
		var ids []string
		for k := range 10 {
			ids = append(ids, e.create(fmt.Sprintf("idle-%d", k)))
		}
		for _, id := range ids {
			e.waitState(id, statedb.VMActive, statedb.PowerRunning)
			qmReadyAt(b, filepath.Join(e.c.Dir(0), "instances", id, "console.log"), "PEERSTACK-READY", 600*time.Second)
		}
		runtime.GC()
		after := qmRSS()
		b.ReportMetric(after, "daemon-rss-MB")
		b.ReportMetric(after-before, "rss-added-by-10-vms-MB")
		e.killAll()
		e.c.StopAll()
	}
}
