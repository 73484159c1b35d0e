package qemu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestTrimConsoleKeepsTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	var all bytes.Buffer
	for i := range 5000 {
		fmt.Fprintf(&all, "line %05d\n", i)
	}
	if err := os.WriteFile(path, all.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	const limit = 16 << 10
	trimmed, err := trimConsole(path, limit)
	if err != nil || !trimmed {
		t.Fatalf("trimConsole = %v, %v; want true, nil", trimmed, err)
	}
	b, _ := os.ReadFile(path)
	if len(b) > limit || len(b) < limit/4 {
		t.Errorf("size after trim = %d; want between %d and %d", len(b), limit/4, limit)
	}
	if !bytes.HasSuffix(all.Bytes(), b) {
		t.Errorf("trimmed file is not a suffix of the original")
	}
	if again, err := trimConsole(path, limit); again || err != nil {
		t.Errorf("second trimConsole = %v, %v; want false, nil", again, err)
	}
}

// A writer appending (like QEMU, O_APPEND) while we trim loses nothing of
// the newest lines and the file stays bounded.
func TestTrimConsoleConcurrentAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const limit = 64 << 10
	const lines = 40000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range lines {
			fmt.Fprintf(w, "line %06d\n", i)
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	trims := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if ok, err := trimConsole(path, limit); err != nil {
			t.Fatal(err)
		} else if ok {
			trims++
		}
	}
	if trims == 0 {
		t.Fatalf("no trim happened")
	}
	b, _ := os.ReadFile(path)
	if int64(len(b)) > limit+64<<10 {
		t.Errorf("size = %d; want about %d", len(b), limit)
	}
	if !strings.HasSuffix(string(b), fmt.Sprintf("line %06d\n", lines-1)) {
		t.Errorf("last line lost: %q", b[max(0, len(b)-40):])
	}
	t.Logf("%d trims, final size %d", trims, len(b))
}

func TestReadTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	if s, err := readTail(path, 10); s != "" || err != nil {
		t.Errorf("readTail(missing) = %q, %v; want \"\", nil", s, err)
	}
	os.WriteFile(path, []byte("0123456789abcdef"), 0o600)
	if s, _ := readTail(path, 6); s != "abcdef" {
		t.Errorf("readTail(6) = %q; want abcdef", s)
	}
	if s, _ := readTail(path, 0); s != "0123456789abcdef" {
		t.Errorf("readTail(0) = %q; want all", s)
	}
}
