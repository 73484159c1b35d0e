package compute_test

import (
	"strings"
	"testing"
)

// TestKeypairTypeAndUser covers 2.2's key type and 2.10's admin access to
// another user's keypairs.
func TestKeypairTypeAndUser(t *testing.T) {
	e := newEnv(t)
	v := func(mv string) []string { return []string{"OpenStack-API-Version", "compute " + mv} }
	create := func(body map[string]any, mv string) (int, string) {
		r := e.member.Do("POST", api+"/os-keypairs", map[string]any{"keypair": body}, v(mv)...)
		return r.Status, string(r.Body)
	}
	if st, body := create(map[string]any{"name": "k0", "type": "ssh"}, "2.1"); st != 400 || !strings.Contains(body, "'type' was unexpected") {
		t.Fatalf("type at 2.1 = %d %s", st, body)
	}
	if st, body := create(map[string]any{"name": "k0", "type": "rsa"}, "2.2"); st != 400 {
		t.Fatalf("bad type = %d %s", st, body)
	}
	if st, body := create(map[string]any{"name": "k0", "type": "x509"}, "2.2"); st != 400 || !strings.Contains(body, "x509") {
		t.Fatalf("x509 = %d %s", st, body)
	}
	if st, body := create(map[string]any{"name": "k1", "type": "ssh"}, "2.2"); st != 201 || !strings.Contains(body, `"type":"ssh"`) {
		t.Fatalf("create at 2.2 = %d %s", st, body)
	}
	if r := e.member.Do("GET", api+"/os-keypairs", nil, v("2.2")...); !strings.Contains(string(r.Body), `"type":"ssh"`) {
		t.Fatalf("list at 2.2 = %s", r.Body)
	}
	if r := e.member.Do("GET", api+"/os-keypairs/k1", nil); strings.Contains(string(r.Body), `"type"`) {
		t.Fatalf("show at 2.1 carries a type: %s", r.Body)
	}
	if st, body := create(map[string]any{"name": "k2", "user_id": "someone"}, "2.10"); st != 403 {
		t.Fatalf("member creating for another user = %d %s", st, body)
	}
	if r := e.member.Do("GET", api+"/os-keypairs?user_id=someone", nil, v("2.10")...); r.Status != 403 {
		t.Fatalf("member listing another user's keypairs = %d %s", r.Status, r.Body)
	}
	// An admin acts on the member's keypairs.
	q := "?user_id=" + e.memberID
	if r := e.admin.Do("GET", api+"/os-keypairs"+q, nil, v("2.10")...); r.Status != 200 || !strings.Contains(string(r.Body), `"k1"`) {
		t.Fatalf("admin list of the member's keypairs = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("POST", api+"/os-keypairs", map[string]any{"keypair": map[string]any{"name": "k3", "user_id": e.memberID}}, v("2.10")...); r.Status != 201 {
		t.Fatalf("admin create for the member = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", api+"/os-keypairs/k3", nil); r.Status != 200 {
		t.Fatalf("member show of the key an admin made = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("DELETE", api+"/os-keypairs/k3"+q, nil, v("2.10")...); r.Status != 204 {
		t.Fatalf("admin delete of the member's keypair = %d %s", r.Status, r.Body)
	}
	if r := e.member.Do("GET", api+"/os-keypairs/k3", nil); r.Status != 404 {
		t.Fatalf("member show after the admin's delete = %d", r.Status)
	}
}
