package faults

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The NFS stop proof accepts only what a stopped server looks like: the
// kernel completes the connection, the NULL call gets no answer. A port
// nobody listens on (refused) proves nothing of the kind.
func TestNFSStopProof(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	ns := testNetns(t, "pfn")
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s := nfsServer{addr: "127.0.0.1:2049"}
	err := s.probe(ctx, ns, 2*time.Second)
	if err == nil || unanswered(err) {
		t.Fatalf("nobody listening: %v; want an error that is not a stopped server's", err)
	}

	// A listener that never accepts nor answers: what a SIGSTOPped
	// server's socket is to a client.
	l := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "python3", "-c",
		"import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',2049))\ns.listen(8)\nprint('up',flush=True)\ntime.sleep(60)")
	out, err := l.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Process.Kill(); _ = l.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "up\n" {
		t.Fatalf("listener did not start: %q %v", line, err)
	}
	err = s.probe(ctx, ns, 2*time.Second)
	if !unanswered(err) {
		t.Fatalf("a silent listener: %v; want a stopped server's error", err)
	}
}
