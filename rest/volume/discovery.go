package volume

import (
	"net/http"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

type link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

type mediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

type versionDoc struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Version    string      `json:"version"`
	MinVersion string      `json:"min_version"`
	Updated    string      `json:"updated"`
	Links      []link      `json:"links"`
	MediaTypes []mediaType `json:"media-types"`
}

func (s *service) v3Doc(c *rest.Ctx) versionDoc {
	return versionDoc{
		ID: "v3.0", Status: "CURRENT", Version: volumeVersion, MinVersion: volumeVersion,
		Updated:    "2016-02-08T12:20:21Z",
		Links:      []link{{Rel: "self", Href: baseURL(c, s.b.State()) + "/volume/v3/"}},
		MediaTypes: []mediaType{{Base: "application/json", Type: "application/vnd.openstack.volume+json;version=3"}},
	}
}

// versions serves GET /volume: 300 with the version list, as Cinder does.
func (s *service) versions(c *rest.Ctx) (any, error) {
	return &rest.Response{Status: http.StatusMultipleChoices, Body: map[string]any{"versions": []versionDoc{s.v3Doc(c)}}}, nil
}

// v3 serves GET /volume/v3: the same list, 200.
func (s *service) v3(c *rest.Ctx) (any, error) {
	return map[string]any{"versions": []versionDoc{s.v3Doc(c)}}, nil
}

// typeView is a Cinder volume type.
type typeView struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	IsPublic    bool              `json:"is_public"`
	Access      bool              `json:"os-volume-type-access:is_public"`
	ExtraSpecs  map[string]string `json:"extra_specs"`
	QoSSpecsID  *string           `json:"qos_specs_id"`
}

func typeJSON(vt volumeType) typeView {
	desc := "Volumes on each host's local storage; they attach only to servers on their host."
	if vt.Name == statedb.VolumeTypeNFS {
		desc = "Volumes on the cluster's shared NFS storage; they attach to servers on any host."
	}
	return typeView{ID: vt.ID, Name: vt.Name, Description: desc, IsPublic: true, Access: true,
		ExtraSpecs: map[string]string{"volume_backend_name": vt.Name}}
}

// listTypes serves GET /types: the one type of the cluster's backend.
func (s *service) listTypes(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Read, "", false, "volume type"); err != nil {
		return nil, err
	}
	return map[string]any{"volume_types": []typeView{typeJSON(s.volumeType(s.b.State()))}}, nil
}

// showType serves GET /types/{id}, by id or name.
func (s *service) showType(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Read, "", false, "volume type"); err != nil {
		return nil, err
	}
	vt := s.volumeType(s.b.State())
	if id := c.Var("type_id"); id != vt.ID && id != vt.Name {
		return nil, rest.NotFoundf("Volume type %s could not be found.", id)
	}
	return map[string]any{"volume_type": typeJSON(vt)}, nil
}

// listAZs serves GET /os-availability-zone.
func (s *service) listAZs(c *rest.Ctx) (any, error) {
	if _, err := s.project(c); err != nil {
		return nil, err
	}
	if err := rest.Check(s.b, c, rest.Read, "", false, "availability zone"); err != nil {
		return nil, err
	}
	return map[string]any{"availabilityZoneInfo": []map[string]any{
		{"zoneName": AZ, "zoneState": map[string]bool{"available": true}},
	}}, nil
}
