package membership

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestFilesSecretsPreferTheDiskOverTheState(t *testing.T) {
	f := Files{DataDir: t.TempDir()}
	if err := os.MkdirAll(f.TLSDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	old := &statedb.ClusterConfig{CAKeyPEM: "state-key", GossipKey: []byte("state-gossip")}
	// An older cluster: only the state holds them.
	if k, g, err := f.Secrets(old); err != nil || k != "state-key" || string(g) != "state-gossip" {
		t.Fatalf("secrets from the state = %q, %q, %v", k, g, err)
	}
	if _, _, err := f.Secrets(nil); err == nil {
		t.Fatal("no CA key anywhere: want an error")
	}
	if err := f.WriteCAKey("disk-key"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.DataDir, "gossip.key"), []byte(hex.EncodeToString([]byte("disk-gossip-key!"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, g, err := f.Secrets(old); err != nil || k != "disk-key" || string(g) != "disk-gossip-key!" {
		t.Fatalf("secrets from the disk = %q, %q, %v", k, g, err)
	}
	if fi, err := os.Stat(filepath.Join(f.TLSDir(), "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, %v; want mode 0600", fi, err)
	}
	if err := f.WriteCAKey(""); err != nil {
		t.Fatalf("empty CA key: %v", err)
	}
}

func TestRenewAtTwoThirds(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, want := renewAt(issued, issued.Add(24*time.Hour)), issued.Add(16*time.Hour); !got.Equal(want) {
		t.Fatalf("renewAt = %v; want %v", got, want)
	}
}

// TestWriteFileAtomicLeavesNoTemporaryFile: a write lands with its
// content and mode, past a temporary file another writer (or a crash)
// left; a write that fails (the path is a directory) leaves the old
// content and no temporary file of its own.
func TestWriteFileAtomicLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	// A temporary file of the fixed name an older release used, left by a
	// crash: read-only and not to be touched.
	stale := path + ".tmp"
	if err := os.WriteFile(stale, []byte("stale"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		data string
		mode os.FileMode
	}{{"one", 0o600}, {"two", 0o644}, {"three", 0o600}} {
		if err := WriteFileAtomic(path, []byte(w.data), w.mode); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != w.data {
			t.Fatalf("read back %q, %v; want %q", b, err, w.data)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode() != w.mode {
			t.Fatalf("mode after writing %q = %v, %v; want %v", w.data, fi.Mode(), err, w.mode)
		}
		onlyFiles(t, dir, "f", "f.tmp")
	}
	if b, err := os.ReadFile(stale); err != nil || string(b) != "stale" {
		t.Fatalf("the stale temporary file reads %q, %v; want it untouched", b, err)
	}
	blocked := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(blocked, []byte("two"), 0o600); err == nil {
		t.Fatal("writing over a directory = nil error")
	}
	onlyFiles(t, dir, "d", "f", "f.tmp")
	if b, err := os.ReadFile(path); err != nil || string(b) != "three" {
		t.Fatalf("after a failed write elsewhere %s reads %q, %v", path, b, err)
	}
}

// onlyFiles fails unless dir holds exactly the entries names (sorted).
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %q; want %q (no temporary file left)", dir, got, names)
	}
}
