package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestServiceArgs(t *testing.T) {
	f := &agentFlags{}
	c := &cobra.Command{Use: "x"}
	addAgentFlags(c, f)
	if err := c.Flags().Parse([]string{"--name", "h1", "--data-dir", "/elsewhere", "--voters", "1", "--storage", "nfs://nas/export"}); err != nil {
		t.Fatal(err)
	}
	got, err := serviceArgs(c.Flags())
	want := []string{"--name=h1", "--storage=nfs://nas/export", "--voters=1"}
	if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("serviceArgs = %q, %v; want %q (only flags set, never --data-dir)", got, err, want)
	}
	c2 := &cobra.Command{Use: "x"}
	addAgentFlags(c2, &agentFlags{})
	_ = c2.Flags().Parse([]string{"--name", "a b"})
	if _, err := serviceArgs(c2.Flags()); err == nil {
		t.Fatal("serviceArgs accepted a value with a space, which the env file would split")
	}
}

func TestEnvFileRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc", "peerstack.env")
	if err := writeEnvFile(p, []string{"--name=h1", "--voters=1"}, "PSJ1-secret"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("env file mode = %v, %v; want 0600 (it may hold a join token)", fi.Mode(), err)
	}
	env, err := readEnvFile(p)
	if err != nil || env["PEERSTACK_ARGS"] != "--name=h1 --voters=1" || env["PEERSTACK_JOIN_TOKEN"] != "PSJ1-secret" {
		t.Fatalf("readEnvFile = %v, %v", env, err)
	}
	if err := writeEnvFile(p, []string{"--name=h1"}, ""); err != nil {
		t.Fatal(err)
	}
	if env, _ := readEnvFile(p); env["PEERSTACK_JOIN_TOKEN"] != "" {
		t.Fatalf("token still in the env file after the join: %v", env)
	}
}

// The env file is written through a temporary file of its own: past one
// another writer (or a crash) left, and none is left behind, also when
// the write fails (the path is a directory: the rename fails, for root
// too).
func TestEnvFileLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "peerstack.env")
	noTemp := func() {
		t.Helper()
		if left, err := filepath.Glob(filepath.Join(dir, ".*")); err != nil || len(left) != 0 {
			t.Fatalf("temporary files left: %q, %v", left, err)
		}
	}
	// The fixed temporary name an older release used, left by a crash,
	// world-readable: not to be written through.
	stale := p + ".tmp"
	if err := os.WriteFile(stale, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeEnvFile(p, []string{"--name=h1"}, "PSJ1-secret"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode() != 0o600 {
		t.Fatalf("env file mode = %v, %v; want 0600 (it holds a join token)", fi.Mode(), err)
	}
	if env, err := readEnvFile(p); err != nil || env["PEERSTACK_ARGS"] != "--name=h1" || env["PEERSTACK_JOIN_TOKEN"] != "PSJ1-secret" {
		t.Fatalf("readEnvFile = %v, %v", env, err)
	}
	if b, err := os.ReadFile(stale); err != nil || string(b) != "stale" {
		t.Fatalf("the stale temporary file reads %q, %v; want it untouched", b, err)
	}
	noTemp()
	blocked := filepath.Join(dir, "d.env")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeEnvFile(blocked, nil, ""); err == nil {
		t.Fatal("writing the env file over a directory = nil error")
	}
	noTemp()
}

// notifyListener is systemd's side of sd_notify.
func notifyListener(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

func TestSdNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("sdNotify without NOTIFY_SOCKET = %v; want nil (not under systemd)", err)
	}
	path, ch := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", path)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if got != "READY=1" {
			t.Fatalf("systemd got %q; want READY=1", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing reached the notify socket")
	}
}

// unitRunner stands in for systemd: it starts the ExecStart line of the
// packaged unit, with $PEERSTACK_ARGS expanded from the env file as
// systemd does, only with the binary and the data dir pointed at the
// test's own.
type unitRunner struct {
	t       *testing.T
	bin     string
	dataDir string
	envFile string
	notify  string

	mu    sync.Mutex
	procs []*exec.Cmd
	out   bytes.Buffer
}

func (u *unitRunner) EnableNow(ctx context.Context, unit string) error {
	if unit != serviceName {
		return fmt.Errorf("unit %q; want %s", unit, serviceName)
	}
	b, err := os.ReadFile("packaging/peerstack.service")
	if err != nil {
		return err
	}
	var exec0 string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			exec0 = v
		}
	}
	env, err := readEnvFile(u.envFile)
	if err != nil {
		return err
	}
	var argv []string
	for _, w := range strings.Fields(exec0) {
		switch {
		case w == "$PEERSTACK_ARGS":
			argv = append(argv, strings.Fields(env["PEERSTACK_ARGS"])...)
		case w == "/usr/bin/peerstack":
			argv = append(argv, u.bin)
		case w == "/var/lib/peerstack":
			argv = append(argv, u.dataDir)
		default:
			argv = append(argv, w)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+u.notify, "PEERSTACK_JOIN_TOKEN="+env["PEERSTACK_JOIN_TOKEN"])
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &u.mu, w: &u.out}, &lockedWriter{mu: &u.mu, w: &u.out}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	u.mu.Lock()
	u.procs = append(u.procs, cmd)
	u.mu.Unlock()
	u.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func loopbackArgs(t *testing.T, name string) []string {
	return []string{"--advertise-addr=127.0.0.1", "--api-addr=" + freeAddr(t), "--bcrypt-cost=4",
		"--gossip-addr=" + freeAddr(t), "--name=" + name, "--network=none", "--raft-addr=" + freeAddr(t)}
}

// TestServiceInitAndJoin runs `init` on one host and a service-mode join
// on another through the packaged unit's command line: the daemon tells
// systemd it is ready, init prints working credentials, and the join
// token leaves the env file once the host is a member.
func TestServiceInitAndJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons: not in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "peerstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	notify, ready := notifyListener(t)
	root := t.TempDir()
	first := &unitRunner{t: t, bin: bin, dataDir: filepath.Join(root, "a"), envFile: filepath.Join(root, "a.env"), notify: notify}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := serviceSetup{envFile: first.envFile, dataDir: first.dataDir, mgr: first, wait: time.Minute}
	start := time.Now()
	if err := s.start(ctx, loopbackArgs(t, "alpha"), ""); err != nil {
		t.Fatalf("init: %v\n%s", err, first.out.String())
	}
	if err := waitAPI(ctx, s.dataDir, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("init → API answering: %.2f s", time.Since(start).Seconds())
	select {
	case msg := <-ready:
		if msg != "READY=1" {
			t.Fatalf("first notification %q; want READY=1", msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon never told systemd it was ready")
	}
	var creds bytes.Buffer
	if err := printCredentials(&creds, s.dataDir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(creds.String(), "admin password: ") || !strings.Contains(creds.String(), "clouds.yaml") {
		t.Fatalf("init printed:\n%s", creds.String())
	}
	if err := s.start(ctx, loopbackArgs(t, "alpha"), ""); err == nil {
		t.Fatal("a second init over a member's data dir was accepted")
	}

	clouds := filepath.Join(s.dataDir, "clouds.yaml")
	tokCmd := exec.CommandContext(ctx, bin, "token", "create")
	tokCmd.Env = append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=peerstack")
	out, err := tokCmd.Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	token := lines[len(lines)-1]

	second := &unitRunner{t: t, bin: bin, dataDir: filepath.Join(root, "b"), envFile: filepath.Join(root, "b.env"), notify: notify}
	j := serviceSetup{envFile: second.envFile, dataDir: second.dataDir, mgr: second, wait: time.Minute}
	if err := j.start(ctx, loopbackArgs(t, "beta"), token); err != nil {
		t.Fatalf("join as a service: %v\n%s", err, second.out.String())
	}
	env, err := readEnvFile(second.envFile)
	if err != nil || env["PEERSTACK_JOIN_TOKEN"] != "" || !strings.Contains(env["PEERSTACK_ARGS"], "--name=beta") {
		t.Fatalf("env file after the join = %v, %v; want the args and no token", env, err)
	}
	members := exec.CommandContext(ctx, bin, "members", "-f", "json")
	members.Env = tokCmd.Env
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := members.Output()
		if err == nil && strings.Contains(string(out), `"beta"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("beta never listed as a member: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
		members = exec.CommandContext(ctx, bin, "members", "-f", "json")
		members.Env = tokCmd.Env
	}
}
