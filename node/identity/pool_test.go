package identity

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestPoolBounds: no more than Workers checks run at once, and past
// Workers+Queue callers are refused with ErrPoolFull instead of waiting.
func TestPoolBounds(t *testing.T) {
	h, err := HashPassword("pw", 4)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(2, 3)
	var running, peak atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 16)
	p.Counted = func() {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
	}
	var wg sync.WaitGroup
	results := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := p.Check(context.Background(), h, "pw")
			if err == nil && !ok {
				err = errors.New("right password refused")
			}
			results <- err
		}()
	}
	<-started
	<-started
	// Two run, three wait: wait until all five are admitted.
	for len(p.admit) != 5 {
		runtimeGosched()
	}
	if _, err := p.Check(context.Background(), h, "pw"); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("sixth check = %v; want ErrPoolFull", err)
	}
	close(release)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak.Load() != 2 {
		t.Fatalf("peak concurrency %d; want 2", peak.Load())
	}
}

func runtimeGosched() { runtime.Gosched() }
