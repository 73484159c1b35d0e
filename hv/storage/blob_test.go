package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func blobTestStore(t *testing.T, limit int64) *BlobStore {
	t.Helper()
	s, err := NewBlobStore(filepath.Join(t.TempDir(), "images"), limit)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func blobTestData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// blobTestPut writes data through a writer in chunks and commits it.
func blobTestPut(t *testing.T, s *BlobStore, data []byte, chunk int) BlobSums {
	t.Helper()
	w, err := s.Create(BlobMD5 | BlobSHA512)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += chunk {
		if _, err := w.Write(data[off:min(off+chunk, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	sums, err := w.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func TestBlobWriteCommitOpen(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	for _, tc := range []struct {
		name  string
		size  int
		chunk int
	}{
		{"empty", 0, 1}, {"small writes", 100_000, 1000}, {"parallel writes", 3<<20 + 7, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := blobTestData(tc.size, uint64(tc.size))
			sums := blobTestPut(t, s, data, tc.chunk)
			m, s2, s5 := md5.Sum(data), sha256.Sum256(data), sha512.Sum512(data)
			want := BlobSums{Size: int64(len(data)), MD5: hex.EncodeToString(m[:]), SHA256: hex.EncodeToString(s2[:]), SHA512: hex.EncodeToString(s5[:])}
			if sums != want {
				t.Fatalf("Sums = %+v; want %+v", sums, want)
			}
			if !s.Has(want.SHA256) {
				t.Fatal("Has = false after Commit")
			}
			f, err := s.Open(want.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, _ := os.ReadFile(f.Name())
			if !bytes.Equal(got, data) {
				t.Fatal("stored bytes differ")
			}
			if n, err := s.Size(want.SHA256); err != nil || n != int64(len(data)) {
				t.Fatalf("Size = %d, %v; want %d", n, err, len(data))
			}
		})
	}
	if ents, _ := os.ReadDir(s.tmp); len(ents) != 0 {
		t.Errorf("temp files left: %v", ents)
	}
}

func TestBlobCommitVerifiesAndAborts(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	data := blobTestData(1000, 1)
	w, _ := s.Create(0)
	w.Write(data)
	if _, err := w.Commit(hex.EncodeToString(make([]byte, 32))); !errors.Is(err, ErrBlobCorrupt) {
		t.Fatalf("Commit(wrong sum) = %v; want ErrBlobCorrupt", err)
	}
	w2, _ := s.Create(0)
	w2.Write(data)
	w2.Abort()
	w2.Abort()
	if ents, _ := os.ReadDir(s.tmp); len(ents) != 0 {
		t.Errorf("temp files after abort: %v", ents)
	}
	if blobs, _ := s.List(); len(blobs) != 0 {
		t.Errorf("blobs after failed commits: %v", blobs)
	}
	// The same bytes twice: one blob.
	a := blobTestPut(t, s, data, 100)
	b := blobTestPut(t, s, data, 1000)
	if blobs, _ := s.List(); a != b || len(blobs) != 1 {
		t.Errorf("two commits of the same bytes = %v, %v, %d blobs; want one", a, b, len(blobs))
	}
}

func TestBlobBadSums(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	for _, sum := range []string{"", "../../etc/passwd", "ABCDEF" + hex.EncodeToString(make([]byte, 29)), hex.EncodeToString(make([]byte, 31))} {
		if s.Has(sum) {
			t.Errorf("Has(%q) = true", sum)
		}
		if _, err := s.Open(sum); !errors.Is(err, ErrBlobBadSum) {
			t.Errorf("Open(%q) = %v; want ErrBlobBadSum", sum, err)
		}
		if err := s.Remove(sum); !errors.Is(err, ErrBlobBadSum) {
			t.Errorf("Remove(%q) = %v; want ErrBlobBadSum", sum, err)
		}
		if err := s.Once(context.Background(), sum, true, func(context.Context) error { return nil }); !errors.Is(err, ErrBlobBadSum) {
			t.Errorf("Once(%q) = %v; want ErrBlobBadSum", sum, err)
		}
	}
	missing := hex.EncodeToString(make([]byte, 32))
	if _, err := s.Open(missing); !errors.Is(err, ErrBlobNotFound) {
		t.Errorf("Open(missing) = %v; want ErrBlobNotFound", err)
	}
	if err := s.Remove(missing); err != nil {
		t.Errorf("Remove(missing) = %v; want nil", err)
	}
}

func TestBlobEvict(t *testing.T) {
	s := blobTestStore(t, 3000)
	var sums []string
	base := time.Now().Add(-time.Hour)
	for i := range 4 {
		sum := blobTestPut(t, s, blobTestData(1000, uint64(i+10)), 1000).SHA256
		p, _ := s.Path(sum)
		at := base.Add(time.Duration(i) * time.Minute) // blob 0 is the least recently used
		os.Chtimes(p, at, at)
		sums = append(sums, sum)
	}
	s.Touch(sums[1]) // now the most recently used
	keep := func(sum string) bool { return sum == sums[0] }
	removed, err := s.Evict(1000, keep)
	if err != nil {
		t.Fatal(err)
	}
	// 4000 stored + 1000 needed over a 3000 limit: two go, LRU first,
	// skipping the kept one: blobs 2 and 3 (blob 1 was touched).
	if want := []string{sums[2], sums[3]}; !slices.Equal(removed, want) {
		t.Fatalf("Evict removed %v; want %v", removed, want)
	}
	if !s.Has(sums[0]) || !s.Has(sums[1]) {
		t.Fatal("kept or recent blob was removed")
	}
	// Everything kept: the store stays over its limit.
	if removed, _ := s.Evict(10_000, func(string) bool { return true }); len(removed) != 0 {
		t.Fatalf("Evict with everything kept removed %v", removed)
	}
}

func TestBlobOnceFetchesOnce(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	data := blobTestData(200_000, 7)
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])
	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(ctx context.Context) error {
		fetches.Add(1)
		<-release
		w, err := s.Create(0)
		if err != nil {
			return err
		}
		w.Write(data)
		_, err = w.Commit(hexSum)
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.Once(context.Background(), hexSum, true, fetch) }()
	}
	// Wait until one fetch runs, then check a non-waiting caller is told busy.
	deadline := time.Now().Add(5 * time.Second)
	for fetches.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := s.Once(context.Background(), hexSum, false, fetch); !errors.Is(err, ErrBlobBusy) {
		t.Errorf("Once(wait=false) during a fetch = %v; want ErrBlobBusy", err)
	}
	if !s.Busy(hexSum) {
		t.Error("Busy = false during a fetch")
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Once = %v", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("8 concurrent Once calls fetched %d times; want 1", n)
	}
	if s.Busy(hexSum) {
		t.Error("Busy = true after the fetch")
	}
	// A waiter gives up with its context.
	other := hex.EncodeToString(make([]byte, 32))
	hold := make(chan struct{})
	started := make(chan struct{})
	go s.Once(context.Background(), other, true, func(context.Context) error { close(started); <-hold; return nil })
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Once(ctx, other, true, fetch); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Once with an expiring context = %v; want deadline exceeded", err)
	}
	close(hold)
}

func TestBlobVerify(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	sum := blobTestPut(t, s, blobTestData(5000, 3), 5000).SHA256
	if err := s.Verify(context.Background(), sum); err != nil {
		t.Fatalf("Verify(good) = %v", err)
	}
	p, _ := s.Path(sum)
	f, _ := os.OpenFile(p, os.O_WRONLY, 0)
	f.WriteAt([]byte("corrupt"), 100)
	f.Close()
	if err := s.Verify(context.Background(), sum); !errors.Is(err, ErrBlobCorrupt) {
		t.Fatalf("Verify(corrupt) = %v; want ErrBlobCorrupt", err)
	}
	if s.Has(sum) {
		t.Fatal("corrupt blob was kept")
	}
}

func TestBlobCleanTemp(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	w, _ := s.Create(0)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(w.TempPath(), old, old)
	fresh, _ := s.Create(0)
	if err := s.CleanTemp(time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.TempPath()); !errors.Is(err, os.ErrNotExist) {
		t.Error("old temp file kept")
	}
	if _, err := os.Stat(fresh.TempPath()); err != nil {
		t.Error("fresh temp file removed")
	}
	fresh.Abort()
}

// blobTestFlaky yields data in odd-sized pieces, then fails with err.
type blobTestFlaky struct {
	data []byte
	err  error
}

func (f *blobTestFlaky) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data[:min(len(f.data), 77_777)])
	f.data = f.data[n:]
	return n, nil
}

func TestBlobReadFrom(t *testing.T) {
	s := blobTestStore(t, 1<<30)
	data := blobTestData(5<<20+123, 9)
	w, _ := s.Create(0)
	n, err := w.ReadFrom(&blobTestFlaky{data: data, err: io.EOF})
	if err != nil || n != int64(len(data)) {
		t.Fatalf("ReadFrom = %d, %v; want %d, nil", n, err, len(data))
	}
	sum := sha256.Sum256(data)
	if sums, err := w.Commit(hex.EncodeToString(sum[:])); err != nil || sums.Size != int64(len(data)) {
		t.Fatalf("Commit = %+v, %v", sums, err)
	}
	// A source that breaks is an error, not a short blob.
	w2, _ := s.Create(0)
	if _, err := w2.ReadFrom(&blobTestFlaky{data: data[:3<<20], err: io.ErrUnexpectedEOF}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadFrom(broken source) = %v; want ErrUnexpectedEOF", err)
	}
	w2.Abort()
}
