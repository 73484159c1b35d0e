package rest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// serveLimited serves h on loopback behind HTTPServer and LimitListener
// with l, until the test ends.
func serveLimited(t *testing.T, h http.Handler, l Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := HTTPServer(h, l)
	go func() { _ = srv.Serve(LimitListener(ln, l)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// closedByServer reads from c until the server closes it. The client-side
// deadline is only a guard against a hang: a timeout there fails the test.
func closedByServer(t *testing.T, c net.Conn, guard time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(guard))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept the connection open for %v", guard)
	}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "ok")
})

// TestSlowBodyCut: a body trickled a byte at a time is cut at ReadTimeout.
func TestSlowBodyCut(t *testing.T) {
	addr := serveLimited(t, okHandler, Limits{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		for {
			time.Sleep(100 * time.Millisecond) // the trickle itself, not a wait for state
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	closedByServer(t, c, 20*time.Second)
	c.Close()
	<-cut
}

// TestIdleConnCut: a keep-alive connection left idle after a request is
// closed at IdleTimeout; one that never sends a header at
// ReadHeaderTimeout.
func TestIdleConnCut(t *testing.T) {
	addr := serveLimited(t, okHandler, Limits{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closedByServer(t, c, 20*time.Second)

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closedByServer(t, silent, 20*time.Second)
}

// TestConnsPerIP: connections past the per-address cap are closed at once;
// closing one makes room again.
func TestConnsPerIP(t *testing.T) {
	addr := serveLimited(t, okHandler, Limits{ConnsPerIP: 2})
	get := func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := get(c); err != nil {
			t.Fatalf("connection within the cap: %v", err)
		}
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := get(extra); err == nil {
		t.Fatal("a third connection from the same address was served; want it closed")
	}
	held[0].Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		err = get(c)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no room after closing a connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestThrottleBackoff(t *testing.T) {
	th := NewThrottle(time.Hour)
	p := Backoff{Free: 2, Base: time.Second, Max: 4 * time.Second}
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := th.Reserve("k", p, t0); !ok {
			t.Fatalf("attempt %d refused; want the free ones and the first over them passed", i+1)
		}
	}
	if ok, wait := th.Reserve("k", p, t0); ok || wait != time.Second {
		t.Fatalf("4th attempt = %v, wait %v; want refused for 1s", ok, wait)
	}
	if ok, _ := th.Reserve("k", p, t0.Add(time.Second)); !ok {
		t.Fatal("attempt after the back-off refused")
	}
	if _, wait := th.Reserve("k", p, t0.Add(time.Second)); wait != 2*time.Second {
		t.Fatalf("second back-off %v; want 2s", wait)
	}
	for i := range 5 {
		now := t0.Add(time.Duration(10+i*10) * time.Second)
		th.Reserve("k", p, now)
		if _, wait := th.Reserve("k", p, now); wait > p.Max {
			t.Fatalf("back-off %v over the max %v", wait, p.Max)
		}
	}
	th.Succeeded("k")
	if ok, _ := th.Reserve("k", p, t0.Add(time.Minute)); !ok {
		t.Fatal("attempt after success refused")
	}
	if ok, _ := th.Reserve("other", p, t0); !ok {
		t.Fatal("another key refused")
	}
}
