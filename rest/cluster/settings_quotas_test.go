package cluster_test

import (
	"net/http"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestSettingsQuotaDefaults: an admin sets cluster default quotas through
// the settings API; they apply to every project without its own.
func TestSettingsQuotaDefaults(t *testing.T) {
	e := newSettingsEnv(t, statedb.Settings{})
	if r := e.member.Do("PATCH", "/cluster/v1/settings", map[string]any{"quotas": map[string]any{"instances": 3}}); r.Status != http.StatusForbidden {
		t.Fatalf("member PATCH quotas = %d, want 403", r.Status)
	}
	r := e.admin.Do("PATCH", "/cluster/v1/settings", map[string]any{"quotas": map[string]any{"instances": 3, "gigabytes": -1}, "image_copies": 3})
	if r.Status != http.StatusOK {
		t.Fatalf("admin PATCH quotas = %d %s", r.Status, r.Body)
	}
	got := decodeSettings(t, r)
	if got.Quotas["instances"] != 3 || got.Quotas["gigabytes"] != -1 || got.ImageCopies != 3 {
		t.Fatalf("settings after PATCH = %+v", got)
	}
	sn := e.b.State()
	if sn.DefaultQuota(statedb.QuotaInstances) != 3 || sn.QuotaLimit("any", statedb.QuotaGigabytes) != -1 || sn.DefaultQuota(statedb.QuotaCores) != 20 {
		t.Fatalf("defaults in the state: instances %d, gigabytes %d, cores %d", sn.DefaultQuota(statedb.QuotaInstances),
			sn.QuotaLimit("any", statedb.QuotaGigabytes), sn.DefaultQuota(statedb.QuotaCores))
	}
	for _, bad := range []any{map[string]any{"bogus": 1}, map[string]any{"instances": -2}, map[string]any{"instances": "x"}, []int{1}, nil} {
		before := e.b.State().Index
		if r := e.admin.Do("PATCH", "/cluster/v1/settings", map[string]any{"quotas": bad}); r.Status != http.StatusBadRequest {
			t.Errorf("PATCH quotas %v = %d %s, want 400", bad, r.Status, r.Body)
		}
		if e.b.State().Index != before {
			t.Errorf("PATCH quotas %v changed the state", bad)
		}
	}
}
