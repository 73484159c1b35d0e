package membership_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/membership"
)

type recordingGossip struct {
	mu   sync.Mutex
	keys [][][]byte
}

func (g *recordingGossip) SetKeys(keys [][]byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.keys = append(g.keys, keys)
	return nil
}

// keyPeer is another member's keys route: it records what the leader
// pushes, or refuses everything (a member that is down).
type keyPeer struct {
	mu     sync.Mutex
	got    []membership.GossipKeys
	refuse bool
	serve  membership.GossipKeys // answered to GET
	// putFails PUTs are answered 503 (a member whose state lags) before
	// one is taken.
	putFails int
	onPut    func(membership.GossipKeys)
}

func (p *keyPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.refuse && r.Method == http.MethodGet && r.URL.Path == "/internal/v1/gossip/keys" {
		p.mu.Lock()
		defer p.mu.Unlock()
		_ = json.NewEncoder(w).Encode(p.serve)
		return
	}
	if p.refuse || r.Method != http.MethodPut || r.URL.Path != "/internal/v1/gossip/keys" {
		http.Error(w, "no", http.StatusServiceUnavailable)
		return
	}
	var k membership.GossipKeys
	if err := json.NewDecoder(r.Body).Decode(&k); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	if p.putFails > 0 {
		p.putFails--
		p.mu.Unlock()
		http.Error(w, "behind", http.StatusServiceUnavailable)
		return
	}
	p.got = append(p.got, k)
	onPut := p.onPut
	p.mu.Unlock()
	if onPut != nil {
		onPut(k)
	}
	_, _ = io.WriteString(w, `{}`)
}

// convergeCluster is a leader m1 with members m2 (p2) and m3 (p3) in its
// state, its gossip recorded, starting with keys.
func convergeCluster(t *testing.T, keys membership.GossipKeys) (*raft, *membership.GossipKeyring, *recordingGossip, *keyPeer, *keyPeer) {
	t.Helper()
	r := twoMembers(t)
	p2, p3 := &keyPeer{}, &keyPeer{}
	s2, s3 := httptest.NewTLSServer(p2), httptest.NewTLSServer(p3)
	t.Cleanup(s2.Close)
	t.Cleanup(s3.Close)
	for id, s := range map[string]*httptest.Server{"m2": s2, "m3": s3} {
		if err := r.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: id, APIAddr: strings.TrimPrefix(s.URL, "https://")}); err != nil {
			t.Fatal(err)
		}
	}
	files := membership.Files{DataDir: t.TempDir()}
	g := &recordingGossip{}
	k := membership.NewGossipKeyring(&membership.GossipKeyring{SelfID: "m1", State: r.State, Leader: func() string { return "m1" },
		Term: func() uint64 { return 7 }, Gossip: g, Files: files, Client: s2.Client(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, keys)
	return r, k, g, p2, p3
}

func key32(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// TestConvergeRotatesAfterRevocation: after a revocation the leader hands
// the other members a new key in three steps (install, switch, drop),
// each with a higher version, takes each step itself first, leaves the
// revoked member out, and then has nothing more to do.
func TestConvergeRotatesAfterRevocation(t *testing.T) {
	old := key32(1)
	r, k, g, p2, p3 := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{old}})
	ctx := context.Background()
	if err := k.Converge(ctx); err != nil {
		t.Fatal(err)
	}
	if len(p2.got)+len(p3.got) != 0 || len(g.keys) != 0 {
		t.Fatalf("with no revocation Converge changed keys: pushed %d+%d, set %d", len(p2.got), len(p3.got), len(g.keys))
	}
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if !k.Stale() {
		t.Fatal("keys that predate a revocation are not stale")
	}
	if err := k.Converge(ctx); err != nil {
		t.Fatal(err)
	}
	if len(p3.got) != 0 {
		t.Fatalf("the revoked member got keys: %+v", p3.got)
	}
	if len(p2.got) != 3 {
		t.Fatalf("the member got %d keyrings; want 3", len(p2.got))
	}
	fresh := p2.got[2].Keys[0]
	want := [][][]byte{{old, fresh}, {fresh, old}, {fresh}}
	for i, got := range p2.got {
		if !slices.EqualFunc(got.Keys, want[i], bytes.Equal) || !slices.EqualFunc(g.keys[i], want[i], bytes.Equal) {
			t.Errorf("step %d: pushed %x, leader took %x; want %x", i+1, got.Keys, g.keys[i], want[i])
		}
		if got.Version>>32 != 7 {
			t.Errorf("step %d: version %#x does not carry the leader's term 7", i+1, got.Version)
		}
		if i > 0 && got.Version <= p2.got[i-1].Version {
			t.Errorf("step %d: version %d not above %d", i+1, got.Version, p2.got[i-1].Version)
		}
		if covers := slices.Contains(got.Covers, "m3"); covers != (i > 0) {
			t.Errorf("step %d: covers %v", i+1, got.Covers)
		}
	}
	if bytes.Equal(fresh, old) || len(fresh) != 32 {
		t.Fatalf("new key %x", fresh)
	}
	if onDisk, err := k.Files.ReadGossipKeys(); err != nil || len(onDisk.Keys) != 1 || !bytes.Equal(onDisk.Keys[0], fresh) {
		t.Fatalf("gossip.key after the rotation: %+v, %v", onDisk, err)
	}
	if k.Stale() {
		t.Fatal("keys stale after the rotation")
	}
	if err := k.Converge(ctx); err != nil || len(p2.got) != 3 {
		t.Fatalf("a second Converge: %v, %d keyrings pushed; want nothing more", err, len(p2.got))
	}
}

// TestConvergeFinishesAnInterruptedRotation: a new leader holding two
// keys whose primary already follows every revocation switches and drops
// (no new key), and a member that is down does not stop it.
func TestConvergeFinishesAnInterruptedRotation(t *testing.T) {
	a, b := key32(2), key32(3)
	// Handed out by the former leader, in term 5.
	_, k, g, p2, p3 := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{a, b}, Version: 5<<32 + 2, Covers: []string{"gone"}})
	p3.refuse = true
	if !k.Stale() {
		t.Fatal("two keys are not stale")
	}
	if err := k.Converge(context.Background(), membership.WithStepTimeout(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	want := [][][]byte{{a, b}, {a}}
	if len(p2.got) != 2 {
		t.Fatalf("the member got %d keyrings; want 2", len(p2.got))
	}
	for i := range want {
		if !slices.EqualFunc(p2.got[i].Keys, want[i], bytes.Equal) || !slices.EqualFunc(g.keys[i], want[i], bytes.Equal) {
			t.Errorf("step %d: pushed %x, leader took %x; want %x", i+1, p2.got[i].Keys, g.keys[i], want[i])
		}
	}
	if cur := k.Current(); len(cur.Keys) != 1 || !bytes.Equal(cur.Keys[0], a) || cur.Version>>32 != 7 {
		t.Fatalf("leader's keys after finishing: %+v", cur)
	}
}

// TestRefreshTakesNewerKeys: a host asks for the keys (here a joining
// host that knows no other member yet, only its token's addresses) and
// takes them only when they are newer than its own.
func TestRefreshTakesNewerKeys(t *testing.T) {
	r := twoMembers(t)
	peer := &keyPeer{serve: membership.GossipKeys{Keys: [][]byte{key32(5), key32(4)}, Version: 9, Covers: []string{"x"}}}
	srv := httptest.NewTLSServer(peer)
	defer srv.Close()
	g := &recordingGossip{}
	k := membership.NewGossipKeyring(&membership.GossipKeyring{SelfID: "m1", State: r.State, Leader: func() string { return "" },
		Gossip: g, Files: membership.Files{DataDir: t.TempDir()}, Client: srv.Client(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		membership.GossipKeys{Keys: [][]byte{key32(4)}})
	ctx := context.Background()
	if changed, err := k.Refresh(ctx); changed || err == nil {
		t.Fatalf("Refresh with nobody to ask = %v, %v; want an error", changed, err)
	}
	addr := strings.TrimPrefix(srv.URL, "https://")
	if changed, err := k.Refresh(ctx, addr); !changed || err != nil {
		t.Fatalf("Refresh = %v, %v; want the newer keys taken", changed, err)
	}
	if cur := k.Current(); cur.Version != 9 || !bytes.Equal(cur.Keys[0], key32(5)) || len(g.keys) != 1 {
		t.Fatalf("after Refresh: %+v, gossip set %d times", cur, len(g.keys))
	}
	if onDisk, err := k.Files.ReadGossipKeys(); err != nil || onDisk.Version != 9 {
		t.Fatalf("gossip.key after Refresh: %+v, %v", onDisk, err)
	}
	peer.mu.Lock()
	peer.serve = membership.GossipKeys{Keys: [][]byte{key32(4)}, Version: 3}
	peer.mu.Unlock()
	if changed, err := k.Refresh(ctx, addr); changed || err != nil || k.Current().Version != 9 {
		t.Fatalf("Refresh from a peer with older keys = %v, %v, now %+v; want nothing taken", changed, err, k.Current())
	}
}

// TestConvergeOnlyWhileLeading: a host that no longer leads does not
// take or hand out a step.
func TestConvergeOnlyWhileLeading(t *testing.T) {
	r, k, g, p2, _ := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{key32(1)}})
	k.Leader = func() string { return "m2" }
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Converge(context.Background()); err == nil {
		t.Fatal("Converge on a host that does not lead = nil error")
	}
	if len(g.keys) != 0 || len(p2.got) != 0 || k.Current().Version != 0 {
		t.Fatalf("a host that does not lead changed keys: set %d, pushed %d, now %+v", len(g.keys), len(p2.got), k.Current())
	}
}
