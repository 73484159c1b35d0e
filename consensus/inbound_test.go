package consensus

import (
	"net"
	"testing"
	"time"
)

// drain closes accepted connections under their handlers and waits for
// the handlers to return: one blocked reading returns at once, one busy
// answering (as a heartbeat saving the term) is waited for, so the log is
// never closed under it.
func TestInboundDrainWaitsForHandlers(t *testing.T) {
	var in inbound
	reading, peer1 := net.Pipe()
	busy, peer2 := net.Pipe()
	defer peer1.Close()
	defer peer2.Close()
	r, b := in.add(reading), in.add(busy)
	readDone := make(chan struct{})
	go func() { // a handler waiting for the next RPC
		defer close(readDone)
		defer r.Close()
		_, _ = r.Read(make([]byte, 1))
	}()
	release := make(chan struct{})
	busyDone := make(chan struct{})
	go func() { // a handler in the middle of an RPC
		defer close(busyDone)
		<-release
		b.Close()
	}()
	if in.drain(50 * time.Millisecond) {
		t.Fatal("drain reported every handler done while one was still answering")
	}
	select {
	case <-readDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the reading handler did not return after drain closed its connection")
	}
	go func() { time.Sleep(100 * time.Millisecond); close(release) }()
	if !in.drain(5 * time.Second) {
		t.Fatal("drain gave up although the busy handler returned")
	}
	select {
	case <-release:
	default:
		t.Fatal("drain returned before the busy handler was let go")
	}
	<-busyDone
}
