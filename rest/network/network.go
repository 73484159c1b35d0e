// Package network serves the Neutron v2.0 networking API under /network:
// version discovery, extensions, networks, subnets and ports (with tags),
// in the shapes the openstack client 6.0 and gophercloud v2 expect.
//
// It owns decoding, policy checks (rest.Check and rest.Visible on every
// handler) and encoding only. It must not allocate VNIs, MACs or addresses
// nor keep state of its own: every write is a statedb command proposed
// through rest.Propose, and the FSM allocates deterministically.
package network

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Service returns the network routes under /network.
func Service(b rest.Backend) rest.Service {
	s := &service{b: b}
	const (
		get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
		public, token       = rest.Public, rest.Token
	)
	routes := []rest.Route{
		{Method: get, Path: "", Auth: public, Handler: s.versions},
		{Method: get, Path: "/v2.0", Auth: public, Handler: s.resources},
		{Method: get, Path: "/v2.0/extensions", Auth: token, Handler: s.listExtensions},
		{Method: get, Path: "/v2.0/extensions/{alias}", Auth: token, Handler: s.getExtension},

		{Method: get, Path: "/v2.0/networks", Auth: token, Handler: s.listNetworks},
		{Method: post, Path: "/v2.0/networks", Auth: token, Handler: s.createNetwork},
		{Method: get, Path: "/v2.0/networks/{id}", Auth: token, Handler: s.getNetwork},
		{Method: put, Path: "/v2.0/networks/{id}", Auth: token, Handler: s.updateNetwork},
		{Method: del, Path: "/v2.0/networks/{id}", Auth: token, Handler: s.deleteNetwork},

		{Method: get, Path: "/v2.0/subnets", Auth: token, Handler: s.listSubnets},
		{Method: post, Path: "/v2.0/subnets", Auth: token, Handler: s.createSubnet},
		{Method: get, Path: "/v2.0/subnets/{id}", Auth: token, Handler: s.getSubnet},
		{Method: put, Path: "/v2.0/subnets/{id}", Auth: token, Handler: s.updateSubnet},
		{Method: del, Path: "/v2.0/subnets/{id}", Auth: token, Handler: s.deleteSubnet},

		{Method: get, Path: "/v2.0/ports", Auth: token, Handler: s.listPorts},
		{Method: post, Path: "/v2.0/ports", Auth: token, Handler: s.createPort},
		{Method: get, Path: "/v2.0/ports/{id}", Auth: token, Handler: s.getPort},
		{Method: put, Path: "/v2.0/ports/{id}", Auth: token, Handler: s.updatePort},
		{Method: del, Path: "/v2.0/ports/{id}", Auth: token, Handler: s.deletePort},
	}
	routes = append(routes, s.tagRoutes()...)
	routes = append(routes, s.secGroupRoutes()...)
	routes = append(routes, s.routerRoutes()...)
	routes = append(routes, s.floatingIPRoutes()...)
	routes = append(routes, s.quotaRoutes()...)
	for i := range routes {
		routes[i].Handler = wrap(overQuota409(routes[i].Handler))
	}
	return rest.Service{Prefix: "/network", Errors: neutronErrors, Routes: routes}
}

type service struct {
	b rest.Backend
}

// timeFormat is Neutron's timestamp format (gophercloud accepts it with
// or without the zone).
const timeFormat = "2006-01-02T15:04:05Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// base is the URL clients reach us at: the configured public URL, else the
// scheme and host of the request.
func base(c *rest.Ctx, sn *statedb.Snapshot) string {
	if cfg, ok := sn.Cluster(); ok && cfg.Settings.PublicURL != "" {
		return strings.TrimRight(cfg.Settings.PublicURL, "/")
	}
	return rest.BaseURL(c.R)
}

// isAdmin reports whether the policy grants the caller cloud
// administration (admin-only attributes become visible and settable).
func (s *service) isAdmin(c *rest.Ctx) bool {
	return c.Cred != nil && s.b.Authorize(c.Cred, rest.Admin, "", false) == rest.Allow
}

// check applies the policy to one object, answering in Neutron's words:
// a hidden object is "<Kind> <id> could not be found." (404 <Kind>NotFound).
func (s *service) check(c *rest.Ctx, access rest.Access, owner string, public bool, kind, id string) error {
	err := rest.Check(s.b, c, access, owner, public, kind)
	if err == nil {
		return nil
	}
	status, _, _ := rest.StatusOf(err)
	switch status {
	case http.StatusNotFound:
		return notFound(kind, id)
	case http.StatusForbidden:
		return forbidden(kind)
	}
	return err
}

// mayList gates list calls: any authenticated caller may list; rows are
// then filtered with rest.Visible.
func (s *service) mayList(c *rest.Ctx, kind string) error {
	return s.check(c, rest.Read, "", false, kind, "")
}

// visible reports whether an object belongs in a list for the caller.
func (s *service) visible(c *rest.Ctx, owner string, public bool) bool {
	return rest.Visible(s.b, c, owner, public)
}

// ownerProject is the project a new object belongs to: the body's
// project_id/tenant_id, else the token's project. Naming another project
// needs administration.
func (s *service) ownerProject(c *rest.Ctx, projectID, tenantID *string, kind string) (string, error) {
	want := ""
	switch {
	case projectID != nil && tenantID != nil && *projectID != *tenantID:
		return "", badRequest("Invalid input for operation: tenant_id and project_id do not match.")
	case projectID != nil:
		want = *projectID
	case tenantID != nil:
		want = *tenantID
	}
	if want == "" {
		want = c.Cred.ProjectID
	}
	if want == "" {
		return "", badRequest("Invalid input for operation: a project-scoped token or a project_id is required.")
	}
	if want != c.Cred.ProjectID {
		if err := s.check(c, rest.Admin, want, false, kind, ""); err != nil {
			return "", forbidden(kind)
		}
	}
	return want, nil
}

// decodeBody decodes {"<key>": {...}} into v, first converting the
// attributes spec names as Neutron's convert_to_int and convert_to_boolean
// do ("1400" is 1400, "True" is true).
func decodeBody(c *rest.Ctx, key string, spec rest.Spec, v any) error {
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		var he *rest.HTTPError
		if errors.As(err, &he) && he.Status != http.StatusBadRequest {
			return err
		}
		return badRequest("Malformed request body: %v", err)
	}
	raw, ok := env[key]
	if !ok || string(raw) == "null" {
		return badRequest("Malformed request body: expected a '%s' object.", key)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return badRequest("Malformed request body: '%s' must be an object.", key)
	}
	raw, err := rest.Normalize(raw, spec)
	if err != nil {
		return formError(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return invalidInput(err)
	}
	return nil
}

// formError is Neutron's 400 for a value its converters refuse: the
// converters raise InvalidInput, whose message is "Invalid input for
// operation: <reason>.".
func formError(err error) error {
	var fe *rest.FormError
	if errors.As(err, &fe) {
		return badRequest("Invalid input for operation: %s.", fe.Reason)
	}
	return err
}

// The attributes Neutron declares with convert_to_int or
// convert_to_boolean, per resource.
var (
	networkSpec = rest.Spec{
		"admin_state_up": rest.PyBool, "shared": rest.PyBool, "router:external": rest.PyBool,
		"port_security_enabled": rest.PyBool, "vlan_transparent": rest.PyBool,
		"mtu": rest.PyInt, "provider:segmentation_id": rest.PyInt,
	}
	subnetSpec = rest.Spec{
		"ip_version": rest.PyInt, "prefixlen": rest.PyInt,
		"enable_dhcp": rest.PyBool, "use_default_subnetpool": rest.PyBool, "dns_publish_fixed_ip": rest.PyBool,
	}
	portSpec     = rest.Spec{"admin_state_up": rest.PyBool, "port_security_enabled": rest.PyBool}
	secGroupSpec = rest.Spec{"stateful": rest.PyBool}
	secRuleSpec  = rest.Spec{"port_range_min": rest.PyInt, "port_range_max": rest.PyInt}
	routerSpec   = rest.Spec{
		"admin_state_up": rest.PyBool, "distributed": rest.PyBool, "ha": rest.PyBool,
		"external_gateway_info.enable_snat": rest.PyBool,
	}
	floatingIPSpec = rest.Spec{}
)

// invalidInput turns a JSON type error into Neutron's 400.
func invalidInput(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return badRequest("Invalid input for %s. Reason: expected %s, got %s.", te.Field, te.Type, te.Value)
	}
	return badRequest("Invalid input for operation: %v.", strings.TrimPrefix(err.Error(), "json: "))
}

func created(body any) *rest.Response { return &rest.Response{Status: http.StatusCreated, Body: body} }

func noContent() *rest.Response { return &rest.Response{Status: http.StatusNoContent} }

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func tagsOf(t []string) []string {
	out := append(make([]string, 0, len(t)), t...)
	sort.Strings(out)
	return out
}

// hostName shows a binding host by its member name (Neutron shows host
// names); unknown ids are shown as they are.
func hostName(sn *statedb.Snapshot, id string) string {
	if m, ok := sn.Member(id); ok {
		return m.Name
	}
	return id
}

// hostID resolves a binding host given by name or id to the member id.
func hostID(sn *statedb.Snapshot, v string) string {
	if v == "" {
		return ""
	}
	if _, ok := sn.Member(v); ok {
		return v
	}
	if m, ok := sn.MemberByName(v); ok {
		return m.ID
	}
	return v
}
