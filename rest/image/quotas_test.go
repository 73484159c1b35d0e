package image_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestImagePropertyBytesLimit is the abuse case at the API: properties
// under the per-value limit but over the per-image total are refused with
// 413 before anything is proposed.
func TestImagePropertyBytesLimit(t *testing.T) {
	e := newEnv(t)
	body := map[string]any{"name": "big", "disk_format": "qcow2", "container_format": "bare"}
	for i := range 14 {
		body[fmt.Sprint("prop", i)] = strings.Repeat("x", 64000)
	}
	before := e.b.State().Index
	r := e.demo.Do("POST", "/image/v2/images", body)
	if r.Status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.Body), fmt.Sprint(statedb.MaxImagePropertyBytes)) {
		t.Fatalf("create with ~900 KB of properties = %d %s, want 413 naming the limit", r.Status, r.Body)
	}
	if after := e.b.State().Index; after != before {
		t.Fatalf("a refused create reached the state: index %d -> %d", before, after)
	}

	r = e.demo.Do("POST", "/image/v2/images", map[string]any{"name": "ok", "disk_format": "qcow2", "container_format": "bare", "note": "small"})
	if r.Status != http.StatusCreated {
		t.Fatalf("small create = %d %s", r.Status, r.Body)
	}
	id, _ := r.JSON(t)["id"].(string)
	ops := []map[string]any{}
	for i := range 3 {
		ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprint("/p", i), "value": strings.Repeat("y", statedb.MaxImagePropertyBytes/3)})
	}
	before = e.b.State().Index
	r = e.demo.Do("PATCH", "/image/v2/images/"+id, ops, "Content-Type", patchCT)
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("patch over the byte limit = %d %s, want 413", r.Status, r.Body)
	}
	if after := e.b.State().Index; after != before {
		t.Fatalf("a refused patch reached the state: index %d -> %d", before, after)
	}

	// A patch body over the image body limit is refused before it is read
	// to its end, naming the limits.
	ops = ops[:0]
	for i := range 10 {
		ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprint("/q", i), "value": strings.Repeat("z", 60000)})
	}
	r = e.demo.Do("PATCH", "/image/v2/images/"+id, ops, "Content-Type", patchCT)
	if r.Status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.Body), "524288") {
		t.Fatalf("patch over the body limit = %d %s, want 413 naming 524288 bytes", r.Status, r.Body)
	}
	if after := e.b.State().Index; after != before {
		t.Fatalf("a refused patch reached the state: index %d -> %d", before, after)
	}
}

// The largest valid image, every byte of its properties and tags escaped
// as JSON clients escape them (\u0026), still fits the body limit.
func TestImageLargestValidBodyFits(t *testing.T) {
	e := newEnv(t)
	body := map[string]any{"name": "big", "disk_format": "qcow2", "container_format": "bare"}
	// 32 properties of 1000 bytes of '&' (keys and values within the limit).
	for i := range 32 {
		body[fmt.Sprintf("p%02d", i)] = strings.Repeat("&", statedb.MaxImagePropertyBytes/32-4)
	}
	var tags []string
	for i := range 128 {
		tags = append(tags, fmt.Sprintf("%03d", i)+strings.Repeat("&", 252))
	}
	body["tags"] = tags
	if r := e.demo.Do("POST", "/image/v2/images", body); r.Status != http.StatusCreated {
		t.Fatalf("largest valid image = %d %s; want 201", r.Status, r.Body)
	}
}
