package cluster_test

import (
	"net/http"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/cluster"
	"github.com/peerstack/peerstack/rest/resttest"
)

// TestClusterViewsAdminOnly: members (addresses, capacity) and status are
// cloud-admin views; a reader or member of a project gets 403.
func TestClusterViewsAdminOnly(t *testing.T) {
	b := &clockBackend{Backend: resttest.New()}
	seed := b.Bootstrap(t, statedb.Settings{}, "secret")
	demo, reader := b.ProjectUser(t, "demo", "rita", "pw", "reader")
	_, member := b.ProjectUser(t, "demo2", "mo", "pw", "member")
	ts := resttest.NewServer(t, b, cluster.Service(b))
	anon := &resttest.Client{T: t, Base: ts.URL}
	admin := anon.With(b.Token(seed.Admin.ID, seed.Project.ID))
	for _, path := range []string{"/cluster/v1/members", "/cluster/v1/status"} {
		if r := admin.Do("GET", path, nil); r.Status != http.StatusOK {
			t.Errorf("admin GET %s = %d %s; want 200", path, r.Status, r.Body)
		}
		if r := anon.With(b.Token(reader.ID, demo.ID)).Do("GET", path, nil); r.Status != http.StatusForbidden {
			t.Errorf("reader GET %s = %d %s; want 403", path, r.Status, r.Body)
		}
		if r := anon.With(b.Token(member.ID, "")).Do("GET", path, nil); r.Status != http.StatusForbidden {
			t.Errorf("member GET %s = %d %s; want 403", path, r.Status, r.Body)
		}
	}
}

// TestStatusDigest: ?digest=true adds the SHA-256 of the whole state and
// the index it was taken at; a write changes it; anything but true or
// false is refused.
func TestStatusDigest(t *testing.T) {
	b := &clockBackend{Backend: resttest.New()}
	seed := b.Bootstrap(t, statedb.Settings{}, "secret")
	ts := resttest.NewServer(t, b, cluster.Service(b))
	admin := (&resttest.Client{T: t, Base: ts.URL}).With(b.Token(seed.Admin.ID, seed.Project.ID))
	digest := func() string {
		t.Helper()
		r := admin.Do("GET", "/cluster/v1/status?digest=true", nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET status?digest=true = %d %s", r.Status, r.Body)
		}
		st := r.JSON(t)["status"].(map[string]any)
		d, _ := st["state_digest"].(string)
		if len(d) != 64 {
			t.Fatalf("state_digest = %v; want 64 hex digits", st["state_digest"])
		}
		return d
	}
	d1 := digest()
	if d := digest(); d != d1 {
		t.Fatalf("digest moved with no write: %s then %s", d1, d)
	}
	b.ProjectUser(t, "demo", "rita", "pw", "member")
	if d := digest(); d == d1 {
		t.Fatal("digest unchanged after a write")
	}
	if r := admin.Do("GET", "/cluster/v1/status", nil); r.Status != http.StatusOK || r.JSON(t)["status"].(map[string]any)["state_digest"] != nil {
		t.Fatalf("GET status without digest = %d %s; want no state_digest", r.Status, r.Body)
	}
	if r := admin.Do("GET", "/cluster/v1/status?digest=yes", nil); r.Status != http.StatusBadRequest {
		t.Fatalf("GET status?digest=yes = %d %s; want 400", r.Status, r.Body)
	}
}
