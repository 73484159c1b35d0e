package node

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/hostfail"
)

// guardRig runs RunGuard over a data dir with an identity and a fresh
// heartbeat, and waits until the guard wrote its pidfile.
func guardRig(t *testing.T) (dataDir, heartbeat string, done <-chan error) {
	t.Helper()
	dataDir = t.TempDir()
	if err := saveIdentity(dataDir, &identityFile{NodeID: "n1", ClusterID: "c1", Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	heartbeat = hostfail.HeartbeatPath(t.TempDir(), dataDir)
	if err := agent.WriteHeartbeat(heartbeat, agent.BootNow()+time.Hour, 0, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		ch <- RunGuard(ctx, heartbeat, heartbeat+".lock", dataDir, "", nil, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-exited })
	waitFor(t, "the guard's pidfile", func() bool {
		b, err := os.ReadFile(heartbeat + ".pid")
		return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid())
	})
	return dataDir, heartbeat, ch
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits until the guard returned and removed its pidfile.
func waitExit(t *testing.T, heartbeat string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("guard: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the guard did not exit")
	}
	if _, err := os.Stat(heartbeat + ".pid"); !os.IsNotExist(err) {
		t.Fatalf("pidfile left behind: %v", err)
	}
}

func TestGuardExitsWhenTheHostLeft(t *testing.T) {
	dataDir, heartbeat, done := guardRig(t)
	id, err := loadIdentity(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	id.Left = true
	if err := saveIdentity(dataDir, id); err != nil {
		t.Fatal(err)
	}
	waitExit(t, heartbeat, done)
}

func TestGuardExitsWhenTheIdentityIsGone(t *testing.T) {
	dataDir, heartbeat, done := guardRig(t)
	if err := os.Remove(identityPath(dataDir)); err != nil {
		t.Fatal(err)
	}
	waitExit(t, heartbeat, done)
}

func TestGuardExitsWhenTheHeartbeatIsRemoved(t *testing.T) {
	_, heartbeat, done := guardRig(t)
	if err := os.Remove(heartbeat); err != nil {
		t.Fatal(err)
	}
	waitExit(t, heartbeat, done)
}
