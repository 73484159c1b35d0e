package image

import (
	"encoding/json"
	"maps"
	"mime"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// patchOp is one JSON-patch operation (RFC 6902, as Glance takes it).
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

// patchTarget is the part of an image a patch may change.
type patchTarget struct {
	name, visibility, diskFormat, containerFormat string
	protected, hidden                             bool
	minDisk, minRAM                               int
	tags                                          []string
	props                                         map[string]string
}

func targetOf(img *statedb.Image) *patchTarget {
	return &patchTarget{name: img.Name, visibility: img.Visibility, diskFormat: img.DiskFormat,
		containerFormat: img.ContainerFormat, protected: img.Protected, hidden: img.Hidden,
		minDisk: img.MinDiskGB, minRAM: img.MinRAMMB, tags: slices.Clone(img.Tags), props: maps.Clone(img.Properties)}
}

// patchKey turns a JSON pointer of one segment into the attribute name.
func patchKey(path string) (string, error) {
	if !strings.HasPrefix(path, "/") || strings.Count(path, "/") != 1 || len(path) < 2 {
		return "", rest.BadRequest("Invalid JSON pointer for this resource: '%s'", path)
	}
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(path[1:]), nil
}

// apply runs one operation on the target.
func (t *patchTarget) apply(op patchOp) error {
	switch op.Op {
	case "add", "replace", "remove":
	default:
		return rest.BadRequest("Unable to find '%s' in JSON Schema change; op must be add, replace or remove.", op.Op)
	}
	key, err := patchKey(op.Path)
	if err != nil {
		return err
	}
	if op.Op != "remove" && op.Value == nil {
		return rest.BadRequest("Operation '%s' on '%s' needs a value.", op.Op, key)
	}
	if readOnlyKeys[key] || key == "id" || key == "owner" {
		return rest.Forbiddenf("Attribute '%s' is read-only.", key)
	}
	if coreKeys[key] {
		if op.Op == "remove" {
			return rest.Forbiddenf("Properties %s cannot be removed.", key)
		}
		return t.setCore(key, op.Value)
	}
	switch op.Op {
	case "remove":
		if _, ok := t.props[key]; !ok {
			return rest.Conflictf("Property %s does not exist.", key)
		}
		delete(t.props, key)
		return nil
	case "replace":
		if _, ok := t.props[key]; !ok {
			return rest.Conflictf("Property %s does not exist.", key)
		}
	}
	v, err := decodeString(key, op.Value, false)
	if err != nil {
		return err
	}
	if err := checkProperty(key, v); err != nil {
		return err
	}
	if t.props == nil {
		t.props = map[string]string{}
	}
	t.props[key] = v
	if len(t.props) > maxProps {
		return tooLarge("An image may have at most %d extra properties.", maxProps)
	}
	if err := statedb.CheckImageProperties(t.props); err != nil {
		return tooLarge("%s", err.Error())
	}
	return nil
}

func (t *patchTarget) setCore(key string, raw json.RawMessage) error {
	var err error
	switch key {
	case "name":
		t.name, err = decodeString(key, raw, true)
	case "visibility":
		t.visibility, err = decodeString(key, raw, false)
	case "disk_format":
		t.diskFormat, err = decodeString(key, raw, true)
	case "container_format":
		t.containerFormat, err = decodeString(key, raw, true)
	case "protected":
		t.protected, err = decodeBool(key, raw)
	case "os_hidden":
		t.hidden, err = decodeBool(key, raw)
	case "min_disk":
		t.minDisk, err = decodeCount(key, raw)
	case "min_ram":
		t.minRAM, err = decodeCount(key, raw)
	case "tags":
		t.tags, err = decodeTags(raw)
	default:
		err = rest.Forbiddenf("Attribute '%s' is read-only.", key)
	}
	return err
}

// diff builds the command that turns img into t.
func (t *patchTarget) diff(img *statedb.Image) statedb.UpdateImageCmd {
	u := statedb.UpdateImageCmd{ID: img.ID}
	if t.name != img.Name {
		u.Name = &t.name
	}
	if t.visibility != img.Visibility {
		u.Visibility = &t.visibility
	}
	if t.diskFormat != img.DiskFormat {
		u.DiskFormat = &t.diskFormat
	}
	if t.containerFormat != img.ContainerFormat {
		u.ContainerFormat = &t.containerFormat
	}
	if t.protected != img.Protected {
		u.Protected = &t.protected
	}
	if t.hidden != img.Hidden {
		u.Hidden = &t.hidden
	}
	if t.minDisk != img.MinDiskGB {
		u.MinDiskGB = &t.minDisk
	}
	if t.minRAM != img.MinRAMMB {
		u.MinRAMMB = &t.minRAM
	}
	if !slices.Equal(t.tags, img.Tags) {
		tags := t.tags
		if tags == nil {
			tags = []string{}
		}
		u.Tags = &tags
	}
	for k, v := range t.props {
		if old, ok := img.Properties[k]; !ok || old != v {
			if u.SetProps == nil {
				u.SetProps = map[string]string{}
			}
			u.SetProps[k] = v
		}
	}
	for k := range img.Properties {
		if _, ok := t.props[k]; !ok {
			u.RemoveProps = append(u.RemoveProps, k)
		}
	}
	slices.Sort(u.RemoveProps)
	return u
}

// update serves PATCH /v2/images/{id} with a JSON-patch document.
func (s *service) update(c *rest.Ctx) (any, error) {
	mt, _, _ := mime.ParseMediaType(c.R.Header.Get("Content-Type"))
	if mt != patchV21 && mt != patchV20 {
		return nil, unsupportedMedia("Content-Type must be %s.", patchV21)
	}
	img, err := s.loadImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	var ops []patchOp
	if err := decodeImageBody(c, &ops); err != nil {
		return nil, err
	}
	t := targetOf(img)
	for _, op := range ops {
		if err := t.apply(op); err != nil {
			return nil, err
		}
	}
	if t.diskFormat != img.DiskFormat || t.containerFormat != img.ContainerFormat {
		if img.Status != statedb.ImageQueued {
			return nil, rest.Forbiddenf("disk_format and container_format can only be changed while the image is queued.")
		}
	}
	probe := statedb.Image{Name: t.name, DiskFormat: t.diskFormat, ContainerFormat: t.containerFormat, Visibility: t.visibility}
	if err := validateAttrs(c, &probe, t.visibility != img.Visibility); err != nil {
		return nil, err
	}
	u := t.diff(img)
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateImage, u); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Image(img.ID)
	if !ok || got.Status == statedb.ImageDeleted {
		return nil, rest.NotFoundf("No image found with ID %s", img.ID)
	}
	return imageView(got), nil
}
