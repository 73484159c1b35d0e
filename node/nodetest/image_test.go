package nodetest

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node"
)

// imageClient talks to the image API of one cluster host with a token.
type imageClient struct {
	t     testing.TB
	c     *Cluster
	hc    *http.Client
	token string
}

func newImageClient(t testing.TB, c *Cluster, host int) *imageClient {
	return &imageClient{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(host)}
}

func (ic *imageClient) do(host int, method, path, ct string, body io.Reader) (int, []byte) {
	ic.t.Helper()
	req, err := http.NewRequest(method, ic.c.URL(host)+path, body)
	if err != nil {
		ic.t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", ic.token)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	hc := *ic.hc
	hc.Timeout = 5 * time.Minute
	resp, err := hc.Do(req)
	if err != nil {
		ic.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// upload creates an image through host and uploads data to it.
func (ic *imageClient) upload(host int, name, format string, data []byte) string {
	ic.t.Helper()
	st, body := ic.do(host, "POST", "/image/v2/images", "application/json",
		strings.NewReader(fmt.Sprintf(`{"name":%q,"disk_format":%q,"container_format":"bare"}`, name, format)))
	if st != http.StatusCreated {
		ic.t.Fatalf("create image = %d %s", st, body)
	}
	var m map[string]any
	json.Unmarshal(body, &m)
	id, _ := m["id"].(string)
	if st, body := ic.do(host, "PUT", "/image/v2/images/"+id+"/file", "application/octet-stream", bytes.NewReader(data)); st != http.StatusNoContent {
		ic.t.Fatalf("upload = %d %s", st, body)
	}
	return id
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[0] = 0xeb // a raw disk, no image magic
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// blobPath is where host i keeps a blob.
func (c *Cluster) blobPath(i int, sum string) string {
	return filepath.Join(c.Dir(i), "images", "blobs", sum)
}

// imageState reads an image record from any running host.
func (c *Cluster) imageState(id string) (*statedb.Image, bool) {
	return c.Any().State().Image(id)
}

// waitHolders waits until every running host sees an image with at least
// want holders that have the blob file, and returns the holders' indexes.
func (c *Cluster) waitHolders(id string, want int) []int {
	c.t.Helper()
	var idx []int
	c.Eventually(30*time.Second, fmt.Sprintf("image %s on %d hosts", id, want), func() bool {
		idx = idx[:0]
		for _, n := range c.Running() {
			img, ok := n.State().Image(id)
			if !ok || len(img.Holders) < want {
				return false
			}
		}
		img, _ := c.imageState(id)
		for i := range c.Len() {
			n := c.Node(i)
			if n != nil && img.HasHolder(n.ID()) {
				if _, err := os.Stat(c.blobPath(i, img.SHA256)); err != nil {
					return false
				}
				idx = append(idx, i)
			}
		}
		return len(idx) >= want
	})
	return idx
}

// nonHolder returns a running host that does not hold the image.
func (c *Cluster) nonHolder(id string) int {
	c.t.Helper()
	img, _ := c.imageState(id)
	for i := range c.Len() {
		if n := c.Node(i); n != nil && !img.HasHolder(n.ID()) {
			return i
		}
	}
	c.t.Fatalf("every host holds image %s", id)
	return -1
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha(b)
}

// TestImageDistribution: an upload through host 0 is replicated to
// ImageCopies (2) holders; a third host ensures it from a holder with the
// checksum verified; a corrupt holder copy is detected, skipped and
// dropped; with the uploader stopped, the image is still ensured from the
// other holder; a delete removes the record and every copy.
func TestImageDistribution(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	ic := newImageClient(t, c, 0)

	// Replication and EnsureImage on a non-holder.
	dataA := randomBytes(3<<20+5, 1)
	idA := ic.upload(0, "a", "raw", dataA)
	holders := c.waitHolders(idA, 2)
	if !slices.Contains(holders, 0) {
		t.Errorf("holders = %v; want the uploader (0) among them", holders)
	}
	k := c.nonHolder(idA)
	// Download through a host without a copy streams it from a holder.
	if st, body := ic.do(k, "GET", "/image/v2/images/"+idA+"/file", "", nil); st != 200 || !bytes.Equal(body, dataA) {
		t.Fatalf("download through non-holder host%d = %d, %d bytes; want the %d uploaded bytes", k, st, len(body), len(dataA))
	}
	// Four concurrent ensures on the host without a copy: one fetch (the
	// blob's lock), every caller gets the verified file.
	type ensured struct {
		path, format string
		release      func()
	}
	results := make(chan ensured, 4)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			p, f, release, err := c.Node(k).EnsureImage(ctx, idA)
			errs <- err
			results <- ensured{p, f, release}
		}()
	}
	for range 4 {
		err := <-errs
		r := <-results
		if err != nil {
			t.Fatalf("EnsureImage on host%d: %v", k, err)
		}
		if r.format != "raw" || r.path != c.blobPath(k, sha(dataA)) || fileSHA(t, r.path) != sha(dataA) {
			t.Fatalf("EnsureImage = %s, %s; want host%d's blob %s, raw, with the uploaded bytes", r.path, r.format, k, sha(dataA))
		}
		r.release()
	}
	if tmp, _ := os.ReadDir(filepath.Join(c.Dir(k), "images", "tmp")); len(tmp) != 0 {
		t.Errorf("temp files left on host%d: %v", k, tmp)
	}
	c.Eventually(10*time.Second, "the ensuring host recorded as holder", func() bool {
		img, _ := c.imageState(idA)
		return img.HasHolder(c.Node(k).ID())
	})

	// A corrupt copy on the first holder tried (the uploader) is detected
	// by the sha256 check, the next holder serves, and the corrupt copy is
	// re-hashed and dropped by its host.
	dataB := randomBytes(2<<20, 2)
	idB := ic.upload(0, "b", "raw", dataB)
	c.waitHolders(idB, 2)
	corrupt := c.blobPath(0, sha(dataB))
	f, err := os.OpenFile(corrupt, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("CORRUPTED!"), 1<<20)
	f.Close()
	k = c.nonHolder(idB)
	path, _, release, err := c.Node(k).EnsureImage(ctx, idB)
	if err != nil {
		t.Fatalf("EnsureImage with a corrupt first holder: %v", err)
	}
	if got := fileSHA(t, path); got != sha(dataB) {
		t.Fatalf("ensured blob sha256 = %s; want %s", got, sha(dataB))
	}
	release()
	// Host 0 then either has no copy and is no holder, or (when the leader
	// picked it to restore the second copy) a good one again.
	c.Eventually(20*time.Second, "the corrupt copy dropped by host0", func() bool {
		img, _ := c.imageState(idB)
		b, err := os.ReadFile(corrupt)
		if os.IsNotExist(err) {
			return !img.HasHolder(c.Node(0).ID())
		}
		return err == nil && sha(b) == sha(dataB) && img.HasHolder(c.Node(0).ID())
	})

	// Deleting removes the record everywhere and every copy.
	if st, body := ic.do(1, "DELETE", "/image/v2/images/"+idA, "", nil); st != http.StatusNoContent {
		t.Fatalf("delete = %d %s", st, body)
	}
	c.Eventually(20*time.Second, "deleted image gone with its blobs", func() bool {
		for i, n := range c.Running() {
			if _, ok := n.State().Image(idA); ok {
				return false
			}
			if _, err := os.Stat(c.blobPath(i, sha(dataA))); !os.IsNotExist(err) {
				return false
			}
		}
		return true
	})

	// The uploader stops after replication: the image is still ensured on
	// the remaining host from the other holder.
	dataC := randomBytes(1<<20+3, 3)
	idC := ic.upload(0, "c", "raw", dataC)
	holders = c.waitHolders(idC, 2)
	c.Stop(0)
	k = c.nonHolder(idC)
	if slices.Contains(holders, k) {
		t.Fatalf("host%d holds the image; holders %v", k, holders)
	}
	c.Eventually(30*time.Second, "EnsureImage with the uploader stopped", func() bool {
		p, _, release, err := c.Node(k).EnsureImage(ctx, idC)
		if err != nil {
			t.Logf("EnsureImage on host%d: %v (retrying)", k, err)
			return false
		}
		defer release()
		return fileSHA(t, p) == sha(dataC)
	})
}

// joinWith adds a node like Join, with its configuration changed by edit
// (a per-host flag such as --image-cache-size), and returns its index.
func (c *Cluster) joinWith(ctx context.Context, edit func(*node.Config)) int {
	c.t.Helper()
	i := c.Len()
	c.add(ctx, c.Token(ctx), edit)
	return i
}

// TestImageCacheSize: a host started with a small --image-cache-size
// evicts a cached image blob no local disk uses when it fetches another
// image, reports the dropped copy, keeps a copy the cluster counts on
// even over the limit, while a host with the default size keeps all.
func TestImageCacheSize(t *testing.T) {
	c := NewCluster(t, 2)
	ctx := t.Context()

	bad := c.config(filepath.Join(t.TempDir(), "bad"), "bad", "")
	bad.ImageCacheSize = -1
	if n, err := node.Start(ctx, bad); err == nil {
		n.Stop()
		t.Fatal("node.Start with ImageCacheSize -1 succeeded; want an error")
	} else if !strings.Contains(err.Error(), "--image-cache-size") {
		t.Fatalf("node.Start with ImageCacheSize -1 = %v; want an --image-cache-size error", err)
	}

	const limit = 3 << 20 // one 2 MiB image fits, two do not
	k := c.joinWith(ctx, func(cfg *node.Config) { cfg.ImageCacheSize = limit })
	c.WaitMembers(3, 20*time.Second)
	ic := newImageClient(t, c, 0)
	// One copy per image: the uploader's is the one the cluster counts
	// on, a copy fetched elsewhere is cache.
	if st, body := ic.do(0, "PATCH", "/cluster/v1/settings", "application/json", strings.NewReader(`{"image_copies":1}`)); st != http.StatusOK {
		t.Fatalf("PATCH settings = %d %s", st, body)
	}
	c.Eventually(10*time.Second, "image_copies 1 everywhere", func() bool {
		for _, n := range c.Running() {
			if cfg, ok := n.State().Cluster(); !ok || cfg.Settings.EffectiveImageCopies() != 1 {
				return false
			}
		}
		return true
	})
	dataA, dataB, dataC := randomBytes(2<<20, 11), randomBytes(2<<20, 12), randomBytes(2<<20, 13)
	idA, idB := ic.upload(0, "cache-a", "raw", dataA), ic.upload(0, "cache-b", "raw", dataB)
	c.waitHolders(idA, 1)
	c.waitHolders(idB, 1)
	// Eviction keeps a copy the cluster counts on: wait until the leader
	// has recorded which copies it counts on (host0's uploads).
	c.Eventually(10*time.Second, "the copies the cluster counts on recorded everywhere", func() bool {
		for _, n := range c.Running() {
			for _, id := range []string{idA, idB} {
				if img, ok := n.State().Image(id); !ok || !slices.Equal(img.DesiredHolders, []string{c.Node(0).ID()}) {
					return false
				}
			}
		}
		return true
	})
	// ensure fetches an image the way the agent does before it builds a
	// disk, and returns the release of the blob's pin.
	ensure := func(i int, id string, data []byte) (release func()) {
		t.Helper()
		p, _, release, err := c.Node(i).EnsureImage(ctx, id)
		if err != nil {
			t.Fatalf("EnsureImage(%s) on host%d: %v", id, i, err)
		}
		t.Cleanup(release)
		if got := fileSHA(t, p); got != sha(data) {
			t.Fatalf("EnsureImage(%s) on host%d: sha256 %s; want %s", id, i, got, sha(data))
		}
		return release
	}
	present := func(i int, data []byte) bool {
		_, err := os.Stat(c.blobPath(i, sha(data)))
		return err == nil
	}
	holderEverywhere := func(id string, i int, want bool) {
		t.Helper()
		c.Eventually(10*time.Second, fmt.Sprintf("host%d holder of %s = %v everywhere", i, id, want), func() bool {
			for _, n := range c.Running() {
				img, ok := n.State().Image(id)
				if !ok || img.HasHolder(c.Node(i).ID()) != want {
					return false
				}
			}
			return true
		})
	}

	// A fits the small cache.
	ensure(k, idA, dataA)()
	holderEverywhere(idA, k, true)
	// B does not fit next to A: A, unused here and held by host0, goes.
	releaseB := ensure(k, idB, dataB)
	if present(k, dataA) {
		t.Fatalf("host%d (cache %d bytes) kept image A's blob after fetching B; want it evicted", k, limit)
	}
	holderEverywhere(idA, k, false)
	holderEverywhere(idB, k, true)
	releaseB()

	// An upload through the small host: its copy is the only one, so the
	// cluster counts on it; making room for it evicts the cached B.
	idC := ic.upload(k, "cache-c", "raw", dataC)
	if present(k, dataB) || !present(k, dataC) {
		t.Fatalf("after uploading C through host%d: B present %v, C present %v; want B evicted, C stored", k, present(k, dataB), present(k, dataC))
	}
	holderEverywhere(idB, k, false)
	// Fetching A again needs room C cannot give: C stays (the store goes
	// over its limit) and A is fetched all the same. While its user holds
	// it, no eviction (the periodic one included) takes it.
	releaseA := ensure(k, idA, dataA)
	if err := c.Node(k).EvictImages(ctx); err != nil {
		t.Fatal(err)
	}
	if !present(k, dataC) || !present(k, dataA) {
		t.Fatalf("host%d after fetching A with C as the only copy: C present %v, A present %v; want both", k, present(k, dataC), present(k, dataA))
	}
	holderEverywhere(idC, k, true)
	// Released, A is cache over the limit: the next eviction takes it.
	releaseA()
	if err := c.Node(k).EvictImages(ctx); err != nil {
		t.Fatal(err)
	}
	if !present(k, dataC) || present(k, dataA) {
		t.Fatalf("host%d after releasing A over its limit: C present %v, A present %v; want C only", k, present(k, dataC), present(k, dataA))
	}

	// A host with the default cache size keeps every image it fetched.
	for _, im := range []struct {
		id   string
		data []byte
	}{{idA, dataA}, {idB, dataB}, {idC, dataC}} {
		ensure(1, im.id, im.data)
	}
	if !present(1, dataA) || !present(1, dataB) || !present(1, dataC) {
		t.Fatalf("host1 (default cache %d bytes) has A %v, B %v, C %v; want all three", node.DefaultImageCacheSize,
			present(1, dataA), present(1, dataB), present(1, dataC))
	}
}

// TestImageOpenStackCLI drives the real openstack client against a
// follower: create --file, list, show, set --property, save, delete.
func TestImageOpenStackCLI(t *testing.T) {
	c := NewCluster(t, 3)
	f := c.Follower()
	env := c.OpenStackEnv(t, f)
	dir := t.TempDir()
	osc := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command("openstack", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	img := filepath.Join(dir, "cirros.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	data, _ := os.ReadFile(img)
	md := md5.Sum(data)

	var created map[string]any
	json.Unmarshal(osc("image", "create", "--file", img, "--disk-format", "qcow2", "--container-format", "bare", "-f", "json", "cirros"), &created)
	if created["name"] != "cirros" {
		t.Fatalf("image create printed %v", created)
	}
	var list []map[string]any
	json.Unmarshal(osc("image", "list", "-f", "json"), &list)
	if len(list) != 1 || list[0]["Name"] != "cirros" || list[0]["Status"] != "active" {
		t.Fatalf("image list = %v", list)
	}
	var show map[string]any
	json.Unmarshal(osc("image", "show", "-f", "json", "cirros"), &show)
	if show["status"] != "active" || show["checksum"] != hex.EncodeToString(md[:]) || show["disk_format"] != "qcow2" ||
		show["virtual_size"] != float64(64<<20) {
		t.Fatalf("image show = %v", show)
	}
	osc("image", "set", "--property", "hw_architecture=x86_64", "--property", "os_distro=cirros", "cirros")
	json.Unmarshal(osc("image", "show", "-f", "json", "cirros"), &show)
	props, _ := show["properties"].(map[string]any)
	if props["hw_architecture"] != "x86_64" || props["os_distro"] != "cirros" {
		t.Fatalf("properties after image set = %v (show %v)", props, show)
	}
	out := filepath.Join(dir, "out.qcow2")
	osc("image", "save", "--file", out, "cirros")
	if back, _ := os.ReadFile(out); !bytes.Equal(back, data) {
		t.Fatalf("image save wrote %d bytes that differ from the %d uploaded", len(back), len(data))
	}
	osc("image", "delete", "cirros")
	json.Unmarshal(osc("image", "list", "-f", "json"), &list)
	if len(list) != 0 {
		t.Fatalf("image list after delete = %v", list)
	}
}

// BenchmarkImagePeerFetch: EnsureImage on a second in-process host (mTLS
// stream, sha256 verify, fsync) against plain HTTP of the same bytes into
// a file on the same disk, without and with an fsync at the end.
func BenchmarkImagePeerFetch(b *testing.B) {
	const size = 128 << 20
	c := NewCluster(b, 2)
	ctx := b.Context()
	ic := newImageClient(b, c, 0)
	data := randomBytes(size, 4)
	id := ic.upload(0, "bench", "raw", data)
	c.waitHolders(id, 2)
	sum := sha(data)
	src := c.blobPath(0, sum)
	plain := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, src) })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go plain.Serve(ln)
	defer plain.Close()
	dst := filepath.Join(b.TempDir(), "plain")
	var fetch, plainT, plainSyncT time.Duration
	for b.Loop() {
		os.Remove(c.blobPath(1, sum))
		syscall.Sync()
		t0 := time.Now()
		_, _, release, err := c.Node(1).EnsureImage(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		release()
		fetch += time.Since(t0)
		syscall.Sync()
		t0 = time.Now()
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			b.Fatal(err)
		}
		out, _ := os.Create(dst)
		io.Copy(out, resp.Body)
		resp.Body.Close()
		plainT += time.Since(t0)
		out.Sync()
		plainSyncT += time.Since(t0)
		out.Close()
		os.Remove(dst)
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/fetch.Seconds(), "fetch_MiB/s")
	b.ReportMetric(mb/plainT.Seconds(), "plain_http_MiB/s")
	b.ReportMetric(plainT.Seconds()/fetch.Seconds(), "ratio_vs_http")
	b.ReportMetric(plainSyncT.Seconds()/fetch.Seconds(), "ratio_vs_http_fsync")
}
