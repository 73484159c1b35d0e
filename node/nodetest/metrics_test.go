package nodetest

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestMetrics: /metrics carries the Raft gauges and the API time by
// service, and scraping it does not count itself.
func TestMetrics(t *testing.T) {
	fa := &FakeAgents{}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	hc, token := c.HTTPClient(), c.AdminToken(0)
	get := func(path string, auth bool) string {
		t.Helper()
		req, _ := http.NewRequest("GET", c.URL(0)+path, nil)
		if auth {
			req.Header.Set("X-Auth-Token", token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	count := func(m, svc string) int {
		t.Helper()
		re := regexp.MustCompile(`(?m)^peerstack_api_request_seconds_count\{service="` + svc + `"\} (\d+)$`)
		g := re.FindStringSubmatch(m)
		if g == nil {
			return 0
		}
		n, _ := strconv.Atoi(g[1])
		return n
	}
	// Without a cloud-admin token /metrics is refused.
	resp, err := hc.Get(c.URL(0) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without a token = %d; want 401", resp.StatusCode)
	}
	before := get("/metrics", true)
	if !regexp.MustCompile(`(?m)^peerstack_raft_is_leader 1$`).MatchString(before) {
		t.Fatalf("metrics lack peerstack_raft_is_leader 1:\n%s", before)
	}
	for range 3 {
		get("/compute/v2.1/flavors", true)
	}
	get("/image/v2/images", true)
	after := get("/metrics", true)
	if d := count(after, "compute") - count(before, "compute"); d != 3 {
		t.Errorf("compute requests counted %d; want 3", d)
	}
	if d := count(after, "image") - count(before, "image"); d != 1 {
		t.Errorf("image requests counted %d; want 1", d)
	}
	if n := count(after, "other"); n != 0 {
		t.Errorf("other requests counted %d; want 0 (scrapes of /metrics are not counted)", n)
	}
	if !regexp.MustCompile(`(?m)^peerstack_api_request_seconds_sum\{service="compute"\} [0-9.e+-]+$`).MatchString(after) {
		t.Errorf("no compute time sum in:\n%s", after)
	}
	// The agent's counters: its full resyncs run (one at start, then
	// every 300 ms with the fake agents), and the others are exported
	// beside them.
	c.Eventually(10*time.Second, "a full resync counted", func() bool { return agentCounter(t, c, hc, 0, token, "full_resyncs_total") > 0 })
	for _, name := range []string{"operations_total", "host_writes_total", "repairs_total"} {
		agentCounter(t, c, hc, 0, token, name)
	}
}

// TestAppliedCatchesUpAlone: a lone fresh host whose last log entry is
// the new leader's barrier (which never reaches the state machine) still
// reports itself caught up — its agent waits for exactly that at start.
func TestAppliedCatchesUpAlone(t *testing.T) {
	c := NewCluster(t, 1)
	// A restart: the leader's barrier in the new term is the last entry.
	c.Stop(0)
	c.Restart(t.Context(), 0)
	c.Eventually(5*time.Second, "applied index reaches the commit index", func() bool {
		st := c.Node(0).Status()
		return st.CommitIndex > 0 && st.AppliedIndex >= st.CommitIndex
	})
}

// agentCounter reads peerstack_agent_<name> from node i's /metrics
// through hc (one client for all polls: its connections are reused) with
// a cloud-admin token.
func agentCounter(t testing.TB, c *Cluster, hc *http.Client, i int, token, name string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", c.URL(i)+"/metrics", nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	g := regexp.MustCompile(`(?m)^peerstack_agent_` + name + ` (\d+)$`).FindSubmatch(b)
	if resp.StatusCode != http.StatusOK || g == nil {
		t.Fatalf("GET /metrics = %d; no peerstack_agent_%s in:\n%s", resp.StatusCode, name, b)
	}
	n, _ := strconv.Atoi(string(g[1]))
	return n
}
