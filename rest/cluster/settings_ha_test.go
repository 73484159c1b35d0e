package cluster_test

import (
	"net/http"
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
