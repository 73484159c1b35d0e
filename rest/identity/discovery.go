package identity

import (
	"net/http"

	"github.com/peerstack/peerstack/rest"
)

// versionDoc is one entry of Keystone's version discovery document.
type versionDoc struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Updated    string      `json:"updated"`
	Links      []linkRel   `json:"links"`
	MediaTypes []mediaType `json:"media-types"`
}

type linkRel struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

type mediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

func (s *service) v3Doc(c *rest.Ctx) versionDoc {
	return versionDoc{
		ID:      "v3.14",
		Status:  "stable",
		Updated: "2020-04-07T00:00:00Z",
		// The self href is where clients POST tokens: it must be absolute.
		Links:      []linkRel{{Rel: "self", Href: v3URL(c, s.b.State(), "")}},
		MediaTypes: []mediaType{{Base: "application/json", Type: "application/vnd.openstack.identity-v3+json"}},
	}
}

// versions serves GET /identity and /identity/: 300 Multiple Choices with
// {"versions":{"values":[…]}}, the form gophercloud decodes.
func (s *service) versions(c *rest.Ctx) (any, error) {
	return &rest.Response{Status: http.StatusMultipleChoices, Body: map[string]any{
		"versions": map[string]any{"values": []versionDoc{s.v3Doc(c)}},
	}}, nil
}

// version serves GET /identity/v3.
func (s *service) version(c *rest.Ctx) (any, error) {
	return map[string]any{"version": s.v3Doc(c)}, nil
}
