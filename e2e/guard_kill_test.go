package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestKillGuardByPidfile: the harness kills a fence guard by the pid in
// its pidfile, and nothing whose command line is not that data dir's guard.
func TestKillGuardByPidfile(t *testing.T) {
	dataDir := t.TempDir()
	guard := exec.Command("sh", "-c", "sleep 300", "fence-guard", "--data-dir", dataDir)
	other := exec.Command("sh", "-c", "sleep 300", "not-a-guard")
	for _, c := range []*exec.Cmd{guard, other} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	files := guardPIDFiles(dataDir)
	if err := os.WriteFile(files[len(files)-1], []byte(strconv.Itoa(guard.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(otherDir, "fence-heartbeat.json.pid"), []byte(strconv.Itoa(other.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	killGuard(dataDir)
	killGuard(otherDir)
	exited := make(chan error, 1)
	go func() { exited <- guard.Wait() }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the guard still runs after killGuard")
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("killGuard killed a process that is not a fence guard: %v", err)
	}
}
