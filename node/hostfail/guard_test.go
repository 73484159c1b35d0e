package hostfail

import (
	"os"
	"path/filepath"
	"testing"
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
