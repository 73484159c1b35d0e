package identity

import (
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// domainView is the one domain, Default.
type domainView struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Enabled     bool           `json:"enabled"`
	Tags        []string       `json:"tags"`
	Options     map[string]any `json:"options"`
	Links       selfLink       `json:"links"`
}

func defaultDomain(c *rest.Ctx, sn *statedb.Snapshot) domainView {
	return domainView{ID: statedb.DefaultDomainID, Name: "Default", Description: "The default domain",
		Enabled: true, Tags: []string{}, Options: emptyOptions(),
		Links: selfLink{Self: v3URL(c, sn, "domains/"+statedb.DefaultDomainID)}}
}

// listDomains serves GET /v3/domains (?name=, ?enabled=).
func (s *service) listDomains(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "domain"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	out := []domainView{}
	q := c.R.URL.Query()
	enabled, hasEnabled, err := queryBool(c, "enabled")
	if err != nil {
		return nil, err
	}
	if (!q.Has("name") || q.Get("name") == "Default") && (!hasEnabled || enabled) {
		out = append(out, defaultDomain(c, sn))
	}
	return map[string]any{"domains": out, "links": collectionLinks(c, sn)}, nil
}

// getDomain serves GET /v3/domains/{id}; only "default" exists, so a
// lookup by name is a 404 and clients fall back to ?name=.
func (s *service) getDomain(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "domain"); err != nil {
		return nil, err
	}
	id := c.Var("domain_id")
	if id != statedb.DefaultDomainID {
		return nil, notFound("domain", id)
	}
	return map[string]any{"domain": defaultDomain(c, s.b.State())}, nil
}

// authDomains serves GET /v3/auth/domains: domain-scoped tokens are not
// supported, so there is none to scope to.
func (s *service) authDomains(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "domain"); err != nil {
		return nil, err
	}
	sn := s.b.State()
	return map[string]any{"domains": []domainView{}, "links": collectionLinks(c, sn)}, nil
}
