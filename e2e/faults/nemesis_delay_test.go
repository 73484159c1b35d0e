package faults

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The delay must hold every packet of the interface both ways for its
// time (no echo answered sooner than twice the delay), be read back as
// set, let the held packets go at the heal and leave nothing behind.
func TestDelayHoldsPackets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	a, b := linkedNetns(t, "pfda", "pfdb", "10.78.0")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base, err := measureDelay(ctx, a, "10.78.0.2", 0)
	if err != nil {
		t.Fatalf("before: %v", err)
	}
	const d = 80 * time.Millisecond
	dl, err := startDelay(b, "eth0", d)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = dl.Stop()
		}
	})
	if k, err := delayRules(b); err != nil || k != 2 {
		t.Fatalf("queue rules read back = %d (%v); want 2", k, err)
	}
	held, err := measureDelay(ctx, a, "10.78.0.2", d)
	if err != nil {
		t.Fatal(err)
	}
	minRTT, _, err := pingRTTs(ctx, a, "10.78.0.2", 10)
	if err != nil {
		t.Fatal(err)
	}
	if minRTT > 2*d+150*time.Millisecond {
		t.Errorf("round trips of at least %v with %v each way: packets are held far longer than asked", minRTT, d)
	}
	if dl.Held() < 60 { // 30 echoes and 30 replies at least
		t.Errorf("the queue saw %d packets; want every echo and reply", dl.Held())
	}
	t.Logf("before: %s; %v each way: %s; %d packets held", base, d, held, dl.Held())

	// A burst passes whole: 200 echoes 10 ms apart, eight of them held
	// at any time.
	if sent, got, err := pingLoss(ctx, a, "10.78.0.2", 200); err != nil || got != sent {
		t.Fatalf("a burst through the delay: %d of %d answered (%v); want all", got, sent, err)
	}

	// The heal releases what is held: echoes sent just before it are
	// answered, none lost.
	ping := exec.CommandContext(ctx, "ip", "netns", "exec", a, "ping", "-n", "-q", "-c", "5", "-i", "0.01", "-W", "3", "10.78.0.2")
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d / 2)
	stopped = true
	if err := dl.Stop(); err != nil {
		t.Fatal(err)
	}
	_ = ping.Wait()
	if m := pingSummary.FindStringSubmatch(out.String()); m == nil || m[1] != "5" || m[2] != "5" {
		t.Fatalf("echoes in flight at the heal: %s; want all 5 answered", out.String())
	}
	if k, err := delayRules(b); err != nil || k != 0 {
		t.Fatalf("queue rules after the heal = %d (%v); want none", k, err)
	}
	if note, err := measureDelay(ctx, a, "10.78.0.2", 0); err != nil {
		t.Fatalf("after the heal: %v", err)
	} else {
		t.Logf("after: %s", note)
	}
	if _, err := startDelay(b, "eth0", 0); err == nil {
		t.Error("a delay of 0 was accepted")
	}
}
