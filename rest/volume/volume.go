// Package volume serves the Cinder v3 block storage API under /volume
// (version discovery, volumes with their actions, volume types,
// availability zones) and the Nova os-volume_attachments routes under
// /compute/v2.1 that attach volumes to servers, in the shapes the
// openstack client 6.0 and gophercloud v2 expect at microversions volume
// 3.0 and compute 2.1.
//
// It owns decoding, validation, policy checks and encoding only. Every
// write is a statedb command proposed through rest.Propose with IDs and
// timestamps made here; the state machine of a volume (creating →
// available → attaching → in-use → detaching → available → deleting)
// lives in consensus/statedb, and the files behind volumes are made by the
// host agents, which report back. It must not touch storage itself.
package volume

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Backend is what the volume API needs beyond rest.Backend; node
// implements it.
type Backend interface {
	rest.Backend
	// HostID is the member id of the host serving the request: with shared
	// storage its agent creates the files of the volumes created through it.
	HostID() string
	// VolumePath is where this host's storage backend keeps the volume
	// file name ("vol-<id>") in format: an nfs:// URL (shared storage only).
	VolumePath(name, format string) (string, error)
}

// Options tune the service.
type Options struct {
	// MaxSizeGB is the largest volume (and extend) accepted; default 1000.
	MaxSizeGB int
}

// DefaultMaxSizeGB is Options.MaxSizeGB when unset.
const DefaultMaxSizeGB = 1000

// AZ is the only availability zone, Nova's and Cinder's default name.
const AZ = "nova"

// Microversions served: base only.
const (
	volumeVersion  = "3.0"
	computeVersion = "2.1"
)

// timeFormat is Cinder's timestamp format: no zone (gophercloud refuses a Z).
const timeFormat = "2006-01-02T15:04:05.000000"

// volumeFormat is the file format of new volumes.
const volumeFormat = "qcow2"

type service struct {
	b   Backend
	max int
}

// Service returns the block storage routes under /volume.
func Service(b Backend, opts Options) rest.Service {
	s := newService(b, opts)
	const (
		get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
		public, token       = rest.Public, rest.Token
	)
	vols := "/v3/{project_id}/volumes"
	svc := rest.Service{
		Prefix: "/volume",
		Errors: cinderErrors,
		Wrap:   versionHeaders("volume", volumeVersion, "X-OpenStack-Volume-API-Version", cinderErrors),
		Routes: []rest.Route{
			{Method: get, Path: "", Auth: public, Handler: s.versions},
			{Method: get, Path: "/v3", Auth: public, Handler: s.v3},

			{Method: get, Path: vols, Auth: token, Handler: s.listVolumes},
			{Method: get, Path: vols + "/detail", Auth: token, Handler: s.listVolumesDetail},
			{Method: post, Path: vols, Auth: token, Handler: s.createVolume},
			{Method: get, Path: vols + "/{volume_id}", Auth: token, Handler: s.showVolume},
			{Method: put, Path: vols + "/{volume_id}", Auth: token, Handler: s.updateVolume},
			{Method: del, Path: vols + "/{volume_id}", Auth: token, Handler: s.deleteVolume},
			{Method: post, Path: vols + "/{volume_id}/action", Auth: token, Handler: s.action},

			{Method: get, Path: "/v3/{project_id}/types", Auth: token, Handler: s.listTypes},
			{Method: get, Path: "/v3/{project_id}/types/{type_id}", Auth: token, Handler: s.showType},
			{Method: get, Path: "/v3/{project_id}/os-availability-zone", Auth: token, Handler: s.listAZs},
		},
	}
	svc.Routes = append(svc.Routes, s.quotaRoutes()...)
	for i := range svc.Routes {
		svc.Routes[i].Handler = overQuotaAs413(svc.Routes[i].Handler)
	}
	return svc
}

func newService(b Backend, opts Options) *service {
	if opts.MaxSizeGB <= 0 {
		opts.MaxSizeGB = DefaultMaxSizeGB
	}
	return &service{b: b, max: opts.MaxSizeGB}
}

// faultNames are the OpenStack error body keys by status (Cinder and Nova
// share them).
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
	406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
	501: "notImplemented", 503: "serviceUnavailable",
}

func faultName(status int, fallback string) string {
	if n, ok := faultNames[status]; ok {
		return n
	}
	return fallback
}

// cinderErrors renders {"itemNotFound":{"code":404,"message":…}}.
func cinderErrors(w http.ResponseWriter, status int, _, msg string) {
	rest.WriteJSON(w, status, map[string]any{faultName(status, "computeFault"): map[string]any{"code": status, "message": msg}})
}

// novaErrors renders Nova's bodies, the same shape.
func novaErrors(w http.ResponseWriter, status int, _, msg string) {
	rest.WriteJSON(w, status, map[string]any{faultName(status, "computeFault"): map[string]any{"code": status, "message": msg}})
}

// versionHeaders echoes the microversion we serve (only the base one) and
// answers 406 to a request for any other. Version documents are exempt.
func versionHeaders(service, version, legacy string, errw rest.ErrorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("OpenStack-API-Version", service+" "+version)
			h.Set(legacy, version)
			h.Set("Vary", "OpenStack-API-Version, "+legacy)
			if want := requestedVersion(r, service, legacy); want != "" && !isVersionDoc(r.URL.Path) {
				if want != version && want != "latest" && want+".0" != version {
					min := version
					errw(w, http.StatusNotAcceptable, "", fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", want, min, version))
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requestedVersion reads "OpenStack-API-Version: <service> X" or the
// legacy header.
func requestedVersion(r *http.Request, service, legacy string) string {
	for _, hv := range r.Header.Values("OpenStack-API-Version") {
		for _, part := range strings.Split(hv, ",") {
			f := strings.Fields(part)
			if len(f) == 2 && strings.EqualFold(f[0], service) {
				return strings.ToLower(f[1])
			}
		}
	}
	return strings.ToLower(strings.TrimSpace(r.Header.Get(legacy)))
}

func isVersionDoc(p string) bool {
	p = strings.TrimSuffix(p, "/")
	return p == "/volume" || p == "/volume/v3" || p == "/compute" || p == "/compute/v2.1"
}

// baseURL is the catalog base: Settings.PublicURL, or how the client
// reached us.
func baseURL(c *rest.Ctx, sn *statedb.Snapshot) string {
	if cfg, ok := sn.Cluster(); ok && cfg.Settings.PublicURL != "" {
		return strings.TrimRight(cfg.Settings.PublicURL, "/")
	}
	return rest.BaseURL(c.R)
}

// fmtTime renders a Cinder timestamp, or null for a zero time.
func fmtTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(timeFormat)
	return &s
}

// isAdmin asks the policy whether the caller administers the cloud.
func (s *service) isAdmin(c *rest.Ctx) bool {
	return rest.Check(s.b, c, rest.Admin, "", false, "volume") == nil
}

// project is the project a request acts in: the token's. A URL naming
// another project is refused, except for administrators, who act in it.
func (s *service) project(c *rest.Ctx) (string, error) {
	if c.Cred == nil {
		return "", rest.Unauthorized("The request you have made requires authentication.")
	}
	url := c.Var("project_id")
	if url != "" && url != c.Cred.ProjectID {
		if !s.isAdmin(c) {
			return "", rest.BadRequest("Malformed request url: project %s in the URL does not match the token's project.", url)
		}
		return url, nil
	}
	if c.Cred.ProjectID == "" {
		return "", rest.Forbiddenf("A project-scoped token is required.")
	}
	return c.Cred.ProjectID, nil
}

// volumeType is the cluster's single volume type, named after the backend.
type volumeType struct {
	ID, Name string
}

func (s *service) volumeType(sn *statedb.Snapshot) volumeType {
	storage := ""
	if cfg, ok := sn.Cluster(); ok {
		storage = cfg.Settings.Storage
	}
	name := statedb.VolumeBackendType(storage)
	return volumeType{ID: typeID(name), Name: name}
}

// typeID derives a stable UUID for a volume type name, the same on every
// host.
func typeID(name string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("peerstack:volume-type:"+name)).String()
}
