package volume_test

import (
	"net/http"
	"testing"
)

// TestAttachmentsComputeVersions: the attachment routes take the compute
// microversions (2.1-2.79), show tag from 2.70 and
// delete_on_termination from 2.79, and refuse versions beyond.
func TestAttachmentsComputeVersions(t *testing.T) {
	e := newEnv(t, "")
	srv := e.server(e.demoP, "vm1", "host1")
	id := e.available(e.demo, e.demoP, "vol1", 1)
	r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment": {"volumeId": "`+id+`"}}`, "OpenStack-API-Version", "compute 2.79")
	if r.Status != http.StatusOK || r.Header.Get("OpenStack-API-Version") != "compute 2.79" {
		t.Fatalf("attach at 2.79 = %d %s %v", r.Status, r.Body, r.Header)
	}
	a := r.JSON(t)["volumeAttachment"].(map[string]any)
	if tag, ok := a["tag"]; !ok || tag != nil || a["delete_on_termination"] != false {
		t.Fatalf("attachment at 2.79 = %s", r.Body)
	}
	r = e.demo.Do("GET", attPath(srv, ""), nil, "X-OpenStack-Nova-API-Version", "2.70")
	list := r.JSON(t)["volumeAttachments"].([]any)
	one := list[0].(map[string]any)
	if _, ok := one["tag"]; !ok || one["delete_on_termination"] != nil {
		t.Fatalf("attachments at 2.70 = %s", r.Body)
	}
	r = e.demo.Do("GET", attPath(srv, ""), nil)
	if one := r.JSON(t)["volumeAttachments"].([]any)[0].(map[string]any); len(one) != 4 {
		t.Fatalf("attachment at 2.1 = %v", one)
	}
	if r := e.demo.Do("GET", attPath(srv, ""), nil, "X-OpenStack-Nova-API-Version", "two"); r.Status != http.StatusBadRequest {
		t.Errorf("version two = %d; want 400", r.Status)
	}
	for _, v := range []string{"2.80", "3.0", "2.0"} {
		if r := e.demo.Do("GET", attPath(srv, ""), nil, "X-OpenStack-Nova-API-Version", v); r.Status != http.StatusNotAcceptable {
			t.Errorf("version %s = %d; want 406", v, r.Status)
		}
	}
}

// An attach takes a tag from 2.49 and delete_on_termination from 2.79 (in
// the forms clients send: JSON booleans or strings), refuses them before,
// and the attachment shows what was asked.
func TestAttachTagAndDeleteOnTermination(t *testing.T) {
	e := newEnv(t, "")
	srv := e.server(e.demoP, "vm1", "host1")
	id := e.available(e.demo, e.demoP, "vol1", 1)
	for _, c := range []struct{ version, body string }{
		{"2.48", `{"volumeAttachment": {"volumeId": "` + id + `", "tag": "data"}}`},
		{"2.78", `{"volumeAttachment": {"volumeId": "` + id + `", "delete_on_termination": true}}`},
		{"2.79", `{"volumeAttachment": {"volumeId": "` + id + `", "delete_on_termination": "maybe"}}`},
		{"2.79", `{"volumeAttachment": {"volumeId": "` + id + `", "tag": "a/b"}}`},
	} {
		if r := e.demo.Do("POST", attPath(srv, ""), c.body, "OpenStack-API-Version", "compute "+c.version); r.Status != http.StatusBadRequest {
			t.Fatalf("attach at %s with %s = %d %s; want 400", c.version, c.body, r.Status, r.Body)
		}
	}
	if v := e.vol(id); v.Attachment() != nil {
		t.Fatalf("a refused attach left an attachment: %+v", v.Attachment())
	}
	r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment": {"volumeId": "`+id+`", "tag": "data", "delete_on_termination": "True"}}`,
		"OpenStack-API-Version", "compute 2.79")
	if r.Status != http.StatusOK {
		t.Fatalf("attach with tag and delete_on_termination = %d %s", r.Status, r.Body)
	}
	if a := r.JSON(t)["volumeAttachment"].(map[string]any); a["tag"] != "data" || a["delete_on_termination"] != true {
		t.Fatalf("attach answer = %s; want tag data, delete_on_termination true", r.Body)
	}
	if a := e.vol(id).Attachment(); a == nil || a.Tag != "data" || !a.DeleteOnTermination {
		t.Fatalf("stored attachment = %+v", a)
	}
	one := e.demo.Do("GET", attPath(srv, "/"+id), nil, "X-OpenStack-Nova-API-Version", "2.79").JSON(t)["volumeAttachment"].(map[string]any)
	if one["tag"] != "data" || one["delete_on_termination"] != true {
		t.Fatalf("attachment at 2.79 = %v", one)
	}
}
