package membership_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/rest"
)

// callKeys calls the keys route's handler (GET or PUT) as the member
// whose certificate names from, and returns the HTTP status.
func callKeys(t *testing.T, k *membership.GossipKeyring, method, from string, body any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, "/internal/v1/gossip/keys", rd)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: from}}}}
	for _, rt := range k.Service().Routes {
		if rt.Method != method {
			continue
		}
		_, err := rt.Handler(&rest.Ctx{R: req, W: httptest.NewRecorder()})
		if err == nil {
			return http.StatusOK
		}
		var he *rest.HTTPError
		if errors.As(err, &he) {
			return he.Status
		}
		return http.StatusInternalServerError
	}
	t.Fatalf("no %s route", method)
	return 0
}

// follower is member m2's keyring in a state listing m1 (its leader), m2
// and m3, in Raft term 7, its state applied up to *applied.
func follower(t *testing.T, keys membership.GossipKeys) (*raft, *membership.GossipKeyring, *atomic.Uint64) {
	t.Helper()
	r := twoMembers(t)
	for _, id := range []string{"m2", "m3"} {
		if err := r.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: id, APIAddr: id + ":1"}); err != nil {
			t.Fatal(err)
		}
	}
	var applied atomic.Uint64
	k := membership.NewGossipKeyring(&membership.GossipKeyring{SelfID: "m2", State: r.State, Leader: func() string { return "m1" },
		Term: func() uint64 { return 7 }, Applied: applied.Load, Gossip: &recordingGossip{}, Files: membership.Files{DataDir: t.TempDir()},
		Logger: slog.New(slog.DiscardHandler)}, keys)
	return r, k, &applied
}

// TestLaggingFollowerKeepsTheKeyFromTheRevokedHost: a follower whose
// state has not applied the removal of m3 yet (its TLS layer and member
// check still let m3 in) takes no step of the rotation until it has
// applied the index the rotation started at, and never hands keys that
// name m3 as revoked to m3 — nor any keys while its state is behind the
// index they were made at.
func TestLaggingFollowerKeepsTheKeyFromTheRevokedHost(t *testing.T) {
	old, fresh := key32(1), key32(2)
	r, k, applied := follower(t, membership.GossipKeys{Keys: [][]byte{old}})
	applied.Store(40)
	step1 := membership.GossipKeys{Keys: [][]byte{old, fresh}, Version: 7<<32 + 1, Index: 42, Revoked: []string{"m3"}}
	if st := callKeys(t, k, http.MethodPut, "m1", step1); st != http.StatusServiceUnavailable {
		t.Fatalf("PUT of step 1 on a follower behind the rotation's index = %d; want 503", st)
	}
	if len(k.Current().Keys) != 1 {
		t.Fatalf("the lagging follower took step 1: %x", k.Current().Keys)
	}
	// It catches up as far as the rotation's index without the removal
	// reaching its state view here: the keys' own list refuses m3.
	applied.Store(42)
	if st := callKeys(t, k, http.MethodPut, "m1", step1); st != http.StatusOK {
		t.Fatalf("PUT of step 1 once caught up = %d; want 200", st)
	}
	if st := callKeys(t, k, http.MethodGet, "m3", nil); st != http.StatusForbidden {
		t.Fatalf("GET by m3, named revoked by the keys = %d; want 403", st)
	}
	if st := callKeys(t, k, http.MethodGet, "m1", nil); st != http.StatusOK {
		t.Fatalf("GET by a member = %d; want 200", st)
	}
	// Keys taken from another member (Refresh) ahead of this host's state.
	if _, err := k.Apply(membership.GossipKeys{Keys: [][]byte{fresh}, Version: 7<<32 + 3, Index: 50, Covers: []string{"m3"}}); err != nil {
		t.Fatal(err)
	}
	if st := callKeys(t, k, http.MethodGet, "m1", nil); st != http.StatusServiceUnavailable {
		t.Fatalf("GET while the state is behind the keys' index = %d; want 503", st)
	}
	applied.Store(50)
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m1", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if st := callKeys(t, k, http.MethodGet, "m1", nil); st != http.StatusForbidden {
		t.Fatalf("GET by a host the state revoked = %d; want 403", st)
	}
}

// TestPutChecksTheTerm: a step whose version carries another term than
// the one this host is in (a deposed leader's, or one this host has not
// reached) is refused; so is another keyring under the version held.
func TestPutChecksTheTerm(t *testing.T) {
	_, k, _ := follower(t, membership.GossipKeys{Keys: [][]byte{key32(1)}})
	for _, term := range []uint64{6, 8} {
		in := membership.GossipKeys{Keys: [][]byte{key32(1), key32(2)}, Version: term<<32 + 1}
		if st := callKeys(t, k, http.MethodPut, "m1", in); st != http.StatusConflict {
			t.Errorf("PUT of a term-%d version in term 7 = %d; want 409", term, st)
		}
	}
	in := membership.GossipKeys{Keys: [][]byte{key32(1), key32(2)}, Version: 7<<32 + 1}
	if st := callKeys(t, k, http.MethodPut, "m1", in); st != http.StatusOK {
		t.Fatalf("PUT in term 7 = %d; want 200", st)
	}
	if st := callKeys(t, k, http.MethodPut, "m1", in); st != http.StatusOK {
		t.Fatalf("the same PUT again = %d; want 200", st)
	}
	other := membership.GossipKeys{Keys: [][]byte{key32(1), key32(3)}, Version: 7<<32 + 1}
	if st := callKeys(t, k, http.MethodPut, "m1", other); st != http.StatusConflict {
		t.Fatalf("PUT of other keys under the version held = %d; want 409", st)
	}
	if _, err := k.Apply(other); !errors.Is(err, membership.ErrKeysDiffer) {
		t.Fatalf("Apply of other keys under the version held = %v; want ErrKeysDiffer", err)
	}
	if !slices.EqualFunc(k.Current().Keys, in.Keys, bytes.Equal) {
		t.Fatalf("keys now %x; want %x", k.Current().Keys, in.Keys)
	}
}

// TestConvergeStartsFromTheMembersNewerKeys: a new leader that applied a
// revocation but missed every step of its predecessor's rotation (it
// still holds the old key) takes the members' keys instead of rotating
// from the old key, which would make the removed host's key primary
// again everywhere.
func TestConvergeStartsFromTheMembersNewerKeys(t *testing.T) {
	old, fresh := key32(1), key32(2)
	for _, tc := range []struct {
		name    string
		retired bool
	}{{"newer version", false}, {"retired key", true}} {
		t.Run(tc.name, func(t *testing.T) {
			// The old key carries the version this leader holds: with a
			// retired list the members' keys win even when older.
			mine := membership.GossipKeys{Keys: [][]byte{old}, Version: 6<<32 + 1}
			theirs := membership.GossipKeys{Keys: [][]byte{fresh}, Version: 6<<32 + 3, Covers: []string{"m3"}}
			if tc.retired {
				mine.Version = 7<<32 + 1
				theirs.Retired = []string{retiredPrint(t, old, fresh)}
			}
			r, k, g, p2, _ := convergeCluster(t, mine)
			p2.serve = theirs
			if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
				t.Fatal(err)
			}
			if err := k.Converge(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, got := range append(slices.Clone(g.keys), pushedKeys(p2)...) {
				if bytes.Equal(got[0], old) {
					t.Fatalf("a keyring made the old key primary: %x", got)
				}
			}
			p2.mu.Lock()
			for _, got := range p2.got {
				// Members that took the leader's dead end must take these.
				if got.Version <= mine.Version {
					t.Errorf("pushed version %#x; want above %#x, the leader's former keys", got.Version, mine.Version)
				}
			}
			pushed := len(p2.got)
			p2.mu.Unlock()
			if tc.retired && pushed == 0 {
				t.Error("the leader did not hand out the members' keys again above its former version")
			}
			if cur := k.Current(); len(cur.Keys) != 1 || !bytes.Equal(cur.Keys[0], fresh) {
				t.Fatalf("the leader's keys: %x; want the members' key", cur.Keys)
			}
		})
	}
}

// retiredPrint is the fingerprint the leader records for old when it
// switches to fresh: read back from a one-step rotation.
func retiredPrint(t *testing.T, old, fresh []byte) string {
	t.Helper()
	r, k, _, p2, _ := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{old}})
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := pushedKeys(p2)
	if len(got) != 3 || len(p2.got[2].Retired) != 1 {
		t.Fatalf("rotation pushed %d keyrings, retired %v", len(got), p2.got[len(p2.got)-1].Retired)
	}
	if len(p2.got[0].Retired) != 0 {
		t.Fatalf("step 1 retires %v; want nothing before the switch", p2.got[0].Retired)
	}
	return p2.got[2].Retired[0]
}

func pushedKeys(p *keyPeer) [][][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][][]byte
	for _, k := range p.got {
		out = append(out, k.Keys)
	}
	return out
}

// TestApplyRefusesARetiredKey: a host that switched away from a key
// takes no keyring that makes it primary again or brings it back, even
// under a higher version (a leader that never learnt of the switch).
func TestApplyRefusesARetiredKey(t *testing.T) {
	old := key32(1)
	print := retiredPrint(t, old, key32(2))
	_, k, _ := follower(t, membership.GossipKeys{Keys: [][]byte{key32(2)}, Version: 6<<32 + 3, Retired: []string{print}})
	for _, keys := range [][][]byte{{old, key32(3)}, {key32(3), old}} {
		if _, err := k.Apply(membership.GossipKeys{Keys: keys, Version: 7<<32 + 1}); !errors.Is(err, membership.ErrKeyRetired) {
			t.Errorf("Apply(%x) = %v; want ErrKeyRetired", keys, err)
		}
	}
	if st := callKeys(t, k, http.MethodPut, "m1", membership.GossipKeys{Keys: [][]byte{old, key32(3)}, Version: 7<<32 + 1}); st != http.StatusConflict {
		t.Fatalf("PUT bringing a retired key back = %d; want 409", st)
	}
	if cur := k.Current(); !bytes.Equal(cur.Keys[0], key32(2)) {
		t.Fatalf("keys now %x", cur.Keys)
	}
}

// TestConvergeStopsWhenTheTermChanges: the term is read once; a rotation
// whose leader moved to another term (it lost and won an election) stops
// after the step under way.
func TestConvergeStopsWhenTheTermChanges(t *testing.T) {
	r, k, _, p2, _ := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{key32(1)}})
	var term atomic.Uint64
	term.Store(7)
	k.Term = term.Load
	p2.onPut = func(membership.GossipKeys) { term.Store(8) }
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Converge(context.Background()); err == nil {
		t.Fatal("Converge across a term change = nil error")
	}
	if got := pushedKeys(p2); len(got) != 1 {
		t.Fatalf("%d steps pushed; want 1 (stop at the term change)", len(got))
	}
}

// TestConvergeRetriesAMemberBeforeTheNextStep: a member that refuses a
// step for a while (its state has not applied the revocation yet, or it
// does not know the new leader yet) gets every step, in order.
func TestConvergeRetriesAMemberBeforeTheNextStep(t *testing.T) {
	r, k, _, p2, _ := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{key32(1)}})
	p2.putFails = 5
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Converge(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := pushedKeys(p2)
	if len(got) != 3 {
		t.Fatalf("the member took %d steps; want all 3", len(got))
	}
	if fresh := got[2][0]; !bytes.Equal(got[0][1], fresh) || !bytes.Equal(got[1][0], fresh) {
		t.Fatalf("steps out of order: %x", got)
	}
}

// TestRefreshTakesTheNewestAnswer: Refresh asks every member, not the
// first that answers (the leader may lag behind a member that got a
// newer step from the former leader).
func TestRefreshTakesTheNewestAnswer(t *testing.T) {
	r := twoMembers(t)
	older := &keyPeer{serve: membership.GossipKeys{Keys: [][]byte{key32(4)}, Version: 5}}
	newer := &keyPeer{serve: membership.GossipKeys{Keys: [][]byte{key32(6)}, Version: 9}}
	s2, s3 := httptest.NewTLSServer(older), httptest.NewTLSServer(newer)
	t.Cleanup(s2.Close)
	t.Cleanup(s3.Close)
	for id, s := range map[string]*httptest.Server{"m2": s2, "m3": s3} {
		if err := r.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: id, APIAddr: strings.TrimPrefix(s.URL, "https://")}); err != nil {
			t.Fatal(err)
		}
	}
	k := membership.NewGossipKeyring(&membership.GossipKeyring{SelfID: "m1", State: r.State, Leader: func() string { return "m2" },
		Gossip: &recordingGossip{}, Files: membership.Files{DataDir: t.TempDir()}, Client: s2.Client(), Logger: slog.New(slog.DiscardHandler)},
		membership.GossipKeys{Keys: [][]byte{key32(1)}})
	if changed, err := k.Refresh(context.Background()); !changed || err != nil {
		t.Fatalf("Refresh = %v, %v", changed, err)
	}
	if cur := k.Current(); cur.Version != 9 {
		t.Fatalf("after Refresh: version %d; want 9 (the newest answer)", cur.Version)
	}
}

// TestRotatorDoesNotBlock: the leader's rotation runs in its own
// goroutine; a member that accepts connections and never answers does
// not hold up Tend, and losing leadership cancels the run.
func TestRotatorDoesNotBlock(t *testing.T) {
	r, k, _, _, _ := convergeCluster(t, membership.GossipKeys{Keys: [][]byte{key32(1)}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	defer func() {
		for len(accepted) > 0 {
			(<-accepted).Close()
		}
	}()
	if err := r.st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: "m4", Name: "m4", APIAddr: ln.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Apply(statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: "m3", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	rot := &membership.Rotator{Keyring: k, Logger: slog.New(slog.DiscardHandler), Options: []membership.ConvergeOption{membership.WithStepTimeout(time.Hour)}}
	ctx := context.Background()
	rot.Tend(ctx, true) // returns while the rotation waits on m4
	select {
	case <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the rotation never reached the silent member")
	}
	rot.Tend(ctx, true) // still running: no second run
	rot.Tend(ctx, false)
	stopped := make(chan struct{})
	go func() { rot.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the rotation was not cancelled when leadership was lost")
	}
}

// TestFetchPacerBacksOff: a host whose fetches keep failing (a removed
// host every member refuses) asks less and less often, up to once a
// minute, and at its normal pace again after a success.
func TestFetchPacerBacksOff(t *testing.T) {
	var p membership.FetchPacer
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	var gaps []time.Duration
	last := now
	for range 12 {
		for !p.Due(now, true) {
			now = now.Add(100 * time.Millisecond)
		}
		gaps = append(gaps, now.Sub(last))
		last = now
		p.Done(errors.New("refused"))
	}
	for i := 2; i < len(gaps); i++ {
		if gaps[i] < gaps[i-1] || gaps[i] > time.Minute {
			t.Fatalf("gaps between failing fetches %v: want growing, at most a minute", gaps)
		}
	}
	if gaps[len(gaps)-1] != time.Minute {
		t.Fatalf("gaps between failing fetches %v: want a minute at the end", gaps)
	}
	p.Done(nil)
	now = now.Add(time.Second)
	if !p.Due(now, true) {
		t.Fatal("after a success a fetch is not due a second later")
	}
}
