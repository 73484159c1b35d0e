package image

import (
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// coreKeys are the attributes of the image object; no extra property may
// take their names.
var coreKeys = map[string]bool{
	"id": true, "name": true, "status": true, "visibility": true, "protected": true, "os_hidden": true,
	"disk_format": true, "container_format": true, "min_disk": true, "min_ram": true, "size": true,
	"virtual_size": true, "checksum": true, "os_hash_algo": true, "os_hash_value": true, "owner": true,
	"tags": true, "created_at": true, "updated_at": true, "self": true, "file": true, "schema": true,
	"locations": true, "direct_url": true, "stores": true, "deleted": true, "deleted_at": true,
}

// readOnlyKeys are core attributes no request may set.
var readOnlyKeys = map[string]bool{
	"status": true, "size": true, "virtual_size": true, "checksum": true, "os_hash_algo": true,
	"os_hash_value": true, "created_at": true, "updated_at": true, "self": true, "file": true,
	"schema": true, "locations": true, "direct_url": true, "stores": true, "deleted": true, "deleted_at": true,
}

// orNull returns nil for "" so the JSON says null, as Glance does for
// unset attributes.
func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// imageView is the flat Glance image object; extra properties are
// top-level keys.
func imageView(img *statedb.Image) map[string]any {
	m := make(map[string]any, len(img.Properties)+24)
	for k, v := range img.Properties {
		m[k] = v
	}
	tags := img.Tags
	if tags == nil {
		tags = []string{}
	}
	var size, vsize any
	if img.Status == statedb.ImageActive {
		size, vsize = img.Size, img.VirtualSize
	}
	m["id"] = img.ID
	m["name"] = orNull(img.Name)
	m["status"] = img.Status
	m["visibility"] = img.Visibility
	m["protected"] = img.Protected
	m["os_hidden"] = img.Hidden
	m["disk_format"] = orNull(img.DiskFormat)
	m["container_format"] = orNull(img.ContainerFormat)
	m["min_disk"] = img.MinDiskGB
	m["min_ram"] = img.MinRAMMB
	m["size"] = size
	m["virtual_size"] = vsize
	m["checksum"] = orNull(img.Checksum)
	m["os_hash_algo"] = orNull(img.HashAlgo)
	m["os_hash_value"] = orNull(img.HashValue)
	m["owner"] = img.ProjectID
	m["tags"] = tags
	m["created_at"] = img.CreatedAt.UTC().Format(timeFormat)
	m["updated_at"] = img.UpdatedAt.UTC().Format(timeFormat)
	m["self"] = "/v2/images/" + img.ID
	m["file"] = "/v2/images/" + img.ID + "/file"
	m["schema"] = "/v2/schemas/image"
	return m
}

// memberView is a Glance image member.
func memberView(imageID string, m statedb.ImageMember) map[string]any {
	return map[string]any{
		"image_id": imageID, "member_id": m.ProjectID, "status": m.Status,
		"created_at": m.CreatedAt.UTC().Format(timeFormat), "updated_at": m.UpdatedAt.UTC().Format(timeFormat),
		"schema": "/v2/schemas/member",
	}
}

// imageSchema is a minimal JSON schema of the image object.
func imageSchema() map[string]any {
	str := map[string]any{"type": []string{"null", "string"}}
	integer := map[string]any{"type": []string{"null", "integer"}, "minimum": 0}
	props := map[string]any{
		"id":               map[string]any{"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
		"name":             map[string]any{"type": []string{"null", "string"}, "maxLength": 255},
		"status":           map[string]any{"type": "string", "readOnly": true, "enum": []string{"queued", "saving", "active", "killed", "deleted"}},
		"visibility":       map[string]any{"type": "string", "enum": []string{"community", "public", "private", "shared"}},
		"protected":        map[string]any{"type": "boolean"},
		"os_hidden":        map[string]any{"type": "boolean"},
		"disk_format":      map[string]any{"type": []string{"null", "string"}, "enum": []any{nil, "qcow2", "raw", "iso"}},
		"container_format": map[string]any{"type": []string{"null", "string"}, "enum": []any{nil, "bare"}},
		"min_disk":         integer,
		"min_ram":          integer,
		"size":             map[string]any{"type": []string{"null", "integer"}, "readOnly": true},
		"virtual_size":     map[string]any{"type": []string{"null", "integer"}, "readOnly": true},
		"checksum":         str,
		"os_hash_algo":     str,
		"os_hash_value":    str,
		"owner":            str,
		"tags":             map[string]any{"type": "array", "items": map[string]any{"type": "string", "maxLength": 255}},
		"created_at":       map[string]any{"type": "string", "readOnly": true},
		"updated_at":       map[string]any{"type": "string", "readOnly": true},
		"self":             map[string]any{"type": "string", "readOnly": true},
		"file":             map[string]any{"type": "string", "readOnly": true},
		"schema":           map[string]any{"type": "string", "readOnly": true},
	}
	return map[string]any{
		"name": "image", "properties": props, "additionalProperties": map[string]any{"type": "string"},
		"links": []map[string]string{
			{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"}, {"rel": "describedby", "href": "{schema}"},
		},
	}
}

func (s *service) schemaImage(*rest.Ctx) (any, error) { return imageSchema(), nil }

func (s *service) schemaImages(*rest.Ctx) (any, error) {
	return map[string]any{
		"name": "images",
		"properties": map[string]any{
			"images": map[string]any{"type": "array", "items": imageSchema()},
			"schema": map[string]any{"type": "string"}, "first": map[string]any{"type": "string"},
			"next": map[string]any{"type": "string"},
		},
		"links": []map[string]string{{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, {"rel": "describedby", "href": "{schema}"}},
	}, nil
}

func memberSchema() map[string]any {
	return map[string]any{
		"name": "member",
		"properties": map[string]any{
			"image_id": map[string]any{"type": "string"}, "member_id": map[string]any{"type": "string"},
			"status":     map[string]any{"type": "string", "enum": []string{"pending", "accepted", "rejected"}},
			"created_at": map[string]any{"type": "string"}, "updated_at": map[string]any{"type": "string"},
			"schema": map[string]any{"type": "string", "readOnly": true},
		},
	}
}

func (s *service) schemaMember(*rest.Ctx) (any, error) { return memberSchema(), nil }

func (s *service) schemaMembers(*rest.Ctx) (any, error) {
	return map[string]any{
		"name": "members",
		"properties": map[string]any{
			"members": map[string]any{"type": "array", "items": memberSchema()},
			"schema":  map[string]any{"type": "string"},
		},
		"links": []map[string]string{{"rel": "describedby", "href": "{schema}"}},
	}, nil
}
