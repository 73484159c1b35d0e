package image_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// genReader yields n pseudo-random bytes without holding them: one 1 MiB
// block, with a counter stamped into each copy so blocks differ.
type genReader struct {
	block []byte
	left  int64
	off   int
	seq   uint64
}

func newGen(n int64) *genReader {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[0] = 0xeb // not any image magic: a raw disk
	return &genReader{block: b, left: n}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if g.off == len(g.block) {
		g.off = 0
		g.seq++
		copy(g.block[8:16], strconv.FormatUint(g.seq, 16)+"........")
	}
	n := copy(p, g.block[g.off:min(len(g.block), g.off+int(min(int64(len(p)), g.left)))])
	g.off += n
	g.left -= int64(n)
	return n, nil
}

// vmRSS reads this process's resident set size in bytes.
func vmRSS(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// TestImageUploadRSSFlat streams 2 GiB of generated data through the
// in-process API and samples the process's memory while it does: the
// upload must never be held in memory.
func TestImageUploadRSSFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 2 GiB; skipped with -short")
	}
	const size = 2 << 30
	e := newEnv(t)
	e.b.limit = size
	id := e.create(t, e.demo, map[string]any{"name": "big", "disk_format": "raw", "container_format": "bare"})

	runtime.GC()
	base := vmRSS(t)
	var maxRSS, maxHeap atomic.Int64
	maxRSS.Store(base)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if r := vmRSS(t); r > maxRSS.Load() {
				maxRSS.Store(r)
			}
			runtime.ReadMemStats(&ms)
			if h := int64(ms.HeapInuse); h > maxHeap.Load() {
				maxHeap.Store(h)
			}
		}
	}()
	start := time.Now()
	req, _ := http.NewRequest("PUT", e.srv.URL+imageURL(id, "file"), newGen(size))
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Auth-Token", e.demo.Token)
	resp, err := http.DefaultClient.Do(req)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("upload = %d %s", resp.StatusCode, body)
	}
	el := time.Since(start)
	img := e.image(t, id)
	if img.Size != size || img.Status != "active" {
		t.Fatalf("image = %+v", img)
	}
	grew := maxRSS.Load() - base
	t.Logf("2 GiB upload in %v (%.0f MiB/s); RSS %d MiB at start, peak +%.1f MiB; peak heap in use %.1f MiB",
		el.Round(time.Millisecond), float64(size)/(1<<20)/el.Seconds(), base>>20, float64(grew)/(1<<20), float64(maxHeap.Load())/(1<<20))
	if grew > 20<<20 {
		t.Errorf("RSS grew by %.1f MiB during a 2 GiB upload; want < 20 MiB", float64(grew)/(1<<20))
	}
}

// BenchmarkImageUpload measures an upload through the in-process API
// (HTTP over loopback, md5+sha256+sha512, format check, fsync, rename)
// against cp of the same file on the same disk.
func BenchmarkImageUpload(b *testing.B) {
	const size = 256 << 20
	e := newEnv(b)
	e.b.limit = size
	dir := b.TempDir()
	src := filepath.Join(dir, "src.raw")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, newGen(size)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	var up, cp, cpSync time.Duration
	for i := 0; b.Loop(); i++ {
		id := e.create(b, e.demo, map[string]any{"name": "bench", "disk_format": "raw", "container_format": "bare"})
		// Different bytes each round, so no upload is a dedupe of the last.
		rf, _ := os.OpenFile(src, os.O_RDWR, 0)
		rf.WriteAt([]byte(fmt.Sprintf("round %08d", i)), 100)
		rf.Seek(0, io.SeekStart)
		syscall.Sync() // each timed step starts with no dirty pages
		t0 := time.Now()
		req, _ := http.NewRequest("PUT", e.srv.URL+imageURL(id, "file"), rf)
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("X-Auth-Token", e.demo.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		up += time.Since(t0)
		rf.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("upload = %d", resp.StatusCode)
		}
		dst := filepath.Join(dir, "copy.raw")
		syscall.Sync()
		t0 = time.Now()
		if out, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, out)
		}
		cp += time.Since(t0)
		os.Remove(dst)
		syscall.Sync()
		t0 = time.Now()
		if out, err := exec.Command("sh", "-c", "cp \"$0\" \"$1\" && sync \"$1\"", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp+sync: %v %s", err, out)
		}
		cpSync += time.Since(t0)
		os.Remove(dst)
		if err := e.b.store.Remove(e.image(b, id).SHA256); err != nil {
			b.Fatal(err)
		}
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/up.Seconds(), "upload_MiB/s")
	b.ReportMetric(mb/cp.Seconds(), "cp_MiB/s")
	b.ReportMetric(cp.Seconds()/up.Seconds(), "ratio_vs_cp")
	b.ReportMetric(cpSync.Seconds()/up.Seconds(), "ratio_vs_cp_sync")
}
