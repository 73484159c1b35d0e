package network

import (
	"github.com/peerstack/peerstack/rest"
)

// versions serves GET /network and /network/: the versions document
// gophercloud's NewNetworkV2 requires (anonymous).
func (s *service) versions(c *rest.Ctx) (any, error) {
	href := base(c, s.b.State()) + "/network/v2.0/"
	return map[string]any{"versions": []map[string]any{{
		"id": "v2.0", "status": "CURRENT",
		"links": []map[string]string{{"rel": "self", "href": href}},
	}}}, nil
}

// resources serves GET /network/v2.0: the collections of this version.
func (s *service) resources(c *rest.Ctx) (any, error) {
	b := base(c, s.b.State()) + "/network/v2.0/"
	out := []map[string]any{}
	for _, r := range [][2]string{{"network", "networks"}, {"subnet", "subnets"}, {"port", "ports"}, {"router", "routers"}, {"floatingip", "floatingips"}} {
		out = append(out, map[string]any{"name": r[0], "collection": r[1],
			"links": []map[string]string{{"rel": "self", "href": b + r[1]}}})
	}
	return map[string]any{"resources": out}, nil
}

// extension is one entry of GET /v2.0/extensions.
type extension struct {
	Name        string   `json:"name"`
	Alias       string   `json:"alias"`
	Description string   `json:"description"`
	Updated     string   `json:"updated"`
	Links       []string `json:"links"`
}

// extensions lists what this server implements, no more.
var extensions = []extension{
	{"Neutron external network", "external-net", "Adds external network attribute to network resource.", "2013-01-14T10:00:00-00:00", nil},
	{"Provider Network", "provider", "Expose mapping of virtual networks to physical networks (admin only): vxlan, flat and vlan.", "2012-09-07T10:00:00-00:00", nil},
	{"Neutron L3 Router", "router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.", "2012-07-20T10:00:00-00:00", nil},
	{"Neutron L3 Configurable external gateway mode", "ext-gw-mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway", "2013-03-28T10:00:00-00:00", nil},
	{"Neutron Extra Route", "extraroute", "Extra routes configuration for L3 router", "2013-02-01T10:00:00-00:00", nil},
	{"Distributed Virtual Router", "dvr", "Enables configuration of Distributed Virtual Routers; here every router is distributed.", "2014-06-1T10:00:00-00:00", nil},
	{"Floating IP Port Details Extension", "fip-port-details", "Add port_details attribute to Floating IP resource", "2018-04-09T10:00:00-00:00", nil},
	{"Port Binding", "binding", "Expose port bindings of a virtual port to external application.", "2014-02-03T10:00:00-00:00", nil},
	{"Network MTU", "net-mtu", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00", nil},
	{"Network MTU (writable)", "net-mtu-writable", "Provides a writable MTU attribute for a network resource.", "2017-07-12T00:00:00-00:00", nil},
	{"Tag support for resources with standard attribute: subnet, network, port", "standard-attr-tag", "Enables to set tag on resources with standard attribute.", "2017-01-01T00:00:00-00:00", nil},
	{"standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes", "2016-02-10T10:00:00-00:00", nil},
	{"Resource revision numbers", "standard-attr-revisions", "This extension will display the revision number of neutron resources.", "2016-04-11T10:00:00-00:00", nil},
	{"Resource timestamps", "standard-attr-timestamp", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.", "2016-09-12T10:00:00-00:00", nil},
	{"project_id field enabled", "project-id", "Extension that indicates that project_id field is enabled.", "2016-09-09T09:09:09-09:09", nil},
	{"Pagination support", "pagination", "Extension that indicates that pagination is enabled.", "2016-06-12T00:00:00-00:00", nil},
	{"security-group", "security-group", "The security groups extension.", "2012-10-05T10:00:00-00:00", nil},
	{"Stateful security group", "stateful-security-group", "Indicates if the security group is stateful or not", "2020-06-26T00:00:00-00:00", nil},
	{"Address group", "address-group", "Support address group", "2020-07-15T10:00:00-00:00", nil},
	{"Remote address group id field for security group rules", "security-groups-remote-address-group", "Add new field of remote address group id in security group rules", "2020-07-15T10:00:00-00:00", nil},
	{"Port Security", "port-security", "Provides port security", "2012-07-23T10:00:00-00:00", nil},
	{"Allowed Address Pairs", "allowed-address-pairs", "Provides allowed address pairs", "2013-07-23T10:00:00-00:00", nil},
	{"Sorting support", "sorting", "Extension that indicates that sorting is enabled.", "2016-06-12T00:00:00-00:00", nil},
}

func extView(e extension) extension {
	e.Links = []string{}
	return e
}

// listExtensions serves GET /v2.0/extensions.
func (s *service) listExtensions(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Extension"); err != nil {
		return nil, err
	}
	out := make([]extension, 0, len(extensions))
	for _, e := range extensions {
		out = append(out, extView(e))
	}
	return map[string]any{"extensions": out}, nil
}

// getExtension serves GET /v2.0/extensions/{alias}.
func (s *service) getExtension(c *rest.Ctx) (any, error) {
	if err := s.mayList(c, "Extension"); err != nil {
		return nil, err
	}
	alias := c.Var("alias")
	for _, e := range extensions {
		if e.Alias == alias {
			return map[string]any{"extension": extView(e)}, nil
		}
	}
	return nil, notFound("Extension", alias)
}
