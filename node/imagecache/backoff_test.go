package imagecache

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/node/agent/agenttest"
)

// TestFetchBackoff: a failed operation is not started again before its
// back-off runs out; the back-off doubles up to RetryMax, a busy blob
// waits RetryMin without growing it, and a success clears it.
func TestFetchBackoff(t *testing.T) {
	now := time.Unix(1000, 0)
	st := agenttest.NewState()
	c, err := New(Config{HostID: "h1", Dir: t.TempDir(), State: st, Proposer: &agenttest.Proposer{State: st}, Peers: nopPeers{},
		RetryMin: time.Second, RetryMax: 4 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	launched := 0
	launch := func(key string, op func(context.Context) error) { launched++ }
	try := func() bool {
		before := launched
		c.start(launch, "fetch/a", nil)
		return launched > before
	}
	fail := func(err error) { c.finish("fetch/a", err) }
	boom := errors.New("connection refused")

	if !try() {
		t.Fatal("first attempt not started")
	}
	if try() {
		t.Fatal("started twice while in flight")
	}
	fail(boom)
	for i, wantDelay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if try() {
			t.Fatalf("failure %d: started again at once", i+1)
		}
		if d, ok := c.nextRetry(); !ok || d != wantDelay {
			t.Fatalf("failure %d: next retry in %v, %v; want %v", i+1, d, ok, wantDelay)
		}
		now = now.Add(wantDelay - time.Millisecond)
		if try() {
			t.Fatalf("failure %d: started before its back-off of %v ran out", i+1, wantDelay)
		}
		now = now.Add(time.Millisecond)
		if !try() {
			t.Fatalf("failure %d: not started once its back-off of %v ran out", i+1, wantDelay)
		}
		fail(boom)
	}
	// Busy: RetryMin, and the grown back-off is kept for the next failure.
	now = now.Add(4 * time.Second)
	if !try() {
		t.Fatal("not started after the last back-off")
	}
	fail(storage.ErrBlobBusy)
	if d, _ := c.nextRetry(); d != time.Second {
		t.Fatalf("after a busy blob: next retry in %v; want %v", d, time.Second)
	}
	now = now.Add(time.Second)
	if !try() {
		t.Fatal("not started after the busy wait")
	}
	fail(nil)
	if _, ok := c.nextRetry(); ok {
		t.Fatal("a back-off remains after a success")
	}
	if !try() {
		t.Fatal("not started after a success")
	}
}

type nopPeers struct{}

func (nopPeers) OpenBlob(context.Context, string, string) (io.ReadCloser, error) {
	return nil, errors.New("no peers")
}
func (nopPeers) VerifyBlob(context.Context, string, string) error { return nil }
