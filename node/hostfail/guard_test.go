package hostfail

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/node/agent"
)

func TestHeartbeatPathInRunDirOrDataDir(t *testing.T) {
	run, d1, d2 := t.TempDir(), t.TempDir(), t.TempDir()
	p1, p2 := HeartbeatPath(run, d1), HeartbeatPath(run, d2)
	if filepath.Dir(p1) != run || filepath.Dir(p2) != run || p1 == p2 {
		t.Fatalf("heartbeats %s and %s; want two files in %s", p1, p2, run)
	}
	if again := HeartbeatPath(run, d1+"/."); again != p1 {
		t.Fatalf("heartbeat of the same data dir = %s, then %s", p1, again)
	}
	// A run dir that cannot be made (its parent is a file): the data dir.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if p := HeartbeatPath(filepath.Join(file, "run"), d1); filepath.Dir(p) != d1 {
		t.Fatalf("heartbeat with no writable run dir = %s; want it in %s", p, d1)
	}
}

// The guard process pets the --watchdog device and disarms it when it
// exits cleanly; a device it cannot open leaves it guarding without one.
// A regular file stands in for the device (this machine has none).
func TestRunGuardPetsAndDisarmsWatchdog(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "watchdog")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	hb := filepath.Join(dir, "hb.json")
	run := func(watchdog string, until func() bool) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- RunGuard(ctx, GuardConfig{Heartbeat: hb, Lock: hb + ".lock", Watchdog: watchdog,
				HostGone: func() string { return "" }, Logger: slog.New(slog.DiscardHandler)})
		}()
		deadline := time.Now().Add(10 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("guard with watchdog %q: condition not met within 10 s", watchdog)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	read := func() string {
		b, _ := os.ReadFile(dev)
		return string(b)
	}
	run(dev, func() bool { return strings.Count(read(), ".") >= 2 })
	if got := read(); !strings.HasSuffix(got, "V") || strings.Count(got, "V") != 1 {
		t.Fatalf("device got %q; want pets, then one magic 'V'", got)
	}
	_, pidErr := os.Stat(hb + ".pid")
	run(filepath.Join(dir, "missing"), func() bool { _, err := os.Stat(hb + ".pid"); return err == nil })
	if pidErr == nil {
		t.Fatal("the first guard left its pid file")
	}
}

// A guard that died is started again well within the shortest watchdog
// timeout: the device is not petted meanwhile, and a host must not
// reboot because its guard crashed while its lease was valid.
func TestGuardRestartedWithinTheWatchdogTimeout(t *testing.T) {
	if 2*guardRestartInterval > agent.MinWatchdog {
		t.Fatalf("a dead guard is restarted after up to %v; the shortest watchdog timeout %v leaves no room for the start",
			guardRestartInterval, agent.MinWatchdog)
	}
}

func TestWatchdogInEffectFile(t *testing.T) {
	hb := filepath.Join(t.TempDir(), "hb.json")
	if d := readWatchdogInEffect(hb); d != 0 {
		t.Fatalf("no file = %v", d)
	}
	if err := os.WriteFile(watchdogInEffectPath(hb), []byte("5000000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if d := readWatchdogInEffect(hb); d != 5*time.Second {
		t.Fatalf("read %v; want 5s", d)
	}
}
