package volume_test

import (
	"testing"

	"github.com/peerstack/peerstack/rest/resttest"
)

// FuzzVolumeCreate sends arbitrary bodies to volume create, volume actions
// and volume attach: the answer is never a 5xx (a panic would be a 500),
// and a create either is a 202 or a 4xx.
func FuzzVolumeCreate(f *testing.F) {
	for _, s := range []string{
		`{"volume":{"size":1,"name":"v"}}`,
		`{"volume": {"size": 1, "consistencygroup_id": null, "snapshot_id": null, "name": "vol1", "description": null, "volume_type": null, "availability_zone": null, "metadata": {}, "imageRef": null, "source_volid": null, "backup_id": null}}`,
		`{"volume":{"size":"2","metadata":{"a":"b"},"volume_type":"local"}}`,
		`{"volume":{"size":"1","multiattach":"True"}}`, `{"volume":{"size":"1\n","multiattach":"y"}}`,
		`{"volume":{"size":" 1","multiattach":"maybe"}}`, `{"volume":{"size":1.5,"multiattach":1}}`,
		`{"os-extend":{"new_size":"3"}}`, `{"os-extend":{"new_size":"x"}}`, `{"os-extend":{"new_size":2.5}}`,
		`{"volume":{"size":1e3}}`, `{"volume":{"size":-0}}`, `{"volume":[]}`, `[]`, `null`, ``,
		`{"volume":{"size":1,"imageRef":"x","name":"\u0000"}}`,
		`{"os-extend":{"new_size":2}}`, `{"os-reset_status":{"status":"available"}}`,
		`{"volumeAttachment":{"volumeId":"00000000-0000-0000-0000-000000000000","device":"/dev/vdb"}}`,
	} {
		f.Add(s)
	}
	e := newEnv(f, "")
	srv := e.server(e.demoP, "vm", "host1")
	vol := e.available(e.demo, e.demoP, "v", 1)
	f.Fuzz(func(t *testing.T, body string) {
		for _, c := range []*resttest.Client{e.demo, e.admin} {
			c := *c
			c.T = t
			r := c.Do("POST", vpath(e.demoP, "/volumes"), body)
			if r.Status >= 500 || (r.Status != 202 && r.Status < 400) {
				t.Fatalf("POST /volumes %q = %d %s", body, r.Status, r.Body)
			}
			if r = c.Do("POST", vpath(e.demoP, "/volumes/"+vol+"/action"), body); r.Status >= 500 {
				t.Fatalf("POST action %q = %d %s", body, r.Status, r.Body)
			}
			if r = c.Do("POST", attPath(srv, ""), body); r.Status >= 500 {
				t.Fatalf("POST os-volume_attachments %q = %d %s", body, r.Status, r.Body)
			}
		}
	})
}
