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
