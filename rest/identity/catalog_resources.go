package identity

import (
	"strings"

	"github.com/peerstack/peerstack/rest"
)

// The catalog as Keystone resources (admin only, read only): services,
// endpoints and the one region. Ids are the ones tokens carry.

func (s *service) serviceView(c *rest.Ctx, svc catalogService) map[string]any {
	id := stableID("service", svc.typ)
	return map[string]any{"id": id, "type": svc.typ, "name": svc.name, "enabled": true, "description": "",
		"links": map[string]string{"self": base(c, s.b.State()) + "/identity/v3/services/" + id}}
}

// endpointURL is the endpoint's URL as Keystone stores it: the project
// as the "%(project_id)s" substitution.
func endpointURL(baseURL string, svc catalogService) string {
	return baseURL + strings.ReplaceAll(svc.path, "{project_id}", "%(project_id)s")
}

func (s *service) endpointView(c *rest.Ctx, svc catalogService, iface string) map[string]any {
	sn := s.b.State()
	id := stableID("endpoint", svc.typ, iface)
	return map[string]any{"id": id, "interface": iface, "region": region, "region_id": region,
		"service_id": stableID("service", svc.typ), "url": endpointURL(base(c, sn), svc), "enabled": true,
		"links": map[string]string{"self": base(c, sn) + "/identity/v3/endpoints/" + id}}
}

// listCatalogServices serves GET /v3/services (?type=, ?name=).
func (s *service) listCatalogServices(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "services"); err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, svc := range catalogServices {
		if t := c.Query("type"); t != "" && t != svc.typ {
			continue
		}
		if n := c.Query("name"); n != "" && n != svc.name {
			continue
		}
		out = append(out, s.serviceView(c, svc))
	}
	return map[string]any{"services": out, "links": collectionLinks(c, s.b.State())}, nil
}

// getCatalogService serves GET /v3/services/{service_id}.
func (s *service) getCatalogService(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "services"); err != nil {
		return nil, err
	}
	id := c.Var("service_id")
	for _, svc := range catalogServices {
		if stableID("service", svc.typ) == id {
			return map[string]any{"service": s.serviceView(c, svc)}, nil
		}
	}
	return nil, notFound("service", id)
}

// listEndpoints serves GET /v3/endpoints (?service_id=, ?interface=,
// ?region_id=).
func (s *service) listEndpoints(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "endpoints"); err != nil {
		return nil, err
	}
	if i := c.Query("interface"); i != "" && !contains(interfaces, i) {
		return nil, rest.BadRequest("Invalid interface: %s. It must be one of public, internal, admin.", i)
	}
	out := []map[string]any{}
	for _, svc := range catalogServices {
		if sid := c.Query("service_id"); sid != "" && sid != stableID("service", svc.typ) {
			continue
		}
		if r := c.Query("region_id"); r != "" && r != region {
			continue
		}
		for _, iface := range interfaces {
			if i := c.Query("interface"); i != "" && i != iface {
				continue
			}
			out = append(out, s.endpointView(c, svc, iface))
		}
	}
	return map[string]any{"endpoints": out, "links": collectionLinks(c, s.b.State())}, nil
}

// getEndpoint serves GET /v3/endpoints/{endpoint_id}.
func (s *service) getEndpoint(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "endpoints"); err != nil {
		return nil, err
	}
	id := c.Var("endpoint_id")
	for _, svc := range catalogServices {
		for _, iface := range interfaces {
			if stableID("endpoint", svc.typ, iface) == id {
				return map[string]any{"endpoint": s.endpointView(c, svc, iface)}, nil
			}
		}
	}
	return nil, notFound("endpoint", id)
}

func (s *service) regionView(c *rest.Ctx) map[string]any {
	return map[string]any{"id": region, "description": "", "parent_region_id": nil,
		"links": map[string]string{"self": base(c, s.b.State()) + "/identity/v3/regions/" + region}}
}

// listRegions serves GET /v3/regions: the one region (any token).
func (s *service) listRegions(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "regions"); err != nil {
		return nil, err
	}
	return map[string]any{"regions": []map[string]any{s.regionView(c)}, "links": collectionLinks(c, s.b.State())}, nil
}

// getRegion serves GET /v3/regions/{region_id}.
func (s *service) getRegion(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "regions"); err != nil {
		return nil, err
	}
	if id := c.Var("region_id"); id != region {
		return nil, notFound("region", id)
	}
	return map[string]any{"region": s.regionView(c)}, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
