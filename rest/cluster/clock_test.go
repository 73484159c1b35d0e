package cluster_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
	"github.com/peerstack/peerstack/rest/resttest"
)

// clockBackend is the in-memory backend with fixed members and skews,
// recording join requests.
type clockBackend struct {
	*resttest.Backend
	skews map[string]time.Duration

	mu    sync.Mutex
	joins []cluster.JoinRequest
}

func (b *clockBackend) Members() []cluster.Member {
	return []cluster.Member{{ID: "a", Name: "h1"}, {ID: "b", Name: "h2"}, {ID: "c", Name: "h3"}}
}
func (b *clockBackend) Status() cluster.Status { return cluster.Status{} }
func (b *clockBackend) CreateJoinToken(context.Context, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, rest.BadRequest("not here")
}
func (b *clockBackend) Leave(context.Context) error              { return rest.BadRequest("not here") }
func (b *clockBackend) RemoveHost(context.Context, string) error { return nil }

func (b *clockBackend) ApplyForwarded(context.Context, []byte, string, string) (uint64, error) {
	return 0, rest.BadRequest("not here")
}
func (b *clockBackend) ClockSkews() map[string]time.Duration { return b.skews }

func (b *clockBackend) ReadIndex(context.Context) (uint64, error) { return b.State().Index, nil }

func (b *clockBackend) Join(_ context.Context, req cluster.JoinRequest) (*cluster.JoinResponse, error) {
	b.mu.Lock()
	b.joins = append(b.joins, req)
	b.mu.Unlock()
	return &cluster.JoinResponse{ClusterID: "cid", Time: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}, nil
}

func (b *clockBackend) lastJoin() cluster.JoinRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.joins[len(b.joins)-1]
}

func newClockEnv(t testing.TB) (*clockBackend, *resttest.Client) {
	t.Helper()
	b := &clockBackend{Backend: resttest.New(), skews: map[string]time.Duration{"a": 0, "b": 1500 * time.Millisecond}}
	seed := b.Bootstrap(t, statedb.Settings{}, "secret")
	ts := resttest.NewServer(t, b, cluster.Service(b))
	anon := &resttest.Client{T: t, Base: ts.URL}
	return b, anon.With(b.Token(seed.Admin.ID, seed.Project.ID))
}

func TestMembersClockSkew(t *testing.T) {
	_, admin := newClockEnv(t)
	r := admin.Do("GET", "/cluster/v1/members", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET members = %d %s; want 200", r.Status, r.Body)
	}
	var body struct {
		Members []map[string]json.RawMessage `json:"members"`
	}
	r.Decode(t, &body)
	want := map[string]string{"h1": "0", "h2": "1500", "h3": "null"}
	for _, m := range body.Members {
		var name string
		_ = json.Unmarshal(m["name"], &name)
		got, ok := m["clock_skew_ms"]
		if !ok || string(got) != want[name] {
			t.Errorf("members: %s clock_skew_ms = %s (present %v); want %s", name, got, ok, want[name])
		}
	}
	if len(body.Members) != 3 {
		t.Errorf("members = %d; want 3", len(body.Members))
	}
}

func TestJoinCarriesClocks(t *testing.T) {
	b, anon := newClockEnv(t)
	anon.Token = ""
	req := map[string]any{"token_id": "t", "secret": "s", "node_id": "n", "name": "h4", "csr": "x",
		"time": "2030-01-02T03:04:05.123456789+01:00"}
	r := anon.Do("POST", "/cluster/v1/join", req)
	if r.Status != http.StatusOK {
		t.Fatalf("POST join = %d %s; want 200", r.Status, r.Body)
	}
	if got, want := b.lastJoin().Time, time.Date(2030, 1, 2, 2, 4, 5, 123456789, time.UTC); !got.Equal(want) {
		t.Errorf("join request Time = %v; want %v", got, want)
	}
	var resp cluster.JoinResponse
	r.Decode(t, &resp)
	if want := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC); !resp.Time.Equal(want) {
		t.Errorf("join response Time = %v; want %v", resp.Time, want)
	}

	// No time (an older joiner) is zero; a malformed one is a 400.
	delete(req, "time")
	if r := anon.Do("POST", "/cluster/v1/join", req); r.Status != http.StatusOK || !b.lastJoin().Time.IsZero() {
		t.Errorf("join without time = %d, Time %v; want 200, zero", r.Status, b.lastJoin().Time)
	}
	req["time"] = "yesterday"
	if r := anon.Do("POST", "/cluster/v1/join", req); r.Status != http.StatusBadRequest {
		t.Errorf("join with time %q = %d %s; want 400", req["time"], r.Status, r.Body)
	}
}

// FuzzJoinRequest: the join decoder never panics and never answers 5xx.
func FuzzJoinRequest(f *testing.F) {
	f.Add(`{"token_id":"t","secret":"s","node_id":"n","name":"h","csr":"x","time":"2030-01-02T03:04:05Z"}`)
	f.Add(`{"time":"2030-13-45T99:99:99Z"}`)
	f.Add(`{"time":12}`)
	f.Add(`{"time":null,"hosts":[1]}`)
	f.Add(`not json`)
	_, anon := newClockEnv(f)
	anon.Token = ""
	f.Fuzz(func(t *testing.T, body string) {
		c := *anon
		c.T = t
		if r := c.Do("POST", "/cluster/v1/join", body); r.Status >= 500 {
			t.Errorf("POST join %q = %d %s; want < 500", body, r.Status, r.Body)
		}
	})
}
