package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Network quotas as Neutron serves them: /v2.0/quotas/{project} with
// /details (used, limit, reserved) and /default, for networks, subnets,
// ports, routers, floating IPs, security groups and their rules. The FSM
// counts and enforces the limits inside each create command; a project's
// default security group is counted but never refused.

func (s *service) quotaRoutes() []rest.Route {
	const tok = rest.Token
	q := "/v2.0/quotas/{project_id}"
	return []rest.Route{
		{Method: http.MethodGet, Path: "/v2.0/quotas", Auth: tok, Handler: s.listQuotas},
		{Method: http.MethodGet, Path: q, Auth: tok, Handler: s.getQuota},
		{Method: http.MethodGet, Path: q + "/details", Auth: tok, Handler: s.getQuotaDetails},
		{Method: http.MethodGet, Path: q + "/details.json", Auth: tok, Handler: s.getQuotaDetails},
		{Method: http.MethodGet, Path: q + "/default", Auth: tok, Handler: s.getQuotaDefault},
		{Method: http.MethodPut, Path: q, Auth: tok, Handler: s.updateQuota},
		{Method: http.MethodDelete, Path: q, Auth: tok, Handler: s.deleteQuota},
	}
}

// overQuota409 renders the FSM's over-quota refusals as Neutron's
// OverQuota (409).
func overQuota409(h rest.HandlerFunc) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		v, err := h(c)
		if err != nil && errors.Is(err, statedb.ErrOverQuota) {
			return nil, conflict("OverQuota", "Quota exceeded for resources: ['%s'].", statedb.OverQuotaResource(err))
		}
		return v, err
	}
}

func (s *service) quotaProject(c *rest.Ctx, write bool) (string, error) {
	p := c.Var("project_id")
	if c.Cred == nil {
		return "", rest.Unauthorized("The request you have made requires authentication.")
	}
	if s.isAdmin(c) || (!write && c.Cred.ProjectID == p) {
		return p, nil
	}
	return "", forbidden("Quota")
}

func quotaBody(p string, value func(string) any) map[string]any {
	m := map[string]any{}
	for _, r := range statedb.NetworkQuotas() {
		m[r] = value(r)
	}
	if p != "" {
		m["project_id"], m["tenant_id"] = p, p
	}
	return map[string]any{"quota": m}
}

// listQuotas is the admin's list of projects with limits of their own.
func (s *service) listQuotas(c *rest.Ctx) (any, error) {
	if !s.isAdmin(c) {
		return nil, forbidden("Quota")
	}
	sn := s.b.State()
	out := []any{}
	for _, p := range sn.Projects() {
		if _, ok := sn.QuotaSet(p.ID); ok {
			out = append(out, quotaBody(p.ID, func(r string) any { return sn.QuotaLimit(p.ID, r) })["quota"])
		}
	}
	return map[string]any{"quotas": out}, nil
}

func (s *service) getQuota(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	return quotaBody("", func(r string) any { return sn.QuotaLimit(p, r) }), nil
}

func (s *service) getQuotaDetails(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	return quotaBody("", func(r string) any {
		return map[string]int64{"used": sn.QuotaUsage(p, "", r), "limit": sn.QuotaLimit(p, r), "reserved": 0}
	}), nil
}

func (s *service) getQuotaDefault(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, false)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	return quotaBody(p, func(r string) any { return sn.DefaultQuota(r) }), nil
}

func (s *service) updateQuota(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, true)
	if err != nil {
		return nil, err
	}
	var body struct {
		Quota map[string]json.RawMessage `json:"quota"`
	}
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	if body.Quota == nil {
		return nil, badRequest("Invalid input for operation: 'quota' is a required attribute.")
	}
	limits := map[string]int64{}
	for k, raw := range body.Quota {
		switch {
		case k == "force" || k == "check_limit" || k == "project_id" || k == "tenant_id":
			// accepted; limits below usage are allowed (Neutron's default)
		case slices.Contains(statedb.NetworkQuotas(), k):
			v, err := quotaValue(k, raw)
			if err != nil {
				return nil, err
			}
			limits[k] = v
		default:
			return nil, badRequest("Unrecognized attribute(s) '%s'", k)
		}
	}
	if len(limits) > 0 {
		if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetQuotas, statedb.SetQuotasCmd{ProjectID: p, Limits: limits}); err != nil {
			return nil, err
		}
	}
	sn := s.b.State()
	return quotaBody("", func(r string) any { return sn.QuotaLimit(p, r) }), nil
}

func (s *service) deleteQuota(c *rest.Ctx) (any, error) {
	p, err := s.quotaProject(c, true)
	if err != nil {
		return nil, err
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteQuotas, statedb.DeleteCmd{ID: p}); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}

// quotaValue is an integer of -1 (unlimited) or more, as a number or a
// numeric string.
func quotaValue(k string, raw json.RawMessage) (int64, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var str string
		if json.Unmarshal(raw, &str) != nil {
			return 0, badRequest("Invalid input for %s. Reason: '%s' is not an integer.", k, strings.Trim(string(raw), `"`))
		}
		n = json.Number(str)
	}
	v, err := n.Int64()
	if err != nil || v < statedb.Unlimited {
		return 0, badRequest("Invalid input for %s. Reason: '%s' is not an integer of -1 or more.", k, fmt.Sprint(strings.Trim(string(raw), `"`)))
	}
	return v, nil
}
