package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Block storage quotas as Cinder serves them: os-quota-sets/{project}
// (?usage=True adds in_use, allocated and reserved), /defaults, the
// "default" quota class (the cluster defaults) and /limits. Snapshots and
// backups are reported with 0 used so clients find the keys. The FSM
// enforces the limits inside volume create and extend.

func (s *service) quotaRoutes() []rest.Route {
	const tok = rest.Token
	base := "/v3/{project_id}"
	qs := base + "/os-quota-sets/{target}"
	return []rest.Route{
		{Method: http.MethodGet, Path: qs, Auth: tok, Handler: s.getQuotaSet},
		{Method: http.MethodGet, Path: qs + "/defaults", Auth: tok, Handler: s.getQuotaDefaults},
		{Method: http.MethodPut, Path: qs, Auth: tok, Handler: s.updateQuotaSet},
		{Method: http.MethodDelete, Path: qs, Auth: tok, Handler: s.deleteQuotaSet},
		{Method: http.MethodGet, Path: base + "/os-quota-class-sets/{class}", Auth: tok, Handler: s.getQuotaClass},
		{Method: http.MethodPut, Path: base + "/os-quota-class-sets/{class}", Auth: tok, Handler: s.updateQuotaClass},
		{Method: http.MethodGet, Path: base + "/limits", Auth: tok, Handler: s.limits},
	}
}

// overQuotaAs413 renders the FSM's over-quota refusals as Cinder does:
// 413 with its VolumeLimitExceeded or VolumeSizeExceedsAvailableQuota
// message.
func overQuotaAs413(h rest.HandlerFunc) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		v, err := h(c)
		if err == nil || !errors.Is(err, statedb.ErrOverQuota) {
			return v, err
		}
		return nil, &rest.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: cinderOverQuota(err)}
	}
}

func cinderOverQuota(err error) string {
	res := statedb.OverQuotaResource(err)
	var req, used, limit int64
	_, _ = fmt.Sscanf(err.Error()[strings.Index(err.Error(), ":")+1:], " Requested %d, but already used %d of %d", &req, &used, &limit)
	switch res {
	case statedb.QuotaGigabytes:
		return fmt.Sprintf("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested %dG, quota is %dG and %dG has been consumed.", req, limit, used)
	case statedb.QuotaPerVolumeGigabytes:
		return fmt.Sprintf("VolumeSizeExceedsLimit: Requested volume size %dG is larger than maximum allowed limit %dG.", req, limit)
	case statedb.QuotaVolumes:
		return fmt.Sprintf("VolumeLimitExceeded: Maximum number of volumes allowed (%d) exceeded for quota 'volumes'.", limit)
	}
	return err.Error()
}

// quotaTarget checks the caller may read (or change) the target
// project's quotas: admins any, others their own.
func (s *service) quotaTarget(c *rest.Ctx, write bool) (string, error) {
	if c.Cred == nil {
		return "", rest.Unauthorized("The request you have made requires authentication.")
	}
	t := c.Var("target")
	if s.isAdmin(c) || (!write && t == c.Cred.ProjectID) {
		return t, nil
	}
	return "", rest.Forbiddenf("Policy doesn't allow volume_extension:quotas:%s to be performed.", map[bool]string{true: "update", false: "show"}[write])
}

func volumeQuotaSet(id string, value func(string) any) map[string]any {
	m := map[string]any{}
	for _, r := range statedb.VolumeQuotas() {
		m[r] = value(r)
	}
	m["groups"] = value(statedb.QuotaVolumes) // reported for clients; groups do not exist
	if id != "" {
		m["id"] = id
	}
	return m
}

func (s *service) getQuotaSet(c *rest.Ctx) (any, error) {
	p, err := s.quotaTarget(c, false)
	if err != nil {
		return nil, err
	}
	usage, _ := strconv.ParseBool(c.Query("usage"))
	sn := s.b.State()
	return map[string]any{"quota_set": volumeQuotaSet(p, func(r string) any {
		if !usage {
			return sn.QuotaLimit(p, r)
		}
		return map[string]int64{"limit": sn.QuotaLimit(p, r), "in_use": sn.QuotaUsage(p, "", r), "reserved": 0, "allocated": 0}
	})}, nil
}

func (s *service) getQuotaDefaults(c *rest.Ctx) (any, error) {
	p, err := s.quotaTarget(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	return map[string]any{"quota_set": volumeQuotaSet(p, func(r string) any { return sn.DefaultQuota(r) })}, nil
}

// decodeLimits reads {key: {resource: int}} allowing only volume
// resources (and "groups", accepted and ignored).
func decodeLimits(c *rest.Ctx, key string) (map[string]int64, error) {
	var body map[string]map[string]json.RawMessage
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	set, ok := body[key]
	if !ok || set == nil {
		return nil, rest.BadRequest("Missing required element '%s' in request body.", key)
	}
	out := map[string]int64{}
	for k, raw := range set {
		if k == "groups" || k == "id" || k == "tenant_id" {
			continue
		}
		if !slices.Contains(statedb.VolumeQuotas(), k) {
			return nil, rest.BadRequest("Bad key(s) in quota set: %s", k)
		}
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			var str string
			if json.Unmarshal(raw, &str) != nil {
				return nil, rest.BadRequest("Invalid input received: %s must be an integer.", k)
			}
			n = json.Number(str)
		}
		v, err := n.Int64()
		if err != nil || v < statedb.Unlimited {
			return nil, rest.BadRequest("Invalid input received: %s must be an integer of -1 or more.", k)
		}
		out[k] = v
	}
	return out, nil
}

func (s *service) updateQuotaSet(c *rest.Ctx) (any, error) {
	p, err := s.quotaTarget(c, true)
	if err != nil {
		return nil, err
	}
	limits, err := decodeLimits(c, "quota_set")
	if err != nil {
		return nil, err
	}
	if len(limits) > 0 {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: p, Limits: limits}); err != nil {
			return nil, err
		}
	}
	sn := s.b.State()
	return map[string]any{"quota_set": volumeQuotaSet("", func(r string) any { return sn.QuotaLimit(p, r) })}, nil
}

func (s *service) deleteQuotaSet(c *rest.Ctx) (any, error) {
	p, err := s.quotaTarget(c, true)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteQuotas, statedb.DeleteCmd{ID: p}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusOK}, nil
}

func (s *service) getQuotaClass(c *rest.Ctx) (any, error) {
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	sn := s.b.State()
	return map[string]any{"quota_class_set": volumeQuotaSet(c.Var("class"), func(r string) any { return sn.DefaultQuota(r) })}, nil
}

func (s *service) updateQuotaClass(c *rest.Ctx) (any, error) {
	if !s.isAdmin(c) {
		return nil, rest.Forbiddenf("Policy doesn't allow volume_extension:quota_classes:update to be performed.")
	}
	if c.Var("class") != "default" {
		return nil, rest.BadRequest("Only the 'default' quota class can be changed.")
	}
	limits, err := decodeLimits(c, "quota_class_set")
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetDefaultQuotas, statedb.SetQuotasCmd{Limits: limits}); err != nil {
		return nil, err
	}
	sn := s.b.State()
	return map[string]any{"quota_class_set": volumeQuotaSet("", func(r string) any { return sn.DefaultQuota(r) })}, nil
}

// limits serves Cinder's absolute limits of the caller's project.
func (s *service) limits(c *rest.Ctx) (any, error) {
	p, err := s.project(c)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	lim := func(r string) int64 { return sn.QuotaLimit(p, r) }
	used := func(r string) int64 { return sn.QuotaUsage(p, "", r) }
	abs := map[string]int64{
		"maxTotalVolumes":          lim(statedb.QuotaVolumes),
		"maxTotalVolumeGigabytes":  lim(statedb.QuotaGigabytes),
		"maxTotalSnapshots":        lim(statedb.QuotaSnapshots),
		"maxTotalBackups":          lim(statedb.QuotaBackups),
		"maxTotalBackupGigabytes":  lim(statedb.QuotaBackupGigabytes),
		"totalVolumesUsed":         used(statedb.QuotaVolumes),
		"totalGigabytesUsed":       used(statedb.QuotaGigabytes),
		"totalSnapshotsUsed":       0,
		"totalBackupsUsed":         0,
		"totalBackupGigabytesUsed": 0,
	}
	return map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": abs}}, nil
}
