// Package compute serves the Nova compute v2.1 API under /compute:
// version discovery and microversion negotiation (2.1-2.79, see
// microversion.go), flavors (with access lists and extra specs), keypairs,
// servers and their actions (power, pause, suspend, lock), tags, instance
// actions, metadata and console output, server groups, availability
// zones, usage (os-simple-tenant-usage), and the admin views of hosts:
// hypervisors, os-hosts and os-services. Shapes follow what the openstack
// client 6.0, openstacksdk and gophercloud v2 read.
//
// It owns decoding, validation, policy checks and encoding only. Every
// write is one statedb command proposed through rest.Propose, with ids,
// secrets and timestamps made here so apply stays deterministic. It must
// not talk to hypervisors or other hosts itself: host capacity and console
// output come through the Backend, which node implements; so does where
// this host keeps the file of a boot volume it asks to be made.
package compute

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Backend is what the compute API needs beyond rest.Backend.
type Backend interface {
	rest.Backend
	// Hosts lists the cluster's hypervisors: totals and liveness from
	// gossip, the disabled flag from the member records.
	Hosts() []Host
	// ConsoleOutput returns the tail of an instance's console log from the
	// host that runs it (length lines, -1 or 0 for all).
	ConsoleOutput(ctx context.Context, inst *statedb.Instance, length int) (string, error)
	// LocalConsole is ConsoleOutput for an instance on this host; the
	// internal console route calls it for other hosts.
	LocalConsole(ctx context.Context, instanceID string, length int) (string, error)
	// HostID is the member id of the host serving the request: its agent
	// makes the boot volumes of the servers created through it, as for
	// the volumes the volume API creates through it.
	HostID() string
	// VolumePath is where this host's storage backend keeps the volume
	// file name ("vol-<id>") in format: a path or an nfs:// URL.
	VolumePath(name, format string) (string, error)
}

// Host is one hypervisor as the API shows it.
type Host struct {
	ID             string // member id
	Name           string // host name
	IP             string
	VCPUs          int
	RAMMB          int
	DiskGB         int
	Up             bool // alive in gossip
	Disabled       bool // no new placements
	DisabledReason string
	Accel          string // "kvm" or "tcg"
	Arch           string
}

// Microversions: 2.1 up to maxVersion (microversion.go says what each
// step changes here).
const (
	minVersion = "2.1"
	maxVersion = "2.79"
)

// Time formats: Nova's created/updated carry a zone, OS-SRV-USG fields
// do not.
const (
	timeZ   = "2006-01-02T15:04:05Z"
	timeUSG = "2006-01-02T15:04:05.000000"
)

// Limits Nova enforces on requests.
const (
	maxCount      = 100     // instances per create request
	maxUserData   = 1 << 16 // decoded bytes
	maxMetadata   = 128     // metadata items per server (Nova's quota)
	maxKeyLen     = 255
	maxNameLength = 255
)

// Services returns the compute services: the unversioned discovery
// documents, the v2.1 API with microversion negotiation, and the internal
// host-to-host console route.
func Services(b Backend) []rest.Service {
	s := &service{b: b}
	const (
		get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
		tok                 = rest.Token
	)
	fl, sv := "/flavors/{flavor_id}", "/servers/{server_id}"
	api := []rest.Route{
		{Method: get, Path: "/flavors", Auth: tok, Handler: s.listFlavors},
		{Method: get, Path: "/flavors/detail", Auth: tok, Handler: s.listFlavorsDetail},
		{Method: post, Path: "/flavors", Auth: tok, Handler: s.createFlavor},
		{Method: put, Path: fl, Auth: tok, Handler: s.updateFlavor},
		{Method: get, Path: fl, Auth: tok, Handler: s.getFlavor},
		{Method: del, Path: fl, Auth: tok, Handler: s.deleteFlavor},
		{Method: post, Path: fl + "/action", Auth: tok, Handler: s.flavorAction},
		{Method: get, Path: fl + "/os-flavor-access", Auth: tok, Handler: s.listFlavorAccess},
		{Method: get, Path: fl + "/os-extra_specs", Auth: tok, Handler: s.listExtraSpecs},
		{Method: post, Path: fl + "/os-extra_specs", Auth: tok, Handler: s.createExtraSpecs},
		{Method: get, Path: fl + "/os-extra_specs/{key}", Auth: tok, Handler: s.getExtraSpec},
		{Method: put, Path: fl + "/os-extra_specs/{key}", Auth: tok, Handler: s.putExtraSpec},
		{Method: del, Path: fl + "/os-extra_specs/{key}", Auth: tok, Handler: s.deleteExtraSpec},

		{Method: get, Path: "/os-keypairs", Auth: tok, Handler: s.listKeypairs},
		{Method: post, Path: "/os-keypairs", Auth: tok, Handler: s.createKeypair},
		{Method: get, Path: "/os-keypairs/{name}", Auth: tok, Handler: s.getKeypair},
		{Method: del, Path: "/os-keypairs/{name}", Auth: tok, Handler: s.deleteKeypair},

		{Method: get, Path: "/servers", Auth: tok, Handler: s.listServers},
		{Method: get, Path: "/servers/detail", Auth: tok, Handler: s.listServersDetail},
		{Method: post, Path: "/servers", Auth: tok, Handler: s.createServer},
		{Method: get, Path: sv, Auth: tok, Handler: s.getServer},
		{Method: put, Path: sv, Auth: tok, Handler: s.updateServer},
		{Method: del, Path: sv, Auth: tok, Handler: s.deleteServer},
		{Method: post, Path: sv + "/action", Auth: tok, Handler: s.serverAction},
		{Method: get, Path: sv + "/metadata", Auth: tok, Handler: s.getMetadata},
		{Method: put, Path: sv + "/metadata", Auth: tok, Handler: s.replaceMetadata},
		{Method: post, Path: sv + "/metadata", Auth: tok, Handler: s.mergeMetadata},
		{Method: get, Path: sv + "/metadata/{key}", Auth: tok, Handler: s.getMetadataItem},
		{Method: put, Path: sv + "/metadata/{key}", Auth: tok, Handler: s.putMetadataItem},
		{Method: del, Path: sv + "/metadata/{key}", Auth: tok, Handler: s.deleteMetadataItem},

		{Method: get, Path: sv + "/os-instance-actions", Auth: tok, Handler: s.listInstanceActions},
		{Method: get, Path: sv + "/os-instance-actions/{request_id}", Auth: tok, Handler: s.getInstanceAction},
		{Method: get, Path: sv + "/tags", Auth: tok, Handler: s.listTags},
		{Method: put, Path: sv + "/tags", Auth: tok, Handler: s.replaceTags},
		{Method: del, Path: sv + "/tags", Auth: tok, Handler: s.deleteAllTags},
		{Method: get, Path: sv + "/tags/{tag}", Auth: tok, Handler: s.checkTag},
		{Method: put, Path: sv + "/tags/{tag}", Auth: tok, Handler: s.addTag},
		{Method: del, Path: sv + "/tags/{tag}", Auth: tok, Handler: s.deleteTag},
		{Method: get, Path: "/os-simple-tenant-usage", Auth: tok, Handler: s.listUsage},
		{Method: get, Path: "/os-simple-tenant-usage/{tenant_id}", Auth: tok, Handler: s.getUsage},

		{Method: get, Path: "/os-server-groups", Auth: tok, Handler: s.listServerGroups},
		{Method: post, Path: "/os-server-groups", Auth: tok, Handler: s.createServerGroup},
		{Method: get, Path: "/os-server-groups/{group_id}", Auth: tok, Handler: s.getServerGroup},
		{Method: del, Path: "/os-server-groups/{group_id}", Auth: tok, Handler: s.deleteServerGroup},

		{Method: get, Path: "/os-availability-zone", Auth: tok, Handler: s.listZones},
		{Method: get, Path: "/os-availability-zone/detail", Auth: tok, Handler: s.listZonesDetail},

		{Method: get, Path: "/os-hypervisors", Auth: tok, Handler: s.listHypervisors},
		{Method: get, Path: "/os-hypervisors/detail", Auth: tok, Handler: s.listHypervisorsDetail},
		{Method: get, Path: "/os-hypervisors/statistics", Auth: tok, Handler: s.hypervisorStatistics},
		{Method: get, Path: "/os-hypervisors/{hv_id}", Auth: tok, Handler: s.getHypervisor},
		{Method: get, Path: "/os-hypervisors/{pattern}/search", Auth: tok, Handler: s.searchHypervisors},
		{Method: get, Path: "/os-hypervisors/{pattern}/servers", Auth: tok, Handler: s.hypervisorServers},
		{Method: get, Path: "/os-hypervisors/{hv_id}/uptime", Auth: tok, Handler: s.hypervisorUptime},
		{Method: get, Path: "/os-aggregates", Auth: tok, Handler: s.listAggregates},
		{Method: get, Path: "/os-hosts", Auth: tok, Handler: s.listHosts},
		{Method: get, Path: "/os-hosts/{host}", Auth: tok, Handler: s.getHost},
		{Method: get, Path: "/os-services", Auth: tok, Handler: s.listServices},
		{Method: put, Path: "/os-services/enable", Auth: tok, Handler: s.enableService},
		{Method: put, Path: "/os-services/disable", Auth: tok, Handler: s.disableService},
		{Method: put, Path: "/os-services/disable-log-reason", Auth: tok, Handler: s.disableService},
		{Method: put, Path: "/os-services/{service_id}", Auth: tok, Handler: s.updateService},
	}
	api = append(api, s.secGroupRoutes()...)
	api = append(api, s.quotaRoutes()...)
	for i := range api {
		api[i].Handler = overQuotaAs403(api[i].Handler)
	}
	return []rest.Service{
		{Prefix: "/compute", Errors: NovaErrors, Routes: []rest.Route{
			{Method: get, Path: "", Auth: rest.Public, Handler: s.versions},
			{Method: get, Path: "/v2.1", Auth: rest.Public, Handler: s.version},
		}},
		{Prefix: "/compute/v2.1", Errors: NovaErrors, Wrap: Microversion, Routes: api},
		{Prefix: "/internal/v1", Errors: NovaErrors, Routes: []rest.Route{
			{Method: post, Path: "/instances/{instance_id}/console", Auth: rest.Internal, Handler: s.internalConsole},
		}},
	}
}

type service struct{ b Backend }

// faultNames are Nova's error body keys by status.
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
	405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
	429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable",
}

// NovaErrors renders {"<faultName>":{"code":…,"message":…}}.
func NovaErrors(w http.ResponseWriter, status int, _ string, msg string) {
	key, ok := faultNames[status]
	if !ok {
		key = "computeFault"
	}
	rest.WriteJSON(w, status, map[string]any{key: map[string]any{"code": status, "message": msg}})
}

// ---- shared helpers ----

// base is the URL clients reach us at: the configured public URL, else the
// scheme and host of the request.
func base(c *rest.Ctx, sn *statedb.Snapshot) string {
	if cfg, ok := sn.Cluster(); ok && cfg.Settings.PublicURL != "" {
		return strings.TrimRight(cfg.Settings.PublicURL, "/")
	}
	return rest.BaseURL(c.R)
}

type link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

// links are the self and bookmark links of a resource.
func links(c *rest.Ctx, sn *statedb.Snapshot, coll, id string) []link {
	b := base(c, sn) + "/compute"
	return []link{
		{Rel: "self", Href: b + "/v2.1/" + coll + "/" + id},
		{Rel: "bookmark", Href: b + "/" + coll + "/" + id},
	}
}

func fmtZ(t time.Time) string { return t.UTC().Format(timeZ) }

// fmtUSG renders an OS-SRV-USG time, or null when unset.
func fmtUSG(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeUSG)
}

// isAdmin reports whether the caller holds cloud administration.
func (s *service) isAdmin(c *rest.Ctx) bool {
	return c.Cred != nil && s.b.Authorize(c.Cred, rest.Admin, "", false) == rest.Allow
}

// requireAdmin allows admin-only operations.
func (s *service) requireAdmin(c *rest.Ctx, what string) error {
	return rest.Check(s.b, c, rest.Admin, "", false, what)
}

// decodeBody decodes {"<key>": {...}} into v: a missing key, a body that is
// not an object or extra top-level keys are 400s in Nova's words.
func decodeBody(c *rest.Ctx, key string, v any, allowedTop ...string) error {
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		return err
	}
	if env == nil {
		return rest.BadRequest("The request body must be a JSON object.")
	}
	for k := range env {
		if k != key && !contains(allowedTop, k) {
			return rest.BadRequest("Invalid input for field/attribute %s. Additional properties are not allowed ('%s' was unexpected)", key, k)
		}
	}
	raw, ok := env[key]
	if !ok || string(raw) == "null" {
		return rest.BadRequest("Invalid input for field/attribute %s. Value: None. '%s' is a required property", key, key)
	}
	return decodeStrict(key, raw, v)
}

// decodeStrict decodes raw into v, rejecting fields v does not declare
// (Nova's additionalProperties: false).
func decodeStrict(field string, raw json.RawMessage, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
			return rest.BadRequest("Invalid input for field/attribute %s. Additional properties are not allowed (%s was unexpected)", field, f)
		}
		return rest.BadRequest("Invalid input for field/attribute %s. %s", field, msg)
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// queryBool parses a boolean query value (Nova's strutils.bool_from_string
// with strict checking).
func queryBool(v string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "t", "true", "on", "y", "yes":
		return true, true
	case "0", "f", "false", "off", "n", "no":
		return false, true
	}
	return false, false
}

// intValue reads an integer in the form Nova's schema gives the field
// (rest.NovaInt: a JSON integer or a digit string; rest.NovaSignedInt: a
// sign allowed too).
func intValue(field string, raw json.RawMessage, form rest.Form) (int, error) {
	n, err := form.Int(field, raw)
	if err != nil {
		return 0, formError(err)
	}
	if n > math.MaxInt32 || n < math.MinInt32 {
		return 0, rest.BadRequest("Invalid input for field/attribute %s. Value: %d. %d is out of range", field, n, n)
	}
	return int(n), nil
}

// boolValue reads an optional boolean in the form of Nova's
// parameter_types.boolean (true or "True", "yes", "1"...); absent or null
// is false.
func boolValue(field string, raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, nil
	}
	b, err := rest.NovaBool.Bool(field, raw)
	if err != nil {
		return false, formError(err)
	}
	return b, nil
}

// formError renders a value of the wrong form as Nova's schema validation
// does: "Invalid input for field/attribute <field>. Value: <value>.
// <reason>".
func formError(err error) error {
	var fe *rest.FormError
	if errors.As(err, &fe) {
		return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. %s", fe.Field, fe.Shown(), fe.Reason)
	}
	return err
}

// validName is Nova's name rule: 1-255 characters, printable, no leading or
// trailing whitespace.
func validName(field, name string) error {
	if name == "" || len([]rune(name)) > maxNameLength {
		return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. The name must be 1 to %d characters long.", field, name, maxNameLength)
	}
	if strings.TrimSpace(name) != name {
		return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. Leading or trailing whitespace is not allowed.", field, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return rest.BadRequest("Invalid input for field/attribute %s. Value: %q. Control characters are not allowed.", field, name)
		}
	}
	return nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

func isUUID(s string) bool { return uuidRE.MatchString(s) }

// noContent is a 204.
func noContent() *rest.Response { return &rest.Response{Status: http.StatusNoContent} }

// accepted is a 202 with an empty body.
func accepted() *rest.Response { return &rest.Response{Status: http.StatusAccepted} }
