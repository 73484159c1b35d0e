// Package e2e holds the process-level and cluster-in-a-box tests: real
// bin/peerstack processes, the real openstack client, and (as root) network
// namespaces, QEMU and NFS. It contains test helpers only.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot is the repository root (the parent of this package).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

var buildOnce sync.Once
var buildErr error

// Binary builds bin/peerstack once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(RepoRoot(), "bin", "peerstack")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Proc is a running peerstack daemon.
type Proc struct {
	Name    string
	DataDir string
	APIAddr string
	Bin     string   // the binary to run; default Binary(t)
	args    []string // the full command line after the binary
	cmd     *exec.Cmd
	out     *lockedBuf
	done    chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartDaemon runs `peerstack <args…>` with loopback addresses and waits
// until it prints that it serves. args is "agent" or "join TOKEN".
func StartDaemon(t testing.TB, name, dataDir string, args ...string) *Proc {
	t.Helper()
	api := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	full := append(args, "--data-dir", dataDir, "--name", name, "--api-addr", api,
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		"--advertise-addr", "127.0.0.1", "--bcrypt-cost", "4")
	p := &Proc{Name: name, DataDir: dataDir, APIAddr: api, args: full}
	p.start(t)
	return p
}

// Restart starts a stopped daemon again with the same data dir, addresses
// and flags (a joined host restarts with "agent", as its operator would)
// and waits until it serves.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	if !p.Exited() {
		t.Fatalf("restart %s: it is still running", p.Name)
	}
	if len(p.args) > 1 && p.args[0] == "join" {
		p.args = append([]string{"agent"}, p.args[2:]...)
	}
	p.start(t)
}

// start runs the daemon and waits until it prints that it serves.
func (p *Proc) start(t testing.TB) {
	t.Helper()
	p.out, p.done = &lockedBuf{}, make(chan struct{})
	bin := p.Bin
	if bin == "" {
		bin = Binary(t)
	}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	cmd, out, done := p.cmd, p.out, p.done
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done: // exited (and reaped): its group id may be reused
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		// The fence guard runs in its own session: the group kill misses it.
		killGuard(p.DataDir)
		removeGuardFiles(p.DataDir)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", p.Name, out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "https://"+p.APIAddr) {
		select {
		case <-done:
			t.Fatalf("%s exited: %s", p.Name, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start: %s", p.Name, out.String())
		}
	}
}

// Output is what the daemon printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Kill stops the daemon (SIGKILL to its process group) and waits.
func (p *Proc) Kill() {
	if p.cmd.Process != nil && !p.Exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// Stop sends SIGTERM to the daemon alone, as systemd does to a unit with
// KillMode=process, and waits for it to exit.
func (p *Proc) Stop() {
	if p.cmd.Process != nil && !p.Exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	<-p.done
}

// Exited reports whether the daemon has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

var passwordRE = regexp.MustCompile(`password: "([^"]*)"`)

// AdminPassword reads the bootstrap password from the clouds.yaml in p's
// data dir (the daemon prints only where it is).
func (p *Proc) AdminPassword() string {
	data, err := os.ReadFile(filepath.Join(p.DataDir, "clouds.yaml"))
	if err != nil {
		return ""
	}
	m := passwordRE.FindStringSubmatch(string(data))
	if m == nil {
		return ""
	}
	return m[1]
}

// CloudsFor writes a clouds.yaml that points at p's API (same admin
// credentials as the bootstrap clouds.yaml) and returns its path.
func CloudsFor(t testing.TB, boot *Proc, p *Proc) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(boot.DataDir, "clouds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "https://"+boot.APIAddr, "https://"+p.APIAddr, 1)
	path := filepath.Join(t.TempDir(), p.Name+"-clouds.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Run runs a command with the cloud environment and returns stdout; it
// fails the test on a non-zero exit.
func Run(t testing.TB, clouds string, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(clouds, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// RunErr is Run without failing.
func RunErr(clouds string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=peerstack")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// LastLine returns the last non-empty line of s.
func LastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}

// guardPIDFiles are where the fence guard of the daemon of dataDir writes
// its pid: next to its heartbeat, in /run/peerstack named after a hash of
// the data dir's absolute path, or in the data dir when /run is not
// writable (the daemon's rule, node/hostfail.go).
func guardPIDFiles(dataDir string) []string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return []string{
		filepath.Join("/run/peerstack", "fence-heartbeat-"+hex.EncodeToString(sum[:8])+".json.pid"),
		filepath.Join(dataDir, "fence-heartbeat.json.pid"),
	}
}

// removeGuardFiles removes the fence-guard files of the daemon of
// dataDir (heartbeat, its temporary copy, lock and pidfile, in /run and
// the data dir), once that daemon and its guard are gone: named after a
// hash of the data dir, they would pile up run after run.
func removeGuardFiles(dataDir string) {
	for _, pidfile := range guardPIDFiles(dataDir) {
		hb := strings.TrimSuffix(pidfile, ".pid")
		for _, f := range []string{hb, hb + ".tmp", hb + ".lock", hb + ".pid"} {
			_ = os.Remove(f)
		}
	}
}

// guardPID returns the pid in a pidfile of the fence guard of the daemon
// of dataDir, and that pidfile, when the pid is still a fence guard of
// this data dir (not gone, not another process now); 0 otherwise.
func guardPID(dataDir string) (int, string) {
	for _, f := range guardPIDFiles(dataDir) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), "fence-guard") && strings.Contains(string(cmdline), dataDir) {
			return pid, f
		}
	}
	return 0, ""
}

// killGuard SIGKILLs the fence guard of the daemon of dataDir, by the pid
// in its pidfile, when that pid is still a fence guard of this data dir.
func killGuard(dataDir string) {
	if pid, _ := guardPID(dataDir); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
