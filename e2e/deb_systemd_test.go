package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDebSystemd drives the installed package through a real systemd: a
// debootstrapped Debian root boots systemd as PID 1 in a container
// (systemd-nspawn, its own network namespace), the package is installed
// there and `peerstack init` bootstraps the service. It proves what the
// chroot test cannot: init enables and starts the unit, the daemon's
// readiness notification makes `systemctl start` return only once the API
// answers, a restart and a package upgrade keep the daemon's QEMU (a real
// server made through the API) running under the same PID, and a stop ends
// cleanly in inactive rather than failed.
func TestDebSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds packages and boots a Debian root under systemd: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("booting a container needs root")
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "debootstrap", "qemu-img", "openstack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for this test (scripts/deps.sh test installs it): %v", tool, err)
		}
	}
	out := t.TempDir()
	v1 := buildDeb(t, "0.9.0", "amd64", out)
	v2 := buildDeb(t, "0.9.1", "amd64", out)

	// Everything the package depends on but qemu-block-extra (its network
	// block drivers pull in Ceph and GlusterFS: a large download for
	// nothing this test uses), plus systemd itself.
	start := time.Now()
	root := debootstrapRoot(t, "systemd", "systemd-sysv", "dbus", "qemu-system-x86", "qemu-utils", "iproute2", "nftables")
	debootstrapTook := time.Since(start)
	start = time.Now()
	c := bootContainer(t, root, "pssd")
	t.Logf("debootstrap: %v; boot to a running systemd: %v", debootstrapTook.Round(time.Second), time.Since(start).Round(time.Millisecond))

	// Not /tmp: the container has a tmpfs there.
	for _, deb := range []string{v1, v2} {
		sh1(t, "cp", deb, filepath.Join(root, "var/tmp", filepath.Base(deb)))
	}
	c.must(t, "dpkg", "--force-depends", "-i", "/var/tmp/"+filepath.Base(v1))
	// Installing starts nothing.
	if st := c.unit(t); st["ActiveState"] != "inactive" || st["UnitFileState"] != "disabled" {
		t.Fatalf("after install: %v; want inactive and disabled", st)
	}

	// The operator's first command on the first host. The container has a
	// network namespace of its own (only loopback): the default ports
	// collide with nothing, and loopback is the address to advertise.
	start = time.Now()
	initOut := c.must(t, "peerstack", "init", "--advertise-addr", "127.0.0.1", "--network", "none", "--bcrypt-cost", "4")
	initTook := time.Since(start)
	if !strings.Contains(initOut, "admin password:") {
		t.Fatalf("init printed no credentials:\n%s", initOut)
	}
	c.apiAnswers(t, "right after init returned")
	st := c.unit(t)
	if st["ActiveState"] != "active" || st["SubState"] != "running" || st["UnitFileState"] != "enabled" {
		t.Fatalf("after init: %v; want active, running and enabled", st)
	}
	if env := c.must(t, "cat", "/etc/peerstack/peerstack.env"); !strings.Contains(env, "--network=none") {
		t.Fatalf("init did not write its flags to the env file:\n%s", env)
	}
	t.Logf("peerstack init to an answering API under systemd: %v", initTook.Round(time.Millisecond))

	// A real QEMU the daemon starts through the API: a blank disk (the
	// guest's firmware finds nothing to boot and waits), no NICs.
	clouds := c.clouds(t)
	osc := func(args ...string) string {
		t.Helper()
		return Run(t, clouds, "nsenter", append([]string{"-t", strconv.Itoa(c.pid1), "-n", "--", "openstack"}, args...)...)
	}
	img := filepath.Join(t.TempDir(), "blank.qcow2")
	sh1(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	osc("image", "create", "--file", img, "--disk-format", "qcow2", "--container-format", "bare", "sd-blank")
	vm := strings.TrimSpace(osc("server", "create", "--image", "sd-blank", "--flavor", "m1.tiny", "-f", "value", "-c", "id", "sd-vm"))
	waitFor(t, 3*time.Minute, "server "+vm+" ACTIVE", func() bool {
		return strings.TrimSpace(osc("server", "show", vm, "-f", "value", "-c", "status")) == "ACTIVE"
	})
	qemu := qemuOf(vm)
	if len(qemu) != 1 {
		t.Fatalf("QEMU processes of %s = %v; want one", vm, qemu)
	}
	if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", qemu[0])); !strings.Contains(string(cg), "peerstack.service") {
		t.Fatalf("QEMU %d is not in the service's cgroup (so the test proves nothing about KillMode):\n%s", qemu[0], cg)
	}
	// The daemon's other child: the fence guard, which a restarted
	// daemon takes over rather than starts again.
	guard := c.procs("fence-guard")
	if len(guard) != 1 {
		t.Fatalf("fence guards in the container = %v; want one", guard)
	}
	// keeps checks that the daemon's QEMU and guard are the same processes
	// and the API still calls the server ACTIVE.
	keeps := func(when string) {
		t.Helper()
		if got := qemuOf(vm); len(got) != 1 || got[0] != qemu[0] {
			t.Fatalf("%s: QEMU of %s = %v; want the same process %d", when, vm, got, qemu[0])
		}
		if got := c.procs("fence-guard"); len(got) != 1 || got[0] != guard[0] {
			t.Fatalf("%s: fence guards = %v; want the same process %d", when, got, guard[0])
		}
		if s := strings.TrimSpace(osc("server", "show", vm, "-f", "value", "-c", "status")); s != "ACTIVE" {
			t.Fatalf("%s: server %s is %s; want ACTIVE", when, vm, s)
		}
	}

	// Restart: systemd signals the daemon only; the new one adopts QEMU.
	main := st["MainPID"]
	start = time.Now()
	c.must(t, "systemctl", "restart", "peerstack")
	restartTook := time.Since(start)
	c.apiAnswers(t, "right after systemctl restart returned")
	st = c.unit(t)
	if st["ActiveState"] != "active" || st["MainPID"] == main || st["MainPID"] == "0" {
		t.Fatalf("after restart: %v; want active with a new main PID (was %s)", st, main)
	}
	keeps("after systemctl restart")
	t.Logf("systemctl restart to an answering API: %v; QEMU %d and fence guard %d kept", restartTook.Round(time.Millisecond), qemu[0], guard[0])

	// Stop, then start: a clean SIGTERM exit (inactive, not failed) that
	// leaves QEMU running, and a start that returns once the API answers.
	start = time.Now()
	c.must(t, "systemctl", "stop", "peerstack")
	stopTook := time.Since(start)
	st = c.unit(t)
	if st["ActiveState"] != "inactive" || st["Result"] != "success" || st["ExecMainStatus"] != "0" {
		t.Fatalf("after stop: %v; want inactive, result success, exit status 0", st)
	}
	if got := qemuOf(vm); len(got) != 1 || got[0] != qemu[0] {
		t.Fatalf("after systemctl stop: QEMU of %s = %v; want %d still running", vm, got, qemu[0])
	}
	start = time.Now()
	c.must(t, "systemctl", "start", "peerstack")
	startTook := time.Since(start)
	c.apiAnswers(t, "right after systemctl start returned")
	keeps("after systemctl stop and start")
	t.Logf("systemctl stop: %v (clean exit); systemctl start to an answering API: %v", stopTook.Round(time.Millisecond), startTook.Round(time.Millisecond))

	// A package upgrade restarts the running service on the new binary.
	main = c.unit(t)["MainPID"]
	start = time.Now()
	c.must(t, "dpkg", "--force-depends", "-i", "/var/tmp/"+filepath.Base(v2))
	upgradeTook := time.Since(start)
	c.apiAnswers(t, "right after the upgrade's dpkg -i returned")
	st = c.unit(t)
	if st["ActiveState"] != "active" || st["MainPID"] == main {
		t.Fatalf("after the upgrade: %v; want active with a new main PID (was %s)", st, main)
	}
	if exe := c.must(t, "readlink", "/proc/"+st["MainPID"]+"/exe"); strings.TrimSpace(exe) != "/usr/bin/peerstack" {
		t.Fatalf("the service runs %q after the upgrade; want the new /usr/bin/peerstack", exe)
	}
	if v := c.must(t, "peerstack", "version"); !strings.Contains(v, "0.9.1") {
		t.Fatalf("upgraded binary says %q; want 0.9.1", v)
	}
	keeps("after the package upgrade")
	t.Logf("dpkg -i of the next version (restart included): %v; QEMU %d kept", upgradeTook.Round(time.Millisecond), qemu[0])

	// The API ends the VM; then a last stop, as clean as the first, and
	// systemd never had to restart the daemon (it never failed).
	osc("server", "delete", "--wait", vm)
	if got := qemuOf(vm); len(got) != 0 {
		t.Fatalf("QEMU of deleted %s still runs: %v", vm, got)
	}
	c.must(t, "systemctl", "stop", "peerstack")
	if st := c.unit(t); st["ActiveState"] != "inactive" || st["Result"] != "success" || st["NRestarts"] != "0" {
		t.Fatalf("final stop: %v; want inactive, result success and no automatic restarts", st)
	}
}

// nspawnBox is a Debian root booted with systemd as its PID 1.
type nspawnBox struct {
	pid1 int // the container's systemd, as this process sees it
}

// bootContainer boots root with systemd-nspawn in its own network
// namespace and waits until systemd reports the system up. Cleanup powers
// it off, or kills its PID 1 (and with it every process inside) when that
// does not finish in time.
func bootContainer(t *testing.T, root, name string) *nspawnBox {
	t.Helper()
	// Without a host systemd there is no machined to register with nor a
	// scope to put the container in (--keep-unit: stay in this process's
	// cgroup); the container's console output is kept for a failure's log.
	cmd := exec.Command("systemd-nspawn", "--quiet", "--directory", root, "--machine", name,
		"--boot", "--register=no", "--keep-unit", "--private-network", "--console=read-only")
	var out lockedBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c := &nspawnBox{}
	t.Cleanup(func() {
		wait := time.Second
		if c.pid1 != 0 {
			if _, err := c.run("systemctl", "poweroff"); err == nil {
				wait = 30 * time.Second
			}
		}
		select {
		case <-done:
		case <-time.After(wait):
			t.Logf("the container did not power off within %v: killing its PID 1", wait)
			if c.pid1 != 0 {
				_ = syscall.Kill(c.pid1, syscall.SIGKILL)
			}
			_ = cmd.Process.Kill()
			<-done
		}
		// nspawn leaves its propagation directory behind when /run is not
		// a tmpfs (it refuses to remove trees on a disk file system).
		_ = os.Remove(filepath.Join("/run/systemd/nspawn/propagate", name))
		if t.Failed() {
			t.Logf("container console:\n%s", tail(out.String(), 6000))
		}
	})
	deadline := time.Now().Add(time.Minute)
	for c.pid1 == 0 {
		select {
		case <-done:
			t.Fatalf("systemd-nspawn exited: %v\n%s", cmd.ProcessState, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no systemd as PID 1 under systemd-nspawn %d within a minute\n%s", cmd.Process.Pid, out.String())
		}
		c.pid1 = containerInit(cmd.Process.Pid)
		time.Sleep(50 * time.Millisecond)
	}
	// --wait returns once the boot finished: running, or degraded when a
	// unit failed (logged, as peerstack's unit is the one that counts).
	// Until systemd opened its private socket it cannot be asked at all.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		b, _ := c.cmd(ctx, "systemctl", "is-system-running", "--wait").CombinedOutput()
		switch s := strings.TrimSpace(string(b)); s {
		case "running":
			return c
		case "degraded":
			failed, _ := c.run("systemctl", "--failed", "--no-legend")
			t.Logf("the container's systemd is degraded; failed units:\n%s", failed)
			return c
		default:
			select {
			case <-ctx.Done():
				t.Fatalf("the container's systemd did not finish booting within 2 minutes: %q\n%s", s, out.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// containerInit finds the systemd that runs as PID 1 of its own PID
// namespace below the nspawn process, or 0 while it does not run yet.
func containerInit(nspawn int) int {
	queue := []int{nspawn}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var name, nspid string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
				nspid = v
			}
		}
		if f := strings.Fields(nspid); name == "systemd" && len(f) > 1 && f[len(f)-1] == "1" {
			return pid
		}
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		for _, k := range strings.Fields(string(kids)) {
			if n, err := strconv.Atoi(k); err == nil {
				queue = append(queue, n)
			}
		}
	}
	return 0
}

// procs lists the container's processes (their PIDs as this process sees
// them) whose command line holds word.
func (c *nspawnBox) procs(word string) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.pid1))
	if err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if n, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || n != ns {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(b, []byte(word)) {
			out = append(out, pid)
		}
	}
	return out
}

// cmd is a command inside the container: all its namespaces, its root.
func (c *nspawnBox) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid1), "-a", "-r", "-w", "--"}, args...)...)
	// The container's own environment, not this process's.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C",
		"DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	return cmd
}

func (c *nspawnBox) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := c.cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *nspawnBox) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(args...)
	if err != nil {
		journal, _ := c.run("journalctl", "-u", "peerstack", "--no-pager", "-n", "60")
		t.Fatalf("in the container: %s: %v\n%s\njournal of peerstack.service:\n%s", strings.Join(args, " "), err, out, journal)
	}
	return out
}

// unit is what systemd says about peerstack.service.
func (c *nspawnBox) unit(t *testing.T) map[string]string {
	t.Helper()
	out := c.must(t, "systemctl", "show", "peerstack.service",
		"-p", "ActiveState,SubState,Result,MainPID,ExecMainStatus,NRestarts,UnitFileState")
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// apiAnswers makes one HTTPS request to the API (identity's version
// document) in the container's network, with no retry and no delay (no
// helper process to start): it answers 200 now, or the check fails.
func (c *nspawnBox) apiAnswers(t *testing.T, when string) {
	t.Helper()
	code, err := c.getAPI("/identity/v3")
	if err != nil || code != http.StatusOK {
		journal, _ := c.run("journalctl", "-u", "peerstack", "--no-pager", "-n", "40")
		t.Fatalf("%s: the API did not answer: status %d, %v\njournal of peerstack.service:\n%s", when, code, err, journal)
	}
}

// getAPI GETs path from the container's API on 127.0.0.1:8470, its
// certificate checked against the cluster CA.
func (c *nspawnBox) getAPI(path string) (int, error) {
	pem, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/var/lib/peerstack/ca.pem", c.pid1))
	if err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return 0, fmt.Errorf("no certificate in the cluster's ca.pem")
	}
	conn, err := c.dial("127.0.0.1:8470")
	if err != nil {
		return 0, err
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:8470\r\nConnection: close\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// dial connects to addr in the container's network namespace: the socket
// is made on an OS thread that entered it. That thread stays locked and
// so ends with its goroutine, never to run anything else in that namespace.
func (c *nspawnBox) dial(addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", c.pid1))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// clouds writes a copy of the admin's clouds.yaml for this side of the
// container: its CA path is the container's.
func (c *nspawnBox) clouds(t *testing.T) string {
	t.Helper()
	b := c.must(t, "cat", "/var/lib/peerstack/clouds.yaml")
	root := fmt.Sprintf("/proc/%d/root", c.pid1)
	b = strings.ReplaceAll(b, "cacert: /var/lib/peerstack/", "cacert: "+root+"/var/lib/peerstack/")
	p := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond every half second until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
