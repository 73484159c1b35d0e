package compute

import (
	"github.com/peerstack/peerstack/rest"
)

// versionDoc is one entry of Nova's version discovery document.
type versionDoc struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Version    string      `json:"version"`
	MinVersion string      `json:"min_version"`
	Updated    string      `json:"updated"`
	Links      []link      `json:"links"`
	MediaTypes []mediaType `json:"media-types,omitempty"`
}

type mediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

func (s *service) v21(c *rest.Ctx) versionDoc {
	return versionDoc{
		ID: "v2.1", Status: "CURRENT", Version: maxVersion, MinVersion: minVersion, Updated: "2013-07-23T11:33:21Z",
		Links:      []link{{Rel: "self", Href: base(c, s.b.State()) + "/compute/v2.1/"}},
		MediaTypes: []mediaType{{Base: "application/json", Type: "application/vnd.openstack.compute+json;version=2.1"}},
	}
}

// versions serves GET /compute: the v2.0 and v2.1 entries.
func (s *service) versions(c *rest.Ctx) (any, error) {
	v20 := versionDoc{
		ID: "v2.0", Status: "SUPPORTED", Updated: "2011-01-21T11:33:21Z",
		Links: []link{{Rel: "self", Href: base(c, s.b.State()) + "/compute/v2/"}},
	}
	return map[string]any{"versions": []versionDoc{v20, s.v21(c)}}, nil
}

// version serves GET /compute/v2.1 without a token.
func (s *service) version(c *rest.Ctx) (any, error) {
	return map[string]any{"version": s.v21(c)}, nil
}
