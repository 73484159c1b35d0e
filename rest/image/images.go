package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Limits on extra properties (Glance's).
const (
	maxPropKey   = 255
	maxPropValue = 65535
	maxProps     = 128
)

// Pagination limits (Glance's defaults).
const (
	defaultLimit = 25
	maxLimit     = 1000
)

// fieldError is a 400 naming the attribute.
func fieldError(key, want string) error {
	return rest.BadRequest("Invalid value for '%s': expected %s.", key, want)
}

func jsonNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// decodeString reads a JSON string (or null when nullable, giving "").
func decodeString(key string, raw json.RawMessage, nullable bool) (string, error) {
	if nullable && jsonNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldError(key, "a string")
	}
	return s, nil
}

// decodeBool reads a boolean. Glance's schema takes JSON booleans only:
// "true" is refused.
func decodeBool(key string, raw json.RawMessage) (bool, error) {
	v, err := rest.JSONBool.Bool(key, raw)
	if err != nil {
		return false, schemaError(err)
	}
	return v, nil
}

// decodeCount reads a non-negative 32-bit integer (min_disk, min_ram).
// Glance's schema takes JSON integers only: "1" is refused.
func decodeCount(key string, raw json.RawMessage) (int, error) {
	n, err := rest.JSONInt.Int(key, raw)
	if err != nil {
		return 0, schemaError(err)
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, rest.BadRequest("Provided object does not match schema 'image': %d is not between 0 and %d (field %s)", n, math.MaxInt32, key)
	}
	return int(n), nil
}

// schemaError is Glance's 400 for a value its image schema refuses.
func schemaError(err error) error {
	var fe *rest.FormError
	if errors.As(err, &fe) {
		return rest.BadRequest("Provided object does not match schema 'image': %s (field %s)", fe.Reason, fe.Field)
	}
	return err
}

func decodeTags(raw json.RawMessage) ([]string, error) {
	var tags []string
	if err := json.Unmarshal(raw, &tags); err != nil || tags == nil && !jsonNull(raw) {
		return nil, fieldError("tags", "a list of strings")
	}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return nil, err
		}
	}
	if len(tags) > statedb.MaxImageTags {
		return nil, rest.BadRequest("An image may have at most %d tags.", statedb.MaxImageTags)
	}
	return tags, nil
}

func checkTag(t string) error {
	if t == "" || len(t) > 255 {
		return rest.BadRequest("Image tags must be 1 to 255 characters.")
	}
	return nil
}

// checkProperty validates an extra property's name and value.
func checkProperty(key, value string) error {
	switch {
	case key == "" || len(key) > maxPropKey:
		return rest.BadRequest("Property names must be 1 to %d characters.", maxPropKey)
	case strings.HasPrefix(key, "os_glance"):
		return rest.Forbiddenf("Attribute '%s' is reserved.", key)
	case len(value) > maxPropValue:
		return rest.BadRequest("Property '%s' is longer than %d characters.", key, maxPropValue)
	}
	return nil
}

// maxImageBody bounds image create and update bodies. The hard limits on
// properties (32 KiB) and tags (128 of 255 bytes) keep every valid body
// below it even with every byte JSON-escaped (\u0026 is 6 bytes: about
// 390 KiB); a bigger one is refused before it is read further, so a flood
// of oversized creates costs the daemon little memory.
const maxImageBody = 512 << 10

// decodeImageBody reads an image create or update body of at most
// maxImageBody bytes, naming the limits when it is over.
func decodeImageBody(c *rest.Ctx, v any) error {
	err := c.DecodeLimit(v, maxImageBody)
	var he *rest.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusRequestEntityTooLarge {
		return &rest.HTTPError{Status: he.Status, Msg: fmt.Sprintf("Request body too large: image bodies are limited to %d bytes, an image's extra properties to %d bytes.", maxImageBody, statedb.MaxImagePropertyBytes)}
	}
	return err
}

// create serves POST /v2/images: a flat JSON body; unknown string keys
// become extra properties.
func (s *service) create(c *rest.Ctx) (any, error) {
	var body map[string]json.RawMessage
	if err := decodeImageBody(c, &body); err != nil {
		return nil, err
	}
	if body == nil {
		return nil, rest.BadRequest("The request body must be a JSON object.")
	}
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	img := statedb.Image{ID: s.b.NewID(), ProjectID: c.Cred.ProjectID, Visibility: "shared", Properties: map[string]string{}}
	for key, raw := range body {
		var err error
		switch key {
		case "id":
			var id string
			if id, err = decodeString(key, raw, false); err == nil {
				if _, perr := uuid.Parse(id); perr != nil || len(id) != 36 {
					err = fieldError(key, "a UUID")
				}
				img.ID = strings.ToLower(id)
			}
		case "name":
			img.Name, err = decodeString(key, raw, true)
		case "disk_format":
			img.DiskFormat, err = decodeString(key, raw, true)
		case "container_format":
			img.ContainerFormat, err = decodeString(key, raw, true)
		case "visibility":
			img.Visibility, err = decodeString(key, raw, false)
		case "owner":
			var owner string
			if owner, err = decodeString(key, raw, true); err == nil && owner != "" {
				if owner != c.Cred.ProjectID && !isAdmin(c) {
					err = rest.Forbiddenf("You are not permitted to create images owned by '%s'.", owner)
				}
				img.ProjectID = owner
			}
		case "protected":
			img.Protected, err = decodeBool(key, raw)
		case "os_hidden":
			img.Hidden, err = decodeBool(key, raw)
		case "min_disk":
			img.MinDiskGB, err = decodeCount(key, raw)
		case "min_ram":
			img.MinRAMMB, err = decodeCount(key, raw)
		case "tags":
			img.Tags, err = decodeTags(raw)
		default:
			if readOnlyKeys[key] || coreKeys[key] {
				err = rest.Forbiddenf("Attribute '%s' is read-only.", key)
				break
			}
			var v string
			if v, err = decodeString(key, raw, false); err == nil {
				err = checkProperty(key, v)
				img.Properties[key] = v
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if len(img.Properties) > maxProps {
		return nil, tooLarge("An image may have at most %d extra properties.", maxProps)
	}
	if err := statedb.CheckImageProperties(img.Properties); err != nil {
		return nil, tooLarge("%s", err.Error())
	}
	if err := validateAttrs(c, &img, true); err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Write, img.ProjectID, false, "Project "+img.ProjectID); err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateImage, img); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Image(img.ID)
	if !ok {
		return nil, fmt.Errorf("image %s vanished after create", img.ID)
	}
	return &rest.Response{Status: http.StatusCreated, Body: imageView(got),
		Header: http.Header{"Location": {rest.BaseURL(c.R) + "/image/v2/images/" + got.ID}}}, nil
}

// validateAttrs checks the enumerated attributes and who may publish.
// publish says whether the image is being made public by this request.
func validateAttrs(c *rest.Ctx, img *statedb.Image, publish bool) error {
	switch {
	case !statedb.ValidImageDiskFormat(img.DiskFormat):
		return rest.BadRequest("Invalid disk format '%s' for image (qcow2, raw or iso).", img.DiskFormat)
	case !statedb.ValidImageContainerFormat(img.ContainerFormat):
		return rest.BadRequest("Invalid container format '%s' for image (bare).", img.ContainerFormat)
	case !statedb.ValidImageVisibility(img.Visibility):
		return rest.BadRequest("Invalid visibility value: %s", img.Visibility)
	case len(img.Name) > 255:
		return rest.BadRequest("Image name is longer than 255 characters.")
	case publish && img.Visibility == "public" && !isAdmin(c):
		return rest.Forbiddenf("You are not authorized to publicize images.")
	}
	return nil
}

// show serves GET /v2/images/{id}; a name or a hidden image is a 404.
func (s *service) show(c *rest.Ctx) (any, error) {
	img, err := s.loadImage(c, rest.Read)
	if err != nil {
		return nil, err
	}
	return imageView(img), nil
}

// delete serves DELETE /v2/images/{id}: 204; protected is 403.
func (s *service) delete(c *rest.Ctx) (any, error) {
	img, err := s.loadImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	if img.Protected {
		return nil, rest.Forbiddenf("Image %s is protected and cannot be deleted.", img.ID)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteImage, statedb.ImageRef{ID: img.ID}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}

func (s *service) addTag(c *rest.Ctx) (any, error) {
	img, err := s.loadImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	tag := c.Var("tag")
	if err := checkTag(tag); err != nil {
		return nil, err
	}
	if !slices.Contains(img.Tags, tag) && len(img.Tags) >= statedb.MaxImageTags {
		return nil, tooLarge("An image may have at most %d tags.", statedb.MaxImageTags)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdAddImageTag, statedb.ImageTagCmd{ID: img.ID, Tag: tag}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}

func (s *service) removeTag(c *rest.Ctx) (any, error) {
	img, err := s.loadImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRemoveImageTag, statedb.ImageTagCmd{ID: img.ID, Tag: c.Var("tag")}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}

// listQuery is a parsed GET /v2/images query.
type listQuery struct {
	name, status, visibility, owner, memberStatus string
	diskFormat, containerFormat                   string
	hidden                                        *bool
	tags                                          []string
	sortKeys                                      []string
	sortDirs                                      []bool // true = descending
	limit                                         int
	marker                                        string
}

var sortKeys = map[string]bool{
	"name": true, "status": true, "container_format": true, "disk_format": true, "size": true, "id": true,
	"created_at": true, "updated_at": true, "visibility": true, "min_disk": true, "min_ram": true,
	"owner": true, "virtual_size": true,
}

func parseListQuery(q url.Values) (*listQuery, error) {
	lq := &listQuery{name: q.Get("name"), status: q.Get("status"), visibility: q.Get("visibility"), owner: q.Get("owner"),
		memberStatus: q.Get("member_status"), diskFormat: q.Get("disk_format"), containerFormat: q.Get("container_format"),
		tags: q["tag"], marker: q.Get("marker"), limit: defaultLimit}
	switch lq.visibility {
	case "", "public", "private", "shared", "community", "all":
	default:
		return nil, rest.BadRequest("Invalid visibility value: %s", lq.visibility)
	}
	switch lq.memberStatus {
	case "":
		lq.memberStatus = statedb.ImageMemberAccepted
	case "pending", "accepted", "rejected", "all":
	default:
		return nil, rest.BadRequest("Invalid status value: %s", lq.memberStatus)
	}
	if v := q.Get("os_hidden"); v != "" {
		h, err := strconv.ParseBool(v)
		if err != nil {
			return nil, rest.BadRequest("Invalid value for os_hidden: %s", v)
		}
		lq.hidden = &h
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, rest.BadRequest("limit param must be a non-negative integer")
		}
		lq.limit = min(n, maxLimit)
	}
	// sort=key:dir,key2 or sort_key=k (repeated) with sort_dir=d (one or one per key).
	if v := q.Get("sort"); v != "" {
		if len(q["sort_key"]) > 0 || len(q["sort_dir"]) > 0 {
			return nil, rest.BadRequest("The 'sort' parameter cannot be combined with sort_key or sort_dir.")
		}
		for _, part := range strings.Split(v, ",") {
			key, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
			lq.sortKeys = append(lq.sortKeys, key)
			if dir == "" {
				dir = "desc"
			}
			if dir != "asc" && dir != "desc" {
				return nil, rest.BadRequest("Invalid sort direction: %s", dir)
			}
			lq.sortDirs = append(lq.sortDirs, dir == "desc")
		}
	} else {
		lq.sortKeys = q["sort_key"]
		dirs := q["sort_dir"]
		if len(dirs) > 1 && len(dirs) != len(lq.sortKeys) {
			return nil, rest.BadRequest("Number of sort dirs does not match the number of sort keys")
		}
		for i := range max(len(lq.sortKeys), 1) {
			d := "desc"
			switch {
			case len(dirs) == 1:
				d = dirs[0]
			case len(dirs) > i:
				d = dirs[i]
			}
			if d != "asc" && d != "desc" {
				return nil, rest.BadRequest("Invalid sort direction: %s", d)
			}
			lq.sortDirs = append(lq.sortDirs, d == "desc")
		}
	}
	if len(lq.sortKeys) == 0 {
		lq.sortKeys = []string{"created_at"}
	}
	for _, k := range lq.sortKeys {
		if !sortKeys[k] {
			return nil, rest.BadRequest("Invalid sort key: %s", k)
		}
	}
	return lq, nil
}

// listed decides whether an image belongs in the caller's list.
func (s *service) listed(c *rest.Ctx, img *statedb.Image, lq *listQuery) bool {
	if img.Status == statedb.ImageDeleted {
		return false
	}
	own := c.Cred.ProjectID == img.ProjectID
	public := false
	switch img.Visibility {
	case "public":
		public = true
	case "community":
		// Community images are listed only when asked for (or one's own).
		public = lq.visibility == "community" || lq.visibility == "all" || own
	case "shared":
		if ms := img.MemberStatus(c.Cred.ProjectID); ms != "" && !own {
			public = lq.memberStatus == "all" || ms == lq.memberStatus
		}
	}
	if !rest.Visible(s.b, c, img.ProjectID, public) {
		return false
	}
	switch {
	case lq.visibility != "" && lq.visibility != "all" && img.Visibility != lq.visibility,
		lq.name != "" && img.Name != lq.name,
		lq.status != "" && img.Status != lq.status,
		lq.owner != "" && img.ProjectID != lq.owner,
		lq.diskFormat != "" && img.DiskFormat != lq.diskFormat,
		lq.containerFormat != "" && img.ContainerFormat != lq.containerFormat,
		lq.hidden != nil && img.Hidden != *lq.hidden,
		lq.hidden == nil && img.Hidden:
		return false
	}
	for _, t := range lq.tags {
		if !slices.Contains(img.Tags, t) {
			return false
		}
	}
	return true
}

// compareBy compares two images on one sort key.
func compareBy(key string, a, b *statedb.Image) int {
	switch key {
	case "name":
		return strings.Compare(a.Name, b.Name)
	case "status":
		return strings.Compare(a.Status, b.Status)
	case "container_format":
		return strings.Compare(a.ContainerFormat, b.ContainerFormat)
	case "disk_format":
		return strings.Compare(a.DiskFormat, b.DiskFormat)
	case "visibility":
		return strings.Compare(a.Visibility, b.Visibility)
	case "owner":
		return strings.Compare(a.ProjectID, b.ProjectID)
	case "size":
		return cmpInt(a.Size, b.Size)
	case "virtual_size":
		return cmpInt(a.VirtualSize, b.VirtualSize)
	case "min_disk":
		return cmpInt(int64(a.MinDiskGB), int64(b.MinDiskGB))
	case "min_ram":
		return cmpInt(int64(a.MinRAMMB), int64(b.MinRAMMB))
	case "created_at":
		return a.CreatedAt.Compare(b.CreatedAt)
	case "updated_at":
		return a.UpdatedAt.Compare(b.UpdatedAt)
	}
	return strings.Compare(a.ID, b.ID)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// order is the total order of a listing: the sort keys, then id.
func (lq *listQuery) order(a, b *statedb.Image) int {
	for i, k := range lq.sortKeys {
		if c := compareBy(k, a, b); c != 0 {
			if lq.sortDirs[min(i, len(lq.sortDirs)-1)] {
				return -c
			}
			return c
		}
	}
	c := strings.Compare(a.ID, b.ID)
	if lq.sortDirs[len(lq.sortDirs)-1] {
		return -c
	}
	return c
}

// list serves GET /v2/images with filters, sorting and marker paging.
func (s *service) list(c *rest.Ctx) (any, error) {
	q := c.R.URL.Query()
	lq, err := parseListQuery(q)
	if err != nil {
		return nil, err
	}
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	sn := s.b.State()
	var imgs []*statedb.Image
	for _, img := range sn.Images() {
		if s.listed(c, img, lq) {
			imgs = append(imgs, img)
		}
	}
	slices.SortFunc(imgs, lq.order)
	if lq.marker != "" {
		m, ok := sn.Image(lq.marker)
		if !ok || m.Status == statedb.ImageDeleted || s.check(c, m, rest.Read) != nil {
			return nil, rest.BadRequest("marker %s not found", lq.marker)
		}
		i, _ := slices.BinarySearchFunc(imgs, m, lq.order)
		for i < len(imgs) && lq.order(imgs[i], m) <= 0 {
			i++
		}
		imgs = imgs[i:]
	}
	page := imgs[:min(lq.limit, len(imgs))]
	out := make([]map[string]any, 0, len(page))
	for _, img := range page {
		out = append(out, imageView(img))
	}
	first := url.Values{}
	for k, v := range q {
		if k != "marker" {
			first[k] = v
		}
	}
	resp := map[string]any{"images": out, "first": "/v2/images", "schema": "/v2/schemas/images"}
	if len(first) > 0 {
		resp["first"] = "/v2/images?" + first.Encode()
	}
	if len(page) > 0 && len(page) < len(imgs) {
		next := url.Values{}
		for k, v := range first {
			next[k] = v
		}
		next.Set("marker", page[len(page)-1].ID)
		resp["next"] = "/v2/images?" + next.Encode()
	}
	return resp, nil
}
