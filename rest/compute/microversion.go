package compute

import (
	"context"
	"fmt"
	"github.com/peerstack/peerstack/consensus/statedb"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/rest"
)

// What each microversion after 2.1 changes here (the others change
// nothing this API serves, or remove what it never served):
//
//	2.2   keypair "type"; keypair create 201, delete 204
//	2.9   server views carry "locked"
//	2.10  admins act on another user's keypairs (user_id)
//	2.16  server views carry host_status (admins)
//	2.19  server "description": at create, in PUT and in views
//	2.26  server tags: /servers/{id}/tags and "tags" in server views
//	2.37  server create requires "networks" (a list, "auto" or "none")
//	2.40  usage pagination (limit, marker)
//	2.47  server views embed the flavor instead of linking it
//	2.51  instance action events for non-admins too
//	2.52  tags at server create
//	2.53  services and hypervisors named by UUIDs; hypervisor list filters
//	2.55  flavor "description" at create, in views, PUT /flavors/{id}
//	2.58  instance action updated_at and pagination
//	2.62  instance action events carry host/hostId
//	2.63  server views carry trusted_image_certificates (null)
//	2.64  server groups have "policy" and "rules" (anti-affinity's
//	      max_server_per_host) instead of "policies"
//	2.71  server views carry server_groups
//	2.73  lock takes locked_reason; server views carry it
//	2.49  volume attach takes a device tag (rest/volume)
//	2.74  server create takes host and hypervisor_hostname (admin; requested_host.go)
//	2.79  volume attach takes and attachments carry delete_on_termination (rest/volume)

// version is a compute microversion.
type version struct{ major, minor int }

type versionKey struct{}

// requestVersion is the negotiated version of a request (2.1 outside the
// Microversion wrapper).
func requestVersion(c *rest.Ctx) version {
	if v, ok := c.R.Context().Value(versionKey{}).(version); ok {
		return v
	}
	return version{2, 1}
}

// atLeast reports whether the request's version is major.minor or later.
func atLeast(c *rest.Ctx, major, minor int) bool {
	v := requestVersion(c)
	return v.major > major || (v.major == major && v.minor >= minor)
}

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

var (
	versionRE  = regexp.MustCompile(`^([1-9][0-9]*)\.(0|[1-9][0-9]*)$`)
	minVer     = mustVersion(minVersion)
	maxVer     = mustVersion(maxVersion)
	versionVar = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
)

func mustVersion(s string) version {
	v, ok := parseVersion(s)
	if !ok {
		panic("compute: bad version constant " + s) // a programming error
	}
	return v
}

func parseVersion(s string) (version, bool) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return version{}, false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	return version{major, minor}, err1 == nil && err2 == nil
}

func (v version) less(o version) bool {
	return v.major < o.major || (v.major == o.major && v.minor < o.minor)
}

// Microversion negotiates the compute microversion: no header means 2.1,
// "latest" the maximum, a malformed one is 400 and one outside
// [min, max] is 406. Responses echo the version used; handlers read it
// with atLeast.
func Microversion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Vary", versionVar)
		v, status, msg := negotiate(requestedVersion(r.Header))
		h.Set("OpenStack-API-Version", "compute "+v.String())
		h.Set("X-OpenStack-Nova-API-Version", v.String())
		if status != 0 {
			NovaErrors(w, status, "", msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), versionKey{}, v)))
	})
}

// requestedVersion reads the compute version from OpenStack-API-Version
// (which may name several services) or the legacy Nova header.
func requestedVersion(h http.Header) string {
	for _, v := range h.Values("OpenStack-API-Version") {
		for _, part := range strings.Split(v, ",") {
			f := strings.Fields(part)
			if len(f) == 2 && strings.EqualFold(f[0], "compute") {
				return f[1]
			}
		}
	}
	return strings.TrimSpace(h.Get("X-OpenStack-Nova-API-Version"))
}

// negotiate returns the version to use, or a status and Nova's message.
func negotiate(s string) (version, int, string) {
	switch {
	case s == "":
		return minVer, 0, ""
	case strings.EqualFold(s, "latest"):
		return maxVer, 0, ""
	}
	v, ok := parseVersion(s)
	if !ok {
		return minVer, http.StatusBadRequest, fmt.Sprintf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", s)
	}
	if v.less(minVer) || maxVer.less(v) {
		return minVer, http.StatusNotAcceptable, fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", s, minVersion, maxVersion)
	}
	return v, 0, ""
}

// parseVersioned checks the create fields that depend on the version:
// networks required from 2.37, description from 2.19, tags from 2.52.
func parseVersioned(c *rest.Ctx, req *serverCreateReq, p *serverPlan) error {
	if atLeast(c, 2, 37) && (len(req.Networks) == 0 || string(req.Networks) == "null") {
		return rest.BadRequest("Invalid input for field/attribute server. 'networks' is a required property")
	}
	if req.Description != nil {
		if !atLeast(c, 2, 19) {
			return rest.BadRequest("Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)")
		}
		if len([]rune(*req.Description)) > 255 {
			return rest.BadRequest("Invalid input for field/attribute description. Value: %s. It is too long", *req.Description)
		}
		p.Description = *req.Description
	}
	if len(req.Tags) > 0 {
		if !atLeast(c, 2, 52) {
			return rest.BadRequest("Invalid input for field/attribute server. Additional properties are not allowed ('tags' was unexpected)")
		}
		tags, err := parseTags(req.Tags)
		if err != nil {
			return err
		}
		p.Tags = tags
	}
	return nil
}

// versionedFields adds the server view fields of later microversions.
func (v *viewCtx) versionedFields(i *statedb.Instance, out map[string]any, host string) {
	c := v.c
	if atLeast(c, 2, 3) && v.admin {
		var ud any
		if i.UserData != "" {
			ud = i.UserData
		}
		out["OS-EXT-SRV-ATTR:reservation_id"] = i.Reservation
		out["OS-EXT-SRV-ATTR:launch_index"] = i.LaunchIndex
		out["OS-EXT-SRV-ATTR:hostname"] = i.Name
		out["OS-EXT-SRV-ATTR:kernel_id"] = ""
		out["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
		out["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
		out["OS-EXT-SRV-ATTR:user_data"] = ud
	}
	if atLeast(c, 2, 9) {
		out["locked"] = i.Locked
	}
	if atLeast(c, 2, 16) && v.admin {
		hs := ""
		if host != "" {
			hs = "UP"
		}
		out["host_status"] = hs
	}
	if atLeast(c, 2, 19) {
		var d any
		if i.Description != "" {
			d = i.Description
		}
		out["description"] = d
	}
	if atLeast(c, 2, 26) {
		out["tags"] = tagsOf(i)
	}
	if atLeast(c, 2, 47) {
		f := i.Flavor
		es := f.ExtraSpecs
		if es == nil {
			es = map[string]string{}
		}
		out["flavor"] = map[string]any{"vcpus": f.VCPUs, "ram": f.RAMMB, "disk": f.DiskGB, "ephemeral": f.EphemeralGB,
			"swap": f.SwapMB, "original_name": f.Name, "extra_specs": es}
	}
	if atLeast(c, 2, 63) {
		out["trusted_image_certificates"] = nil
	}
	if atLeast(c, 2, 71) {
		groups := []string{}
		if i.GroupID != "" {
			groups = append(groups, i.GroupID)
		}
		out["server_groups"] = groups
	}
	if atLeast(c, 2, 73) {
		var r any
		if i.Locked && i.LockedReason != "" {
			r = i.LockedReason
		}
		out["locked_reason"] = r
	}
}
