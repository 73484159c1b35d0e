package gossip

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

var newKey = []byte("rotated-key-0123456789abcdef0123") // 32 bytes

// TestRotateKeyShutsOutOldKey rotates the key of three members of four
// in the three steps (install, use, remove): the three see each other
// alive throughout, and the fourth, left with the old key (a removed
// member), is no longer heard, and a newcomer holding only the old key
// cannot join, while one holding the new key can.
func TestRotateKeyShutsOutOldKey(t *testing.T) {
	nodes := startCluster(t, 4)
	kept, removed := nodes[:3], nodes[3]
	allAlive := func(step string) {
		t.Helper()
		waitFor(t, 10*time.Second, step+": the three see each other alive", func() bool {
			for _, g := range kept {
				for _, o := range kept {
					if m, ok := memberOf(g, o.nodeID); !ok || m.State != StateAlive {
						return false
					}
				}
			}
			return true
		})
	}
	for _, step := range []struct {
		name string
		keys [][]byte
	}{
		{"install", [][]byte{testKey, newKey}},
		{"use", [][]byte{newKey, testKey}},
		{"remove", [][]byte{newKey}},
	} {
		for _, g := range kept {
			if err := g.SetKeys(step.keys); err != nil {
				t.Fatalf("%s: %s SetKeys: %v", step.name, g.nodeID, err)
			}
			if got := g.Keys(); len(got) != len(step.keys) || !bytes.Equal(got[0], step.keys[0]) {
				t.Fatalf("%s: %s Keys() = %q; want %q", step.name, g.nodeID, got, step.keys)
			}
		}
		allAlive(step.name)
	}
	waitFor(t, 20*time.Second, "the three list the member with the old key as not alive", func() bool {
		for _, g := range kept {
			if m, ok := memberOf(g, removed.nodeID); ok && m.State == StateAlive {
				return false
			}
		}
		return true
	})
	waitFor(t, 20*time.Second, "the member with the old key hears nobody", func() bool {
		return removed.NumAlive() == 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stale := startNode(t, testConfig("stale"))
	if n, err := stale.Join(ctx, []string{addr(kept[0])}); !errors.Is(err, ErrNoPeers) {
		t.Errorf("Join with the old key = %d, %v; want ErrNoPeers", n, err)
	}
	freshCfg := testConfig("fresh")
	freshCfg.SecretKey, freshCfg.OtherKeys = newKey, [][]byte{testKey}
	fresh := startNode(t, freshCfg)
	if _, err := fresh.Join(ctx, []string{addr(kept[1])}); err != nil {
		t.Fatalf("Join with the new key: %v", err)
	}
	waitFor(t, 10*time.Second, "the newcomer with the new key sees the three", func() bool {
		return fresh.NumAlive() == 4
	})
	for _, g := range kept {
		if m, ok := memberOf(g, "stale"); ok && m.State == StateAlive {
			t.Errorf("%s lists the old-key newcomer alive", g.nodeID)
		}
	}
}

func TestSetKeysRefusesBadKeys(t *testing.T) {
	g := startNode(t, testConfig("solo"))
	for _, keys := range [][][]byte{nil, {[]byte("short")}, {newKey, []byte("short")}} {
		if err := g.SetKeys(keys); err == nil {
			t.Errorf("SetKeys(%q) = nil; want an error", keys)
		}
	}
	if got := g.Keys(); len(got) != 1 || !bytes.Equal(got[0], testKey) {
		t.Errorf("after refused SetKeys, Keys() = %q; want only the first key", got)
	}
	bad := testConfig("bad")
	bad.OtherKeys = [][]byte{[]byte("x")}
	if _, err := New(bad); err == nil {
		t.Error("New with a bad other key = nil error")
	}
	_ = g.Shutdown()
	if err := g.SetKeys([][]byte{newKey}); !errors.Is(err, ErrShutdown) {
		t.Errorf("SetKeys after Shutdown = %v; want ErrShutdown", err)
	}
}
