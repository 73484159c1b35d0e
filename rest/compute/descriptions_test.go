package compute_test

import (
	"strings"
	"testing"
)

// TestDescriptionUpdates sets a server's description with PUT from 2.19
// and a flavor's from 2.55, and refuses both before.
func TestDescriptionUpdates(t *testing.T) {
	e := newEnv(t)
	img := e.image(e.demo.ID, "private", 0, 0, nil, true)
	id := e.createServer(e.member, map[string]any{"name": "vm", "imageRef": img, "flavorRef": "1", "networks": "none"})
	put := func(body any, v string) (int, string) {
		r := e.member.Do("PUT", api+"/servers/"+id, body, "OpenStack-API-Version", "compute "+v)
		return r.Status, string(r.Body)
	}
	if st, body := put(map[string]any{"server": map[string]any{"description": "web"}}, "2.1"); st != 400 || !strings.Contains(body, "'description' was unexpected") {
		t.Fatalf("description at 2.1 = %d %s", st, body)
	}
	if st, body := put(map[string]any{"server": map[string]any{"description": strings.Repeat("x", 256)}}, "2.19"); st != 400 {
		t.Fatalf("too long description = %d %s", st, body)
	}
	if st, body := put(map[string]any{"server": map[string]any{"description": 5}}, "2.19"); st != 400 {
		t.Fatalf("number description = %d %s", st, body)
	}
	if st, body := put(map[string]any{"server": map[string]any{"description": "web tier"}}, "2.19"); st != 200 || !strings.Contains(body, `"description":"web tier"`) {
		t.Fatalf("description at 2.19 = %d %s", st, body)
	}
	if st, body := put(map[string]any{"server": map[string]any{"description": nil, "name": "vm2"}}, "2.19"); st != 200 ||
		!strings.Contains(body, `"description":null`) || !strings.Contains(body, `"name":"vm2"`) {
		t.Fatalf("clear description = %d %s", st, body)
	}

	fput := func(who string, body any, v string) (int, string) {
		cl := e.admin
		if who == "member" {
			cl = e.member
		}
		r := cl.Do("PUT", api+"/flavors/2", body, "OpenStack-API-Version", "compute "+v)
		return r.Status, string(r.Body)
	}
	desc := map[string]any{"flavor": map[string]any{"description": "bigger"}}
	if st, body := fput("admin", desc, "2.54"); st != 404 {
		t.Fatalf("flavor update at 2.54 = %d %s", st, body)
	}
	if st, body := fput("member", desc, "2.55"); st != 403 {
		t.Fatalf("flavor update by a member = %d %s", st, body)
	}
	if st, body := fput("admin", map[string]any{"flavor": map[string]any{"name": "x"}}, "2.55"); st != 400 {
		t.Fatalf("flavor update of its name = %d %s", st, body)
	}
	if st, body := fput("admin", desc, "2.55"); st != 200 || !strings.Contains(body, `"description":"bigger"`) {
		t.Fatalf("flavor update = %d %s", st, body)
	}
	if f, _ := e.b.State().Flavor("2"); f.Description != "bigger" || f.Name != "m1.small" {
		t.Fatalf("flavor after update = %+v", f)
	}
}
