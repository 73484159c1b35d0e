package dashboard

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// reader collects what a peer of the console reads, one call at a time.
func readUntil(t *testing.T, ctx context.Context, read func(context.Context) (string, error), want string) string {
	t.Helper()
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		s, err := read(ctx)
		if err != nil {
			t.Fatalf("waiting for %q (got %q): %v", want, got.String(), err)
		}
		got.WriteString(s)
	}
	return got.String()
}

func wsReader(conn *websocket.Conn) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		_, msg, err := conn.Read(ctx)
		return string(msg), err
	}
}

func pipeReader(c net.Conn) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetReadDeadline(dl)
		}
		b := make([]byte, 4096)
		n, err := c.Read(b)
		return string(b[:n]), err
	}
}

func (e *env) waitSessions(n int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.d.Sessions() != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("sessions = %d; want %d", e.d.Sessions(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// attachInteractive makes the demo server's console interactive, opens
// its WebSocket as its owner and returns it with the guest's end of the
// console; the connection closes with the test.
func (e *env) attachInteractive(ctx context.Context) (*websocket.Conn, net.Conn) {
	e.t.Helper()
	guests := e.b.interactive(e.inst)
	_, u := e.consoleURL(e.demo, e.inst)
	conn, _, err := e.dial(ctx, u)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	e.t.Cleanup(func() { conn.CloseNow() })
	select {
	case guest := <-guests:
		return conn, guest
	case <-ctx.Done():
		e.t.Fatal("the session did not attach to the console")
		return nil, nil
	}
}

// Keystrokes from the WebSocket (text, as xterm.js sends them, or binary)
// reach the console, and console output comes back; the guest's console
// ending falls back to the log.
func TestConsoleInteractivePipe(t *testing.T) {
	e := newEnv(t)
	e.b.setConsole(e.inst, "PEERSTACK-BOOT hostname=vm\n")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, guest := e.attachInteractive(ctx)
	ws := wsReader(conn)
	readUntil(t, ctx, ws, "PEERSTACK-BOOT hostname=vm\n") // the log so far

	go guest.Write([]byte("login: "))
	readUntil(t, ctx, ws, "login: ")
	if err := conn.Write(ctx, websocket.MessageText, []byte("root\r")); err != nil {
		t.Fatal(err)
	}
	g := pipeReader(guest)
	if got := readUntil(t, ctx, g, "root\r"); got != "root\r" {
		t.Fatalf("console got %q; want exactly what was typed", got)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte{0x03, 0xff}); err != nil {
		t.Fatal(err)
	}
	if got := readUntil(t, ctx, g, "\x03\xff"); got != "\x03\xff" {
		t.Fatalf("console got %q; want exactly what was sent", got)
	}
	go guest.Write([]byte("\xff\xfe raw bytes\r\n"))
	readUntil(t, ctx, ws, "\xff\xfe raw bytes")

	// The guest's side closing (the VM stopped) leaves the session on the
	// log, which keeps being followed.
	e.b.readOnly(e.inst)
	guest.Close()
	readUntil(t, ctx, ws, "console closed; showing its log")
	e.b.setConsole(e.inst, "PEERSTACK-BOOT hostname=vm\nlogin: root\r\nreboot: Power down\n")
	if got := readUntil(t, ctx, ws, "reboot: Power down"); strings.Contains(got, "PEERSTACK-BOOT") {
		t.Errorf("after the console closed the log was sent again: %q", got)
	}
	if n := e.d.Sessions(); n != 1 {
		t.Fatalf("sessions = %d; want 1", n)
	}
	conn.Close(websocket.StatusNormalClosure, "bye")
	e.waitSessions(0)
}

// A paste larger than the WebSocket library's default message limit
// (32 KiB) reaches the guest whole and keeps the session open.
func TestConsoleLargePaste(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, guest := e.attachInteractive(ctx)
	paste := strings.Repeat("echo 0123456789abcdef\r", 100<<10/24) + "END\r"
	if err := conn.Write(ctx, websocket.MessageText, []byte(paste)); err != nil {
		t.Fatal(err)
	}
	g := pipeReader(guest)
	if got := readUntil(t, ctx, g, "END\r"); got != paste {
		t.Fatalf("console got %d bytes; want the %d-byte paste exactly", len(got), len(paste))
	}
	ws := wsReader(conn)
	go guest.Write([]byte("still here\r\n"))
	readUntil(t, ctx, ws, "still here")
}

// The browser closing the WebSocket detaches from the console.
func TestConsoleClientCloseDetaches(t *testing.T) {
	e := newEnv(t)
	guests := e.b.interactive(e.inst)
	_, u := e.consoleURL(e.demo, e.inst)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, _, err := e.dial(ctx, u)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	guest := <-guests
	conn.Close(websocket.StatusNormalClosure, "bye")
	_ = guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := guest.Read(make([]byte, 16)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("console read after the client left = %v; want the console closed", err)
	}
	e.waitSessions(0)
}

// A read-only console says so, shows the log, and ignores typing.
func TestConsoleReadOnlyFallsBackToLog(t *testing.T) {
	e := newEnv(t)
	e.b.setConsole(e.inst, "old vm\n")
	_, u := e.consoleURL(e.demo, e.inst)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, _, err := e.dial(ctx, u)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	ws := wsReader(conn)
	readUntil(t, ctx, ws, "read-only console")
	if err := conn.Write(ctx, websocket.MessageText, []byte("ignored\r")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ctx, ws, "old vm\n")
	e.b.setConsole(e.inst, "old vm\nmore\n")
	readUntil(t, ctx, ws, "more\n")
}

// The internal attach endpoint is for cluster hosts only: without a
// client certificate from the cluster CA it is refused before anything is
// opened.
func TestInternalAttachNeedsClusterCert(t *testing.T) {
	e := newEnv(t)
	guests := e.b.interactive(e.inst)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(e.srv.URL, "http") + InternalConsolePath(e.inst)
	_, resp, err := websocket.Dial(ctx, u, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("internal attach without a client certificate: err %v resp %v; want 403", err, resp)
	}
	select {
	case <-guests:
		t.Fatal("the console was opened for an unauthenticated caller")
	default:
	}
}
