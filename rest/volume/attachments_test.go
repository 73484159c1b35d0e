package volume_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func attPath(server string, rest string) string {
	return "/compute/v2.1/servers/" + server + "/os-volume_attachments" + rest
}

// TestAttachDetach replays `openstack server add volume` and `server
// remove volume` with the host's reports, on local storage.
func TestAttachDetach(t *testing.T) {
	e := newEnv(t, "")
	srv := e.server(e.demoP, "vm1", "host1")
	id := e.available(e.demo, e.demoP, "vol1", 1)

	r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment": {"volumeId": "`+id+`", "device": null}}`,
		"OpenStack-API-Version", "compute 2.1", "X-OpenStack-Nova-API-Version", "2.1")
	if r.Status != http.StatusOK {
		t.Fatalf("attach = %d %s; want 200", r.Status, r.Body)
	}
	a := get(r.JSON(t), "volumeAttachment")
	if str(a, "id") != id || str(a, "volumeId") != id || str(a, "serverId") != srv || str(a, "device") != "/dev/vdb" {
		t.Fatalf("attachment = %s", r.Body)
	}
	if r.Header.Get("X-OpenStack-Nova-API-Version") != "2.1" || r.Header.Get("OpenStack-API-Version") != "compute 2.1" {
		t.Fatalf("nova version headers = %v", r.Header)
	}
	st := e.vol(id)
	att := st.Attachment()
	if st.Status != statedb.VolumeAttaching || att == nil || att.HostID != "host1" || att.State != statedb.AttachAttaching {
		t.Fatalf("after attach: %+v", st)
	}
	// Not shown on the volume until attached.
	r = e.demo.Do("GET", vpath(e.demoP, "/volumes/"+id), nil)
	if v := get(r.JSON(t), "volume"); str(v, "status") != "attaching" || len(get(v, "attachments").([]any)) != 0 {
		t.Fatalf("attaching volume = %s", r.Body)
	}
	// A report from another host changes nothing; the server's host attaches it.
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host2", AttachmentID: att.ID, AttachmentState: "attached"})
	if e.vol(id).Status != statedb.VolumeAttaching {
		t.Fatal("report from the wrong host applied")
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", AttachmentID: att.ID, AttachmentState: "attached", Device: "/dev/vdc"})
	r = e.demo.Do("GET", vpath(e.demoP, "/volumes/"+id), nil)
	v := get(r.JSON(t), "volume")
	if str(v, "status") != "in-use" || str(v, "attachments", 0, "server_id") != srv || str(v, "attachments", 0, "id") != id ||
		str(v, "attachments", 0, "attachment_id") != att.ID || str(v, "attachments", 0, "volume_id") != id ||
		str(v, "attachments", 0, "host_name") != "host1" || str(v, "attachments", 0, "device") != "/dev/vdc" ||
		!cinderTime.MatchString(str(v, "attachments", 0, "attached_at")) {
		t.Fatalf("in-use volume = %s", r.Body)
	}

	// List and show.
	r = e.demo.Do("GET", attPath(srv, ""), nil)
	if r.Status != 200 || str(r.JSON(t), "volumeAttachments", 0, "volumeId") != id || str(r.JSON(t), "volumeAttachments", 0, "device") != "/dev/vdc" {
		t.Fatalf("attachment list = %d %s", r.Status, r.Body)
	}
	r = e.demo.Do("GET", attPath(srv, "/"+id), nil)
	if r.Status != 200 || str(r.JSON(t), "volumeAttachment", "serverId") != srv {
		t.Fatalf("attachment show = %d %s", r.Status, r.Body)
	}

	// Exclusive: another server, or the same one again, is a 400.
	srv2 := e.server(e.demoP, "vm2", "host1")
	fault(t, e.demo.Do("POST", attPath(srv2, ""), `{"volumeAttachment":{"volumeId":"`+id+`"}}`), 400, "badRequest", "multiattach")
	fault(t, e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment":{"volumeId":"`+id+`"}}`), 400, "badRequest", "already attached")
	// In use: no delete.
	fault(t, e.demo.Do("DELETE", vpath(e.demoP, "/volumes/"+id), nil), 400, "badRequest", "attached")

	// openstack server remove volume vm1 vol1
	r = e.demo.Do("DELETE", attPath(srv, "/"+id), nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("detach = %d %s; want 202", r.Status, r.Body)
	}
	if e.vol(id).Status != statedb.VolumeDetaching {
		t.Fatalf("after detach: %s", e.vol(id).Status)
	}
	// Asked again while detaching: accepted, still detaching.
	for i := 0; i < 2; i++ {
		if r = e.demo.Do("DELETE", attPath(srv, "/"+id), nil); r.Status != http.StatusAccepted {
			t.Fatalf("repeated detach while detaching = %d %s; want 202", r.Status, r.Body)
		}
	}
	if e.vol(id).Status != statedb.VolumeDetaching {
		t.Fatalf("after a repeated detach: %s", e.vol(id).Status)
	}
	// The host gives up (the guest never released the device): in-use
	// again, attached, with the reason shown.
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", AttachmentID: att.ID, AttachmentState: "attached",
		Error: "guest did not release /dev/vdc"})
	r = e.demo.Do("GET", vpath(e.demoP, "/volumes/"+id), nil)
	if v := get(r.JSON(t), "volume"); str(v, "status") != "in-use" || str(v, "attachments", 0, "server_id") != srv ||
		str(v, "error_reason") != "detaching from server "+srv+" failed: guest did not release /dev/vdc" {
		t.Fatalf("after a given-up detach = %s", r.Body)
	}
	if r = e.demo.Do("GET", attPath(srv, "/"+id), nil); r.Status != 200 {
		t.Fatalf("attachment show after a give-up = %d %s; want 200", r.Status, r.Body)
	}
	// The user retries: accepted, the reason cleared.
	if r = e.demo.Do("DELETE", attPath(srv, "/"+id), nil); r.Status != http.StatusAccepted {
		t.Fatalf("detach after a give-up = %d %s; want 202", r.Status, r.Body)
	}
	if v := e.vol(id); v.Status != statedb.VolumeDetaching || v.ErrorReason != "" {
		t.Fatalf("after detach again: %s %q; want detaching, no reason", v.Status, v.ErrorReason)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", AttachmentID: att.ID, AttachmentState: "detached"})
	r = e.demo.Do("GET", vpath(e.demoP, "/volumes/"+id), nil)
	if v := get(r.JSON(t), "volume"); str(v, "status") != "available" || len(get(v, "attachments").([]any)) != 0 {
		t.Fatalf("after detach = %s", r.Body)
	}
	fault(t, e.demo.Do("DELETE", attPath(srv, "/"+id), nil), 404, "itemNotFound", "not attached")
	fault(t, e.demo.Do("GET", attPath(srv, "/"+id), nil), 404, "itemNotFound", "not attached")
}

// TestAttachLocalStorageHost: with local storage a volume attaches only to
// servers on its host; with NFS to any.
func TestAttachLocalStorageHost(t *testing.T) {
	for _, tt := range []struct {
		storage string
		status  int
	}{{"", 400}, {"nfs://srv/export", 200}} {
		e := newEnv(t, tt.storage)
		srv := e.server(e.demoP, "vm", "host2")
		id := e.available(e.demo, e.demoP, "vol", 1) // lives on host1
		r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment":{"volumeId":"`+id+`"}}`)
		if tt.status == 400 {
			fault(t, r, 400, "badRequest", "local storage")
			fault(t, r, 400, "badRequest", "host2")
			continue
		}
		if r.Status != tt.status {
			t.Fatalf("storage %q: attach across hosts = %d %s; want %d", tt.storage, r.Status, r.Body, tt.status)
		}
		if a := e.vol(id).Attachment(); a.HostID != "host2" {
			t.Fatalf("attachment host = %s; want the server's, host2", a.HostID)
		}
	}
}

func TestAttachBadInput(t *testing.T) {
	e := newEnv(t, "")
	srv := e.server(e.demoP, "vm", "host1")
	otherSrv := e.server(e.otherP, "vm", "host1")
	id := e.available(e.demo, e.demoP, "vol", 1)
	creating := e.create(e.demo, e.demoP, "new", 1)
	theirs := e.available(e.other, e.otherP, "theirs", 1)
	missing := e.b.NewID()
	for _, tt := range []struct {
		name, server, body string
		status             int
		key, msg           string
	}{
		{"not json", srv, `{`, 400, "badRequest", "Malformed"},
		{"no attachment", srv, `{}`, 400, "badRequest", "volumeAttachment"},
		{"no volume id", srv, `{"volumeAttachment":{}}`, 400, "badRequest", "volumeId"},
		{"volume id not a uuid", srv, `{"volumeAttachment":{"volumeId":"vol"}}`, 400, "badRequest", "volumeId"},
		{"bad device", srv, `{"volumeAttachment":{"volumeId":"` + id + `","device":"/etc/passwd"}}`, 400, "badRequest", "device path"},
		{"missing volume", srv, `{"volumeAttachment":{"volumeId":"` + missing + `"}}`, 404, "itemNotFound", missing},
		{"other project's volume", srv, `{"volumeAttachment":{"volumeId":"` + theirs + `"}}`, 404, "itemNotFound", theirs},
		{"missing server", missing, `{"volumeAttachment":{"volumeId":"` + id + `"}}`, 404, "itemNotFound", missing},
		{"other project's server", otherSrv, `{"volumeAttachment":{"volumeId":"` + id + `"}}`, 404, "itemNotFound", otherSrv},
		{"volume still creating", srv, `{"volumeAttachment":{"volumeId":"` + creating + `"}}`, 400, "badRequest", "creating"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fault(t, e.demo.Do("POST", attPath(tt.server, ""), tt.body), tt.status, tt.key, tt.msg)
			if a := e.vol(id).Attachment(); a != nil {
				t.Fatalf("refused attach left %+v", a)
			}
		})
	}
	// A stopped server takes volumes; one being deleted is a 409.
	e.b.MustApply(t, statedb.CmdInstanceAction, statedb.InstanceActionCmd{ID: srv, Action: statedb.ActionStop})
	e.b.MustApply(t, statedb.CmdReportInstance, statedb.ReportInstanceCmd{InstanceID: srv, HostID: "host1", VMState: "stopped", PowerState: statedb.PowerShutdown})
	if r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment":{"volumeId":"`+id+`","device":"/dev/vdd"}}`); r.Status != 200 || str(r.JSON(t), "volumeAttachment", "device") != "/dev/vdd" {
		t.Fatalf("attach to a stopped server = %d %s", r.Status, r.Body)
	}
	id2 := e.available(e.demo, e.demoP, "vol2", 1)
	e.b.MustApply(t, statedb.CmdDeleteInstance, statedb.DeleteCmd{ID: srv})
	fault(t, e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment":{"volumeId":"`+id2+`"}}`), 409, "conflictingRequest", "deleted")
}

// TestOSDetach: Cinder's os-detach action, accepted while attached,
// repeated while detaching and after a given-up detach.
func TestOSDetach(t *testing.T) {
	e := newEnv(t, "")
	srv := e.server(e.demoP, "vm1", "host1")
	id := e.available(e.demo, e.demoP, "vol1", 1)
	act := vpath(e.demoP, "/volumes/"+id+"/action")
	fault(t, e.demo.Do("POST", act, `{"os-detach":{}}`), 400, "badRequest", "must be attached")

	if r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment":{"volumeId":"`+id+`"}}`); r.Status != http.StatusOK {
		t.Fatalf("attach = %d %s", r.Status, r.Body)
	}
	att := e.vol(id).Attachment()
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", AttachmentID: att.ID, AttachmentState: "attached"})

	fault(t, e.demo.Do("POST", act, `{"os-detach":{"attachment_id":"nope"}}`), 400, "badRequest", "not an attachment")
	fault(t, e.demo.Do("POST", act, `{"os-detach":[]}`), 400, "badRequest", "Malformed")
	if e.vol(id).Status != statedb.VolumeInUse {
		t.Fatalf("refused os-detach changed the volume: %s", e.vol(id).Status)
	}
	for _, body := range []string{`{"os-detach":{"attachment_id":"` + att.ID + `"}}`, `{"os-detach":null}`, `{"os-detach":{}}`} {
		if r := e.demo.Do("POST", act, body); r.Status != http.StatusAccepted {
			t.Fatalf("os-detach %s = %d %s; want 202", body, r.Status, r.Body)
		}
		if e.vol(id).Status != statedb.VolumeDetaching {
			t.Fatalf("after os-detach %s: %s; want detaching", body, e.vol(id).Status)
		}
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", AttachmentID: att.ID, AttachmentState: "attached", Error: "gave up"})
	if e.vol(id).Status != statedb.VolumeInUse {
		t.Fatalf("after a give-up: %s; want in-use", e.vol(id).Status)
	}
	if r := e.demo.Do("POST", act, `{"os-detach":{}}`); r.Status != http.StatusAccepted || e.vol(id).Status != statedb.VolumeDetaching {
		t.Fatalf("os-detach after a give-up = %d %s, volume %s; want 202, detaching", r.Status, r.Body, e.vol(id).Status)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: id, HostID: "host1", AttachmentID: att.ID, AttachmentState: "detached"})
	if v := e.vol(id); v.Status != statedb.VolumeAvailable || v.Attachment() != nil {
		t.Fatalf("after detach: %+v", v)
	}
}

// TestAttachRightAfterCreate: `volume create` then `server add volume` at
// once — the volume is still being made on its host. The attach waits for
// the create to finish instead of refusing, then attaches.
func TestAttachRightAfterCreate(t *testing.T) {
	e := newEnv(t, "")
	srv := e.server(e.demoP, "vm1", "host1")
	id := e.create(e.demo, e.demoP, "vol1", 1)
	if st := e.vol(id).Status; st != statedb.VolumeCreating {
		t.Fatalf("volume right after create = %s; want creating", st)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(200 * time.Millisecond) // the host makes the file meanwhile
		e.report(e.made(id))
	}()
	r := e.demo.Do("POST", attPath(srv, ""), `{"volumeAttachment": {"volumeId": "`+id+`"}}`)
	<-done
	if r.Status != http.StatusOK {
		t.Fatalf("attach during create = %d %s; want 200", r.Status, r.Body)
	}
	if v := e.vol(id); v.Status != statedb.VolumeAttaching || v.Attachment() == nil {
		t.Fatalf("after attach: %+v; want attaching", v)
	}
}
