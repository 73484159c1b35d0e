package compute_test

import (
	"slices"
	"testing"

	"github.com/peerstack/peerstack/rest/resttest"
)

func quotaSetOf(t *testing.T, r *resttest.Resp, key string) map[string]any {
	t.Helper()
	m, ok := r.JSON(t)[key].(map[string]any)
	if !ok {
		t.Fatalf("no %q in body", key)
	}
	return m
}

func TestComputeQuotaSets(t *testing.T) {
	e := newEnv(t)
	qs := api + "/os-quota-sets/" + e.demo.ID

	r := e.member.Do("GET", qs, nil)
	if r.Status != 200 {
		t.Fatalf("member GET own quota = %d %s", r.Status, r.Body)
	}
	set := quotaSetOf(t, r, "quota_set")
	want := map[string]float64{"instances": 10, "cores": 20, "ram": 51200, "key_pairs": 100, "metadata_items": 128, "server_groups": 10, "server_group_members": 10}
	for k, v := range want {
		if set[k] != v {
			t.Errorf("quota_set[%s] = %v, want %v", k, set[k], v)
		}
	}
	if set["id"] != e.demo.ID {
		t.Errorf("id = %v", set["id"])
	}
	if r := e.alien.Do("GET", qs, nil); r.Status != 403 || errMessage(t, r, "forbidden") == "" {
		t.Errorf("other project's member GET = %d %s, want 403", r.Status, r.Body)
	}
	if r := e.member.Do("PUT", qs, map[string]any{"quota_set": map[string]any{"instances": 50}}); r.Status != 403 {
		t.Errorf("member PUT = %d, want 403", r.Status)
	}
	if r := e.anon.Do("GET", qs, nil); r.Status != 401 {
		t.Errorf("anonymous GET = %d, want 401", r.Status)
	}

	// Admin sets instances=1: one server fits, the second is Nova's 403.
	r = e.admin.Do("PUT", qs, map[string]any{"quota_set": map[string]any{"instances": 1, "cores": "8", "force": false}})
	if r.Status != 200 {
		t.Fatalf("admin PUT = %d %s", r.Status, r.Body)
	}
	if set := quotaSetOf(t, r, "quota_set"); set["instances"] != 1.0 || set["cores"] != 8.0 || set["ram"] != 51200.0 {
		t.Errorf("PUT answer %v", set)
	}
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	e.createServer(e.member, map[string]any{"name": "vm1", "imageRef": img, "flavorRef": "1", "networks": "none"})
	r = e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "vm2", "imageRef": img, "flavorRef": "1", "networks": "none"}})
	if r.Status != 403 {
		t.Fatalf("create over quota = %d %s, want 403", r.Status, r.Body)
	}
	if msg := errMessage(t, r, "forbidden"); msg != "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances" {
		t.Errorf("message %q", msg)
	}

	// Detail: in_use counts the server; limits below it need force.
	d := quotaSetOf(t, e.member.Do("GET", qs+"/detail", nil), "quota_set")
	if inst, _ := d["instances"].(map[string]any); inst["in_use"] != 1.0 || inst["limit"] != 1.0 || inst["reserved"] != 0.0 {
		t.Errorf("detail instances = %v", d["instances"])
	}
	if cores, _ := d["cores"].(map[string]any); cores["in_use"] != 1.0 {
		t.Errorf("detail cores = %v", d["cores"])
	}
	if r := e.admin.Do("PUT", qs, map[string]any{"quota_set": map[string]any{"instances": 0}}); r.Status != 400 {
		t.Errorf("limit below usage = %d %s, want 400", r.Status, r.Body)
	}
	if r := e.admin.Do("PUT", qs, map[string]any{"quota_set": map[string]any{"instances": 0, "force": true}}); r.Status != 200 {
		t.Errorf("forced limit below usage = %d %s", r.Status, r.Body)
	}
	for _, bad := range []map[string]any{{"bogus": 1}, {"instances": -2}, {"instances": "many"}, {"metadata_items": 100000}, {"cores": 1.5}} {
		if r := e.admin.Do("PUT", qs, map[string]any{"quota_set": bad}); r.Status != 400 || errMessage(t, r, "badRequest") == "" {
			t.Errorf("PUT %v = %d %s, want 400", bad, r.Status, r.Body)
		}
	}
	if r := e.admin.Do("PUT", qs, map[string]any{"instances": 1}); r.Status != 400 {
		t.Errorf("PUT without quota_set = %d, want 400", r.Status)
	}

	// Delete: back to the defaults.
	if r := e.admin.Do("DELETE", qs, nil); r.Status != 202 {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	if set := quotaSetOf(t, e.member.Do("GET", qs, nil), "quota_set"); set["instances"] != 10.0 {
		t.Errorf("after delete instances = %v", set["instances"])
	}
	if r := e.member.Do("DELETE", qs, nil); r.Status != 403 {
		t.Errorf("member DELETE = %d, want 403", r.Status)
	}
}

func TestComputeQuotaDefaultsAndLimits(t *testing.T) {
	e := newEnv(t)
	cls := api + "/os-quota-class-sets/default"
	if r := e.member.Do("PUT", cls, map[string]any{"quota_class_set": map[string]any{"instances": 3}}); r.Status != 403 {
		t.Errorf("member PUT class = %d, want 403", r.Status)
	}
	r := e.admin.Do("PUT", cls, map[string]any{"quota_class_set": map[string]any{"instances": 3, "ram": -1}})
	if r.Status != 200 {
		t.Fatalf("admin PUT class = %d %s", r.Status, r.Body)
	}
	if set := quotaSetOf(t, e.member.Do("GET", cls, nil), "quota_class_set"); set["instances"] != 3.0 || set["ram"] != -1.0 || set["id"] != "default" {
		t.Errorf("class = %v", set)
	}
	if set := quotaSetOf(t, e.member.Do("GET", api+"/os-quota-sets/"+e.demo.ID+"/defaults", nil), "quota_set"); set["instances"] != 3.0 {
		t.Errorf("defaults = %v", set)
	}
	if r := e.admin.Do("PUT", api+"/os-quota-class-sets/gold", map[string]any{"quota_class_set": map[string]any{"instances": 3}}); r.Status != 400 {
		t.Errorf("PUT class gold = %d, want 400", r.Status)
	}

	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "3", "max_count": 2, "networks": "none"})
	lim := e.member.Do("GET", api+"/limits", nil)
	if lim.Status != 200 {
		t.Fatalf("limits = %d %s", lim.Status, lim.Body)
	}
	abs := quotaSetOf(t, lim, "limits")["absolute"].(map[string]any)
	for k, v := range map[string]float64{"maxTotalInstances": 3, "totalInstancesUsed": 2, "totalCoresUsed": 4, "totalRAMUsed": 8192,
		"maxTotalRAMSize": -1, "maxTotalCores": 20, "maxServerMeta": 128, "totalServerGroupsUsed": 0} {
		if abs[k] != v {
			t.Errorf("absolute[%s] = %v, want %v", k, abs[k], v)
		}
	}
	if r := e.member.Do("GET", api+"/limits?tenant_id="+e.other.ID, nil); r.Status != 403 {
		t.Errorf("member limits of another project = %d, want 403", r.Status)
	}
	// min_count 2 more would be 4 of 3: refused, naming the whole request.
	r = e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "min_count": 2, "max_count": 2, "networks": "none"}})
	if r.Status != 403 || errMessage(t, r, "forbidden") != "Quota exceeded for instances: Requested 2, but already used 2 of 3 instances" {
		t.Errorf("over quota = %d %s", r.Status, r.Body)
	}
}

func TestComputeMetadataItemsQuota(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": "none", "metadata": map[string]any{"a": "1"}})
	if r := e.admin.Do("PUT", api+"/os-quota-sets/"+e.demo.ID, map[string]any{"quota_set": map[string]any{"metadata_items": 2}}); r.Status != 200 {
		t.Fatalf("PUT = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("POST", api+"/servers/"+id+"/metadata", map[string]any{"metadata": map[string]any{"b": "2"}}); r.Status != 200 {
		t.Fatalf("second item = %d %s", r.Status, r.Body)
	}
	r := e.member.Do("POST", api+"/servers/"+id+"/metadata", map[string]any{"metadata": map[string]any{"c": "3"}})
	if r.Status != 403 || errMessage(t, r, "forbidden") == "" {
		t.Fatalf("third item over metadata_items = %d %s, want 403", r.Status, r.Body)
	}
	r = e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "vm2", "imageRef": img, "flavorRef": "1", "networks": "none",
		"metadata": map[string]any{"a": "1", "b": "2", "c": "3"}}})
	if r.Status != 403 || errMessage(t, r, "forbidden") != "Quota exceeded for metadata_items: Requested 3, but already used 0 of 2 metadata_items" {
		t.Fatalf("create with 3 items = %d %s, want 403", r.Status, r.Body)
	}
}

// TestComputeQuotaPartialFit: as Nova, a create whose max_count does not
// fit but whose min_count does makes as many as fit; one whose min_count
// does not fit is refused whole.
func TestComputeQuotaPartialFit(t *testing.T) {
	e := newEnv(t)
	if r := e.admin.Do("PUT", api+"/os-quota-sets/"+e.demo.ID, map[string]any{"quota_set": map[string]any{"instances": 5, "cores": 20, "ram": -1}}); r.Status != 200 {
		t.Fatalf("set quota = %d %s", r.Status, r.Body)
	}
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	names := func() []string {
		var out []string
		for _, i := range e.b.State().InstancesOfProject(e.demo.ID) {
			out = append(out, i.Name)
		}
		slices.Sort(out)
		return out
	}
	e.createServer(e.member, map[string]any{"name": "a", "imageRef": img, "flavorRef": "1", "networks": "none"})
	// 4 left: min 2, max 6 makes 4.
	e.createServer(e.member, map[string]any{"name": "b", "imageRef": img, "flavorRef": "1", "min_count": 2, "max_count": 6, "networks": "none"})
	if got := names(); !slices.Equal(got, []string{"a", "b-1", "b-2", "b-3", "b-4"}) {
		t.Fatalf("servers after a capped create = %v", got)
	}
	r := e.member.Do("POST", api+"/servers", map[string]any{"server": map[string]any{"name": "c", "imageRef": img, "flavorRef": "1", "min_count": 1, "max_count": 3, "networks": "none"}})
	if r.Status != 403 || errMessage(t, r, "forbidden") != "Quota exceeded for instances: Requested 3, but already used 5 of 5 instances" {
		t.Fatalf("create with nothing left = %d %s", r.Status, r.Body)
	}
	// Cores bind too (flavor 3 has 2 vCPUs): instances 6, cores 12 with 5
	// used leaves 3 cores, room for one: it keeps its plain name.
	if r := e.admin.Do("PUT", api+"/os-quota-sets/"+e.demo.ID, map[string]any{"quota_set": map[string]any{"instances": 10, "cores": 8}}); r.Status != 200 {
		t.Fatalf("set quota = %d %s", r.Status, r.Body)
	}
	e.createServer(e.member, map[string]any{"name": "d", "imageRef": img, "flavorRef": "3", "max_count": 4, "networks": "none"})
	if got := names(); len(got) != 6 || !slices.Contains(got, "d") {
		t.Fatalf("servers after a core-capped create = %v, want one more named d", got)
	}
}
