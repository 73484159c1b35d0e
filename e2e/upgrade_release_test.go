package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The previous release: the commit of this repository's history that
// built version previousVersion. The upgrade test builds it from git.
const (
	previousRelease = "1f85b57"
	previousVersion = "0.1.0"
	currentVersion  = "0.2.0"
)

// buildRelease builds the peerstack binary of commit rev of this
// repository's git history into a temporary directory and returns its
// path. It fails (never skips) when the history is not there: a shallow
// clone must be deepened (git fetch --unshallow) for the upgrade test.
// Each edit runs on the unpacked source tree before the build.
func buildRelease(t *testing.T, rev string, edits ...func(dir string) error) string {
	t.Helper()
	root := RepoRoot()
	if err := exec.Command("git", "-C", root, "cat-file", "-e", rev+"^{commit}").Run(); err != nil {
		// A shallow clone: deepen it from where it came from, once.
		if out, err := exec.Command("git", "-C", root, "fetch", "--quiet", "--unshallow").CombinedOutput(); err != nil {
			t.Logf("git fetch --unshallow: %v %s", err, out)
		}
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", rev+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("commit %s (the previous release) is not in the git history of %s: %v %s\n"+
			"the upgrade test builds the previous release from git; fetch the full history (git fetch --unshallow)", rev, root, err, out)
	}
	dir := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("unpack %s from git: %v\n%s", rev, err, out)
	}
	for _, edit := range edits {
		if err := edit(dir); err != nil {
			t.Fatalf("edit the source of %s: %v", rev, err)
		}
	}
	build := exec.Command("go", "build", "-o", "old", ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release %s: %v\n%s", rev, err, out)
	}
	return filepath.Join(dir, "old")
}

// memberVersions returns each member's name → version as `peerstack
// members -f json` shows them through clouds, and whether every member is
// alive.
func memberVersions(clouds, bin string) (map[string]string, bool, error) {
	out, err := RunErr(clouds, bin, "members", "-f", "json")
	if err != nil {
		return nil, false, fmt.Errorf("members: %w: %s", err, out)
	}
	var ms []struct {
		Name        string `json:"name"`
		GossipState string `json:"gossip_state"`
		Version     string `json:"version"`
	}
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return nil, false, fmt.Errorf("members -f json: %w: %s", err, out)
	}
	got, alive := map[string]string{}, true
	for _, m := range ms {
		got[m.Name] = m.Version
		alive = alive && m.GossipState == "alive"
	}
	return got, alive, nil
}

// waitVersions waits until members, asked through clouds, lists exactly
// the hosts of want, alive, each on its version.
func waitVersions(t *testing.T, clouds string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var got map[string]string
	var err error
	for time.Now().Before(deadline) {
		var alive bool
		got, alive, err = memberVersions(clouds, Binary(t))
		if err == nil && alive && len(got) == len(want) {
			same := true
			for n, v := range want {
				same = same && got[n] == v
			}
			if same {
				return
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("members never showed versions %v; last %v (%v)", want, got, err)
}

// leaderName is the Raft leader's host name as `peerstack status` shows it.
func leaderName(t *testing.T, clouds, bin string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := RunErr(clouds, bin, "status", "-f", "json")
		var st struct {
			Leader struct{ Name string } `json:"leader"`
		}
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Leader.Name != "" {
			return st.Leader.Name
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never named a leader: %v\n%s", err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestUpgradeFromPreviousRelease runs a three-host cluster of real
// processes on the previous release, built from this repository's git
// history, with state and a running guest made through the openstack
// client, then upgrades the hosts one at a time to the current build —
// followers first, the leader last — restarting each with `agent` on its
// data dir. After every step members shows each host's version, the API
// answers and takes writes through another host, the guest keeps its
// QEMU process, and a command type new in this release (security groups,
// routers) is refused with 409 naming the version, writing nothing, until
// the last host runs it; then it is accepted.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	guest := filepath.Join(RepoRoot(), "build", "guest.qcow2")
	if _, err := os.Stat(guest); err != nil {
		t.Fatalf("guest image: %v (make guest-image)", err)
	}
	begin := time.Now()
	oldBin := buildRelease(t, previousRelease)
	newBin := Binary(t)
	if out := strings.TrimSpace(Run(t, "", oldBin, "version")); !strings.Contains(out, previousVersion) {
		t.Fatalf("%s version = %q; want %s", previousRelease, out, previousVersion)
	}
	if out := strings.TrimSpace(Run(t, "", newBin, "version")); !strings.Contains(out, currentVersion) {
		t.Fatalf("bin/peerstack version = %q; want %s", out, currentVersion)
	}
	t.Logf("previous release built in %.1f s", time.Since(begin).Seconds())

	// Three hosts on the previous release.
	root := t.TempDir()
	flags := []string{"--network", "none", "--resync-interval", "2s"}
	a := &Proc{}
	procs := map[string]*Proc{}
	names := []string{"rel-a", "rel-b", "rel-c"}
	for i, name := range names {
		args := append([]string{"agent"}, flags...)
		if i > 0 {
			tok := LastLine(Run(t, filepath.Join(a.DataDir, "clouds.yaml"), oldBin, "token", "create"))
			args = append([]string{"join", tok}, flags...)
		}
		p := startDaemonBin(t, oldBin, name, filepath.Join(root, name), args...)
		if i == 0 {
			a = p
		}
		procs[name] = p
	}
	clouds := filepath.Join(a.DataDir, "clouds.yaml")
	versions := map[string]string{}
	for _, n := range names {
		versions[n] = previousVersion
	}
	waitVersions(t, clouds, versions)
	cloudsOf := map[string]string{}
	for _, n := range names {
		cloudsOf[n] = CloudsFor(t, a, procs[n])
	}

	// State made on the previous release through the openstack client.
	osc := func(via string, args ...string) string {
		t.Helper()
		return Run(t, cloudsOf[via], "openstack", args...)
	}
	netID := strings.TrimSpace(osc("rel-a", "network", "create", "-f", "value", "-c", "id", "rel-net"))
	subID := strings.TrimSpace(osc("rel-a", "subnet", "create", "-f", "value", "-c", "id", "--network", "rel-net", "--subnet-range", "10.71.0.0/24", "rel-sub"))
	osc("rel-a", "image", "create", "--file", guest, "--disk-format", "qcow2", "--container-format", "bare", "--public", "rel-guest")
	srv := strings.TrimSpace(osc("rel-a", "server", "create", "-f", "value", "-c", "id", "--image", "rel-guest", "--flavor", "m1.tiny", "--network", "rel-net", "rel-vm"))
	t.Cleanup(func() {
		for _, pid := range qemuOf(srv) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	waitValue(t, clouds, 3*time.Minute, "ACTIVE", "server", "show", srv, "-f", "value", "-c", "status")
	pids := qemuOf(srv)
	if len(pids) != 1 {
		t.Fatalf("QEMU of %s = %v; want one", srv, pids)
	}
	qemuPID := pids[0]
	t.Logf("server %s runs on %s (QEMU %d)", srv, strings.TrimSpace(osc("rel-a", "server", "show", srv, "-f", "value", "-c", "OS-EXT-SRV-ATTR:host")), qemuPID)

	// Followers first, the leader last.
	leader := leaderName(t, clouds, oldBin)
	var order []string
	for _, n := range names {
		if n != leader {
			order = append(order, n)
		}
	}
	order = append(order, leader)
	t.Logf("upgrade order %v (leader %s)", order, leader)

	w := newWriter(t, a.DataDir)
	w.renames = strings.TrimSpace(osc("rel-a", "network", "create", "-f", "value", "-c", "id", "rel-writes"))
	w.point(procs[order[1]].APIAddr)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(ctx, t) }()
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	for i, name := range order {
		via := order[(i+1)%len(order)] // a host that stays up during this step
		if i > 0 {
			via = order[0] // already upgraded
		}
		w.point(procs[via].APIAddr)
		if i == len(order)-1 {
			// Before the last host — the leader — is upgraded, it restarts
			// on the previous release once, as an operator's reboot would
			// do: leadership moves to a host of the current release, which
			// now leads a follower of the previous one.
			mixedLeadership(t, procs[name], cloudsOf, name, names, oldBin, order[:i], srv, qemuPID)
		}
		down0, ok0 := w.stats()
		stepStart := time.Now()
		p := procs[name]
		p.Stop()
		p.Bin = newBin
		p.Restart(t)
		versions[name] = currentVersion
		for _, n := range names {
			waitVersions(t, cloudsOf[n], versions)
		}
		w.waitWrite(t, ok0)
		down1, _ := w.stats()
		t.Logf("step %d: %s upgraded in %.1f s (writes through %s unavailable %.2f s)",
			i+1, name, time.Since(stepStart).Seconds(), via, (down1 - down0).Seconds())

		if got := qemuOf(srv); len(got) != 1 || got[0] != qemuPID {
			t.Fatalf("after upgrading %s: QEMU of %s = %v; want the same process %d", name, srv, got, qemuPID)
		}
		for _, n := range names {
			if got := strings.TrimSpace(osc(n, "network", "show", "-f", "value", "-c", "id", "rel-net")); got != netID {
				t.Fatalf("after upgrading %s: network rel-net via %s = %q; want %s", name, n, got, netID)
			}
		}
		osc(via, "network", "create", fmt.Sprintf("rel-after-%d", i+1))

		// A command type new in this release, through an upgraded host.
		upgraded := order[0]
		if i < len(order)-1 {
			mustRefuseGated(t, cloudsOf[upgraded], order[i+1:])
		}
	}
	w.mu.Lock() // the writer still runs
	wOK, wFails, wDown, wWorst := w.ok, w.fails, w.down, w.worst
	w.mu.Unlock()
	t.Logf("rolling upgrade from %s to %s: %.1f s; writes ok %d, failed %d; unavailable %.2f s in total, longest %.2f s",
		previousVersion, currentVersion, time.Since(start).Seconds(), wOK, wFails, wDown.Seconds(), wWorst.Seconds())

	// Every host runs the current release: the gated commands go through.
	for _, n := range names {
		if st := strings.TrimSpace(osc(n, "server", "show", srv, "-f", "value", "-c", "status")); st != "ACTIVE" {
			t.Errorf("server via %s is %s after the upgrade", n, st)
		}
		if got := strings.TrimSpace(osc(n, "subnet", "show", "-f", "value", "-c", "id", "rel-sub")); got != subID {
			t.Errorf("subnet rel-sub via %s = %q; want %s", n, got, subID)
		}
	}
	osc(order[0], "security", "group", "create", "rel-sg")
	osc(order[1], "router", "create", "rel-router")
	for _, n := range names {
		waitValue(t, cloudsOf[n], 30*time.Second, "rel-sg", "security", "group", "show", "-f", "value", "-c", "name", "rel-sg")
		waitValue(t, cloudsOf[n], 30*time.Second, "rel-router", "router", "show", "-f", "value", "-c", "name", "rel-router")
	}
	osc(order[2], "server", "delete", "--wait", srv)
	t.Logf("whole test %.1f s", time.Since(begin).Seconds())
}

// mixedLeadership restarts the previous release's leader old on the
// previous release and checks the cluster under a leader of the current
// release: leadership moved to one of upgraded, writes through the old
// follower are refused with a 409 saying to upgrade it, writes through an
// upgraded host are seen on every host, the commands new in this release
// are refused naming the old follower, and the guest kept its QEMU
// process.
func mixedLeadership(t *testing.T, old *Proc, cloudsOf map[string]string, name string, names []string, oldBin string, upgraded []string, srv string, qemuPID int) {
	t.Helper()
	old.Stop()
	old.Restart(t)
	versions := map[string]string{}
	for _, n := range names {
		versions[n] = currentVersion
	}
	versions[name] = previousVersion
	for _, n := range names {
		waitVersions(t, cloudsOf[n], versions)
	}
	leader := leaderName(t, cloudsOf[name], oldBin)
	if leader == name {
		t.Fatalf("%s, restarted on %s, leads again; want a leader of %s", name, previousVersion, currentVersion)
	}
	t.Logf("%s leads %s on %s", leader, name, previousVersion)
	// A write through the old follower: it cannot carry its caller's
	// authority to a leader of this release, which refuses it with a 409
	// naming the host to upgrade (not a 503 the old host retried until
	// the client gave up); nothing is written.
	out, err := RunErr(cloudsOf[name], "openstack", "network", "create", "rel-mixed-old")
	if err == nil || !strings.Contains(out, "409") || !strings.Contains(out, "upgrade "+name) {
		t.Fatalf("network create through %s on %s under a leader of %s: want a 409 naming %s to upgrade; got %v\n%s",
			name, previousVersion, currentVersion, name, err, out)
	}
	t.Logf("write through %s on %s: %s", name, previousVersion, strings.TrimSpace(out))
	// Writes through an upgraded host go on, and every host reads them.
	id := strings.TrimSpace(Run(t, cloudsOf[upgraded[0]], "openstack", "network", "create", "-f", "value", "-c", "id", "rel-mixed"))
	for _, n := range names {
		waitValue(t, cloudsOf[n], 30*time.Second, id, "network", "show", "-f", "value", "-c", "id", "rel-mixed")
	}
	if out := Run(t, cloudsOf[upgraded[0]], "openstack", "network", "list", "-f", "value", "-c", "Name"); strings.Contains(out, "rel-mixed-old") {
		t.Fatalf("the refused write through %s was written:\n%s", name, out)
	}
	mustRefuseGated(t, cloudsOf[upgraded[0]], []string{name})
	if got := qemuOf(srv); len(got) != 1 || got[0] != qemuPID {
		t.Fatalf("with %s on %s under a leader of %s: QEMU of %s = %v; want the same process %d", name, previousVersion, currentVersion, srv, got, qemuPID)
	}
}

// mustRefuseGated checks, through clouds, that creating a security group
// and a router is refused with 409 naming the version and one of the
// hosts still on the previous release, and that nothing was written.
func mustRefuseGated(t *testing.T, clouds string, oldHosts []string) {
	t.Helper()
	for _, args := range [][]string{
		{"security", "group", "create", "rel-gated-sg"},
		{"router", "create", "rel-gated-router"},
	} {
		out, err := RunErr(clouds, "openstack", args...)
		if err == nil {
			t.Fatalf("openstack %s with %v on %s succeeded; want 409:\n%s", strings.Join(args, " "), oldHosts, previousVersion, out)
		}
		named := false
		for _, h := range oldHosts {
			named = named || strings.Contains(out, "host "+h+" ")
		}
		if !strings.Contains(out, "409") || !strings.Contains(out, "version "+currentVersion) || !named {
			t.Fatalf("openstack %s: want 409 naming version %s and one of %v:\n%s", strings.Join(args, " "), currentVersion, oldHosts, out)
		}
		t.Logf("openstack %s with %v on %s: %s", strings.Join(args, " "), oldHosts, previousVersion, strings.TrimSpace(out))
	}
	if out := Run(t, clouds, "openstack", "security", "group", "list", "-f", "value", "-c", "Name"); strings.Contains(out, "rel-gated-sg") {
		t.Fatalf("a refused security group create was written:\n%s", out)
	}
	if out := Run(t, clouds, "openstack", "router", "list", "-f", "value", "-c", "Name"); strings.Contains(out, "rel-gated-router") {
		t.Fatalf("a refused router create was written:\n%s", out)
	}
}

// startDaemonBin is StartDaemon on a given binary.
func startDaemonBin(t *testing.T, bin, name, dataDir string, args ...string) *Proc {
	t.Helper()
	api := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	full := append(args, "--data-dir", dataDir, "--name", name, "--api-addr", api,
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		"--advertise-addr", "127.0.0.1", "--bcrypt-cost", "4")
	p := &Proc{Name: name, DataDir: dataDir, APIAddr: api, Bin: bin, args: full}
	p.start(t)
	return p
}

// stats returns the writer's total unavailability so far and its count
// of successful writes.
func (w *writer) stats() (time.Duration, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.down, w.ok
}

// waitWrite waits until a write succeeds after the writer had ok0 of
// them, so that a stretch of failures is closed and counted.
func (w *writer) waitWrite(t *testing.T, ok0 int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		w.mu.Lock()
		ok, open := w.ok, !w.downSince.IsZero()
		w.mu.Unlock()
		if ok > ok0 && !open {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write went through for a minute (ok %d)", ok)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
