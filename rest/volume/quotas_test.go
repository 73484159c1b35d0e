package volume_test

import (
	"net/http"
	"testing"
)

func TestVolumeQuotas(t *testing.T) {
	e := newEnv(t, "")
	q := vpath(e.demoP, "/os-quota-sets/"+e.demoP.ID)

	r := e.demo.Do("GET", q, nil)
	if r.Status != 200 {
		t.Fatalf("GET own = %d %s", r.Status, r.Body)
	}
	set := r.JSON(t)["quota_set"].(map[string]any)
	for k, v := range map[string]float64{"volumes": 10, "gigabytes": 1000, "per_volume_gigabytes": -1, "snapshots": 10, "backups": 10, "backup_gigabytes": 1000} {
		if set[k] != v {
			t.Errorf("quota_set[%s] = %v, want %v", k, set[k], v)
		}
	}
	if set["id"] != e.demoP.ID {
		t.Errorf("id = %v", set["id"])
	}
	if r := e.other.Do("GET", vpath(e.otherP, "/os-quota-sets/"+e.demoP.ID), nil); r.Status != 403 {
		t.Errorf("other project GET = %d, want 403", r.Status)
	}
	if r := e.demo.Do("PUT", q, map[string]any{"quota_set": map[string]any{"volumes": 1}}); r.Status != 403 {
		t.Errorf("member PUT = %d, want 403", r.Status)
	}

	aq := e.base + "/os-quota-sets/" + e.demoP.ID
	r = e.admin.Do("PUT", aq, map[string]any{"quota_set": map[string]any{"volumes": 2, "gigabytes": 10, "per_volume_gigabytes": 6}})
	if r.Status != 200 {
		t.Fatalf("admin PUT = %d %s", r.Status, r.Body)
	}
	e.create(e.demo, e.demoP, "a", 5)
	over := func(size int, want string) {
		t.Helper()
		r := e.demo.Do("POST", vpath(e.demoP, "/volumes"), map[string]any{"volume": map[string]any{"size": size}})
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("create %d GB = %d %s, want 413", size, r.Status, r.Body)
		}
		m := r.JSON(t)["overLimit"].(map[string]any)
		if m["message"] != want || m["code"] != 413.0 {
			t.Errorf("413 body %s, want message %q", r.Body, want)
		}
	}
	over(7, "VolumeSizeExceedsLimit: Requested volume size 7G is larger than maximum allowed limit 6G.")
	over(6, "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 6G, quota is 10G and 5G has been consumed.")
	e.create(e.demo, e.demoP, "b", 1)
	over(1, "VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota 'volumes'.")

	u := e.demo.Do("GET", q+"?usage=True", nil).JSON(t)["quota_set"].(map[string]any)
	for k, want := range map[string][2]float64{"volumes": {2, 2}, "gigabytes": {6, 10}, "snapshots": {0, 10}, "backups": {0, 10}} {
		v, _ := u[k].(map[string]any)
		if v["in_use"] != want[0] || v["limit"] != want[1] || v["reserved"] != 0.0 || v["allocated"] != 0.0 {
			t.Errorf("usage[%s] = %v, want in_use/limit %v", k, v, want)
		}
	}
	lim := e.demo.Do("GET", vpath(e.demoP, "/limits"), nil).JSON(t)["limits"].(map[string]any)["absolute"].(map[string]any)
	if lim["maxTotalVolumes"] != 2.0 || lim["totalVolumesUsed"] != 2.0 || lim["totalGigabytesUsed"] != 6.0 || lim["maxTotalVolumeGigabytes"] != 10.0 {
		t.Errorf("limits = %v", lim)
	}

	for _, bad := range []map[string]any{{"bogus": 1}, {"volumes": -3}, {"volumes": "x"}} {
		if r := e.admin.Do("PUT", aq, map[string]any{"quota_set": bad}); r.Status != 400 {
			t.Errorf("PUT %v = %d %s, want 400", bad, r.Status, r.Body)
		}
	}

	// Defaults and the default class.
	if r := e.demo.Do("PUT", vpath(e.demoP, "/os-quota-class-sets/default"), map[string]any{"quota_class_set": map[string]any{"volumes": 3}}); r.Status != 403 {
		t.Errorf("member PUT class = %d, want 403", r.Status)
	}
	if r := e.admin.Do("PUT", e.base+"/os-quota-class-sets/default", map[string]any{"quota_class_set": map[string]any{"volumes": 3}}); r.Status != 200 {
		t.Fatalf("admin PUT class = %d %s", r.Status, r.Body)
	}
	d := e.demo.Do("GET", q+"/defaults", nil).JSON(t)["quota_set"].(map[string]any)
	if d["volumes"] != 3.0 || d["gigabytes"] != 1000.0 {
		t.Errorf("defaults = %v", d)
	}
	if r := e.admin.Do("DELETE", aq, nil); r.Status != 200 {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	if set := e.demo.Do("GET", q, nil).JSON(t)["quota_set"].(map[string]any); set["volumes"] != 3.0 || set["per_volume_gigabytes"] != -1.0 {
		t.Errorf("after delete = %v", set)
	}
}
