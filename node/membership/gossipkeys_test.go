package membership

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

type fakeGossip struct {
	keys [][]byte
	fail error
}

func (g *fakeGossip) SetKeys(keys [][]byte) error {
	if g.fail != nil {
		return g.fail
	}
	g.keys = keys
	return nil
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestGossipKeysFile(t *testing.T) {
	f := Files{DataDir: t.TempDir()}
	path := filepath.Join(f.DataDir, "gossip.key")
	// As bootstrap, join and older releases write it: one key in hex.
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key(1))), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := f.ReadGossipKeys()
	if err != nil || len(got.Keys) != 1 || !bytes.Equal(got.Keys[0], key(1)) || got.Version != 0 {
		t.Fatalf("hex gossip.key read as %+v, %v", got, err)
	}
	want := GossipKeys{Keys: [][]byte{key(2), key(1)}, Version: 7, Covers: []string{"gone"}}
	if err := f.WriteGossipKeys(want); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadGossipKeys(); err != nil || !got.equal(want) {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("gossip.key: %v, %v; want mode 0600", fi, err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left: %v", err)
	}
	if k, g, err := f.Secrets(nil); err == nil {
		t.Fatalf("no CA key: Secrets = %q, %x; want an error", k, g)
	}
	if err := os.MkdirAll(f.TLSDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteCAKey("ca"); err != nil {
		t.Fatal(err)
	}
	if _, g, err := f.Secrets(nil); err != nil || !bytes.Equal(g, key(2)) {
		t.Fatalf("Secrets hands out %x, %v; want the primary key", g, err)
	}
	// A file cut short by a crash, or a hex key gossip cannot use, is an
	// error, not a key of the wrong length.
	for _, bad := range []string{`{"keys":[]}`, `{"keys":["abcd"]}`, `{"keys":["zz"]}`, `{`, ``, "\n", `abcd`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := f.ReadGossipKeys(); err == nil {
			t.Errorf("gossip.key %q read as %+v; want an error", bad, got)
		}
	}
}

// TestGossipKeyringApplyOrder: a keyring older than the one held is
// ignored (a late answer never undoes a newer step), a failed change of
// the running gossip leaves file and keyring as they were.
func TestGossipKeyringApplyOrder(t *testing.T) {
	f := Files{DataDir: t.TempDir()}
	g := &fakeGossip{}
	k := NewGossipKeyring(&GossipKeyring{Gossip: g, Files: f, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		GossipKeys{Keys: [][]byte{key(1)}})
	step := GossipKeys{Keys: [][]byte{key(1), key(2)}, Version: 10}
	if changed, err := k.Apply(step); !changed || err != nil {
		t.Fatalf("Apply(newer) = %v, %v", changed, err)
	}
	if changed, err := k.Apply(step); changed || err != nil {
		t.Fatalf("Apply(same) = %v, %v; want no change", changed, err)
	}
	if changed, _ := k.Apply(GossipKeys{Keys: [][]byte{key(1)}, Version: 9}); changed {
		t.Fatal("an older keyring was applied")
	}
	if !bytes.Equal(g.keys[1], key(2)) || !k.Current().equal(step) {
		t.Fatalf("gossip %x, current %+v; want step 1", g.keys, k.Current())
	}
	g.fail = errors.New("shut down")
	if _, err := k.Apply(GossipKeys{Keys: [][]byte{key(2)}, Version: 11}); err == nil {
		t.Fatal("Apply with gossip failing = nil error")
	}
	if onDisk, err := f.ReadGossipKeys(); err != nil || !onDisk.equal(step) || !k.Current().equal(step) {
		t.Fatalf("after a failed Apply: disk %+v (%v), current %+v; want step 1", onDisk, err, k.Current())
	}
}
