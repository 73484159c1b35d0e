package compute

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Compute quotas as Nova serves them: os-quota-sets (per project, with
// detail and defaults), os-quota-class-sets/default (the cluster
// defaults) and /limits. Limits and usage come from consensus/statedb,
// which also enforces them inside each create command.

// quotaRoutes are the quota and limits routes of the v2.1 API.
func (s *service) quotaRoutes() []rest.Route {
	const tok = rest.Token
	qs := "/os-quota-sets/{project_id}"
	return []rest.Route{
		{Method: "GET", Path: qs, Auth: tok, Handler: s.getQuotaSet},
		{Method: "GET", Path: qs + "/detail", Auth: tok, Handler: s.getQuotaSetDetail},
		{Method: "GET", Path: qs + "/defaults", Auth: tok, Handler: s.getQuotaDefaults},
		{Method: "PUT", Path: qs, Auth: tok, Handler: s.updateQuotaSet},
		{Method: "DELETE", Path: qs, Auth: tok, Handler: s.deleteQuotaSet},
		{Method: "GET", Path: "/os-quota-class-sets/{class}", Auth: tok, Handler: s.getQuotaClass},
		{Method: "PUT", Path: "/os-quota-class-sets/{class}", Auth: tok, Handler: s.updateQuotaClass},
		{Method: "GET", Path: "/limits", Auth: tok, Handler: s.limits},
	}
}

// overQuotaAs403 renders the FSM's over-quota refusals as Nova does: 403
// with the FSM's message ("Quota exceeded for instances: Requested 1, but
// already used 10 of 10 instances").
func overQuotaAs403(h rest.HandlerFunc) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		v, err := h(c)
		if err != nil && errors.Is(err, statedb.ErrOverQuota) {
			return nil, rest.Forbiddenf("%s", err.Error())
		}
		return v, err
	}
}

// quotaProject checks the caller may read (or, with write, change) the
// quotas of the project in the path: admins any, others their own.
func (s *service) quotaProject(c *rest.Ctx, write bool) (string, error) {
	p := c.Var("project_id")
	if c.Cred == nil {
		return "", rest.Unauthorized("The request you have made requires authentication.")
	}
	if s.isAdmin(c) || (!write && c.Cred.ProjectID == p) {
		return p, nil
	}
	return "", rest.Forbiddenf("Policy doesn't allow os_compute_api:os-quota-sets:%s to be performed.", map[bool]string{true: "update", false: "show"}[write])
}

func quotaSetBody(id string, resources []string, value func(string) any) map[string]any {
	m := map[string]any{}
	if id != "" {
		m["id"] = id
	}
	for _, r := range resources {
		m[r] = value(r)
	}
	return map[string]any{"quota_set": m}
}

func (s *service) getQuotaSet(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	return quotaSetBody(p, statedb.ComputeQuotas(), func(r string) any { return sn.QuotaLimit(p, r) }), nil
}

func (s *service) getQuotaSetDetail(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	user := c.Cred.UserID
	if u := c.Query("user_id"); u != "" {
		user = u
	}
	return quotaSetBody(p, statedb.ComputeQuotas(), func(r string) any {
		return map[string]int64{"limit": sn.QuotaLimit(p, r), "in_use": sn.QuotaUsage(p, user, r), "reserved": 0}
	}), nil
}

func (s *service) getQuotaDefaults(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	return quotaSetBody(p, statedb.ComputeQuotas(), func(r string) any { return sn.DefaultQuota(r) }), nil
}

// decodeQuotaSet reads {"quota_set":{resource: int, "force": bool}} with
// only the given resources allowed.
func decodeQuotaSet(c *rest.Ctx, allowed []string) (map[string]int64, bool, error) {
	var body struct {
		QuotaSet map[string]json.RawMessage `json:"quota_set"`
	}
	if err := c.Decode(&body); err != nil {
		return nil, false, err
	}
	if body.QuotaSet == nil {
		return nil, false, rest.BadRequest("Invalid input for field/attribute quota_set. 'quota_set' is a required property")
	}
	out := map[string]int64{}
	force := false
	for k, raw := range body.QuotaSet {
		switch {
		case k == "force":
			if err := json.Unmarshal(raw, &force); err != nil {
				return nil, false, rest.BadRequest("Invalid input for field/attribute force. Value: %s. It is not a boolean", raw)
			}
		case k == "id" || k == "tenant_id" || k == "project_id":
			// echoed back by some clients; the path names the project
		case slices.Contains(allowed, k):
			n, err := quotaValue(k, raw)
			if err != nil {
				return nil, false, err
			}
			out[k] = n
		default:
			return nil, false, rest.BadRequest("Invalid input for field/attribute quota_set. Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	return out, force, nil
}

// quotaValue is an integer of -1 or more, as a number or numeric string.
func quotaValue(k string, raw json.RawMessage) (int64, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var str string
		if json.Unmarshal(raw, &str) != nil {
			return 0, rest.BadRequest("Invalid input for field/attribute %s. Value: %s. It is not an integer", k, raw)
		}
		n = json.Number(str)
	}
	v, err := n.Int64()
	if err != nil || v < statedb.Unlimited {
		return 0, rest.BadRequest("Invalid input for field/attribute %s. Value: %s. It must be an integer of -1 or more", k, raw)
	}
	if ceil := statedb.QuotaCeiling(k); ceil > 0 && (v == statedb.Unlimited || v > ceil) {
		return 0, rest.BadRequest("Invalid input for field/attribute %s. Value: %d. The hard limit is %d", k, v, ceil)
	}
	return v, nil
}

func (s *service) updateQuotaSet(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, true)
	if err != nil {
		return nil, err
	}
	limits, force, err := decodeQuotaSet(c, statedb.ComputeQuotas())
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	if !force {
		for _, r := range sortedQuotaKeys(limits) {
			if v, used := limits[r], sn.QuotaUsage(p, c.Cred.UserID, r); v != statedb.Unlimited && v < used && r != statedb.QuotaKeyPairs {
				return nil, rest.BadRequest("Quota limit %d for %s must be greater than or equal to already used and reserved %d.", v, r, used)
			}
		}
	}
	if len(limits) > 0 {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: p, Limits: limits}); err != nil {
			return nil, err
		}
	}
	sn = s.b.State()
	return quotaSetBody("", statedb.ComputeQuotas(), func(r string) any { return sn.QuotaLimit(p, r) }), nil
}

func (s *service) deleteQuotaSet(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, true)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteQuotas, statedb.DeleteCmd{ID: p}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: 202}, nil
}

// The quota classes: every class name reads the cluster defaults (as in
// Nova, where unknown classes fall back to "default"); only "default"
// may be changed, by an admin.
func (s *service) getQuotaClass(c *rest.Ctx) (any, error) {
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	sn := s.b.State()
	body := quotaSetBody(c.Var("class"), statedb.ComputeQuotas(), func(r string) any { return sn.DefaultQuota(r) })
	return map[string]any{"quota_class_set": body["quota_set"]}, nil
}

func (s *service) updateQuotaClass(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Quota class"); err != nil {
		return nil, err
	}
	if c.Var("class") != "default" {
		return nil, rest.BadRequest("Only the 'default' quota class can be changed.")
	}
	var body struct {
		Set map[string]json.RawMessage `json:"quota_class_set"`
	}
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	if body.Set == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute quota_class_set. 'quota_class_set' is a required property")
	}
	limits := map[string]int64{}
	for k, raw := range body.Set {
		if !slices.Contains(statedb.ComputeQuotas(), k) {
			return nil, rest.BadRequest("Invalid input for field/attribute quota_class_set. Additional properties are not allowed ('%s' was unexpected)", k)
		}
		v, err := quotaValue(k, raw)
		if err != nil {
			return nil, err
		}
		limits[k] = v
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetDefaultQuotas, statedb.SetQuotasCmd{Limits: limits}); err != nil {
		return nil, err
	}
	sn := s.b.State()
	body2 := quotaSetBody("", statedb.ComputeQuotas(), func(r string) any { return sn.DefaultQuota(r) })
	return map[string]any{"quota_class_set": body2["quota_set"]}, nil
}

// limits serves GET /limits: the caller's project's absolute limits and
// usage (an admin may ask for another with ?tenant_id=).
func (s *service) limits(c *rest.Ctx) (any, error) {
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	p := c.Cred.ProjectID
	if t := c.Query("tenant_id"); t != "" && t != p {
		if !s.isAdmin(c) {
			return nil, rest.Forbiddenf("Policy doesn't allow os_compute_api:limits:other_project to be performed.")
		}
		p = t
	}
	sn := s.b.State()
	lim := func(r string) int64 { return sn.QuotaLimit(p, r) }
	used := func(r string) int64 { return sn.QuotaUsage(p, c.Cred.UserID, r) }
	abs := map[string]int64{
		"maxTotalInstances":       lim(statedb.QuotaInstances),
		"maxTotalCores":           lim(statedb.QuotaCores),
		"maxTotalRAMSize":         lim(statedb.QuotaRAM),
		"maxTotalKeypairs":        lim(statedb.QuotaKeyPairs),
		"maxServerMeta":           lim(statedb.QuotaMetadataItems),
		"maxServerGroups":         lim(statedb.QuotaServerGroups),
		"maxServerGroupMembers":   lim(statedb.QuotaServerGroupMembers),
		"maxImageMeta":            statedb.MaxImageProperties,
		"maxPersonality":          0,
		"maxPersonalitySize":      0,
		"totalInstancesUsed":      used(statedb.QuotaInstances),
		"totalCoresUsed":          used(statedb.QuotaCores),
		"totalRAMUsed":            used(statedb.QuotaRAM),
		"totalServerGroupsUsed":   used(statedb.QuotaServerGroups),
		"maxTotalFloatingIps":     lim(statedb.QuotaFloatingIPs),
		"totalFloatingIpsUsed":    used(statedb.QuotaFloatingIPs),
		"maxSecurityGroups":       lim(statedb.QuotaSecurityGroups),
		"totalSecurityGroupsUsed": used(statedb.QuotaSecurityGroups),
		"maxSecurityGroupRules":   lim(statedb.QuotaSecurityGroupRules),
	}
	return map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": abs}}, nil
}

func sortedQuotaKeys(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// metadataLimit is the metadata items a project's servers may carry: its
// metadata_items quota, never more than the hard limit.
func (s *service) metadataLimit(projectID string) int {
	n := s.b.State().QuotaLimit(projectID, statedb.QuotaMetadataItems)
	if n < 0 || n > statedb.MaxServerMetadataItems {
		n = statedb.MaxServerMetadataItems
	}
	return int(n)
}
