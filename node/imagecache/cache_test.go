package imagecache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/node/imagecache"
)

const me, h2, h3 = "h1", "h2", "h3"

// fakePeers serves blobs of other hosts from memory and records calls.
type fakePeers struct {
	mu       sync.Mutex
	blobs    map[string]map[string][]byte // host → sum → bytes
	failures map[string]int               // host → OpenBlob calls left to fail
	opens    map[string]int               // host → OpenBlob calls
	verifies []string                     // "host/sum" of VerifyBlob calls
}

func newFakePeers() *fakePeers {
	return &fakePeers{blobs: map[string]map[string][]byte{}, failures: map[string]int{}, opens: map[string]int{}}
}

func (p *fakePeers) put(host, sum string, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blobs[host] == nil {
		p.blobs[host] = map[string][]byte{}
	}
	p.blobs[host][sum] = data
}

func (p *fakePeers) failNext(host string, n int) {
	p.mu.Lock()
	p.failures[host] = n
	p.mu.Unlock()
}

func (p *fakePeers) openCount(host string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opens[host]
}

func (p *fakePeers) verified() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.verifies...)
}

func (p *fakePeers) OpenBlob(_ context.Context, host, sum string) (io.ReadCloser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opens[host]++
	if p.failures[host] > 0 {
		p.failures[host]--
		return nil, fmt.Errorf("host %s: connection refused", host)
	}
	b, ok := p.blobs[host][sum]
	if !ok {
		return nil, fmt.Errorf("host %s: status 404", host)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (p *fakePeers) VerifyBlob(_ context.Context, host, sum string) error {
	p.mu.Lock()
	p.verifies = append(p.verifies, host+"/"+sum)
	p.mu.Unlock()
	return nil
}

// env is a Cache on host h1 over a state the test drives, with h2 and h3
// as peers.
type env struct {
	t     *testing.T
	st    *agenttest.State
	prop  *agenttest.Proposer
	peers *fakePeers
	dir   string
	cache *imagecache.Cache
}

func logger() *slog.Logger {
	if os.Getenv("PEERSTACK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T, cacheSize int64) *env {
	t.Helper()
	st := agenttest.NewState()
	e := &env{t: t, st: st, prop: &agenttest.Proposer{State: st}, peers: newFakePeers(), dir: t.TempDir()}
	for _, m := range []string{me, h2, h3} {
		e.apply(statedb.CmdRegisterMember, statedb.Member{ID: m, Name: m})
	}
	c, err := imagecache.New(imagecache.Config{
		HostID: me, Dir: e.dir, CacheSize: cacheSize, State: st, Proposer: e.prop, Peers: e.peers,
		ResyncInterval: 50 * time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 40 * time.Millisecond, Logger: logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.cache = c
	return e
}

// run starts the reconciler; it stops at the end of the test.
func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.cache.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
}

func (e *env) apply(t statedb.CmdType, payload any) {
	e.t.Helper()
	if err := e.st.Apply(t, payload); err != nil {
		e.t.Fatalf("apply %d %+v: %v", t, payload, err)
	}
}

func blob(n int, seed uint64) ([]byte, string) {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// activeImage records an uploaded image with the given holders; the peers
// among them serve the bytes.
func (e *env) activeImage(id string, data []byte, holders ...string) string {
	e.t.Helper()
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	e.apply(statedb.CmdCreateImage, statedb.Image{ID: id, Name: id, ProjectID: "p", DiskFormat: "raw", ContainerFormat: "bare"})
	e.apply(statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: id, HostID: holders[0]})
	e.apply(statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: id, Size: int64(len(data)), SHA256: sum, Holders: holders})
	for _, h := range holders {
		if h != me {
			e.peers.put(h, sum, data)
		}
	}
	return sum
}

func (e *env) want(id string, hosts ...string) {
	e.t.Helper()
	e.apply(statedb.CmdSetImageCopies, statedb.SetImageCopiesCmd{ImageID: id, Hosts: hosts})
}

func (e *env) image(id string) *statedb.Image {
	e.t.Helper()
	img, ok := e.st.Snapshot().Image(id)
	if !ok {
		e.t.Fatalf("image %s is gone", id)
	}
	return img
}

func (e *env) blobPath(sum string) string { return filepath.Join(e.dir, "blobs", sum) }

// localSum is the sha256 of this host's copy, "" when it has none.
func (e *env) localSum(sum string) string {
	b, err := os.ReadFile(e.blobPath(sum))
	if err != nil {
		return ""
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// eventually polls cond until it holds or 10 s pass.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holderReports lists the holder reports proposed for (image, host). The
// fake proposer records a proposal just after the state applied it.
func (e *env) holderReports(id, host string) []statedb.ReportImageHolderCmd {
	var out []statedb.ReportImageHolderCmd
	for _, p := range e.prop.Proposals() {
		if r, ok := p.Payload.(statedb.ReportImageHolderCmd); ok && r.ImageID == id && r.HostID == host && p.Err == nil {
			out = append(out, r)
		}
	}
	return out
}

// TestWantedCopyFetchedAndReported: a copy the leader wants on this host
// is fetched from a holder once, verified, and reported; one it does not
// want is left alone.
func TestWantedCopyFetchedAndReported(t *testing.T) {
	e := newEnv(t, 0)
	data, _ := blob(1<<20+7, 1)
	sum := e.activeImage("a", data, h2)
	other, _ := blob(4096, 2)
	otherSum := e.activeImage("b", other, h2)
	e.run()
	e.want("a", me, h2)
	e.eventually("h1 reported as holder of a", func() bool { return len(e.holderReports("a", me)) > 0 })
	if got := e.localSum(sum); got != sum {
		t.Fatalf("local copy of a hashes to %q; want %s", got, sum)
	}
	if n := e.peers.openCount(h2); n != 1 {
		t.Errorf("blob streams opened from h2 = %d; want 1", n)
	}
	if r := e.holderReports("a", me); len(r) != 1 || r[0].Drop {
		t.Errorf("holder reports for a = %+v; want one add", r)
	}
	if e.image("b").HasHolder(me) || e.localSum(otherSum) != "" {
		t.Errorf("h1 fetched image b, which no one wants on it")
	}
	// Content already here: a second wanted image with the same bytes
	// costs no transfer.
	e.activeImage("a2", data, h2)
	e.want("a2", me)
	e.eventually("h1 recorded as holder of a2", func() bool { return e.image("a2").HasHolder(me) })
	if n := e.peers.openCount(h2); n != 1 {
		t.Errorf("blob streams opened from h2 after a2 = %d; want still 1", n)
	}
}

// twoImageSize is the size of each image of newTwoImageEnv.
const twoImageSize = 1 << 20

// newTwoImageEnv returns an environment whose cache holds one of its two
// active images "a" and "b" (held by h2, blobs drawn from seed and
// seed+1) but not both, and their sums.
func newTwoImageEnv(t *testing.T, seed uint64) (e *env, sumA, sumB string) {
	t.Helper()
	e = newEnv(t, twoImageSize+twoImageSize/2)
	dataA, sumA := blob(twoImageSize, seed)
	dataB, sumB := blob(twoImageSize, seed+1)
	e.activeImage("a", dataA, h2)
	e.activeImage("b", dataB, h2)
	return e, sumA, sumB
}

// TestUnwantedCopyEvictable: a copy stays over the cache size while it is
// wanted here or no wanted host holds it yet; once the leader no longer
// wants it here and a wanted host holds it, it is evicted and the drop
// reported.
func TestUnwantedCopyEvictable(t *testing.T) {
	e, sumA, sumB := newTwoImageEnv(t, 10)
	e.run()
	e.want("a", me, h2)
	e.eventually("a held here", func() bool { return e.image("a").HasHolder(me) })
	e.want("b", me, h2)
	e.eventually("b held here", func() bool { return e.image("b").HasHolder(me) })
	if e.localSum(sumA) != sumA || e.localSum(sumB) != sumB {
		t.Fatalf("with both wanted here: a present %v, b present %v; want both (over the cache size)",
			e.localSum(sumA) != "", e.localSum(sumB) != "")
	}
	// Not wanted here any more, but the only wanted holder (h3) lacks it:
	// the copy stays.
	e.want("a", h3)
	for range 3 {
		e.cache.Evict(t.Context())
	}
	if e.localSum(sumA) != sumA || !e.image("a").HasHolder(me) {
		t.Fatalf("a evicted while no wanted host held it")
	}
	// Wanted on h2, which holds it: a is cache now, and evicted.
	e.want("a", h2)
	e.eventually("a evicted and its drop reported", func() bool {
		return e.localSum(sumA) == "" && !e.image("a").HasHolder(me)
	})
	if e.localSum(sumB) != sumB || !e.image("b").HasHolder(me) {
		t.Fatalf("b, still wanted here, was evicted")
	}
}

// TestFetchFailureRetried: a fetch that fails is retried with back-off
// and this host is not reported as holder until one succeeds.
func TestFetchFailureRetried(t *testing.T) {
	e := newEnv(t, 0)
	data, sum := blob(64<<10, 20)
	e.activeImage("a", data, h2)
	e.peers.failNext(h2, 3)
	e.run()
	e.want("a", me)
	e.eventually("h1 reported as holder after the failures", func() bool { return len(e.holderReports("a", me)) > 0 })
	if n := e.peers.openCount(h2); n != 4 {
		t.Errorf("fetch attempts = %d; want 4 (3 failures, then the fetch)", n)
	}
	if r := e.holderReports("a", me); len(r) != 1 {
		t.Errorf("holder reports = %+v; want exactly one, after the successful fetch", r)
	}
	if e.localSum(sum) != sum {
		t.Errorf("local copy missing or wrong after the retries")
	}
}

// TestCorruptBlobRejected: bytes that do not hash to the image's sha256
// are never kept nor reported; the holder that sent them is asked to
// verify its copy, and the next holder serves.
func TestCorruptBlobRejected(t *testing.T) {
	e := newEnv(t, 0)
	data, sum := blob(256<<10, 30)
	e.activeImage("a", data, h2, h3)
	bad := bytes.Clone(data)
	bad[1000] ^= 0xff
	e.peers.put(h2, sum, bad)
	e.run()

	// Only the corrupt holder is up to date: nothing is stored, the
	// fetch is retried.
	e.peers.failNext(h3, 1<<30)
	e.want("a", me)
	e.eventually("a second attempt", func() bool { return e.peers.openCount(h2) >= 2 })
	if e.image("a").HasHolder(me) || e.localSum(sum) != "" {
		t.Fatalf("corrupt bytes kept or reported as a copy")
	}
	e.eventually("h2 asked to verify its copy", func() bool {
		v := e.peers.verified()
		return len(v) > 0 && v[0] == h2+"/"+sum
	})

	// h3 answers again: its good copy is taken.
	e.peers.failNext(h3, 0)
	e.eventually("a held here from h3", func() bool { return e.image("a").HasHolder(me) })
	if got := e.localSum(sum); got != sum {
		t.Fatalf("local copy hashes to %q; want %s", got, sum)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("temp files of the corrupt transfers left behind: %v", tmp)
	}
}

// TestDeletedImageReleased: this host's copy of a deleted image goes and
// the drop is reported, which lets the record go.
func TestDeletedImageReleased(t *testing.T) {
	e := newEnv(t, 0)
	data, sum := blob(8192, 40)
	e.activeImage("a", data, h2)
	e.run()
	e.want("a", me, h2)
	e.eventually("a held here", func() bool { return e.image("a").HasHolder(me) })
	e.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "a"})
	e.eventually("h1 released a", func() bool {
		img, ok := e.st.Snapshot().Image("a")
		return ok && !img.HasHolder(me) && e.localSum(sum) == ""
	})
}

// TestLostCopyReported: a copy recorded here but missing from the disk is
// reported dropped on a full sync; a wanted one is fetched again.
func TestLostCopyReported(t *testing.T) {
	e := newEnv(t, 0)
	dataA, _ := blob(8192, 50)
	dataB, sumB := blob(8192, 51)
	e.activeImage("a", dataA, h2)
	e.activeImage("b", dataB, h2)
	e.apply(statedb.CmdReportImageHolder, statedb.ReportImageHolderCmd{ImageID: "a", HostID: me})
	e.run()
	e.eventually("a's missing copy dropped", func() bool { return !e.image("a").HasHolder(me) })

	e.want("b", me)
	e.eventually("b held here", func() bool { return e.image("b").HasHolder(me) })
	if err := os.Remove(e.blobPath(sumB)); err != nil {
		t.Fatal(err)
	}
	e.eventually("b fetched again", func() bool { return e.localSum(sumB) == sumB })
	if n := e.peers.openCount(h2); n != 2 {
		t.Errorf("fetches from h2 = %d; want 2", n)
	}
}

// TestEnsuredBlobPinnedUntilReleased: a blob handed out by EnsureImage
// stays while its user holds it, through evictions that make room for
// another blob, the periodic eviction and the release of its deleted
// image; released, it is cache like any other.
func TestEnsuredBlobPinnedUntilReleased(t *testing.T) {
	const size = twoImageSize
	e, sumA, sumB := newTwoImageEnv(t, 60)
	ctx := t.Context()

	p, format, release, err := e.cache.EnsureImage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if p != e.blobPath(sumA) || format != "raw" {
		t.Fatalf("EnsureImage(a) = %s, %s; want %s, raw", p, format, e.blobPath(sumA))
	}
	// Making room for b may not take the pinned a: the store goes over.
	_, _, releaseB, err := e.cache.EnsureImage(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	releaseB()
	e.cache.Evict(ctx)
	if e.localSum(sumA) != sumA {
		t.Fatal("a pinned blob was evicted")
	}
	// Deleted while pinned: the release of the deleted image keeps the
	// file for its user, and says so (it is tried again later).
	e.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "a"})
	if err := e.cache.DropBlob(sumA); !errors.Is(err, storage.ErrBlobBusy) || e.localSum(sumA) != sumA {
		t.Fatalf("DropBlob of a pinned blob: %v, present %v; want ErrBlobBusy and the file kept", err, e.localSum(sumA) != "")
	}
	// A second pin of the same blob outlives the first one's release.
	e.apply(statedb.CmdCreateImage, statedb.Image{ID: "a2", Name: "a2", ProjectID: "p", DiskFormat: "raw", ContainerFormat: "bare"})
	e.apply(statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: "a2", HostID: me})
	e.apply(statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: "a2", Size: size, SHA256: sumA, Holders: []string{me}})
	_, _, release2, err := e.cache.EnsureImage(ctx, "a2")
	if err != nil {
		t.Fatal(err)
	}
	e.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "a2"})
	release()
	release() // a second call is a no-op, not a second unpin
	e.cache.Evict(ctx)
	if e.localSum(sumA) != sumA {
		t.Fatal("the blob went while a second user still held it")
	}
	release2()
	e.cache.Evict(ctx)
	if e.localSum(sumA) != "" {
		t.Fatal("released and over the limit, the blob was kept")
	}
	if e.localSum(sumB) != sumB {
		t.Fatal("b, the only blob left and under the limit, was evicted")
	}
}

// TestDeletedWhilePinnedReleasedAfter: an image deleted while the agent
// builds a disk on its blob keeps the file, and this host as its holder,
// until the agent is done; then the copy goes and the drop is reported
// (the record can go), under the cache size as well.
func TestDeletedWhilePinnedReleasedAfter(t *testing.T) {
	e := newEnv(t, 0)
	data, sum := blob(8192, 70)
	e.activeImage("a", data, h2)
	e.run()
	_, _, release, err := e.cache.EnsureImage(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("a held here", func() bool { return e.image("a").HasHolder(me) })
	e.apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "a"})
	time.Sleep(200 * time.Millisecond) // several syncs and release retries
	if img, ok := e.st.Snapshot().Image("a"); !ok || !img.HasHolder(me) || e.localSum(sum) != sum {
		t.Fatalf("while pinned: record kept %v, holder here %v, file present %v; want all three", ok, ok && img.HasHolder(me), e.localSum(sum) != "")
	}
	release()
	e.eventually("the copy released once the user is done", func() bool {
		img, ok := e.st.Snapshot().Image("a")
		return (!ok || !img.HasHolder(me)) && e.localSum(sum) == ""
	})
}
