package dashboard

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// readEvent returns the data of the next "change" event on the stream.
func readEvent(t *testing.T, sc *bufio.Scanner) uint64 {
	t.Helper()
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "change":
			n, err := strconv.ParseUint(strings.TrimPrefix(line, "data: "), 10, 64)
			if err != nil {
				t.Fatalf("change event data %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("stream ended before a change event: %v", sc.Err())
	return 0
}

// A logged-in page gets a change event, without asking, when the state
// moves on; without a valid session it gets 401 and no stream.
func TestEventsPushStateChanges(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	for name, cookie := range map[string]string{"no cookie": "", "bad token": "not-a-token"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+EventsPath, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d; want 401", name, resp.StatusCode)
		}
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+EventsPath, nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: e.demo.Token})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	first := readEvent(t, sc)
	if first != e.b.State().Index {
		t.Fatalf("first event index %d; want the state's %d", first, e.b.State().Index)
	}
	for range 3 {
		idx := e.b.MustApply(t, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{Instance: statedb.Instance{
			ID: e.b.NewID(), Name: "more", ProjectID: "p", Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 1}}}}})
		if got := readEvent(t, sc); got != idx {
			t.Fatalf("event index %d after an apply at %d", got, idx)
		}
	}
	if e.d.streams.Load() != 1 {
		t.Fatalf("open streams = %d; want 1", e.d.streams.Load())
	}
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for e.d.streams.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("open streams = %d after the client left; want 0", e.d.streams.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
