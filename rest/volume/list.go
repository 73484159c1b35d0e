package volume

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// maxPage is the most volumes one list response carries (Cinder's
// osapi_max_limit); a longer list gets a next link.
const maxPage = 1000

// listVolumes serves GET /volumes: id, name and links.
func (s *service) listVolumes(c *rest.Ctx) (any, error) {
	return s.list(c, false)
}

// listVolumesDetail serves GET /volumes/detail.
func (s *service) listVolumesDetail(c *rest.Ctx) (any, error) {
	return s.list(c, true)
}

// listQuery is a parsed list request.
type listQuery struct {
	allTenants bool
	project    string // with all_tenants: only this project ("" = all)
	name       string
	hasName    bool
	status     string
	bootable   string
	metadata   map[string]string
	limit      int
	marker     string
	sortKeys   []string
	sortDirs   []string
}

var sortable = map[string]bool{"created_at": true, "updated_at": true, "id": true, "name": true, "size": true, "status": true}

func parseListQuery(c *rest.Ctx, admin bool) (*listQuery, error) {
	q := c.R.URL.Query()
	lq := &listQuery{limit: maxPage, marker: q.Get("marker"), status: q.Get("status")}
	if v, ok := boolQuery(q.Get("all_tenants")); ok && v && admin {
		lq.allTenants = true
		lq.project = q.Get("project_id")
	}
	lq.name, lq.hasName = q.Get("name"), q.Has("name")
	if b := q.Get("bootable"); b != "" {
		v, ok := boolQuery(b)
		if !ok {
			return nil, rest.BadRequest("Invalid input received: bootable must be true or false, not %q.", b)
		}
		lq.bootable = strconv.FormatBool(v)
	}
	if m := q.Get("metadata"); m != "" {
		if err := json.Unmarshal([]byte(m), &lq.metadata); err != nil {
			return nil, rest.BadRequest("Invalid input received: metadata filter must be a JSON object of strings.")
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, rest.BadRequest("Invalid input received: limit must be a non-negative integer, not %q.", l)
		}
		lq.limit = min(n, maxPage)
	}
	var keys, rawDirs []string
	if sort := q.Get("sort"); sort != "" {
		for _, part := range strings.Split(sort, ",") {
			k, d, _ := strings.Cut(strings.TrimSpace(part), ":")
			keys, rawDirs = append(keys, k), append(rawDirs, d)
		}
	} else if k := q.Get("sort_key"); k != "" {
		keys, rawDirs = strings.Split(k, ","), strings.Split(q.Get("sort_dir"), ",")
	}
	for i, k := range keys {
		if !sortable[k] {
			return nil, rest.BadRequest("Invalid input received: cannot sort by %q.", k)
		}
		d := "desc"
		if i < len(rawDirs) && rawDirs[i] != "" {
			d = strings.ToLower(rawDirs[i])
		}
		if d != "asc" && d != "desc" {
			return nil, rest.BadRequest("Invalid input received: sort direction must be asc or desc, not %q.", d)
		}
		lq.sortKeys, lq.sortDirs = append(lq.sortKeys, k), append(lq.sortDirs, d)
	}
	lq.sortKeys = append(lq.sortKeys, "created_at", "id")
	lq.sortDirs = append(lq.sortDirs, "desc", "desc")
	return lq, nil
}

func boolQuery(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "t", "y", "on":
		return true, true
	case "0", "false", "no", "f", "n", "off":
		return false, true
	}
	return false, false
}

func (lq *listQuery) keep(v *statedb.Volume) bool {
	switch {
	case lq.hasName && v.Name != lq.name,
		lq.status != "" && v.Status != lq.status,
		lq.bootable != "" && strconv.FormatBool(v.Bootable) != lq.bootable,
		lq.allTenants && lq.project != "" && v.ProjectID != lq.project:
		return false
	}
	for k, want := range lq.metadata {
		if got, ok := v.Metadata[k]; !ok || got != want {
			return false
		}
	}
	return true
}

func compareVolumes(a, b *statedb.Volume, key string) int {
	switch key {
	case "created_at":
		return a.CreatedAt.Compare(b.CreatedAt)
	case "updated_at":
		return a.UpdatedAt.Compare(b.UpdatedAt)
	case "name":
		return strings.Compare(a.Name, b.Name)
	case "size":
		return a.SizeGB - b.SizeGB
	case "status":
		return strings.Compare(a.Status, b.Status)
	}
	return strings.Compare(a.ID, b.ID)
}

func (s *service) list(c *rest.Ctx, detail bool) (any, error) {
	project, err := s.project(c)
	if err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Read, project, false, "volume"); err != nil {
		return nil, err
	}
	admin := s.isAdmin(c)
	lq, err := parseListQuery(c, admin)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	var vols []*statedb.Volume
	if lq.allTenants {
		vols = sn.Volumes()
	} else {
		vols = sn.VolumesOfProject(project)
	}
	var out []*statedb.Volume
	for _, v := range vols {
		if lq.keep(v) && rest.Visible(s.b, c, v.ProjectID, false) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b *statedb.Volume) int {
		for i, k := range lq.sortKeys {
			if r := compareVolumes(a, b, k); r != 0 {
				if lq.sortDirs[i] == "desc" {
					return -r
				}
				return r
			}
		}
		return 0
	})
	if lq.marker != "" {
		i := slices.IndexFunc(out, func(v *statedb.Volume) bool { return v.ID == lq.marker })
		if i < 0 {
			return nil, rest.NotFoundf("Marker %s could not be found.", lq.marker)
		}
		out = out[i+1:]
	}
	more := len(out) > lq.limit
	out = out[:min(len(out), lq.limit)]
	base := baseURL(c, sn)
	body := map[string]any{}
	if detail {
		views := make([]volumeView, 0, len(out))
		for _, v := range out {
			views = append(views, volumeJSON(sn, base, v, admin))
		}
		body["volumes"] = views
	} else {
		views := make([]summaryView, 0, len(out))
		for _, v := range out {
			views = append(views, summaryView{ID: v.ID, Name: v.Name, Links: volumeLinks(base, v)})
		}
		body["volumes"] = views
	}
	if more && len(out) > 0 {
		q := c.R.URL.Query()
		q.Set("marker", out[len(out)-1].ID)
		q.Set("limit", strconv.Itoa(lq.limit))
		next := url.URL{Path: c.R.URL.Path, RawQuery: q.Encode()}
		body["volumes_links"] = []link{{Rel: "next", Href: base + next.String()}}
	}
	return body, nil
}
