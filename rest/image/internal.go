package image

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Internal routes: only hosts of the cluster (client certificate from the
// cluster CA) call them.

// blob serves GET /internal/v1/blobs/{sha256}: a local blob, streamed.
func (s *service) blob(c *rest.Ctx) (any, error) {
	sum := c.Var("sha256")
	if !statedb.ValidBlobSum(sum) {
		return nil, rest.NotFoundf("no blob %s", sum)
	}
	rc, size, err := s.b.OpenLocalBlob(sum)
	if errors.Is(err, ErrNoBlob) {
		return nil, rest.NotFoundf("no blob %s on this host", sum)
	}
	if err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusOK, Raw: rc, Close: func() { rc.Close() }, Header: http.Header{
		"Content-Type":   {octetStream},
		"Content-Length": {strconv.FormatInt(size, 10)},
	}}, nil
}

// verify serves POST /internal/v1/blobs/{sha256}/verify: a peer got bytes
// that did not hash right from here; re-hash, and drop the copy if it is
// corrupt (409).
func (s *service) verify(c *rest.Ctx) (any, error) {
	sum := c.Var("sha256")
	if !statedb.ValidBlobSum(sum) {
		return nil, rest.NotFoundf("no blob %s", sum)
	}
	err := s.b.VerifyBlob(c.Context(), sum)
	switch {
	case errors.Is(err, ErrNoBlob):
		return nil, rest.NotFoundf("no blob %s on this host", sum)
	case errors.Is(err, ErrCorrupt):
		return nil, rest.Conflictf("%v", err)
	case err != nil:
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}
