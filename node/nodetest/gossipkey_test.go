package nodetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/membership"
)

// gossipKeys reads host i's gossip.key.
func (c *Cluster) gossipKeys(t *testing.T, i int) membership.GossipKeys {
	t.Helper()
	k, err := membership.Files{DataDir: c.Dir(i)}.ReadGossipKeys()
	if err != nil {
		t.Fatalf("host%d: %v", i, err)
	}
	return k
}

// index is the index of the host with member id id (-1: none).
func (c *Cluster) index(id string) int {
	for i := range c.Len() {
		if n := c.Node(i); n != nil && n.ID() == id {
			return i
		}
	}
	return -1
}

// seeAlive reports whether each of the hosts lists each other one alive
// in gossip.
func (c *Cluster) seeAlive(hosts ...int) bool {
	for _, i := range hosts {
		alive := map[string]bool{}
		for _, m := range c.Node(i).Gossip().Members() {
			alive[m.Name] = m.State == gossip.StateAlive
		}
		for _, j := range hosts {
			if !alive[c.Node(j).ID()] {
				return false
			}
		}
	}
	return true
}

// oldKeyCannotJoin checks that a gossip member holding only key cannot
// join through host i.
func (c *Cluster) oldKeyCannotJoin(t *testing.T, i int, key []byte) {
	t.Helper()
	g, err := gossip.New(gossip.Config{NodeID: "holder-of-the-old-key", BindAddr: "127.0.0.1", SecretKey: key, Timers: Timers.Gossip})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", c.Node(i).Gossip().Port())
	if n, err := g.Join(ctx, []string{addr}); !errors.Is(err, gossip.ErrNoPeers) {
		t.Errorf("gossip join with the old key through host%d = %d, %v; want ErrNoPeers", i, n, err)
	}
}

// rotatedFrom waits until every host in hosts holds one gossip key, the
// same on disk and in its running gossip on all of them, other than old.
func (c *Cluster) rotatedFrom(t *testing.T, old []byte, hosts ...int) []byte {
	t.Helper()
	var key []byte
	c.Eventually(30*time.Second, fmt.Sprintf("hosts %v hold one new gossip key, on disk and in gossip", hosts), func() bool {
		key = nil
		for _, i := range hosts {
			k, err := membership.Files{DataDir: c.Dir(i)}.ReadGossipKeys()
			if err != nil || len(k.Keys) != 1 || bytes.Equal(k.Keys[0], old) {
				return false
			}
			running := c.Node(i).Gossip().Keys()
			if len(running) != 1 || !bytes.Equal(running[0], k.Keys[0]) {
				return false
			}
			if key == nil {
				key = k.Keys[0]
			}
			if !bytes.Equal(key, k.Keys[0]) {
				return false
			}
		}
		return true
	})
	return key
}

// checkKeysRoute: the internal keys route hands a member the keys, takes
// keys from the leader only, and the removed host's certificate gets
// nothing.
func (c *Cluster) checkKeysRoute(t *testing.T, ld, member, removed int, key []byte) {
	t.Helper()
	url := c.URL(ld) + "/internal/v1/gossip/keys"
	resp, err := c.hostClient(t, member).Get(url)
	if err != nil {
		t.Fatalf("a member asks the leader for the keys: %v", err)
	}
	var got membership.GossipKeys
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || len(got.Keys) != 1 || !bytes.Equal(got.Keys[0], key) {
		t.Errorf("a member asks the leader for the keys: %d, %x, %v; want 200 and the new key", resp.StatusCode, got.Keys, err)
	}
	if resp, err := c.hostClient(t, removed).Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("the removed host asks for the keys: answered %d; want a refused handshake", resp.StatusCode)
	} else if !strings.Contains(err.Error(), "remote error: tls:") {
		// Refused by the leader's TLS layer (an alert), not a dial
		// failure or a timeout that any error would let pass.
		t.Errorf("the removed host asks for the keys: %v; want a TLS alert from the leader", err)
	}
	body, _ := json.Marshal(membership.GossipKeys{Keys: [][]byte{bytes.Repeat([]byte{7}, 32)}, Version: math.MaxUint64})
	req, _ := http.NewRequest(http.MethodPut, c.URL(ld)+"/internal/v1/gossip/keys", bytes.NewReader(body))
	resp, err = c.hostClient(t, member).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("a follower hands the leader keys: %d; want 409", resp.StatusCode)
	}
	if k := c.Node(ld).Gossip().Keys(); len(k) != 1 || !bytes.Equal(k[0], key) {
		t.Errorf("the leader's keys after a follower's push: %x; want the new key only", k)
	}
}

// TestGossipKeyRotatesOnRemoval: `members remove` changes the gossip key.
// Of four hosts one is down while another is removed: the two running
// ones end with one new key (disk and gossip) and still see each other
// alive; the removed host keeps the old key, which can no longer join;
// the host that was down comes back with the old key, fetches the new one
// over the internal API and rejoins gossip.
func TestGossipKeyRotatesOnRemoval(t *testing.T) {
	c := NewCluster(t, 4)
	ld := c.Leader(10 * time.Second)
	// Three voters and one non-voter: the non-voter is removed and a
	// voting follower is down, so the other two keep their quorum.
	down, removed, kept := -1, -1, -1
	c.Eventually(20*time.Second, "three voters and a non-voter in the Raft configuration", func() bool {
		servers, err := c.Node(ld).Consensus().Configuration()
		if err != nil || len(servers) != 4 {
			return false
		}
		down, removed, kept = -1, -1, -1
		for _, s := range servers {
			i := c.index(s.ID)
			switch {
			case i == ld:
			case !s.Voter:
				removed = i
			case down < 0:
				down = i
			default:
				kept = i
			}
		}
		return down >= 0 && removed >= 0 && kept >= 0
	})
	old := c.gossipKeys(t, ld).Keys[0]
	for i := range 4 {
		if k := c.gossipKeys(t, i); len(k.Keys) != 1 || !bytes.Equal(k.Keys[0], old) {
			t.Fatalf("host%d starts with gossip keys %x; want the cluster's one key", i, k.Keys)
		}
	}
	c.Stop(down)
	rid := c.Node(removed).ID()
	if st := c.send(t, ld, "DELETE", "/cluster/v1/members/"+rid, c.AdminToken(ld), ""); st != http.StatusNoContent {
		t.Fatalf("members remove = %d; want 204", st)
	}
	key := c.rotatedFrom(t, old, ld, kept)
	c.Eventually(20*time.Second, "the two running members see each other alive", func() bool { return c.seeAlive(ld, kept) })
	if k := c.gossipKeys(t, removed); !bytes.Equal(k.Keys[0], old) || len(k.Keys) != 1 {
		t.Errorf("the removed host's gossip.key = %x; want only the old key", k.Keys)
	}
	var dump bytes.Buffer
	if err := c.Node(ld).State().Dump(json.NewEncoder(&dump)); err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key)} {
		if bytes.Contains(dump.Bytes(), []byte(enc)) {
			t.Errorf("the replicated state holds the new gossip key")
		}
	}
	if k := c.gossipKeys(t, ld); !slices.Contains(k.Covers, rid) {
		t.Errorf("the leader's keys cover %v; want the removed host %s", k.Covers, rid)
	}
	c.oldKeyCannotJoin(t, ld, old)
	c.oldKeyCannotJoin(t, kept, old)
	c.checkKeysRoute(t, ld, kept, removed, key)
	c.Eventually(20*time.Second, "the running members no longer hear the removed host", func() bool {
		for _, i := range []int{ld, kept} {
			for _, m := range c.Node(i).Gossip().Members() {
				if m.Name == rid && m.State == gossip.StateAlive {
					return false
				}
			}
		}
		return true
	})

	// The host that was down during the rotation comes back with the old
	// key on disk and must still rejoin.
	if k := c.gossipKeys(t, down); !bytes.Equal(k.Keys[0], old) {
		t.Fatalf("the stopped host's gossip.key changed while it was down: %x", k.Keys)
	}
	c.Restart(t.Context(), down)
	if got := c.rotatedFrom(t, old, ld, kept, down); !bytes.Equal(got, key) {
		t.Errorf("after the restart the cluster's key is %x; want %x (no second rotation)", got, key)
	}
	c.Eventually(30*time.Second, "the restarted host and the others see each other alive", func() bool {
		return c.seeAlive(ld, kept, down)
	})
}

// TestJoinAfterRotationFetchesKeys: a joining host whose join answer
// carries a key the cluster has since rotated away (here: the admitting
// host's disk copy put back to the old key, as a host answering in the
// middle of a rotation hands out) fetches the keys over the internal API
// and joins gossip anyway.
func TestJoinAfterRotationFetchesKeys(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	other := 3 - ld - f
	old := c.gossipKeys(t, ld).Keys[0]
	if st := c.send(t, ld, "DELETE", "/cluster/v1/members/"+c.Node(f).ID(), c.AdminToken(ld), ""); st != http.StatusNoContent {
		t.Fatalf("members remove = %d; want 204", st)
	}
	key := c.rotatedFrom(t, old, ld, other)
	files := membership.Files{DataDir: c.Dir(other)}
	current := c.gossipKeys(t, other)
	if err := files.WriteGossipKeys(membership.GossipKeys{Keys: [][]byte{old}}); err != nil {
		t.Fatal(err)
	}
	text, _, err := c.Node(other).CreateJoinToken(adminContext(t.Context(), t, c.Node(other)), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The token names host other only, so it is the host that admits the
	// joiner and the answer carries the old key: the joiner cannot join
	// gossip unless it fetches the keys.
	tok, err := membership.ParseJoinToken(text)
	if err != nil {
		t.Fatal(err)
	}
	tok.Addrs = []string{c.Node(other).APIAddr()}
	if _, k, err := (membership.Files{DataDir: c.Dir(other)}).Secrets(nil); err != nil || !bytes.Equal(k, old) {
		t.Fatalf("host%d hands out gossip key %x, %v; want the old key", other, k, err)
	}
	c.add(t.Context(), tok.String())
	if err := files.WriteGossipKeys(current); err != nil {
		t.Fatal(err)
	}
	j := c.Len() - 1
	if got := c.gossipKeys(t, j); len(got.Keys) != 1 || !bytes.Equal(got.Keys[0], key) {
		t.Errorf("the joined host's gossip.key = %x; want the rotated key", got.Keys)
	}
	c.Eventually(20*time.Second, "the joined host and the others see each other alive", func() bool {
		return c.seeAlive(ld, other, j)
	})
}

// TestGossipKeyRotatesOnLeave: a host that leaves (`leave`) leaves the
// gossip key behind: the others change it and its old key cannot join.
func TestGossipKeyRotatesOnLeave(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	other := 3 - ld - f
	old := c.gossipKeys(t, ld).Keys[0]
	if st, body := apiCall(t, c, "POST", c.URL(f)+"/cluster/v1/leave", c.AdminToken(f), ""); st != http.StatusAccepted {
		t.Fatalf("leave = %d %v; want 202", st, body)
	}
	c.rotatedFrom(t, old, ld, other)
	c.Eventually(20*time.Second, "the two remaining members see each other alive", func() bool { return c.seeAlive(ld, other) })
	if k := c.gossipKeys(t, f); !bytes.Equal(k.Keys[0], old) {
		t.Errorf("the host that left got a new gossip key: %x", k.Keys)
	}
	c.oldKeyCannotJoin(t, ld, old)
}

// TestLostGossipKeyIsFetched: a host whose gossip.key is empty when it
// starts (a crash right after a write that never reached the disk)
// fetches the keys from the other members over mutual TLS before it
// starts gossip, writes them back and rejoins.
func TestLostGossipKeyIsFetched(t *testing.T) {
	c := NewCluster(t, 3)
	ld := c.Leader(10 * time.Second)
	f := c.Follower()
	key := c.gossipKeys(t, ld).Keys[0]
	c.Stop(f)
	if err := os.WriteFile(filepath.Join(c.Dir(f), "gossip.key"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.Restart(t.Context(), f)
	if k := c.gossipKeys(t, f); len(k.Keys) != 1 || !bytes.Equal(k.Keys[0], key) {
		t.Fatalf("the restarted host's gossip.key = %x; want the cluster's key", k.Keys)
	}
	c.Eventually(30*time.Second, "the restarted host and the others see each other alive", func() bool {
		return c.seeAlive(0, 1, 2)
	})
}
