package gossip

import (
	"bytes"
	"context"
	"io"
	"log"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestClockPayload(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 678901234, time.UTC)
	enc := encodeClock(at)
	tests := []struct {
		name    string
		payload []byte
		want    time.Time
		wantOK  bool
	}{
		{"round trip", enc, at, true},
		{"appended fields ignored", append(bytes.Clone(enc), 7, 7, 7), at, true},
		{"before 1970", encodeClock(time.Unix(-5, 0)), time.Unix(-5, 0), true},
		{"nil (older peer)", nil, time.Time{}, false},
		{"short", enc[:8], time.Time{}, false},
		{"unknown version", append([]byte{2}, enc[1:]...), time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := decodeClock(tt.payload)
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Errorf("decodeClock(%x) = %v, %v; want %v, %v", tt.payload, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzDecodeClock(f *testing.F) {
	f.Add(encodeClock(time.Now()))
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeClock(b)
		if ok && !bytes.Equal(encodeClock(got), b[:clockPayloadLen]) {
			t.Errorf("decodeClock(%x) = %v; it does not encode back", b, got)
		}
	})
}

// offsetClock is a wall clock off by d.
func offsetClock(d time.Duration) func() time.Time {
	return func() time.Time { return time.Now().Add(d) }
}

// skewOf waits until g has measured name's clock after since and
// returns the member.
func skewOf(t *testing.T, g *Gossip, name string, since time.Time) Member {
	t.Helper()
	var m Member
	waitFor(t, 15*time.Second, g.nodeID+" measures the clock of "+name, func() bool {
		var ok bool
		m, ok = memberOf(g, name)
		return ok && m.State == StateAlive && m.ClockMeasuredAt.After(since)
	})
	return m
}

// TestClockSkewMeasured runs three members on loopback whose clocks are
// right, an hour ahead and 90 s behind; each must measure the others'
// skew to within the probe's half round trip (plus scheduling slack).
// Then the skewed host restarts with a right clock and its skew, as seen
// by the others, goes back to about zero.
func TestClockSkewMeasured(t *testing.T) {
	offsets := []time.Duration{0, time.Hour, -90 * time.Second}
	nodes := make([]*Gossip, len(offsets))
	for i, off := range offsets {
		cfg := testConfig(nodeName(i))
		cfg.Now = offsetClock(off)
		nodes[i] = startNode(t, cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, g := range nodes[1:] {
		if _, err := g.Join(ctx, []string{addr(nodes[0])}); err != nil {
			t.Fatalf("%s Join: %v", g.nodeID, err)
		}
	}
	start := time.Now().Add(-time.Hour - time.Minute) // before any node's clock
	// slack covers the delay between the ack's arrival and the callback
	// on a loaded test machine; the skews themselves are minutes.
	const slack = 200 * time.Millisecond
	var worst time.Duration
	for i, g := range nodes {
		for j := range nodes {
			if i == j {
				continue
			}
			m := skewOf(t, g, nodeName(j), start)
			want := offsets[j] - offsets[i]
			if err := (m.ClockSkew - want).Abs(); err > m.ClockRTT/2+slack {
				t.Errorf("%s: ClockSkew(%s) = %v (rtt %v); want %v", g.nodeID, nodeName(j), m.ClockSkew, m.ClockRTT, want)
			} else {
				worst = max(worst, err)
			}
		}
	}
	t.Logf("clock skew measured by probes: worst error %v over %d pairs", worst, len(nodes)*(len(nodes)-1))

	// The host an hour ahead is fixed: it restarts with a right clock.
	if err := nodes[1].Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitFor(t, 15*time.Second, "node-01 listed dead", func() bool {
		m, _ := memberOf(nodes[0], nodeName(1))
		return m.State == StateDead
	})
	if m, _ := memberOf(nodes[0], nodeName(1)); m.ClockSkew < 59*time.Minute {
		t.Errorf("dead node-01: ClockSkew = %v; want the last measurement (~1h) kept", m.ClockSkew)
	}
	fixed := startNode(t, testConfig(nodeName(1)))
	waitFor(t, 10*time.Second, "fixed node-01 rejoins", func() bool {
		_, err := fixed.Join(ctx, []string{addr(nodes[0])})
		return err == nil
	})
	m, _ := memberOf(nodes[0], nodeName(1))
	if m.State == StateAlive && m.Addr == addr(fixed) && !m.ClockMeasuredAt.IsZero() && m.ClockSkew > time.Minute {
		t.Errorf("rejoined node-01 still shows the old skew %v before any probe", m.ClockSkew)
	}
	m = skewOf(t, nodes[0], nodeName(1), time.Now().Add(-time.Second))
	if m.ClockSkew.Abs() > m.ClockRTT/2+slack {
		t.Errorf("fixed node-01: ClockSkew = %v (rtt %v); want about 0", m.ClockSkew, m.ClockRTT)
	}
	m = skewOf(t, nodes[2], nodeName(1), time.Now().Add(-90*time.Second))
	if want := 90 * time.Second; (m.ClockSkew - want).Abs() > m.ClockRTT/2+slack {
		t.Errorf("node-02 (90 s behind): ClockSkew(fixed node-01) = %v; want %v", m.ClockSkew, want)
	}
}

// TestClockSkewOlderPeer checks that a peer whose acks carry no clock (an
// older build) stays unmeasured rather than showing a bogus skew.
func TestClockSkewOlderPeer(t *testing.T) {
	g := startNode(t, testConfig(nodeName(0)))
	old := plainMemberlistWithKey(t, nodeName(1))
	if _, err := old.Join([]string{addr(g)}); err != nil {
		t.Fatalf("Join: %v", err)
	}
	waitFor(t, 10*time.Second, "the older peer is listed", func() bool {
		m, ok := memberOf(g, nodeName(1))
		return ok && m.State == StateAlive
	})
	// Several probe rounds (100 ms each with testTimers).
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if m, _ := memberOf(g, nodeName(1)); !m.ClockMeasuredAt.IsZero() {
			t.Fatalf("older peer: ClockMeasuredAt = %v, skew %v; want unmeasured", m.ClockMeasuredAt, m.ClockSkew)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// plainMemberlistWithKey is a memberlist with the cluster key but none of
// this package's delegates: its acks carry no payload.
func plainMemberlistWithKey(t *testing.T, name string) *memberlist.Memberlist {
	t.Helper()
	keyring, err := memberlist.NewKeyring(nil, testKey)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.Keyring = keyring
	mc.ProbeInterval = 100 * time.Millisecond
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("memberlist.Create: %v", err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}
