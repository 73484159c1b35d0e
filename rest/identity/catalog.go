package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/peerstack/peerstack/rest"
)

// region is the only region.
const region = "RegionOne"

// catalogService is one service of the catalog; path is appended to the
// base URL, and "{project_id}" in it becomes the token's project.
type catalogService struct {
	typ, name, path string
}

// catalogServices lists identity, image and network
// unversioned; compute and volume versioned, volume per project; both
// volumev3 and block-storage for the volume service.
var catalogServices = []catalogService{
	{"identity", "keystone", "/identity"},
	{"compute", "nova", "/compute/v2.1"},
	{"image", "glance", "/image"},
	{"volumev3", "cinderv3", "/volume/v3/{project_id}"},
	{"block-storage", "cinder", "/volume/v3/{project_id}"},
	{"network", "neutron", "/network"},
	{"cluster", "peerstack", "/cluster/v1"},
}

var interfaces = []string{"public", "internal", "admin"}

type catalogEntry struct {
	ID        string     `json:"id"`
	Type      string     `json:"type"`
	Name      string     `json:"name"`
	Endpoints []endpoint `json:"endpoints"`
}

type endpoint struct {
	ID        string `json:"id"`
	Interface string `json:"interface"`
	Region    string `json:"region"`
	RegionID  string `json:"region_id"`
	URL       string `json:"url"`
}

// stableID derives a Keystone-shaped id (32 hex) from its parts, so the
// catalog is the same on every host.
func stableID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// buildCatalog returns the service catalog of a token scoped to projectID.
func buildCatalog(baseURL, projectID string) []catalogEntry {
	out := make([]catalogEntry, 0, len(catalogServices))
	for _, svc := range catalogServices {
		url := baseURL + strings.ReplaceAll(svc.path, "{project_id}", projectID)
		e := catalogEntry{ID: stableID("service", svc.typ), Type: svc.typ, Name: svc.name}
		for _, iface := range interfaces {
			e.Endpoints = append(e.Endpoints, endpoint{
				ID: stableID("endpoint", svc.typ, iface), Interface: iface,
				Region: region, RegionID: region, URL: url,
			})
		}
		out = append(out, e)
	}
	return out
}

// authCatalog serves GET /v3/auth/catalog: the catalog of the caller's
// token.
func (s *service) authCatalog(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "catalog"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	if c.Cred.ProjectID == "" {
		return nil, rest.Forbiddenf("A project-scoped token is required to produce a service catalog.")
	}
	return map[string]any{"catalog": buildCatalog(base(c, sn), c.Cred.ProjectID),
		"links": collectionLinks(c, sn)}, nil
}
