package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testWriter sends progress lines to t.Log and stdout (so `go test -v`
// shows them as they happen).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	fmt.Print(string(p))
	return len(p), nil
}

// TestClusterInABox runs the whole scenario on a 3-host cluster in a box
// with NFS storage, driven only through the openstack and peerstack CLIs
// against different hosts in turn. The steps that need compute, networks,
// images and volumes run only with PEERSTACK_E2E_FULL=1 (`make e2e`);
// without it the available prefix runs: cluster formation across
// namespaces, identity, leader kill + catch-up, deletion and the leftover
// check.
func TestClusterInABox(t *testing.T) {
	full := os.Getenv("PEERSTACK_E2E_FULL") == "1"
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	t0 := time.Now()
	s, up := startTestBox(t, ctx, "qemu-system-x86_64", "openstack", "ganesha.nfsd", "rpcbind", "nfs-ls")
	rows, err := s.runSteps(e2eSteps(), full, false)
	rows = append([]stepResult{up}, rows...)
	table := formatTable(rows) + "\n" + s.watch.table()
	fmt.Print(table)
	t.Logf("\n%s(total %.1fs; full=%v; logs %s)", table, time.Since(t0).Seconds(), full, s.b.LogDir)
	if err != nil {
		t.Fatal(err)
	}
	gated := 0
	for _, r := range rows {
		if strings.HasPrefix(r.status, "gated") {
			gated++
		}
	}
	if full && gated > 0 {
		t.Fatalf("PEERSTACK_E2E_FULL=1 but %d steps were gated", gated)
	}
}

// startTestBox starts a 3-host box with a NAS for a test (root and the
// tools given are required), tears it down at the end and checks nothing
// is left, and returns a scenario on it and the row of its start-up.
func startTestBox(t *testing.T, ctx context.Context, tools ...string) (*scenario, stepResult) {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster in a box: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("cluster in a box needs %s: %v", tool, err)
		}
	}
	out := testWriter{t}
	t0 := time.Now()
	b, err := StartBox(ctx, BoxOptions{Hosts: 3, NFS: true, Kind: "test", Bin: Binary(t), Log: out})
	if err != nil {
		t.Fatalf("start box: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Down(context.Background()); err != nil {
			t.Errorf("box teardown: %v", err)
		}
		if left := boxRemains(b); len(left) > 0 {
			t.Errorf("teardown left: %v", left)
		}
		t.Logf("logs of every daemon and console: %s", b.LogDir)
	})
	boot := time.Since(t0)
	s, err := newScenario(ctx, b, out)
	if err != nil {
		t.Fatal(err)
	}
	return s, stepResult{name: "box up (underlay, NAS, 3 daemons)", host: "-", secs: boot.Seconds(), status: "ok", api: -1}
}

// boxRemains lists the box's namespaces, links and processes that still
// exist.
func boxRemains(b *Box) []string {
	var left []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, b.Prefix) {
			left = append(left, "netns "+l)
		}
	}
	out, _ = exec.Command("ip", "-o", "link").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], b.Prefix) {
			left = append(left, "link "+f[1])
		}
	}
	for _, p := range procsMatching(func(cmdline, _ string) bool { return strings.Contains(cmdline, b.RunDir+"/") }) {
		left = append(left, fmt.Sprintf("process %d %s", p.pid, p.cmdline))
	}
	return left
}

// TestBoxDemo is the driver of `make demo` (PEERSTACK_BOX_DEMO=up) and
// `make demo-down` (PEERSTACK_BOX_DEMO=down); without that variable it
// does nothing. "up" removes any previous demo, starts a 3-host cluster
// with NFS storage, runs the demo steps (failures print "not available
// yet") and leaves it running.
func TestBoxDemo(t *testing.T) {
	mode := os.Getenv("PEERSTACK_BOX_DEMO")
	if mode == "" {
		t.Log("PEERSTACK_BOX_DEMO unset: nothing to do (make demo / make demo-down)")
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	out := testWriter{t}
	if err := CleanStaleBoxes(ctx, out, true); err != nil {
		t.Fatalf("remove previous demo: %v", err)
	}
	if mode == "down" {
		fmt.Println("demo-down: no demo cluster left")
		return
	}
	if mode != "up" {
		t.Fatalf("PEERSTACK_BOX_DEMO=%q; want up or down", mode)
	}
	b, err := StartBox(ctx, BoxOptions{Hosts: 3, NFS: true, Kind: "demo", Bin: Binary(t), Log: out})
	if err != nil {
		t.Fatalf("demo cluster: %v", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = b.Down(context.Background())
		}
	}()
	s, err := newScenario(ctx, b, out)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.runSteps([]boxStep{{name: "cluster formed (members via every host)", run: stepCluster},
		{name: "token issue", run: stepTokenIssue}}, true, false)
	if err != nil {
		t.Fatalf("demo cluster: %v", err)
	}
	more, _ := s.runSteps(demoSteps(), true, true)
	rows = append(rows, more...)
	ok = true
	fmt.Print(formatTable(rows) + "\n" + s.watch.table())
	fmt.Printf(`
Cluster in a box %s is running: 3 hosts (network namespaces %sh1..%sh3 on
bridge %sul0, 10.%d.0.1-3), NAS %snas at %s exporting %s (storage %s).
Drive it through any host:
  export OS_CLIENT_CONFIG_FILE=%s OS_CLOUD=peerstack
  openstack server list        # or bin/peerstack members
  (other hosts: %s-clouds.yaml for h2, h3 in %s)
Daemon logs: %s
Remove it:   make demo-down
`, b.Prefix, b.Prefix, b.Prefix, b.Prefix, b.Subnet, b.Prefix, b.NASAddr, b.Export, b.Storage,
		b.Host(1).Clouds, "h<N>", b.RunDir, b.LogDir)
}

// TestBoxStaleCleanup plants what a crashed run leaves (a state file whose
// owner is dead, a namespace with a process in it, a root link) plus an
// orphan namespace with no state file, and checks that the next start's
// cleanup removes all of it and nothing else.
func TestBoxStaleCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster in a box: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	var rnd [2]byte
	_, _ = rand.Read(rnd[:])
	prefix := BoxBasePrefix + hex.EncodeToString(rnd[:])
	orphanNS := fmt.Sprintf("%s%04xh9", BoxBasePrefix, (int(rnd[0])<<8|int(rnd[1]))^0xffff)
	st := boxState{Prefix: prefix, Kind: "test", Owner: dead.Process.Pid, RunDir: filepath.Join(BoxBaseDir, prefix),
		Netns: []string{prefix + "h1"}, Links: []string{prefix + "ul0"}}
	t.Cleanup(func() {
		_ = teardown(ctx, st, nil)
		_ = teardown(ctx, boxState{Prefix: "orphan", Netns: []string{orphanNS}}, nil)
		_ = os.RemoveAll(st.RunDir)
	})
	for _, args := range [][]string{
		{"netns", "add", prefix + "h1"}, {"netns", "add", orphanNS},
		{"link", "add", prefix + "ul0", "type", "bridge"},
	} {
		if err := ip(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(st.RunDir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.RunDir, "h1.data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("ip", "netns", "exec", prefix+"h1", "sleep", "600")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	t.Cleanup(func() { _ = sleeper.Process.Kill(); <-exited })
	// Wait until it runs inside the namespace (ip netns exec has switched):
	// the cleanup finds it by namespace, not by process group.
	want := netnsLink(prefix + "h1")
	for i := 0; ; i++ {
		if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid)); got == want {
			break
		}
		if i > 200 {
			t.Fatalf("sleeper never entered %sh1", prefix)
		}
		time.Sleep(10 * time.Millisecond)
	}
	data, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(st.RunDir, "state.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CleanStaleBoxes(ctx, nil, false); err != nil {
		t.Fatalf("CleanStaleBoxes: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("process in the stale namespace still runs")
	}
	for _, ns := range []string{prefix + "h1", orphanNS} {
		if netnsLink(ns) != "" {
			t.Errorf("netns %s survived", ns)
		}
	}
	if _, err := sh(ctx, "ip", "link", "show", prefix+"ul0"); err == nil {
		t.Errorf("link %sul0 survived", prefix)
	}
	for _, f := range []string{"state.json", "h1.data"} {
		if _, err := os.Stat(filepath.Join(st.RunDir, f)); err == nil {
			t.Errorf("%s survived", f)
		}
	}
	if _, err := os.Stat(filepath.Join(st.RunDir, "logs")); err != nil {
		t.Errorf("logs of the stale run were removed: %v", err)
	}
}
