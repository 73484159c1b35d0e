package hostfail

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerstack/peerstack/node/agent"
)

// sleeper is a real process standing in for an instance's QEMU.
type sleeper struct {
	pid  int
	done chan struct{}
	ps   *os.ProcessState
}

func startSleeper(t *testing.T, id string) *sleeper {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.Args[0] = "qemu-system-x86_64 -name guest=" + id
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sleeper{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); s.ps = cmd.ProcessState; close(s.done) }()
	// Start returns while the kernel may still be setting up the new
	// program's arguments: wait until the command line names the VM.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.pid), "cmdline")); err == nil && strings.Contains(string(b), id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never showed a command line naming %s", s.pid, id)
		}
	}
	t.Cleanup(func() {
		_ = syscall.Kill(s.pid, syscall.SIGKILL)
		<-s.done
	})
	return s
}

// state is the process's state letter from /proc ("" once reaped).
func (s *sleeper) state() string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.pid), "stat"))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return f[0]
}

func (s *sleeper) waitState(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.state() != want {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d in state %q; want %q", s.pid, s.state(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *sleeper) waitKilled(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
		if ws, ok := s.ps.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("pid %d ended with %v; want SIGKILL", s.pid, s.ps)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("pid %d (state %q) not killed within 5 s", s.pid, s.state())
	}
}

// fence-sleep finds every daemon's heartbeat — two in the run dir, one
// in a data dir (a daemon that could not write the run dir) — and after
// the resume acts on each by its own lease: a valid one continues its
// QEMU, a lapsed one kills it, and a record whose heartbeat is gone (in
// a data dir or in the run dir: the lease cannot be shown valid) kills
// its QEMU too.
func TestFenceSleepActsOnEveryHeartbeatOfTheHost(t *testing.T) {
	run, d1, d2, d3, d4 := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	hb1, hb2, hb4 := HeartbeatPath(run, d1), HeartbeatPath(run, d2), HeartbeatPath(run, d4)
	hb3 := filepath.Join(d3, dataDirHeartbeat)
	q1, q2, q3, q4 := startSleeper(t, "00000000-0000-4000-8000-000000000001"), startSleeper(t, "00000000-0000-4000-8000-000000000002"), startSleeper(t, "00000000-0000-4000-8000-000000000003"), startSleeper(t, "00000000-0000-4000-8000-000000000004")
	valid, since := agent.BootNow()+time.Hour, agent.BootNow()-time.Minute
	for i, hb := range []string{hb1, hb2, hb3, hb4} {
		q := []*sleeper{q1, q2, q3, q4}[i]
		if err := agent.WriteHeartbeatSince(hb, valid, 0, since, []agent.GuardVM{{ID: "00000000-0000-4000-8000-00000000000" + strconv.Itoa(i+1), PID: q.pid}}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := SleepConfig{RunDir: run, DataDirs: []string{d1, d2, d3}, Logger: slog.New(slog.DiscardHandler)}
	if err := FenceSleep("pre", cfg); err != nil {
		t.Fatal(err)
	}
	for _, q := range []*sleeper{q1, q2, q3, q4} {
		q.waitState(t, "T")
	}
	// While the host slept: daemon 2's deadline passed, daemon 3's
	// and daemon 4's heartbeats were removed.
	if err := agent.WriteHeartbeatSince(hb2, agent.BootNow()-time.Second, 0, since, []agent.GuardVM{{ID: "00000000-0000-4000-8000-000000000002", PID: q2.pid}}); err != nil {
		t.Fatal(err)
	}
	for _, hb := range []string{hb3, hb4} {
		if err := os.Remove(hb); err != nil {
			t.Fatal(err)
		}
	}
	if err := FenceSleep("post", cfg); err != nil {
		t.Fatal(err)
	}
	q1.waitState(t, "S")
	q2.waitKilled(t)
	q3.waitKilled(t)
	q4.waitKilled(t)
	if left, _ := filepath.Glob(filepath.Join(run, "*.sleep")); len(left) != 0 {
		t.Fatalf("records left after post: %v", left)
	}
	if err := FenceSleep("suspend", cfg); err == nil {
		t.Fatal("an unknown phase is accepted")
	}
}
