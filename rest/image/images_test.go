package image_test

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

func TestVersions(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/image", "/image/", "/image/v2", "/image/v2/"} {
		resp, err := http.Get(e.srv.URL + path) // no token
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s; want 200", path, resp.StatusCode, body)
		}
		want := `{"versions":[{"id":"v2.0","links":[{"href":"` + e.srv.URL + `/image/v2/","rel":"self"}],"status":"CURRENT"}]}`
		if got := strings.TrimSpace(string(body)); got != want {
			t.Errorf("GET %s = %s; want %s", path, got, want)
		}
	}
}

// TestCreateUploadDownload follows `openstack image create --file`: the
// OSC create body, a PUT of the bytes, then show and download.
func TestCreateUploadDownload(t *testing.T) {
	e := newEnv(t)
	r := e.demo.Do("POST", "/image/v2/images", `{"container_format": "bare", "disk_format": "qcow2", "name": "cirros", `+
		`"owner_specified.openstack.md5": "", "owner_specified.openstack.sha256": "", "owner_specified.openstack.object": "images/cirros", `+
		`"hw_architecture": "x86_64", "min_disk": 1, "min_ram": 64, "protected": false, "tags": ["a"]}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("create = %d %s; want 201", r.Status, r.Body)
	}
	m := r.JSON(t)
	id := str(m, "id")
	checks := map[string]any{
		"name": "cirros", "status": "queued", "visibility": "shared", "disk_format": "qcow2", "container_format": "bare",
		"owner": e.demoP.ID, "hw_architecture": "x86_64", "owner_specified.openstack.object": "images/cirros",
		"owner_specified.openstack.md5": "", "min_disk": 1.0, "min_ram": 64.0, "protected": false, "os_hidden": false,
		"size": nil, "virtual_size": nil, "checksum": nil, "self": "/v2/images/" + id, "file": "/v2/images/" + id + "/file",
		"schema": "/v2/schemas/image",
	}
	for k, want := range checks {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("create: %s = %#v; want %#v", k, m[k], want)
		}
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339, str(m, k)); err != nil || !strings.HasSuffix(str(m, k), "Z") {
			t.Errorf("%s = %q; want RFC 3339 with Z", k, m[k])
		}
	}
	if _, nested := m["properties"]; nested {
		t.Error("extra properties nested under 'properties'; want top-level keys")
	}

	data := qemuImg(t, "-f", "qcow2", "16M")
	if r := e.put(t, e.demo, id, data); r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("upload = %d %q; want 204 and no body", r.Status, r.Body)
	}
	md, s5, s2 := md5.Sum(data), sha512.Sum512(data), sha256.Sum256(data)
	m = e.demo.Do("GET", imageURL(id), nil).JSON(t)
	want := map[string]any{"status": "active", "size": float64(len(data)), "virtual_size": float64(16 << 20),
		"checksum": hex.EncodeToString(md[:]), "os_hash_algo": "sha512", "os_hash_value": hex.EncodeToString(s5[:])}
	for k, w := range want {
		if m[k] != w {
			t.Errorf("after upload: %s = %#v; want %#v", k, m[k], w)
		}
	}
	img := e.image(t, id)
	if img.SHA256 != hex.EncodeToString(s2[:]) || !slices.Equal(img.Holders, []string{"host1"}) {
		t.Errorf("record: sha256 %s holders %v; want %x and [host1]", img.SHA256, img.Holders, s2)
	}

	r = e.demo.Do("GET", imageURL(id, "file"), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("download = %d %s", r.Status, r.Body)
	}
	mustEqual(t, "download", r.Body, data)
	if r.Header.Get("Content-MD5") != hex.EncodeToString(md[:]) || r.Header.Get("Content-Type") != "application/octet-stream" ||
		r.Header.Get("Content-Length") != fmt.Sprint(len(data)) {
		t.Errorf("download headers = %v", r.Header)
	}

	// Chunked transfer encoding (no Content-Length), as gophercloud sends
	// for a plain io.Reader.
	raw := []byte(strings.Repeat("raw disk bytes ", 100_000))
	id2 := e.create(t, e.demo, map[string]any{"name": "chunked", "disk_format": "raw", "container_format": "bare"})
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(raw); off += 70_000 {
			pw.Write(raw[off:min(off+70_000, len(raw))])
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", e.srv.URL+imageURL(id2, "file"), pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Auth-Token", e.demo.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A pipe has no length, so the client sends it chunked.
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("chunked upload = %d; want 204", resp.StatusCode)
	}
	if img := e.image(t, id2); img.Status != statedb.ImageActive || img.Size != int64(len(raw)) || img.VirtualSize != int64(len(raw)) {
		t.Errorf("chunked image = %+v", img)
	}
	mustEqual(t, "chunked download", e.demo.Do("GET", imageURL(id2, "file"), nil).Body, raw)

	// A queued image has no data: 204.
	id3 := e.create(t, e.demo, map[string]any{"name": "empty", "disk_format": "raw", "container_format": "bare"})
	if r := e.demo.Do("GET", imageURL(id3, "file"), nil); r.Status != http.StatusNoContent {
		t.Errorf("download of a queued image = %d; want 204", r.Status)
	}
}

// truncatedPut sends a request promising more bytes than it sends, then
// half-closes the connection and returns the status.
func truncatedPut(t *testing.T, e *env, id string, promised, sent int) int {
	t.Helper()
	u, _ := url.Parse(e.srv.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nX-Auth-Token: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		imageURL(id, "file"), u.Host, e.demo.Token, promised)
	conn.Write([]byte(strings.Repeat("x", sent)))
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestUploadRefusals(t *testing.T) {
	e := newEnv(t)
	qcow := qemuImg(t, "-f", "qcow2", "1M")
	backed := qemuImg(t, "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", "1M")
	dataFile := qemuImg(t, "-f", "qcow2", "-o", "data_file="+t.TempDir()+"/d.raw", "1M")
	cases := []struct {
		name   string
		format string
		send   func(id string) int
		status int
		state  string // image status after
	}{
		{"wrong content type", "raw", func(id string) int {
			return e.demo.Do("PUT", imageURL(id, "file"), "x", "Content-Type", "application/json").Status
		}, http.StatusUnsupportedMediaType, "queued"},
		{"no content type", "raw", func(id string) int {
			return e.demo.Do("PUT", imageURL(id, "file"), []byte("x"), "Content-Type", "").Status
		}, http.StatusUnsupportedMediaType, "queued"},
		{"truncated", "raw", func(id string) int { return truncatedPut(t, e, id, 100_000, 60_000) }, http.StatusBadRequest, "killed"},
		{"content length over limit", "raw", func(id string) int { return truncatedPut(t, e, id, testLimit+1, 10) }, http.StatusRequestEntityTooLarge, "queued"},
		{"chunked over limit", "raw", func(id string) int {
			pr, pw := io.Pipe()
			go func() {
				buf := make([]byte, 1<<20)
				for range testLimit/len(buf) + 2 {
					if _, err := pw.Write(buf); err != nil {
						return
					}
				}
				pw.Close()
			}()
			defer pr.Close()
			req, _ := http.NewRequest("PUT", e.srv.URL+imageURL(id, "file"), pr)
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("X-Auth-Token", e.demo.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}, http.StatusRequestEntityTooLarge, "killed"},
		{"raw declared qcow2", "qcow2", func(id string) int { return e.put(t, e.demo, id, []byte(strings.Repeat("raw", 1000))).Status },
			http.StatusBadRequest, "killed"},
		{"qcow2 declared raw", "raw", func(id string) int { return e.put(t, e.demo, id, qcow).Status }, http.StatusBadRequest, "killed"},
		{"qcow2 declared iso", "iso", func(id string) int { return e.put(t, e.demo, id, qcow).Status }, http.StatusBadRequest, "killed"},
		{"qcow2 backing /etc/passwd", "qcow2", func(id string) int { return e.put(t, e.demo, id, backed).Status }, http.StatusBadRequest, "killed"},
		{"qcow2 external data file", "qcow2", func(id string) int { return e.put(t, e.demo, id, dataFile).Status }, http.StatusBadRequest, "killed"},
		{"reader role", "raw", func(id string) int {
			return e.reader.Do("PUT", imageURL(id, "file"), []byte("x"), "Content-Type", "application/octet-stream").Status
		}, http.StatusForbidden, "queued"},
		{"another project", "raw", func(id string) int {
			return e.other.Do("PUT", imageURL(id, "file"), []byte("x"), "Content-Type", "application/octet-stream").Status
		}, http.StatusNotFound, "queued"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := e.create(t, e.demo, map[string]any{"name": tc.name, "disk_format": tc.format, "container_format": "bare"})
			if got := tc.send(id); got != tc.status {
				t.Fatalf("upload(%s) = %d; want %d", tc.name, got, tc.status)
			}
			if st := e.image(t, id).Status; st != tc.state {
				t.Errorf("status after upload(%s) = %s; want %s", tc.name, st, tc.state)
			}
		})
	}
	// Nothing of the refused uploads is left behind.
	if blobs, _ := e.b.store.List(); len(blobs) != 0 {
		t.Errorf("blobs after refused uploads: %v", blobs)
	}

	id := e.create(t, e.demo, map[string]any{"name": "ok", "disk_format": "qcow2", "container_format": "bare"})
	if r := e.put(t, e.demo, id, qcow); r.Status != http.StatusNoContent {
		t.Fatalf("upload = %d %s", r.Status, r.Body)
	}
	if r := e.put(t, e.demo, id, qcow); r.Status != http.StatusConflict {
		t.Errorf("upload to an active image = %d; want 409", r.Status)
	}
	killed := e.create(t, e.demo, map[string]any{"name": "k", "disk_format": "qcow2", "container_format": "bare"})
	e.put(t, e.demo, killed, []byte("not qcow2"))
	if r := e.put(t, e.demo, killed, qcow); r.Status != http.StatusConflict {
		t.Errorf("upload to a killed image = %d; want 409", r.Status)
	}
	noFormat := e.create(t, e.demo, map[string]any{"name": "nf"})
	if r := e.put(t, e.demo, noFormat, qcow); r.Status != http.StatusBadRequest {
		t.Errorf("upload without disk_format = %d; want 400", r.Status)
	}
}

func TestCreateRefusals(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name   string
		body   string
		status int
	}{
		{"bad disk format", `{"name":"x","disk_format":"vmdk"}`, 400},
		{"bad container format", `{"name":"x","container_format":"ovf"}`, 400},
		{"bad visibility", `{"visibility":"everyone"}`, 400},
		{"public needs admin", `{"visibility":"public"}`, 403},
		{"read-only status", `{"status":"active"}`, 403},
		{"read-only size", `{"size":5}`, 403},
		{"non-string property", `{"hw_architecture":5}`, 400},
		{"reserved property", `{"os_glance_x":"y"}`, 403},
		{"negative min_disk", `{"min_disk":-1}`, 400},
		{"fractional min_ram", `{"min_ram":1.5}`, 400},
		{"bad id", `{"id":"../x"}`, 400},
		{"foreign owner", `{"owner":"someone-else"}`, 403},
		{"not an object", `[1]`, 400},
		{"null", `null`, 400},
		{"tags not a list", `{"tags":"a"}`, 400},
		{"long name", `{"name":"` + strings.Repeat("n", 256) + `"}`, 400},
	}
	for _, tc := range cases {
		if r := e.demo.Do("POST", "/image/v2/images", tc.body); r.Status != tc.status {
			t.Errorf("create(%s) = %d %s; want %d", tc.name, r.Status, r.Body, tc.status)
		}
	}
	if r := e.reader.Do("POST", "/image/v2/images", `{"name":"x"}`); r.Status != http.StatusForbidden {
		t.Errorf("create by a reader = %d; want 403", r.Status)
	}
	if n := len(e.b.State().Images()); n != 0 {
		t.Errorf("%d images after refused creates; want 0", n)
	}
	// Admin may publish and set an id; a duplicate id is a conflict.
	const id = "6b1ab1f4-8c1b-4a4e-9c53-2f1c2a3b4c5d"
	if r := e.admin.Do("POST", "/image/v2/images", `{"id":"`+id+`","visibility":"public","name":"pub"}`); r.Status != 201 || str(r.JSON(t), "id") != id {
		t.Fatalf("admin create with id = %d %s", r.Status, r.Body)
	}
	if r := e.admin.Do("POST", "/image/v2/images", `{"id":"`+id+`"}`); r.Status != http.StatusConflict {
		t.Errorf("duplicate id = %d; want 409", r.Status)
	}
}

func TestDeleteAndNameLookup(t *testing.T) {
	e := newEnv(t)
	id := e.create(t, e.demo, map[string]any{"name": "cirros", "disk_format": "raw", "container_format": "bare", "protected": true})
	if r := e.demo.Do("GET", imageURL("cirros"), nil); r.Status != http.StatusNotFound {
		t.Errorf("GET by name = %d; want 404", r.Status)
	}
	r := e.demo.Do("GET", "/image/v2/images?name=cirros", nil)
	if imgs := r.JSON(t)["images"].([]any); len(imgs) != 1 || str(imgs[0].(map[string]any), "id") != id {
		t.Fatalf("list ?name=cirros = %s", r.Body)
	}
	if r := e.demo.Do("DELETE", imageURL(id), nil); r.Status != http.StatusForbidden {
		t.Fatalf("delete protected = %d; want 403", r.Status)
	}
	e.put(t, e.demo, id, []byte("some raw bytes"))
	if r := e.demo.Do("PATCH", imageURL(id), `[{"op":"replace","path":"/protected","value":false}]`,
		"Content-Type", "application/openstack-images-v2.1-json-patch"); r.Status != http.StatusOK {
		t.Fatalf("unprotect = %d %s", r.Status, r.Body)
	}
	if r := e.other.Do("DELETE", imageURL(id), nil); r.Status != http.StatusNotFound {
		t.Errorf("delete by another project = %d; want 404", r.Status)
	}
	if r := e.demo.Do("DELETE", imageURL(id), nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete = %d %s; want 204", r.Status, r.Body)
	}
	// The record stays "deleted" until its holder releases the blob, but
	// the API no longer shows it.
	if img := e.image(t, id); img.Status != statedb.ImageDeleted {
		t.Errorf("record after delete = %s; want deleted", img.Status)
	}
	for _, path := range []string{imageURL(id), imageURL(id, "file")} {
		if r := e.demo.Do("GET", path, nil); r.Status != http.StatusNotFound {
			t.Errorf("GET %s after delete = %d; want 404", path, r.Status)
		}
	}
	if r := e.demo.Do("GET", "/image/v2/images", nil); len(r.JSON(t)["images"].([]any)) != 0 {
		t.Errorf("list after delete = %s", r.Body)
	}
	if r := e.demo.Do("DELETE", imageURL(id), nil); r.Status != http.StatusNotFound {
		t.Errorf("second delete = %d; want 404", r.Status)
	}
}

func TestTags(t *testing.T) {
	e := newEnv(t)
	id := e.create(t, e.demo, map[string]any{"name": "t"})
	for _, tag := range []string{"x", "y", "x"} {
		if r := e.demo.Do("PUT", imageURL(id, "tags", tag), nil); r.Status != http.StatusNoContent {
			t.Fatalf("PUT tag %s = %d", tag, r.Status)
		}
	}
	if r := e.demo.Do("DELETE", imageURL(id, "tags", "x"), nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE tag = %d", r.Status)
	}
	if r := e.demo.Do("DELETE", imageURL(id, "tags", "x"), nil); r.Status != http.StatusNotFound {
		t.Errorf("DELETE a missing tag = %d; want 404", r.Status)
	}
	if r := e.other.Do("PUT", imageURL(id, "tags", "z"), nil); r.Status != http.StatusNotFound {
		t.Errorf("tag another project's image = %d; want 404", r.Status)
	}
	if tags := e.demo.Do("GET", imageURL(id), nil).JSON(t)["tags"].([]any); len(tags) != 1 || tags[0] != "y" {
		t.Errorf("tags = %v; want [y]", tags)
	}
	if r := e.demo.Do("GET", "/image/v2/images?tag=y", nil); len(r.JSON(t)["images"].([]any)) != 1 {
		t.Errorf("list ?tag=y = %s", r.Body)
	}
	if r := e.demo.Do("GET", "/image/v2/images?tag=y&tag=x", nil); len(r.JSON(t)["images"].([]any)) != 0 {
		t.Errorf("list ?tag=y&tag=x = %s; want none (tags AND)", r.Body)
	}
}

func TestSchemas(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{"image", "images", "member", "members"} {
		r := e.demo.Do("GET", "/image/v2/schemas/"+s, nil)
		if r.Status != http.StatusOK || str(r.JSON(t), "name") != s {
			t.Errorf("GET schema %s = %d %s", s, r.Status, r.Body)
		}
	}
}

func TestInternalRoutesNeedClusterCert(t *testing.T) {
	e := newEnv(t)
	sum := strings.Repeat("a", 64)
	for _, rt := range []struct{ method, path string }{
		{"GET", "/internal/v1/blobs/" + sum}, {"POST", "/internal/v1/blobs/" + sum + "/verify"},
	} {
		if r := e.admin.Do(rt.method, rt.path, nil); r.Status != http.StatusForbidden {
			t.Errorf("%s %s without a client certificate = %d; want 403", rt.method, rt.path, r.Status)
		}
	}
}
