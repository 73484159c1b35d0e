package storage

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of the blob store.
var (
	// ErrBlobNotFound: the store has no blob with that sum.
	ErrBlobNotFound = errors.New("blob not found")
	// ErrBlobCorrupt: the bytes do not hash to the expected sum.
	ErrBlobCorrupt = errors.New("blob checksum mismatch")
	// ErrBlobBadSum: the name is not a lowercase hex sha256.
	ErrBlobBadSum = errors.New("not a sha256 blob address")
	// ErrBlobBusy: another fetch of the blob holds its lock.
	ErrBlobBusy = errors.New("blob is being fetched")
)

// BlobValidSum reports whether s is a lowercase hex sha256, the only form
// of blob name the store accepts (so a name never escapes the directory).
func BlobValidSum(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// BlobStore keeps content-addressed blobs in a local directory:
// <root>/blobs/<sha256>, written through temp files in <root>/tmp and
// renamed into place, so a blob under its name is always complete. Limit
// is the size the host cache aims to stay under (Evict).
type BlobStore struct {
	blobs, tmp, locks string
	limit             int64
}

// NewBlobStore opens (creating) a blob store under root.
func NewBlobStore(root string, limit int64) (*BlobStore, error) {
	s := &BlobStore{blobs: filepath.Join(root, "blobs"), tmp: filepath.Join(root, "tmp"),
		locks: filepath.Join(root, "locks"), limit: limit}
	for _, d := range []string{s.blobs, s.tmp, s.locks} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob store %s: %w", root, err)
		}
	}
	return s, nil
}

// Limit is the cache size the store aims for.
func (s *BlobStore) Limit() int64 { return s.limit }

// Path is where the blob with sum lives (whether or not it exists).
func (s *BlobStore) Path(sum string) (string, error) {
	if !BlobValidSum(sum) {
		return "", fmt.Errorf("%q: %w", sum, ErrBlobBadSum)
	}
	return filepath.Join(s.blobs, sum), nil
}

// Has reports whether the store holds the blob.
func (s *BlobStore) Has(sum string) bool {
	p, err := s.Path(sum)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Size returns the blob's size.
func (s *BlobStore) Size(sum string) (int64, error) {
	p, err := s.Path(sum)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", sum, ErrBlobNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", sum, err)
	}
	return fi.Size(), nil
}

// Open opens a blob for reading and marks it used now (eviction removes
// the least recently used blobs first).
func (s *BlobStore) Open(sum string) (*os.File, error) {
	p, err := s.Path(sum)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", sum, ErrBlobNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", sum, err)
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return f, nil
}

// Touch marks a blob used now.
func (s *BlobStore) Touch(sum string) {
	if p, err := s.Path(sum); err == nil {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
}

// Remove deletes a blob; a missing one is not an error.
func (s *BlobStore) Remove(sum string) error {
	p, err := s.Path(sum)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", sum, err)
	}
	return nil
}

// BlobInfo describes one stored blob.
type BlobInfo struct {
	Sum      string
	Size     int64
	LastUsed time.Time
}

// List returns the stored blobs, least recently used first.
func (s *BlobStore) List() ([]BlobInfo, error) {
	ents, err := os.ReadDir(s.blobs)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	var out []BlobInfo
	for _, e := range ents {
		if !BlobValidSum(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, BlobInfo{Sum: e.Name(), Size: fi.Size(), LastUsed: fi.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastUsed.Equal(out[j].LastUsed) {
			return out[i].LastUsed.Before(out[j].LastUsed)
		}
		return out[i].Sum < out[j].Sum
	})
	return out, nil
}

// Evict removes least recently used blobs until the store plus need bytes
// fits the limit. keep reports the blobs that must stay (a local disk
// uses them, or the cluster needs this copy); they may leave the store over
// its limit. It returns the sums it removed.
func (s *BlobStore) Evict(need int64, keep func(sum string) bool) ([]string, error) {
	blobs, err := s.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, b := range blobs {
		total += b.Size
	}
	var removed []string
	for _, b := range blobs {
		if total+need <= s.limit {
			break
		}
		if keep != nil && keep(b.Sum) {
			continue
		}
		if err := s.Remove(b.Sum); err != nil {
			return removed, err
		}
		total -= b.Size
		removed = append(removed, b.Sum)
	}
	return removed, nil
}

// Once runs fetch with the blob's lock held, unless the blob is (or by
// then has become) present: concurrent calls for one blob on one host,
// from goroutines or processes, fetch it once. With wait false it returns
// ErrBlobBusy instead of waiting for another holder of the lock.
func (s *BlobStore) Once(ctx context.Context, sum string, wait bool, fetch func(ctx context.Context) error) error {
	if !BlobValidSum(sum) {
		return fmt.Errorf("%q: %w", sum, ErrBlobBadSum)
	}
	if s.Has(sum) {
		return nil
	}
	unlock, err := s.lock(ctx, sum, wait)
	if err != nil {
		return err
	}
	defer unlock()
	if s.Has(sum) {
		return nil
	}
	return fetch(ctx)
}

// Busy reports whether a fetch of the blob holds its lock right now.
func (s *BlobStore) Busy(sum string) bool {
	unlock, err := s.lock(context.Background(), sum, false)
	if err != nil {
		return errors.Is(err, ErrBlobBusy)
	}
	unlock()
	return false
}

// lock takes an flock on <root>/locks/<sum>: per open file, so it excludes
// other goroutines of this process as well as other processes.
func (s *BlobStore) lock(ctx context.Context, sum string, wait bool) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.locks, sum), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock blob %s: %w", sum, err)
	}
	delay := 5 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock blob %s: %w", sum, err)
		}
		if !wait {
			f.Close()
			return nil, fmt.Errorf("blob %s: %w", sum, ErrBlobBusy)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for blob %s: %w", sum, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// Verify re-hashes a stored blob; a corrupt one is removed and
// ErrBlobCorrupt returned.
func (s *BlobStore) Verify(ctx context.Context, sum string) error {
	f, err := s.Open(sum)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, blobCtxReader{ctx: ctx, r: f}); err != nil {
		return fmt.Errorf("verify blob %s: %w", sum, err)
	}
	if hex.EncodeToString(h.Sum(nil)) == sum {
		return nil
	}
	if err := s.Remove(sum); err != nil {
		return err
	}
	return fmt.Errorf("blob %s: %w (removed)", sum, ErrBlobCorrupt)
}

// blobCtxReader stops a long copy when ctx ends.
type blobCtxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r blobCtxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// BlobHashes selects the checksums a BlobWriter computes besides sha256.
type BlobHashes int

const (
	BlobMD5    BlobHashes = 1 << iota // Glance's "checksum"
	BlobSHA512                        // Glance's os_hash_value
)

// BlobSums are the size and checksums (lowercase hex) of written bytes.
type BlobSums struct {
	Size   int64
	SHA256 string
	MD5    string // "" unless asked for
	SHA512 string // "" unless asked for
}

// BlobWriter streams bytes into a temp file of the store while hashing
// them; Commit moves the file under its sha256, Abort removes it. Every
// writer must end in Commit or Abort (which also stop its goroutines).
// Checksums run in parallel with the file write for large writes, so a
// writer costs about one hash on the critical path.
type BlobWriter struct {
	s      *BlobStore
	f      *os.File
	n      int64
	sha    hash.Hash
	others []hash.Hash // the extra hashes
	all    []hash.Hash // others and sha
	// hashers run the hashes in parallel with the file write for large
	// writes; started on the first one, stopped by Commit or Abort.
	hashers []*blobHasher
	md5     hash.Hash
	sha512  hash.Hash
	done    bool
	err     error
	// flushed is how far writeback has been started (writeback); noFlush
	// stops trying where the file system does not support it.
	flushed int64
	noFlush bool
}

// blobWritebackChunk is how much a BlobWriter lets pile up in the page
// cache before it asks the kernel to start writing it out, so that
// Commit's fsync finds little left to do instead of the whole blob.
const blobWritebackChunk = 8 << 20

// writeback starts (does not wait for) the write-out of what was written
// since the last call, once a chunk has piled up. Commit's fsync is still
// what makes the data durable; this only overlaps the disk with the rest.
func (w *BlobWriter) writeback() {
	if w.noFlush || w.n-w.flushed < blobWritebackChunk {
		return
	}
	if err := unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.n-w.flushed, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		w.noFlush = true
		return
	}
	w.flushed = w.n
}

// blobParallelMin is the write size from which hashing runs in parallel.
const blobParallelMin = 64 << 10

// Create starts a new blob.
func (s *BlobStore) Create(extra BlobHashes) (*BlobWriter, error) {
	f, err := os.CreateTemp(s.tmp, "blob-*")
	if err != nil {
		return nil, fmt.Errorf("new blob: %w", err)
	}
	w := &BlobWriter{s: s, f: f, sha: sha256.New()}
	if extra&BlobMD5 != 0 {
		w.md5 = md5.New()
		w.others = append(w.others, w.md5)
	}
	if extra&BlobSHA512 != 0 {
		w.sha512 = sha512.New()
		w.others = append(w.others, w.sha512)
	}
	w.all = append(append([]hash.Hash{}, w.others...), w.sha)
	return w, nil
}

// Write writes and hashes p.
func (w *BlobWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write to a finished blob")
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) < blobParallelMin {
		for _, h := range w.others {
			h.Write(p)
		}
		w.sha.Write(p)
		n, err := w.f.Write(p)
		w.n += int64(n)
		if err != nil {
			w.err = fmt.Errorf("write blob: %w", err)
		}
		w.writeback()
		return n, w.err
	}
	if w.hashers == nil {
		w.startHashers()
	}
	for _, hw := range w.hashers {
		hw.in <- p
	}
	n, err := w.f.Write(p)
	for _, hw := range w.hashers {
		<-hw.done
	}
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("write blob: %w", err)
	}
	w.writeback()
	return n, w.err
}

// blobHasher is a goroutine that feeds one hash the chunks it is given,
// answering on done after each. It ends when in is closed.
type blobHasher struct {
	in   chan []byte
	done chan struct{}
}

// startHashers starts one hashing goroutine per checksum; stopHashers (on
// Commit or Abort) ends them.
func (w *BlobWriter) startHashers() {
	for _, h := range w.all {
		hw := &blobHasher{in: make(chan []byte), done: make(chan struct{})}
		go func() {
			for p := range hw.in {
				h.Write(p)
				hw.done <- struct{}{}
			}
		}()
		w.hashers = append(w.hashers, hw)
	}
}

func (w *BlobWriter) stopHashers() {
	for _, hw := range w.hashers {
		close(hw.in)
	}
	w.hashers = nil
}

// blobReadAhead is how many 1 MiB chunks ReadFrom reads ahead.
const blobReadAhead = 3

// ReadFrom writes everything r yields until io.EOF. One goroutine reads
// ahead while the calling one hashes and writes, so a network source and
// the disk overlap; it returns only once that goroutine is done with r.
func (w *BlobWriter) ReadFrom(r io.Reader) (int64, error) {
	type chunk struct {
		buf []byte
		n   int
		err error
	}
	free := make(chan []byte, blobReadAhead)
	for range blobReadAhead {
		free <- make([]byte, 1<<20)
	}
	full := make(chan chunk, blobReadAhead)
	stop := make(chan struct{})
	go func() {
		defer close(full)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			n, err := blobFill(r, buf)
			full <- chunk{buf: buf, n: n, err: err} // never blocks: as many slots as buffers
			if err != nil {
				return
			}
		}
	}()
	var total int64
	var ferr error
	for c := range full {
		if ferr != nil {
			continue // drain until the reader stops
		}
		if c.n > 0 {
			if _, err := w.Write(c.buf[:c.n]); err != nil {
				ferr = err
				close(stop)
				continue
			}
			total += int64(c.n)
		}
		if c.err != nil && !errors.Is(c.err, io.EOF) {
			ferr = fmt.Errorf("read blob source: %w", c.err)
			continue
		}
		free <- c.buf
	}
	return total, ferr
}

// blobFill reads until p is full or r fails, returning r's own error
// (io.EOF only for a clean end).
func blobFill(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Size is the number of bytes written so far.
func (w *BlobWriter) Size() int64 { return w.n }

// TempPath is the temp file, for inspecting the bytes before Commit.
func (w *BlobWriter) TempPath() string { return w.f.Name() }

// Sums returns the size and checksums of what was written so far.
func (w *BlobWriter) Sums() BlobSums {
	s := BlobSums{Size: w.n, SHA256: hex.EncodeToString(w.sha.Sum(nil))}
	if w.md5 != nil {
		s.MD5 = hex.EncodeToString(w.md5.Sum(nil))
	}
	if w.sha512 != nil {
		s.SHA512 = hex.EncodeToString(w.sha512.Sum(nil))
	}
	return s
}

// Commit syncs the file and moves it under its sha256. With want set, a
// different sum aborts with ErrBlobCorrupt. A blob already present is
// kept (same sum, same bytes) and the temp file dropped.
func (w *BlobWriter) Commit(want string) (BlobSums, error) {
	if w.done {
		return BlobSums{}, errors.New("blob already finished")
	}
	w.stopHashers()
	sums := w.Sums()
	if w.err != nil {
		w.Abort()
		return sums, w.err
	}
	if want != "" && sums.SHA256 != want {
		w.Abort()
		return sums, fmt.Errorf("blob %s: got %s: %w", want, sums.SHA256, ErrBlobCorrupt)
	}
	w.done = true
	tmp := w.f.Name()
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		os.Remove(tmp)
		return sums, fmt.Errorf("sync blob: %w", err)
	}
	if err := w.f.Close(); err != nil {
		os.Remove(tmp)
		return sums, fmt.Errorf("close blob: %w", err)
	}
	dst := filepath.Join(w.s.blobs, sums.SHA256)
	if w.s.Has(sums.SHA256) {
		os.Remove(tmp)
		w.s.Touch(sums.SHA256)
		return sums, nil
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return sums, fmt.Errorf("commit blob: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return sums, fmt.Errorf("commit blob: %w", err)
	}
	return sums, nil
}

// Abort drops the temp file. It is safe after Commit (then a no-op).
func (w *BlobWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.stopHashers()
	w.f.Close()
	os.Remove(w.f.Name())
}

// CleanTemp removes temp files older than age, left by a crash.
func (s *BlobStore) CleanTemp(age time.Duration) error {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return fmt.Errorf("clean blob temp: %w", err)
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > age {
			os.Remove(filepath.Join(s.tmp, e.Name()))
		}
	}
	return nil
}
