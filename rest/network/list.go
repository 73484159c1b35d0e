package network

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Lists: every row is the object's JSON view (a map), so the query
// parameters work on exactly what the client sees:
//   - any attribute is an equality filter; a repeated parameter means OR
//     (?name=a&name=b); on list attributes it matches a member; filters on
//     attributes the caller cannot see are ignored;
//   - tags, tags-any, not-tags, not-tags-any (comma-separated);
//   - sort_key/sort_dir (repeatable), default id ascending;
//   - limit and marker, with "<collection>_links" carrying the next page;
//   - fields (repeatable) keeps only those attributes.

// view is one object as the API renders it.
type view = map[string]any

// notFilters are query parameters that are not attribute filters.
var notFilters = map[string]bool{
	"fields": true, "limit": true, "marker": true, "page_reverse": true, "sort_key": true, "sort_dir": true,
	"tags": true, "tags-any": true, "not-tags": true, "not-tags-any": true,
	"all_tenants": true, "all_projects": true,
}

// customFilter decides whether a row matches the values of one parameter.
type customFilter func(row view, vals []string) (bool, error)

// list filters, sorts, pages and projects rows into {"<coll>": [...]}.
func list(c *rest.Ctx, sn *statedb.Snapshot, coll string, rows []view, custom map[string]customFilter) (any, error) {
	q := c.R.URL.Query()
	var err error
	rows, err = filterRows(q, rows, custom)
	if err != nil {
		return nil, err
	}
	if err := sortRows(q, rows); err != nil {
		return nil, err
	}
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(rows, func(r view) bool { return r["id"] == m })
		if i < 0 {
			return nil, badRequest("Invalid input for operation: marker %s could not be found.", m)
		}
		rows = rows[i+1:]
	}
	out := map[string]any{}
	if ls := q.Get("limit"); ls != "" {
		limit, err := strconv.Atoi(ls)
		if err != nil || limit < 0 {
			return nil, badRequest("Invalid input for limit. Reason: '%s' is not a non-negative integer.", ls)
		}
		if limit > 0 && len(rows) > limit {
			rows = rows[:limit]
			next := url.Values{}
			for k, v := range q {
				next[k] = v
			}
			next.Set("limit", strconv.Itoa(limit))
			next.Set("marker", fmt.Sprint(rows[len(rows)-1]["id"]))
			out[coll+"_links"] = []map[string]string{{"rel": "next",
				"href": base(c, sn) + c.R.URL.Path + "?" + next.Encode()}}
		}
	}
	if fields := q["fields"]; len(fields) > 0 {
		for i, r := range rows {
			p := view{}
			for _, f := range fields {
				if v, ok := r[f]; ok {
					p[f] = v
				}
			}
			rows[i] = p
		}
	}
	if rows == nil {
		rows = []view{}
	}
	out[coll] = rows
	return out, nil
}

func filterRows(q url.Values, rows []view, custom map[string]customFilter) ([]view, error) {
	tagsAll, tagsAny := splitTags(q["tags"]), splitTags(q["tags-any"])
	notAll, notAny := splitTags(q["not-tags"]), splitTags(q["not-tags-any"])
	out := rows[:0:0]
	for _, r := range rows {
		keep := true
		for k, vals := range q {
			if notFilters[k] || !keep {
				continue
			}
			if f, ok := custom[k]; ok {
				m, err := f(r, vals)
				if err != nil {
					return nil, err
				}
				keep = m
				continue
			}
			v, ok := r[k]
			if !ok {
				continue
			}
			keep = slices.ContainsFunc(vals, func(want string) bool { return matches(v, want) })
		}
		if keep && (len(tagsAll)+len(tagsAny)+len(notAll)+len(notAny)) > 0 {
			tags, _ := r["tags"].([]string)
			has := func(t string) bool { return slices.Contains(tags, t) }
			keep = (len(tagsAll) == 0 || all(tagsAll, has)) &&
				(len(tagsAny) == 0 || slices.ContainsFunc(tagsAny, has)) &&
				(len(notAll) == 0 || !all(notAll, has)) &&
				(len(notAny) == 0 || !slices.ContainsFunc(notAny, has))
		}
		if keep {
			out = append(out, r)
		}
	}
	return out, nil
}

func all(xs []string, f func(string) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

func splitTags(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, t := range strings.Split(v, ",") {
			if t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// matches compares a view value with a query string.
func matches(v any, want string) bool {
	switch x := v.(type) {
	case nil:
		return want == "" || strings.EqualFold(want, "none") || want == "null"
	case string:
		return x == want
	case bool:
		b, err := strconv.ParseBool(strings.ToLower(want))
		return err == nil && b == x
	case int:
		return strconv.Itoa(x) == want
	case uint32:
		return strconv.FormatUint(uint64(x), 10) == want
	case []string:
		return slices.Contains(x, want)
	}
	return true // structured values are not filterable: ignore
}

func sortRows(q url.Values, rows []view) error {
	keys, dirs := q["sort_key"], q["sort_dir"]
	if len(dirs) > len(keys) {
		return badRequest("Invalid input for operation: sort_dir without sort_key.")
	}
	for _, d := range dirs {
		if d != "asc" && d != "desc" {
			return badRequest("Invalid input for sort_dir. Reason: '%s' is not asc or desc.", d)
		}
	}
	keys = append(slices.Clone(keys), "id")
	slices.SortStableFunc(rows, func(a, b view) int {
		for i, k := range keys {
			c := compareValues(a[k], b[k])
			if i < len(dirs) && dirs[i] == "desc" {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	return nil
}

func compareValues(a, b any) int {
	switch x := a.(type) {
	case int:
		if y, ok := b.(int); ok {
			return cmp.Compare(x, y)
		}
	case uint32:
		if y, ok := b.(uint32); ok {
			return cmp.Compare(x, y)
		}
	case bool:
		if y, ok := b.(bool); ok {
			return cmp.Compare(boolInt(x), boolInt(y))
		}
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
