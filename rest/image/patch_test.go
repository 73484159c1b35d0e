package image_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/rest/resttest"
)

const patchCT = "application/openstack-images-v2.1-json-patch"

func patch(c *resttest.Client, id, body string) *resttest.Resp {
	return c.Do("PATCH", imageURL(id), body, "Content-Type", patchCT)
}

func TestPatch(t *testing.T) {
	e := newEnv(t)
	id := e.create(t, e.demo, map[string]any{"name": "p", "disk_format": "raw", "container_format": "bare", "k1": "v1", "k2": "v2"})
	// What `openstack image set --property k=v --name n --min-disk 2 --protected` sends, and more.
	r := patch(e.demo, id, `[
		{"op":"replace","path":"/name","value":"renamed"},
		{"op":"add","path":"/k3","value":"v3"},
		{"op":"replace","path":"/k1","value":"v1b"},
		{"op":"remove","path":"/k2"},
		{"op":"add","path":"/min_disk","value":2},
		{"op":"replace","path":"/min_ram","value":128},
		{"op":"replace","path":"/protected","value":true},
		{"op":"replace","path":"/visibility","value":"community"},
		{"op":"replace","path":"/tags","value":["a","b"]},
		{"op":"add","path":"/a~1b","value":"slash"},
		{"op":"replace","path":"/os_hidden","value":false}
	]`)
	if r.Status != http.StatusOK {
		t.Fatalf("PATCH = %d %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	want := map[string]any{"name": "renamed", "k1": "v1b", "k3": "v3", "min_disk": 2.0, "min_ram": 128.0, "protected": true,
		"visibility": "community", "a/b": "slash"}
	for k, w := range want {
		if m[k] != w {
			t.Errorf("after PATCH %s = %#v; want %#v", k, m[k], w)
		}
	}
	if _, ok := m["k2"]; ok {
		t.Error("removed property k2 still shown")
	}
	img := e.image(t, id)
	if !slices.Equal(img.Tags, []string{"a", "b"}) || img.Properties["k1"] != "v1b" || len(img.Properties) != 3 {
		t.Errorf("stored = tags %v props %v", img.Tags, img.Properties)
	}

	cases := []struct {
		name   string
		client *resttest.Client
		ct     string
		body   string
		status int
	}{
		{"unknown op", e.demo, patchCT, `[{"op":"move","path":"/name","value":"x"}]`, 400},
		{"test op", e.demo, patchCT, `[{"op":"test","path":"/name","value":"x"}]`, 400},
		{"no op", e.demo, patchCT, `[{"path":"/name","value":"x"}]`, 400},
		{"json content type", e.demo, "application/json", `[{"op":"replace","path":"/name","value":"x"}]`, 415},
		{"no content type", e.demo, "", `[]`, 415},
		{"not a list", e.demo, patchCT, `{"op":"replace"}`, 400},
		{"bad pointer", e.demo, patchCT, `[{"op":"replace","path":"name","value":"x"}]`, 400},
		{"nested pointer", e.demo, patchCT, `[{"op":"add","path":"/tags/0","value":"x"}]`, 400},
		{"read-only status", e.demo, patchCT, `[{"op":"replace","path":"/status","value":"active"}]`, 403},
		{"read-only id", e.demo, patchCT, `[{"op":"replace","path":"/id","value":"x"}]`, 403},
		{"remove core", e.demo, patchCT, `[{"op":"remove","path":"/name"}]`, 403},
		{"replace missing property", e.demo, patchCT, `[{"op":"replace","path":"/nope","value":"x"}]`, 409},
		{"remove missing property", e.demo, patchCT, `[{"op":"remove","path":"/nope"}]`, 409},
		{"non-string property", e.demo, patchCT, `[{"op":"add","path":"/x","value":1}]`, 400},
		{"bool as string", e.demo, patchCT, `[{"op":"replace","path":"/protected","value":"yes"}]`, 400},
		{"negative min_disk", e.demo, patchCT, `[{"op":"replace","path":"/min_disk","value":-3}]`, 400},
		{"bad visibility", e.demo, patchCT, `[{"op":"replace","path":"/visibility","value":"x"}]`, 400},
		{"publicize as member", e.demo, patchCT, `[{"op":"replace","path":"/visibility","value":"public"}]`, 403},
		{"missing value", e.demo, patchCT, `[{"op":"add","path":"/x"}]`, 400},
		{"reader", e.reader, patchCT, `[{"op":"replace","path":"/name","value":"x"}]`, 403},
		{"another project", e.other, patchCT, `[{"op":"replace","path":"/name","value":"x"}]`, 403},
	}
	for _, tc := range cases {
		r := tc.client.Do("PATCH", imageURL(id), tc.body, "Content-Type", tc.ct)
		if r.Status != tc.status {
			t.Errorf("PATCH(%s) = %d %s; want %d", tc.name, r.Status, r.Body, tc.status)
		}
	}
	// Nothing changed by the refused patches (each is all or nothing).
	if r := patch(e.demo, id, `[{"op":"replace","path":"/name","value":"half"},{"op":"remove","path":"/nope"}]`); r.Status != 409 {
		t.Fatalf("PATCH with a failing second op = %d", r.Status)
	}
	if got := e.image(t, id); got.Name != "renamed" || got.Visibility != "community" {
		t.Errorf("after refused patches: name %q visibility %q", got.Name, got.Visibility)
	}
	// Admin may publish; formats change only while queued.
	if r := patch(e.admin, id, `[{"op":"replace","path":"/visibility","value":"public"}]`); r.Status != 200 {
		t.Errorf("admin publish = %d %s", r.Status, r.Body)
	}
	// A member of the owning project may edit a public image without
	// being told it cannot publish it.
	if r := patch(e.demo, id, `[{"op":"replace","path":"/name","value":"still-public"}]`); r.Status != 200 {
		t.Errorf("member edits a public image of its project = %d %s", r.Status, r.Body)
	}
	if r := patch(e.demo, id, `[{"op":"replace","path":"/disk_format","value":"qcow2"}]`); r.Status != 200 {
		t.Errorf("change disk_format while queued = %d %s", r.Status, r.Body)
	}
	e.put(t, e.demo, id, qemuImg(t, "-f", "qcow2", "1M"))
	if r := patch(e.demo, id, `[{"op":"replace","path":"/disk_format","value":"raw"}]`); r.Status != 403 {
		t.Errorf("change disk_format of an active image = %d; want 403", r.Status)
	}
}

// FuzzImagePatch throws arbitrary JSON-patch bodies at PATCH: never a
// panic, never a 5xx.
func FuzzImagePatch(f *testing.F) {
	for _, s := range []string{
		`[{"op":"replace","path":"/name","value":"x"}]`,
		`[{"op":"add","path":"/k","value":"v"},{"op":"remove","path":"/k"}]`,
		`[{"op":"replace","path":"/tags","value":["a",""]}]`,
		`[{"op":"replace","path":"/min_disk","value":1e99}]`,
		`[{"op":"add","path":"/~","value":"x"}]`,
		`[{"op":"add","path":"/","value":"x"}]`,
		`[{"op":"replace","path":"/visibility","value":null}]`,
		`[{"op":"remove","path":"/os_glance_x"}]`,
		`[null]`, `[]`, `null`, `{`, ``, `[{"op":1}]`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	id := e.create(f, e.demo, map[string]any{"name": "fuzz", "disk_format": "raw", "container_format": "bare"})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("PATCH", imageURL(id), strings.NewReader(body))
		req.Header.Set("Content-Type", patchCT)
		req.Header.Set("X-Auth-Token", e.demo.Token)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("PATCH %q = %d %s", body, rec.Code, rec.Body)
		}
	})
}
