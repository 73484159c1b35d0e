package cluster_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestSettingsFenceTimeoutAndHA(t *testing.T) {
	e := newSettingsEnv(t, statedb.Settings{})
	r := e.admin.Do("PATCH", "/cluster/v1/settings", map[string]any{"fence_timeout": 30, "ha_disabled": true})
	got := decodeSettings(t, r)
	if r.Status != http.StatusOK || got.FenceTimeout != 30 || !got.HADisabled {
		t.Fatalf("PATCH fence_timeout 30, ha_disabled = %d %+v; want both set", r.Status, got)
	}
	for _, bad := range []map[string]any{{"fence_timeout": 1}, {"fence_timeout": -5}, {"fence_timeout": "10s"},
		{"fence_timeout": 601}, {"ha_disabled": "yes"}} {
		if r := e.admin.Do("PATCH", "/cluster/v1/settings", bad); r.Status != http.StatusBadRequest {
			t.Errorf("PATCH %v = %d; want 400", bad, r.Status)
		}
	}
	if r := e.member.Do("PATCH", "/cluster/v1/settings", map[string]any{"ha_disabled": false}); r.Status != http.StatusForbidden {
		t.Errorf("PATCH by a member = %d; want 403", r.Status)
	}
	r = e.admin.Do("PATCH", "/cluster/v1/settings", map[string]any{"fence_timeout": 0})
	if got := decodeSettings(t, r); r.Status != http.StatusOK || got.FenceTimeout != 0 || !got.HADisabled {
		t.Fatalf("PATCH fence_timeout 0 = %d %+v; want the default back and HA still off", r.Status, got)
	}
}

// While a host runs a release from before the HA settings had their own
// command, a patch naming fence_timeout or ha_disabled is refused (409)
// with nothing of it written (quotas in the same patch included); other
// settings still change.
func TestSettingsHAGatedDuringUpgrade(t *testing.T) {
	e := newSettingsEnv(t, statedb.Settings{})
	e.b.MustApply(t, statedb.CmdRegisterMember, statedb.Member{ID: "old", Name: "old", Version: "0.1.0"})
	for _, patch := range []map[string]any{{"fence_timeout": 5}, {"ha_disabled": true},
		{"fence_timeout": 30, "image_copies": 3, "quotas": map[string]any{"instances": 7}}} {
		r := e.admin.Do("PATCH", "/cluster/v1/settings", patch)
		if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "old") {
			t.Fatalf("PATCH %v with a 0.1.0 host = %d %s; want 409 naming it", patch, r.Status, r.Body)
		}
	}
	cfg, _ := e.b.State().Cluster()
	if s := cfg.Settings; s.FenceTimeout != 0 || s.HADisabled || s.ImageCopies == 3 || s.Quotas["instances"] == 7 {
		t.Fatalf("refused patches wrote %+v", s)
	}
	r := e.admin.Do("PATCH", "/cluster/v1/settings", map[string]any{"image_copies": 3})
	if got := decodeSettings(t, r); r.Status != http.StatusOK || got.ImageCopies != 3 {
		t.Fatalf("PATCH image_copies with a 0.1.0 host = %d %+v; want 200", r.Status, got)
	}
	e.b.MustApply(t, statedb.CmdRegisterMember, statedb.Member{ID: "old", Name: "old", Version: "0.2.0"})
	r = e.admin.Do("PATCH", "/cluster/v1/settings", map[string]any{"fence_timeout": 5})
	if got := decodeSettings(t, r); r.Status != http.StatusOK || got.FenceTimeout != 5 {
		t.Fatalf("PATCH fence_timeout once every host is upgraded = %d %+v; want 200", r.Status, got)
	}
}
