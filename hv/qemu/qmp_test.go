package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQMP is a scripted QMP server on a unix socket.
type fakeQMP struct {
	sock   string
	ln     net.Listener
	banner bool
	flood  int // events sent before answering query-status
	conns  chan net.Conn
}

func newFakeQMP(t *testing.T, banner bool, flood int) *fakeQMP {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmpt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeQMP{sock: filepath.Join(dir, "qmp.sock"), banner: banner, flood: flood, conns: make(chan net.Conn, 4)}
	f.ln, err = net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			f.conns <- c
			go f.serve(c)
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		<-done
		close(f.conns)
		for c := range f.conns {
			c.Close()
		}
	})
	return f
}

func (f *fakeQMP) serve(c net.Conn) {
	if !f.banner {
		return // a QEMU whose monitor is busy with another client
	}
	var wmu sync.Mutex
	w := json.NewEncoder(c)
	enc := func(v any) { wmu.Lock(); defer wmu.Unlock(); w.Encode(v) }
	enc(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 7, "minor": 2}}, "capabilities": []string{"oob"}}})
	dec := json.NewDecoder(c) // go-qemu sends commands without a newline
	for {
		var cmd struct {
			Execute   string         `json:"execute"`
			Arguments map[string]any `json:"arguments"`
			ID        any            `json:"id"`
		}
		if dec.Decode(&cmd) != nil {
			return
		}
		reply := func(k string, v any) { enc(map[string]any{k: v, "id": cmd.ID}) }
		switch cmd.Execute {
		case "qmp_capabilities", "system_powerdown":
			reply("return", map[string]any{})
			if cmd.Execute == "system_powerdown" {
				enc(map[string]any{"event": "POWERDOWN", "data": map[string]any{}, "timestamp": map[string]int{"seconds": 1, "microseconds": 2}})
			}
		case "query-status":
			for i := range f.flood {
				enc(map[string]any{"event": "RTC_CHANGE", "data": map[string]any{"offset": i}})
			}
			reply("return", map[string]any{"running": true, "status": "running"})
		case "query-uuid":
			reply("return", map[string]any{"UUID": testUUID})
		case "device_del":
			reply("error", map[string]any{"class": "DeviceNotFound", "desc": fmt.Sprintf("Device '%v' not found", cmd.Arguments["id"])})
		case "system_reset":
			// Answers late, after the caller gave up, with the wrong shape
			// for query-status: the reply must be dropped, not misrouted.
			id := cmd.ID
			time.AfterFunc(300*time.Millisecond, func() { enc(map[string]any{"return": "late", "id": id}) })
		case "quit":
			reply("return", map[string]any{})
			c.Close()
			return
		}
	}
}

func TestMonitorCommandsAndEvents(t *testing.T) {
	f := newFakeQMP(t, true, 2*eventBuffer) // more events than the buffer: must not block commands
	ctx := context.Background()
	m, err := Dial(ctx, f.sock)
	if err != nil {
		t.Fatalf("Dial = %v", err)
	}
	defer m.Close()
	for i := range 3 {
		running, status, err := m.Status(ctx)
		if err != nil || !running || status != "running" {
			t.Fatalf("Status #%d = %v, %q, %v; want true, running, nil", i, running, status, err)
		}
	}
	if m.Dropped() == 0 {
		t.Errorf("Dropped = 0; want events dropped while nobody read them")
	}
	for len(m.Events()) > 0 { // drain the flood
		<-m.Events()
	}
	if u, err := m.UUID(ctx); err != nil || u != testUUID {
		t.Errorf("UUID = %q, %v; want %q", u, err, testUUID)
	}
	if err := m.Powerdown(ctx); err != nil {
		t.Fatalf("Powerdown = %v", err)
	}
	select {
	case ev := <-m.Events():
		if ev.Name != "POWERDOWN" || ev.Time.Unix() != 1 {
			t.Errorf("event = %+v; want POWERDOWN at 1s", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no POWERDOWN event")
	}
	err = m.DeviceDel(ctx, "vol-x")
	if !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("DeviceDel = %v; want ErrCommand ... not found", err)
	}
	// The connection still works after a command error.
	if _, _, err := m.Status(ctx); err != nil {
		t.Errorf("Status after ErrCommand = %v", err)
	}
	if err := m.Quit(ctx); err != nil {
		t.Errorf("Quit = %v; want nil", err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("monitor not done after the server closed")
	}
	if _, _, err := m.Status(ctx); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Status after quit = %v; want ErrDisconnected", err)
	}
}

func TestMonitorTimeout(t *testing.T) {
	f := newFakeQMP(t, true, 0)
	m, err := Dial(context.Background(), f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = m.Reset(ctx)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Reset (never answered) = %v; want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Reset took %v; want about 200ms", d)
	}
	time.Sleep(500 * time.Millisecond) // the late reply arrives meanwhile
	if running, status, err := m.Status(context.Background()); err != nil || !running || status != "running" {
		t.Errorf("Status after a timeout = %v, %q, %v; want true, running, nil", running, status, err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, ok := <-m.Events(); ok {
		t.Errorf("Events not closed after Close")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, _, err := m.Status(context.Background()); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Status after Close = %v; want ErrDisconnected", err)
	}
}

func TestDialTimeoutAndErrors(t *testing.T) {
	f := newFakeQMP(t, false, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, f.sock); !errors.Is(err, ErrTimeout) {
		t.Errorf("Dial (no banner) = %v; want ErrTimeout", err)
	}
	if _, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Dial (no socket) = %v; want ErrDisconnected", err)
	}
}
