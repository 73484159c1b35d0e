package nodetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest/cluster"
)

// syncBuf is a log sink shared by goroutines.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// clockHost is a host outside Cluster whose clock is offset.
type clockHost struct {
	t   *testing.T
	c   *Cluster
	dir string
	log *syncBuf
	n   *node.Node
}

func (h *clockHost) config(token string, offset time.Duration) node.Config {
	return node.Config{
		DataDir: h.dir, Name: "skewed", APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		AdvertiseAddr: "127.0.0.1", Voters: 3, BcryptCost: 4, JoinToken: token, Timers: Timers, DeadGrace: DeadGrace,
		Logger: slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelInfo})).With("host", "skewed"),
		VCPUs:  8, RAMMB: 16384, DiskGB: 200, Agent: node.AgentOptions{Disabled: true}, ClockOffset: offset,
	}
}

// start starts (token != "": joins) the host with its clock offset.
func (h *clockHost) start(token string, offset time.Duration) error {
	h.stop()
	n, err := node.Start(h.t.Context(), h.config(token, offset))
	if err == nil {
		h.n = n
	}
	return err
}

func (h *clockHost) stop() {
	if h.n != nil {
		h.n.Stop()
		h.n = nil
	}
}

// membersVia reads /cluster/v1/members through node i.
func membersVia(t *testing.T, c *Cluster, i int, tok string) []cluster.Member {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, c.URL(i)+"/cluster/v1/members", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("GET members: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Members []cluster.Member `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET members: %d %v", resp.StatusCode, err)
	}
	return body.Members
}

// skewVia waits until node i reports the skewed host's clock_skew_ms
// within tol of want and returns it.
func skewVia(t *testing.T, c *Cluster, i int, tok string, want, tol time.Duration) int64 {
	t.Helper()
	var got *int64
	c.Eventually(20*time.Second, fmt.Sprintf("host%d reports skewed's clock_skew_ms ≈ %d", i, want.Milliseconds()), func() bool {
		for _, m := range membersVia(t, c, i, tok) {
			if m.Name == "skewed" {
				got = m.ClockSkewMS
				return got != nil && (time.Duration(*got)*time.Millisecond-want).Abs() <= tol
			}
		}
		return false
	})
	return *got
}

// TestJoinRefusesSkewedClock: a host whose clock is an hour ahead, then
// five minutes behind, is refused with a message naming the skew, leaving
// its data dir empty and the token unused; with its clock within the
// limit it joins with the same token. Once it runs, every probe measures
// its clock: an hour ahead after a restart with the offset (a warning in
// the others' logs, clock_skew_ms ≈ 3600000), about zero once fixed (an
// info line), all with no repair.
func TestJoinRefusesSkewedClock(t *testing.T) {
	logs := &syncBuf{}
	c := NewCluster(t, 2, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	tok := c.Token(t.Context())
	h := &clockHost{t: t, c: c, dir: filepath.Join(t.TempDir(), "skewed"), log: &syncBuf{}}
	t.Cleanup(h.stop)

	for _, tt := range []struct {
		offset time.Duration
		want   []string
	}{
		// The skew is measured across a request: within a second of the
		// offset (3599.9 under load).
		{time.Hour, []string{`clock of joining host skewed is (3599|3600)\.\d s ahead of host host`, `\(limit 30 s\)`,
			`fix time sync \(NTP/chrony\) on skewed and retry`, "the same token still works"}},
		{-5 * time.Minute, []string{`clock of joining host skewed is (299|300)\.\d s behind host host`}},
	} {
		t0 := time.Now()
		err := h.start(tok, tt.offset)
		if err == nil {
			t.Fatalf("join with clock offset %v succeeded; want it refused", tt.offset)
		}
		t.Logf("offset %v refused in %v: %v", tt.offset, time.Since(t0).Round(time.Millisecond), err)
		for _, w := range tt.want {
			if !regexp.MustCompile(w).MatchString(err.Error()) {
				t.Errorf("join with clock offset %v: error %q lacks %q", tt.offset, err, w)
			}
		}
		if ents, _ := os.ReadDir(h.dir); len(ents) > 0 {
			t.Errorf("refused join left %d entries in its data dir", len(ents))
		}
		for i := range 2 {
			if ms := c.Node(i).Members(); len(ms) != 2 {
				t.Errorf("after the refused join host%d lists %d members; want 2", i, len(ms))
			}
		}
	}
	if !regexp.MustCompile(`join refused: clock of joining host skewed is (3599|3600)\.`).MatchString(logs.String()) {
		t.Errorf("no member logged the refusal:\n%s", logs.String())
	}

	// Within the limit, the same token works.
	if err := h.start(tok, 10*time.Second); err != nil {
		t.Fatalf("join with clock offset 10s (same token): %v", err)
	}
	// The join endpoint needs no login: without a valid token a skewed
	// host learns nothing about clocks or names, only that the token is bad.
	other := &clockHost{t: t, c: c, dir: filepath.Join(t.TempDir(), "other"), log: &syncBuf{}}
	t.Cleanup(other.stop)
	if err := other.start(tok, time.Hour); err == nil || !strings.Contains(err.Error(), "already used") || strings.Contains(err.Error(), "clock") {
		t.Errorf("skewed join with a used token = %v; want 'already used' and nothing about clocks", err)
	}
	c.WaitMembers(3, 20*time.Second)
	admin := c.AdminToken(0)
	got := skewVia(t, c, 0, admin, 10*time.Second, 500*time.Millisecond)
	t.Logf("running member 10 s ahead: clock_skew_ms %d via host0", got)
	for _, m := range membersVia(t, c, 0, admin) {
		if m.Name == "host0" && (m.ClockSkewMS == nil || *m.ClockSkewMS != 0) {
			t.Errorf("host0's own clock_skew_ms = %v; want 0", m.ClockSkewMS)
		}
	}

	// The running member's clock jumps an hour ahead.
	if err := h.start("", time.Hour); err != nil {
		t.Fatalf("restart with clock offset 1h: %v", err)
	}
	for i := range 2 {
		got := skewVia(t, c, i, c.AdminToken(i), time.Hour, 500*time.Millisecond)
		t.Logf("running member 1 h ahead: clock_skew_ms %d via host%d", got, i)
	}
	c.Eventually(10*time.Second, "a warning about skewed's clock", func() bool {
		return strings.Contains(logs.String(), "clock skew: host skewed's clock is 3600.")
	})

	// Fixed: back to about zero, and the others say so.
	if err := h.start("", 0); err != nil {
		t.Fatalf("restart with the clock fixed: %v", err)
	}
	got = skewVia(t, c, 1, c.AdminToken(1), 0, 500*time.Millisecond)
	t.Logf("running member fixed: clock_skew_ms %d via host1", got)
	c.Eventually(10*time.Second, "an info line that skewed's clock is back", func() bool {
		return strings.Contains(logs.String(), "clock skew resolved: host skewed's clock")
	})
	c.WaitMembers(3, 20*time.Second)
}
