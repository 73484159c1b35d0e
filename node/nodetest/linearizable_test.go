package nodetest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLinearizableRead: a host cut off from the Raft log answers a plain
// GET from its stale state, but a GET asking for linearizable
// consistency only once it holds every write acknowledged before it: 503
// while it cannot catch up, the new value once it can. A connected
// follower answers it with the new value at once.
func TestLinearizableRead(t *testing.T) {
	c := NewCluster(t, 3, Options{})
	l := c.Leader(10 * time.Second)
	var fs []int
	for i := range 3 {
		if i != l {
			fs = append(fs, i)
		}
	}
	tok := c.AdminToken(l)
	hc := c.HTTPClient()
	do := func(i int, method, path, body, consistency string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, c.URL(i)+path, strings.NewReader(body))
		req.Header.Set("X-Auth-Token", tok)
		req.Header.Set("Content-Type", "application/json")
		if consistency != "" {
			req.Header.Set("X-Peerstack-Consistency", consistency)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s on host %d: %v", method, path, i, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	desc := func(body string) string {
		var out struct {
			Network struct {
				Description string `json:"description"`
			} `json:"network"`
		}
		_ = json.Unmarshal([]byte(body), &out)
		return out.Network.Description
	}
	st, body, _ := do(l, "POST", "/network/v2.0/networks", `{"network": {"name": "reg", "description": "old"}}`, "")
	if st != http.StatusCreated {
		t.Fatalf("create = %d %s", st, body)
	}
	var created struct {
		Network struct {
			ID string `json:"id"`
		} `json:"network"`
	}
	_ = json.Unmarshal([]byte(body), &created)
	path := "/network/v2.0/networks/" + created.Network.ID
	cut := fs[1]
	c.Eventually(10*time.Second, "every host has the network", func() bool {
		s, b, _ := do(cut, "GET", path, "", "")
		return s == http.StatusOK && desc(b) == "old"
	})

	// The cut host keeps its API (the partition cuts Raft and gossip).
	c.Partition([]int{l, fs[0]}, []int{cut})
	if st, body, _ := do(l, "PUT", path, `{"network": {"description": "new"}}`, ""); st != http.StatusOK || desc(body) != "new" {
		t.Fatalf("update = %d %s", st, body)
	}
	if st, body, _ := do(fs[0], "GET", path, "", "linearizable"); st != http.StatusOK || desc(body) != "new" {
		t.Fatalf("linearizable GET on a connected follower = %d %q; want 200 new", st, desc(body))
	}
	if st, body, _ := do(cut, "GET", path, "", ""); st != http.StatusOK || desc(body) != "old" {
		t.Fatalf("local GET on the cut host = %d %q; want 200 with its stale old value", st, desc(body))
	}
	t0 := time.Now()
	st, body, hdr := do(cut, "GET", path, "", "linearizable")
	if st != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, "linearizable") {
		t.Fatalf("linearizable GET on the cut host = %d %s (Retry-After %q); want 503 saying why", st, body, hdr.Get("Retry-After"))
	}
	t.Logf("the cut host refused the linearizable read after %v", time.Since(t0).Round(time.Millisecond))
	if st, body, _ := do(cut, "GET", path, "", "snapshot"); st != http.StatusBadRequest {
		t.Fatalf("unknown consistency = %d %s; want 400", st, body)
	}

	c.Heal()
	c.Eventually(15*time.Second, "the healed host answers the linearizable read with the new value", func() bool {
		s, b, _ := do(cut, "GET", path, "", "linearizable")
		return s == http.StatusOK && desc(b) == "new"
	})
	if st, body, _ := do(l, "GET", path, "", "linearizable"); st != http.StatusOK || desc(body) != "new" {
		t.Fatalf("linearizable GET on the leader = %d %q", st, desc(body))
	}
}
