package volume

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"

	"github.com/peerstack/peerstack/rest"
)

// The os-volume_attachments routes live under /compute/v2.1, so they take
// the compute microversions the compute API offers (2.1 to
// computeMaxVersion): an attach takes a "tag" from 2.49 and
// delete_on_termination from 2.79; an attachment shows its tag (null for
// none) from 2.70 and its delete_on_termination from 2.79.
const computeMaxMinor = 79

type computeMinorKey struct{}

var (
	computeVersionRE = regexp.MustCompile(`^2\.(0|[1-9][0-9]*)$`)
	versionFormRE    = regexp.MustCompile(`^[1-9][0-9]*\.(0|[1-9][0-9]*)$`)
)

// computeVersions negotiates the compute microversion of an attachment
// request as the compute API does and echoes it.
func computeVersions(errw rest.ErrorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
			want := requestedVersion(r, "compute", "X-OpenStack-Nova-API-Version")
			minor := 1
			switch {
			case want == "":
			case want == "latest":
				minor = computeMaxMinor
			default:
				m := computeVersionRE.FindStringSubmatch(want)
				n := -1
				if m != nil {
					n, _ = strconv.Atoi(m[1])
				}
				h.Set("OpenStack-API-Version", "compute 2.1")
				h.Set("X-OpenStack-Nova-API-Version", "2.1")
				if m == nil && !versionFormRE.MatchString(want) {
					errw(w, http.StatusBadRequest, "", fmt.Sprintf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", want))
					return
				}
				if m == nil || n < 1 || n > computeMaxMinor {
					errw(w, http.StatusNotAcceptable, "", fmt.Sprintf("Version %s is not supported by the API. Minimum is 2.1 and maximum is 2.%d.", want, computeMaxMinor))
					return
				}
				minor = n
			}
			v := fmt.Sprintf("2.%d", minor)
			h.Set("OpenStack-API-Version", "compute "+v)
			h.Set("X-OpenStack-Nova-API-Version", v)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), computeMinorKey{}, minor)))
		})
	}
}

// versionedAttachment adds the attachment fields of later microversions.
func versionedAttachment(c *rest.Ctx, a novaAttachment) novaAttachment {
	minor, _ := c.R.Context().Value(computeMinorKey{}).(int)
	if minor >= 70 {
		var t any
		if a.tag != "" {
			t = a.tag
		}
		a.Tag = &t
	}
	if minor >= 79 {
		dot := a.dot
		a.DeleteOnTermination = &dot
	}
	return a
}
