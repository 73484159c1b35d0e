package compute

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// flavorView is a flavor at microversion 2.1.
type flavorView struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	RAM        int     `json:"ram"`
	Disk       int     `json:"disk"`
	VCPUs      int     `json:"vcpus"`
	Swap       any     `json:"swap"` // "" when none, as Nova
	Ephemeral  int     `json:"OS-FLV-EXT-DATA:ephemeral"`
	Disabled   bool    `json:"OS-FLV-DISABLED:disabled"`
	IsPublic   bool    `json:"os-flavor-access:is_public"`
	RxTxFactor float64 `json:"rxtx_factor"`
	Links      []link  `json:"links"`
	// From 2.55 and 2.61 (present, possibly null or empty).
	Description *any               `json:"description,omitempty"`
	ExtraSpecs  *map[string]string `json:"extra_specs,omitempty"`
}

type flavorBrief struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Links []link `json:"links"`
}

func (s *service) flavorView(c *rest.Ctx, sn *statedb.Snapshot, f *statedb.Flavor) flavorView {
	var swap any = ""
	if f.SwapMB > 0 {
		swap = f.SwapMB
	}
	rx := f.RxTxFactor
	if rx == 0 {
		rx = 1
	}
	v := flavorView{ID: f.ID, Name: f.Name, RAM: f.RAMMB, Disk: f.DiskGB, VCPUs: f.VCPUs, Swap: swap,
		Ephemeral: f.EphemeralGB, Disabled: f.Disabled, IsPublic: f.Public, RxTxFactor: rx,
		Links: flavorLinks(c, sn, f.ID)}
	if atLeast(c, 2, 55) {
		var d any
		if f.Description != "" {
			d = f.Description
		}
		v.Description = &d
	}
	if atLeast(c, 2, 61) {
		es := map[string]string{}
		for k, x := range f.ExtraSpecs {
			es[k] = x
		}
		v.ExtraSpecs = &es
	}
	return v
}

func flavorLinks(c *rest.Ctx, sn *statedb.Snapshot, id string) []link {
	b := base(c, sn) + "/compute"
	return []link{{Rel: "self", Href: b + "/v2.1/flavors/" + id}, {Rel: "bookmark", Href: b + "/flavors/" + id}}
}

// flavorVisible reports whether the caller may see a flavor: public ones
// to everyone, private ones to admins and the projects on its access list.
func (s *service) flavorVisible(c *rest.Ctx, f *statedb.Flavor) bool {
	if f.Public || s.isAdmin(c) {
		return true
	}
	return c.Cred != nil && slices.Contains(f.Projects, c.Cred.ProjectID)
}

// flavor finds a flavor the caller may see, or 404.
func (s *service) flavor(c *rest.Ctx, sn *statedb.Snapshot) (*statedb.Flavor, error) {
	id := c.Var("flavor_id")
	if err := rest.Check(s.b, c, rest.Read, "", false, "Flavor "+id); err != nil {
		return nil, err
	}
	f, ok := sn.Flavor(id)
	if !ok || !s.flavorVisible(c, f) {
		return nil, rest.NotFoundf("Flavor %s could not be found.", id)
	}
	return f, nil
}

// visibleFlavors applies Nova's list rules: admins choose with is_public
// (absent or True: public, False: private, None: all); everyone else sees
// public flavors and the private ones shared with their project.
func (s *service) visibleFlavors(c *rest.Ctx, sn *statedb.Snapshot) ([]*statedb.Flavor, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "Flavors"); err != nil {
		return nil, err
	}
	q := c.R.URL.Query()
	admin := s.isAdmin(c)
	var public *bool
	if admin {
		t := true
		public = &t
		if q.Has("is_public") {
			v := q.Get("is_public")
			if strings.EqualFold(v, "none") {
				public = nil
			} else if b, ok := queryBool(v); ok {
				public = &b
			} else {
				return nil, rest.BadRequest("Invalid is_public filter [%s]", v)
			}
		}
	}
	minRAM, err := queryInt(c, "minRam")
	if err != nil {
		return nil, err
	}
	minDisk, err := queryInt(c, "minDisk")
	if err != nil {
		return nil, err
	}
	var out []*statedb.Flavor
	for _, f := range sn.Flavors() {
		switch {
		case admin && public != nil && f.Public != *public:
			continue
		case !s.flavorVisible(c, f):
			continue
		case f.RAMMB < minRAM || f.DiskGB < minDisk:
			continue
		}
		out = append(out, f)
	}
	sort.SliceStable(out, func(i, j int) bool { return lessFlavorID(out[i].ID, out[j].ID) })
	return paginate(c, out, func(f *statedb.Flavor) string { return f.ID })
}

// lessFlavorID orders numeric ids numerically, before the others.
func lessFlavorID(a, b string) bool {
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	switch {
	case ea == nil && eb == nil:
		return na < nb
	case ea == nil:
		return true
	case eb == nil:
		return false
	}
	return a < b
}

func queryInt(c *rest.Ctx, name string) (int, error) {
	v := c.Query(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, rest.BadRequest("Invalid %s filter [%s]", name, v)
	}
	return n, nil
}

// paginate applies limit and marker (the id of the last item seen).
func paginate[T any](c *rest.Ctx, xs []T, id func(T) string) ([]T, error) {
	if m := c.Query("marker"); m != "" {
		i := slices.IndexFunc(xs, func(x T) bool { return id(x) == m })
		if i < 0 {
			return nil, rest.BadRequest("marker [%s] not found", m)
		}
		xs = xs[i+1:]
	}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, rest.BadRequest("limit param must be an integer")
		}
		if n < len(xs) {
			xs = xs[:n]
		}
	}
	return xs, nil
}

func (s *service) listFlavors(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	fs, err := s.visibleFlavors(c, sn)
	if err != nil {
		return nil, err
	}
	out := make([]flavorBrief, 0, len(fs))
	for _, f := range fs {
		out = append(out, flavorBrief{ID: f.ID, Name: f.Name, Links: flavorLinks(c, sn, f.ID)})
	}
	return map[string]any{"flavors": out}, nil
}

func (s *service) listFlavorsDetail(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	fs, err := s.visibleFlavors(c, sn)
	if err != nil {
		return nil, err
	}
	out := make([]flavorView, 0, len(fs))
	for _, f := range fs {
		out = append(out, s.flavorView(c, sn, f))
	}
	return map[string]any{"flavors": out}, nil
}

func (s *service) getFlavor(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	f, err := s.flavor(c, sn)
	if err != nil {
		return nil, err
	}
	return map[string]any{"flavor": s.flavorView(c, sn, f)}, nil
}

// flavorCreateReq is Nova's flavor create body at 2.1.
type flavorCreateReq struct {
	Name        *string         `json:"name"`
	ID          json.RawMessage `json:"id"`
	RAM         json.RawMessage `json:"ram"`
	VCPUs       json.RawMessage `json:"vcpus"`
	Disk        json.RawMessage `json:"disk"`
	Swap        json.RawMessage `json:"swap"`
	Ephemeral   json.RawMessage `json:"OS-FLV-EXT-DATA:ephemeral"`
	RxTxFactor  json.RawMessage `json:"rxtx_factor"`
	IsPublic    json.RawMessage `json:"os-flavor-access:is_public"`
	Description *string         `json:"description"` // 2.55
}

var flavorIDRE = regexp.MustCompile(`^[a-zA-Z0-9. _-]+$`)

func (s *service) createFlavor(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor"); err != nil {
		return nil, err
	}
	var req flavorCreateReq
	if err := decodeBody(c, "flavor", &req); err != nil {
		return nil, err
	}
	f, err := s.flavorFromRequest(&req)
	if err != nil {
		return nil, err
	}
	if req.Description != nil {
		if !atLeast(c, 2, 55) {
			return nil, rest.BadRequest("Invalid input for field/attribute flavor. Additional properties are not allowed ('description' was unexpected)")
		}
		if len([]rune(*req.Description)) > 65535 {
			return nil, rest.BadRequest("Invalid input for field/attribute description. Value: %s. It is too long", *req.Description)
		}
		f.Description = *req.Description
	}
	if !f.Public && c.Cred.ProjectID != "" {
		f.Projects = []string{c.Cred.ProjectID}
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateFlavor, f); err != nil {
		return nil, err
	}
	sn := s.b.State()
	got, ok := sn.Flavor(f.ID)
	if !ok {
		return nil, fmt.Errorf("flavor %s missing after create", f.ID)
	}
	return map[string]any{"flavor": s.flavorView(c, sn, got)}, nil
}

func (s *service) flavorFromRequest(req *flavorCreateReq) (*statedb.Flavor, error) {
	if req.Name == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute flavor. 'name' is a required property")
	}
	if err := validName("name", *req.Name); err != nil {
		return nil, err
	}
	f := &statedb.Flavor{Name: *req.Name, RxTxFactor: 1, Public: true, CreatedAt: s.b.Now()}
	size := func(field string, raw json.RawMessage, min int, required bool, dst *int) error {
		if len(raw) == 0 || string(raw) == "null" {
			if required {
				return rest.BadRequest("Invalid input for field/attribute flavor. '%s' is a required property", field)
			}
			return nil
		}
		if field == "swap" && string(raw) == `""` {
			return nil
		}
		n, err := intValue(field, raw, rest.NovaInt)
		if err != nil {
			return err
		}
		if n < min || n > math.MaxInt32 {
			return rest.BadRequest("Invalid input for field/attribute %s. Value: %d. %d is less than the minimum of %d", field, n, n, min)
		}
		*dst = n
		return nil
	}
	for _, p := range []struct {
		field    string
		raw      json.RawMessage
		min      int
		required bool
		dst      *int
	}{
		{"ram", req.RAM, 1, true, &f.RAMMB},
		{"vcpus", req.VCPUs, 1, true, &f.VCPUs},
		{"disk", req.Disk, 0, true, &f.DiskGB},
		{"swap", req.Swap, 0, false, &f.SwapMB},
		{"OS-FLV-EXT-DATA:ephemeral", req.Ephemeral, 0, false, &f.EphemeralGB},
	} {
		if err := size(p.field, p.raw, p.min, p.required, p.dst); err != nil {
			return nil, err
		}
	}
	if len(req.RxTxFactor) > 0 && string(req.RxTxFactor) != "null" {
		v, err := rest.NovaNumber.Float("rxtx_factor", req.RxTxFactor)
		if err != nil {
			return nil, formError(err)
		}
		if v <= 0 || v > 3.40282e38 {
			return nil, rest.BadRequest("Invalid input for field/attribute rxtx_factor. Value: %s. It must be greater than 0 and at most 3.40282e+38", req.RxTxFactor)
		}
		f.RxTxFactor = v
	}
	if len(req.IsPublic) > 0 && string(req.IsPublic) != "null" {
		b, err := boolValue("os-flavor-access:is_public", req.IsPublic)
		if err != nil {
			return nil, err
		}
		f.Public = b
	}
	id := ""
	if len(req.ID) > 0 && string(req.ID) != "null" {
		if err := json.Unmarshal(req.ID, &id); err != nil {
			var n json.Number
			if json.Unmarshal(req.ID, &n) != nil {
				return nil, rest.BadRequest("Invalid input for field/attribute id. Value: %s. %s is not of type 'string', 'null'", req.ID, req.ID)
			}
			id = n.String()
		}
		if id == "" || len(id) > maxNameLength || !flavorIDRE.MatchString(id) || strings.TrimSpace(id) != id {
			return nil, rest.BadRequest("Invalid input for field/attribute id. Value: %s. It does not match the pattern of flavor ids", id)
		}
	}
	if id == "" {
		id = s.b.NewID()
	}
	f.ID = id
	return f, nil
}

func (s *service) deleteFlavor(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor"); err != nil {
		return nil, err
	}
	id := c.Var("flavor_id")
	if _, ok := s.b.State().Flavor(id); !ok {
		return nil, rest.NotFoundf("Flavor %s could not be found.", id)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteFlavor, statedb.DeleteCmd{ID: id}); err != nil {
		return nil, err
	}
	return accepted(), nil
}

type flavorAccess struct {
	FlavorID string `json:"flavor_id"`
	TenantID string `json:"tenant_id"`
}

func accessList(f *statedb.Flavor) map[string]any {
	out := make([]flavorAccess, 0, len(f.Projects))
	for _, p := range f.Projects {
		out = append(out, flavorAccess{FlavorID: f.ID, TenantID: p})
	}
	return map[string]any{"flavor_access": out}
}

func (s *service) listFlavorAccess(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor access"); err != nil {
		return nil, err
	}
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if f.Public {
		return nil, rest.NotFoundf("Access list not available for public flavors.")
	}
	return accessList(f), nil
}

// flavorAction serves POST /flavors/{id}/action: addTenantAccess and
// removeTenantAccess.
func (s *service) flavorAction(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor access"); err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	if len(body) != 1 {
		return nil, rest.BadRequest("Exactly one action is required.")
	}
	var action string
	var raw json.RawMessage
	for k, v := range body {
		action, raw = k, v
	}
	if action != "addTenantAccess" && action != "removeTenantAccess" {
		return nil, rest.BadRequest("There is no such action: %s", action)
	}
	var req struct {
		Tenant string `json:"tenant"`
	}
	if err := decodeStrict(action, raw, &req); err != nil {
		return nil, err
	}
	if req.Tenant == "" || len(req.Tenant) > maxNameLength {
		return nil, rest.BadRequest("Invalid input for field/attribute tenant.")
	}
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetFlavorAccess, statedb.SetFlavorAccessCmd{
		FlavorID: f.ID, ProjectID: req.Tenant, Remove: action == "removeTenantAccess"}); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Flavor(f.ID)
	if !ok {
		return nil, rest.NotFoundf("Flavor %s could not be found.", f.ID)
	}
	return accessList(got), nil
}

var specKeyRE = regexp.MustCompile(`^[a-zA-Z0-9-_:. /]{1,255}$`)

// specValue accepts a string, number or boolean as Nova does and renders
// it as a string.
func specValue(key string, raw json.RawMessage) (string, error) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", rest.BadRequest("Invalid input for field/attribute %s.", key)
	}
	switch x := v.(type) {
	case string:
		if len(x) > maxKeyLen {
			return "", rest.BadRequest("Invalid input for field/attribute %s. Value is too long.", key)
		}
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", rest.BadRequest("Invalid input for field/attribute %s. Value: %s. %s is not of type 'string', 'number', 'boolean'", key, raw, raw)
}

func (s *service) listExtraSpecs(c *rest.Ctx) (any, error) {
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	specs := f.ExtraSpecs
	if specs == nil {
		specs = map[string]string{}
	}
	return map[string]any{"extra_specs": specs}, nil
}

func (s *service) createExtraSpecs(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor extra specs"); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := decodeBody(c, "extra_specs", &raw); err != nil {
		return nil, err
	}
	set := map[string]string{}
	for k, v := range raw {
		if !specKeyRE.MatchString(k) {
			return nil, rest.BadRequest("Invalid input for field/attribute extra_specs. Key %q is not valid.", k)
		}
		val, err := specValue(k, v)
		if err != nil {
			return nil, err
		}
		set[k] = val
	}
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetFlavorExtraSpecs, statedb.SetFlavorExtraSpecsCmd{FlavorID: f.ID, Set: set}); err != nil {
		return nil, err
	}
	return map[string]any{"extra_specs": set}, nil
}

func (s *service) getExtraSpec(c *rest.Ctx) (any, error) {
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	key := c.Var("key")
	v, ok := f.ExtraSpecs[key]
	if !ok {
		return nil, rest.NotFoundf("Flavor %s has no extra specs with key %s.", f.ID, key)
	}
	return map[string]string{key: v}, nil
}

func (s *service) putExtraSpec(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor extra specs"); err != nil {
		return nil, err
	}
	key := c.Var("key")
	var body map[string]json.RawMessage
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	raw, ok := body[key]
	if len(body) != 1 || !ok {
		return nil, rest.BadRequest("Request body and URI mismatch")
	}
	if !specKeyRE.MatchString(key) {
		return nil, rest.BadRequest("Invalid input for field/attribute extra_specs. Key %q is not valid.", key)
	}
	val, err := specValue(key, raw)
	if err != nil {
		return nil, err
	}
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetFlavorExtraSpecs,
		statedb.SetFlavorExtraSpecsCmd{FlavorID: f.ID, Set: map[string]string{key: val}}); err != nil {
		return nil, err
	}
	return map[string]string{key: val}, nil
}

func (s *service) deleteExtraSpec(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Flavor extra specs"); err != nil {
		return nil, err
	}
	f, err := s.flavor(c, s.b.State())
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetFlavorExtraSpecs,
		statedb.SetFlavorExtraSpecsCmd{FlavorID: f.ID, Unset: []string{c.Var("key")}}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusOK}, nil
}
