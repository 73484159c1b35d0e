package netdev

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestReplyHostRoutes: a subnet's host routes go out as option 121 with
// the default route first (clients ignore option 3 when 121 is present).
func TestReplyHostRoutes(t *testing.T) {
	_, dst, _ := net.ParseCIDR("192.168.50.0/24")
	p := Port{MAC: mac(1), IP: net.IPv4(10, 0, 0, 5), Prefix: 24, Gateway: net.IPv4(10, 0, 0, 1), DHCP: true,
		Routes: []net.IPNet{*dst}, RouteVia: []net.IP{net.IPv4(10, 0, 0, 9)}}
	l := leaseFor(p, 1450, time.Hour)
	disc, _ := dhcpv4.NewDiscovery(l.MAC)
	offer := buildReply(disc, l)
	if offer == nil {
		t.Fatal("no offer")
	}
	routes := offer.ClasslessStaticRoute()
	if len(routes) != 2 || routes[0].Dest.String() != "0.0.0.0/0" || !routes[0].Router.Equal(net.IPv4(10, 0, 0, 1)) ||
		routes[1].Dest.String() != "192.168.50.0/24" || !routes[1].Router.Equal(net.IPv4(10, 0, 0, 9)) {
		t.Errorf("option 121 = %v; want the default route then 192.168.50.0/24 via 10.0.0.9", routes)
	}
	if len(offer.Router()) != 1 {
		t.Errorf("option 3 = %v; want the gateway too", offer.Router())
	}
	// Without host routes there is no option 121.
	p.Routes, p.RouteVia = nil, nil
	if r := buildReply(disc, leaseFor(p, 1450, time.Hour)).ClasslessStaticRoute(); len(r) != 0 {
		t.Errorf("option 121 without host routes = %v", r)
	}
}
