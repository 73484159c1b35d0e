package qemu

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// consoleReader collects what a console client reads until EOF.
type consoleReader struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	eof  chan struct{}
	conn net.Conn
}

func readConsole(c net.Conn) *consoleReader {
	r := &consoleReader{eof: make(chan struct{}), conn: c}
	go func() {
		defer close(r.eof)
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *consoleReader) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// typeUntil types line into the console (again every few seconds: the
// guest's shell may not be reading yet) until want appears in every reader.
func typeUntil(t *testing.T, c net.Conn, line, want string, readers ...*consoleReader) {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	next := time.Now()
	for {
		if time.Now().After(next) {
			if _, err := c.Write([]byte(line + "\r")); err != nil {
				t.Fatalf("typing %q: %v", line, err)
			}
			next = time.Now().Add(5 * time.Second)
		}
		all := true
		for _, r := range readers {
			all = all && strings.Contains(r.String(), want)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			for i, r := range readers {
				t.Errorf("reader %d got:\n%s", i, tail(r.String(), 2000))
			}
			t.Fatalf("typed %q: %q not echoed back to every client within %s", line, want, bootTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The serial console is interactive: what is typed reaches the guest's
// shell and its answer comes back to every attached client, while QEMU
// keeps appending the same output to the console log.
func TestConsoleInteractive(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	dir := stateDir(t)
	d := newTestDriver(t, dir)
	s := guestSpec(t, d, guestOpts{hostname: "tty", noConfig: true})
	killVMs(t, s.UUID)
	if _, err := d.OpenConsole(ctx, newUUID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenConsole of an unknown VM = %v; want ErrNotFound", err)
	}
	if _, err := d.OpenConsole(ctx, s.UUID); !errors.Is(err, ErrNotRunning) {
		t.Errorf("OpenConsole before the VM started = %v; want ErrNotRunning", err)
	}
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	logBefore, _ := d.ConsoleLog(s.UUID, 0)

	c1, err := d.OpenConsole(ctx, s.UUID)
	if err != nil {
		t.Fatalf("OpenConsole = %v", err)
	}
	c2, err := d.OpenConsole(ctx, s.UUID)
	if err != nil {
		t.Fatalf("second OpenConsole = %v", err)
	}
	r1, r2 := readConsole(c1), readConsole(c2)
	// The answer (42x) differs from what is echoed as typed (6*7))x).
	typeUntil(t, c1, "echo $((6*7))x", "42x", r1, r2)
	waitConsole(t, d, s.UUID, "42x", 1)
	if logAfter, _ := d.ConsoleLog(s.UUID, 0); len(logAfter) <= len(logBefore) {
		t.Errorf("console log did not grow while a client was attached: %d → %d bytes", len(logBefore), len(logAfter))
	}

	// One client leaving does not end the other's session.
	if err := c1.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case <-r1.eof:
	case <-time.After(10 * time.Second):
		t.Fatal("a closed console client's reads did not end")
	}
	typeUntil(t, c2, "echo $((7*8))y", "56y", r2)
	c2.Close()

	// With every client gone the socket is free again for the next one.
	c3, err := d.OpenConsole(ctx, s.UUID)
	if err != nil {
		t.Fatalf("OpenConsole after all clients left = %v", err)
	}
	r3 := readConsole(c3)
	typeUntil(t, c3, "echo $((9*9))z", "81z", r3)
	waitConsole(t, d, s.UUID, "81z", 1)

	// The VM stopping ends the open session.
	if err := d.Stop(ctx, s.UUID); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	select {
	case <-r3.eof:
	case <-time.After(30 * time.Second):
		t.Fatal("console reads did not end when the VM stopped")
	}
	c3.Close()
	if _, err := d.OpenConsole(ctx, s.UUID); !errors.Is(err, ErrNotRunning) {
		t.Errorf("OpenConsole of a stopped VM = %v; want ErrNotRunning", err)
	}
}

// A VM whose console has no socket (started by an older peerstack with a
// file chardev) is reported read-only, not as an error to retry.
func TestConsoleReadOnlyWithoutSocket(t *testing.T) {
	requireQEMU(t)
	ctx := context.Background()
	dir := stateDir(t)
	d := newTestDriver(t, dir)
	s := guestSpec(t, d, guestOpts{hostname: "old", noConfig: true})
	killVMs(t, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		t.Fatalf("Start = %v", err)
	}
	// What a file-chardev VM looks like from outside: running, no socket.
	if err := os.Remove(d.Paths(s.UUID).ConsoleSocket()); err != nil {
		t.Fatal(err)
	}
	c, err := d.OpenConsole(ctx, s.UUID)
	if !errors.Is(err, ErrConsoleReadOnly) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("OpenConsole without a socket = %v; want ErrConsoleReadOnly", err)
	}
	waitConsole(t, d, s.UUID, "PEERSTACK-READY", 1)
	if err := d.Stop(ctx, s.UUID); err != nil {
		t.Fatalf("Stop = %v", err)
	}
}

// A client that stops reading is dropped; the others keep their output.
func TestConsoleHubDropsStalledClient(t *testing.T) {
	guest, qemuEnd := net.Pipe()
	h := &consoleHub{conn: qemuEnd, clients: map[*consoleClient]struct{}{}, done: make(chan struct{}), onIdle: func() {}}
	stalled, _ := h.attach()
	live, _ := h.attach()
	quit := make(chan struct{})
	defer close(quit)
	go h.run(nil, quit)
	got := make(chan int)
	go func() {
		n, _ := io.Copy(io.Discard, live)
		got <- int(n)
	}()
	chunk := bytes.Repeat([]byte("x"), 100)
	const chunks = consoleBacklog * 4
	for range chunks {
		if _, err := guest.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// The stalled client's pipe was closed by the hub.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<20)
	total := 0
	for {
		n, err := stalled.Read(buf)
		total += n
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("stalled client was not dropped")
			}
			break
		}
	}
	if total >= chunks*len(chunk) {
		t.Errorf("stalled client read all %d bytes; want it dropped before", total)
	}
	guest.Close() // QEMU gone: the live client sees EOF after all output
	if n := <-got; n != chunks*len(chunk) {
		t.Errorf("live client read %d bytes; want %d", n, chunks*len(chunk))
	}
}
