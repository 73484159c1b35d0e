package image_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/rest/resttest"
)

// ids lists the ids of a list answer in order, and its next link.
func ids(t *testing.T, r *resttest.Resp) ([]string, string) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("list = %d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	var out []string
	for _, i := range m["images"].([]any) {
		out = append(out, str(i.(map[string]any), "id"))
	}
	if m["schema"] != "/v2/schemas/images" || !strings.HasPrefix(str(m, "first"), "/v2/images") {
		t.Errorf("list envelope = %v", m)
	}
	return out, str(m, "next")
}

func TestListPagingAndSorting(t *testing.T) {
	e := newEnv(t)
	var created []string
	for i := range 7 {
		e.b.Advance(time.Second)
		created = append(created, e.create(t, e.demo, map[string]any{"name": fmt.Sprintf("img-%d", 6-i), "min_ram": i % 3}))
	}
	// Default order: created_at desc.
	all, next := ids(t, e.demo.Do("GET", "/image/v2/images", nil))
	if want := slices.Clone(created); !slices.Equal(all, reverse(want)) || next != "" {
		t.Fatalf("default list = %v next %q; want newest first %v", all, next, reverse(want))
	}
	// limit/marker pages, following "next" as clients do.
	var paged []string
	link := "/v2/images?limit=3&sort_key=name&sort_dir=asc"
	for pages := 0; link != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		page, nxt := ids(t, e.demo.Do("GET", "/image"+link, nil))
		if len(page) > 3 {
			t.Fatalf("page of %d with limit 3", len(page))
		}
		paged = append(paged, page...)
		link = nxt
	}
	if want := reverse(slices.Clone(created)); !slices.Equal(paged, want) {
		t.Fatalf("paged by name asc = %v; want %v", paged, want)
	}
	// Multiple sort keys and the sort= form.
	byRAM, _ := ids(t, e.demo.Do("GET", "/image/v2/images?sort=min_ram:asc,name:desc", nil))
	byRAM2, _ := ids(t, e.demo.Do("GET", "/image/v2/images?sort_key=min_ram&sort_key=name&sort_dir=asc&sort_dir=desc", nil))
	want := []string{created[0], created[3], created[6], created[1], created[4], created[2], created[5]}
	if !slices.Equal(byRAM, want) || !slices.Equal(byRAM2, want) {
		t.Errorf("sort min_ram asc, name desc = %v / %v; want %v", byRAM, byRAM2, want)
	}
	bad := []string{"sort_key=nope", "sort_dir=up", "limit=-1", "limit=x", "marker=nope", "visibility=everyone",
		"member_status=maybe", "sort=name:up", "sort=name&sort_key=id", "sort_key=name&sort_key=id&sort_dir=asc&sort_dir=asc&sort_dir=asc"}
	for _, q := range bad {
		if r := e.demo.Do("GET", "/image/v2/images?"+q, nil); r.Status != http.StatusBadRequest {
			t.Errorf("list ?%s = %d; want 400", q, r.Status)
		}
	}
}

func reverse(xs []string) []string {
	slices.Reverse(xs)
	return xs
}

func TestListFiltersAndVisibility(t *testing.T) {
	e := newEnv(t)
	private := e.create(t, e.demo, map[string]any{"name": "private", "visibility": "private", "disk_format": "raw", "container_format": "bare"})
	shared := e.create(t, e.demo, map[string]any{"name": "shared", "visibility": "shared"})
	community := e.create(t, e.demo, map[string]any{"name": "community", "visibility": "community"})
	hidden := e.create(t, e.demo, map[string]any{"name": "hidden", "os_hidden": true})
	public := e.create(t, e.admin, map[string]any{"name": "public", "visibility": "public"})
	foreign := e.create(t, e.other, map[string]any{"name": "foreign", "visibility": "private"})
	e.put(t, e.demo, private, []byte("raw bytes"))

	cases := []struct {
		who   string
		c     *resttest.Client
		query string
		want  []string
	}{
		{"demo default", e.demo, "", []string{private, shared, community, public}},
		{"demo hidden", e.demo, "os_hidden=true", []string{hidden}},
		{"other default", e.other, "", []string{public, foreign}},
		{"other community", e.other, "visibility=community", []string{community}},
		{"other private", e.other, "visibility=private", []string{foreign}},
		{"demo name", e.demo, "name=shared", []string{shared}},
		{"demo status active", e.demo, "status=active", []string{private}},
		{"demo owner", e.demo, "owner=" + e.demoP.ID, []string{private, shared, community}},
		{"demo disk_format", e.demo, "disk_format=raw", []string{private}},
		{"admin all", e.admin, "", []string{private, shared, community, public, foreign}},
	}
	for _, tc := range cases {
		got, _ := ids(t, tc.c.Do("GET", "/image/v2/images?"+tc.query, nil))
		slices.Sort(got)
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("list(%s ?%s) = %v; want %v", tc.who, tc.query, got, want)
		}
	}
	// A foreign private image is invisible (404) everywhere, not 403.
	for _, rt := range []struct{ method, path, body string }{
		{"GET", imageURL(private), ""}, {"GET", imageURL(private, "file"), ""}, {"DELETE", imageURL(private), ""},
		{"PUT", imageURL(private, "tags", "x"), ""}, {"GET", imageURL(private, "members"), ""},
	} {
		if r := e.other.Do(rt.method, rt.path, nil); r.Status != http.StatusNotFound {
			t.Errorf("other %s %s = %d; want 404", rt.method, rt.path, r.Status)
		}
	}
	if r := patch(e.other, private, `[{"op":"replace","path":"/name","value":"x"}]`); r.Status != http.StatusNotFound {
		t.Errorf("other PATCH private = %d; want 404", r.Status)
	}
	// Public and community images are readable by all, writable by none else.
	for _, id := range []string{public, community} {
		if r := e.other.Do("GET", imageURL(id), nil); r.Status != http.StatusOK {
			t.Errorf("other GET %s = %d; want 200", id, r.Status)
		}
		if r := e.other.Do("DELETE", imageURL(id), nil); r.Status != http.StatusForbidden {
			t.Errorf("other DELETE %s = %d; want 403", id, r.Status)
		}
	}
	if r := e.other.Do("GET", imageURL(shared), nil); r.Status != http.StatusNotFound {
		t.Errorf("non-member GET shared = %d; want 404", r.Status)
	}
}

func TestMembers(t *testing.T) {
	e := newEnv(t)
	id := e.create(t, e.demo, map[string]any{"name": "s", "visibility": "shared"})
	priv := e.create(t, e.demo, map[string]any{"name": "p", "visibility": "private"})
	member := e.otherP.ID
	if r := e.demo.Do("POST", imageURL(priv, "members"), map[string]string{"member": member}); r.Status != http.StatusForbidden {
		t.Errorf("member of a private image = %d; want 403", r.Status)
	}
	if r := e.other.Do("POST", imageURL(id, "members"), map[string]string{"member": member}); r.Status != http.StatusNotFound {
		t.Errorf("non-owner adds member = %d; want 404", r.Status)
	}
	r := e.demo.Do("POST", imageURL(id, "members"), map[string]string{"member": member})
	if r.Status != http.StatusOK {
		t.Fatalf("add member = %d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	if str(m, "status") != "pending" || str(m, "member_id") != member || str(m, "image_id") != id || str(m, "schema") != "/v2/schemas/member" {
		t.Errorf("member = %v", m)
	}
	if r := e.demo.Do("POST", imageURL(id, "members"), map[string]string{"member": member}); r.Status != http.StatusConflict {
		t.Errorf("duplicate member = %d; want 409", r.Status)
	}
	if r := e.demo.Do("POST", imageURL(id, "members"), `{"member":5}`); r.Status != http.StatusBadRequest {
		t.Errorf("bad member body = %d; want 400", r.Status)
	}
	// Pending: readable by id (so it can be accepted), not listed.
	if r := e.other.Do("GET", imageURL(id), nil); r.Status != http.StatusOK {
		t.Errorf("pending member GET = %d; want 200", r.Status)
	}
	if got, _ := ids(t, e.other.Do("GET", "/image/v2/images", nil)); slices.Contains(got, id) {
		t.Error("pending shared image listed by default")
	}
	if got, _ := ids(t, e.other.Do("GET", "/image/v2/images?member_status=pending", nil)); !slices.Contains(got, id) {
		t.Error("pending shared image not listed with member_status=pending")
	}
	// The owner cannot accept for the member.
	if r := e.demo.Do("PUT", imageURL(id, "members", member), `{"status":"accepted"}`); r.Status != http.StatusForbidden {
		t.Errorf("owner sets member status = %d; want 403", r.Status)
	}
	if r := e.other.Do("PUT", imageURL(id, "members", member), `{"status":"maybe"}`); r.Status != http.StatusBadRequest {
		t.Errorf("bad status = %d; want 400", r.Status)
	}
	if r := e.other.Do("PUT", imageURL(id, "members", member), `{"status":"accepted"}`); r.Status != 200 || str(r.JSON(t), "status") != "accepted" {
		t.Fatalf("member accepts = %d %s", r.Status, r.Body)
	}
	if got, _ := ids(t, e.other.Do("GET", "/image/v2/images", nil)); !slices.Contains(got, id) {
		t.Error("accepted shared image not listed")
	}
	// The member sees only itself in the member list; the owner sees all.
	e.demo.Do("POST", imageURL(id, "members"), map[string]string{"member": "third-project"})
	for _, tc := range []struct {
		c    *resttest.Client
		want int
	}{{e.demo, 2}, {e.other, 1}} {
		r := tc.c.Do("GET", imageURL(id, "members"), nil)
		if n := len(r.JSON(t)["members"].([]any)); r.Status != 200 || n != tc.want {
			t.Errorf("member list = %d with %d members; want %d", r.Status, n, tc.want)
		}
	}
	if r := e.other.Do("GET", imageURL(id, "members", "third-project"), nil); r.Status != http.StatusNotFound {
		t.Errorf("member reads another membership = %d; want 404", r.Status)
	}
	if r := e.demo.Do("GET", imageURL(id, "members", member), nil); r.Status != 200 || str(r.JSON(t), "status") != "accepted" {
		t.Errorf("owner reads membership = %d %s", r.Status, r.Body)
	}
	if r := e.other.Do("DELETE", imageURL(id, "members", member), nil); r.Status != http.StatusNotFound {
		t.Errorf("member removes itself = %d; want 404 (owner only)", r.Status)
	}
	if r := e.demo.Do("DELETE", imageURL(id, "members", member), nil); r.Status != http.StatusNoContent {
		t.Fatalf("owner removes member = %d", r.Status)
	}
	if r := e.other.Do("GET", imageURL(id), nil); r.Status != http.StatusNotFound {
		t.Errorf("removed member GET = %d; want 404", r.Status)
	}
	if r := e.demo.Do("DELETE", imageURL(id, "members", member), nil); r.Status != http.StatusNotFound {
		t.Errorf("remove a non-member = %d; want 404", r.Status)
	}
}
