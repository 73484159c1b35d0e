package nodetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestRestartedHostServesOnlyCaughtUp: a host restarted after missing
// writes (and holding no snapshot, so it starts from an empty state)
// answers its first request with everything committed before it, not
// with 401 for a valid token or a stale list.
func TestRestartedHostServesOnlyCaughtUp(t *testing.T) {
	c := NewCluster(t, 3)
	ctx := t.Context()
	tok := c.AdminToken(0)
	victim := c.Follower()
	others := []int{}
	for i := range 3 {
		if i != victim {
			others = append(others, i)
		}
	}
	// Cut the victim off, so that once restarted it cannot catch up until
	// the test heals the cluster.
	c.Partition([]int{victim}, others)
	c.Stop(victim)
	// More entries than one replication batch (64), so a host that took
	// its own commit index for the cluster's would open early.
	const missed = 300
	for i := range missed {
		createProject(ctx, t, c.Node(others[0]), fmt.Sprintf("while-down-%d", i))
	}
	c.Restart(ctx, victim)
	req, _ := http.NewRequestWithContext(ctx, "GET", c.URL(victim)+"/identity/v3/projects", nil)
	req.Header.Set("X-Auth-Token", tok)
	start := time.Now()
	type answer struct {
		resp *http.Response
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := c.HTTPClient().Do(req)
		got <- answer{resp, err}
	}()
	select {
	case a := <-got:
		if a.err == nil {
			a.resp.Body.Close()
		}
		t.Fatalf("the cut-off restarted host answered (%v, %v) before it could catch up", a.resp.StatusCode, a.err)
	case <-time.After(500 * time.Millisecond):
	}
	c.Heal()
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	resp := a.resp
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first request to the restarted host = %d; want 200", resp.StatusCode)
	}
	var body struct {
		Projects []struct{ Name string } `json:"projects"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range body.Projects {
		seen[p.Name] = true
	}
	for i := range missed {
		if !seen[fmt.Sprintf("while-down-%d", i)] {
			t.Fatalf("the restarted host's first answer misses while-down-%d (%d projects listed)", i, len(body.Projects))
		}
	}
	t.Logf("first answer after the restart in %v", time.Since(start))
	if !c.Node(victim).Ready() {
		t.Fatal("host answered but does not report ready")
	}
}
