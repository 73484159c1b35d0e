package statedb

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestIPAMParseCIDR(t *testing.T) {
	tests := []struct {
		in      string
		version int
		want    string
		err     error
	}{
		{"10.0.0.0/24", 4, "10.0.0.0/24", nil},
		{"10.0.0.77/24", 0, "10.0.0.0/24", nil},
		{" 192.168.1.0/30 ", 4, "192.168.1.0/30", nil},
		{"2001:db8::5/64", 6, "2001:db8::/64", nil},
		{"2001:db8::/64", 4, "", ErrInvalid},
		{"10.0.0.0/24", 6, "", ErrInvalid},
		{"10.0.0.0/31", 4, "", ErrInvalid},
		{"10.0.0.0/32", 4, "", ErrInvalid},
		{"0.0.0.0/0", 4, "", ErrInvalid},
		{"10.0.0.0/33", 4, "", ErrInvalid},
		{"10.0.0.0", 4, "", ErrInvalid},
		{"not-a-cidr", 0, "", ErrInvalid},
		{"", 0, "", ErrInvalid},
		{"::ffff:10.0.0.0/120", 0, "", ErrInvalid},
	}
	for _, tt := range tests {
		got, err := parseCIDR(tt.in, tt.version)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("parseCIDR(%q, %d) = %v, %v; want %v", tt.in, tt.version, got, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("parseCIDR(%q, %d) = %v, %v; want %s", tt.in, tt.version, got, err, tt.want)
		}
	}
}

func TestIPAMSubnetDefaults(t *testing.T) {
	tests := []struct {
		name          string
		in            Subnet
		gwAuto, pAuto bool
		wantGW        string
		wantPools     []IPRange
	}{
		{"v4 defaults", Subnet{CIDR: "10.0.0.0/24"}, true, true, "10.0.0.1",
			[]IPRange{{"10.0.0.2", "10.0.0.254"}}},
		{"v4 no gateway", Subnet{CIDR: "10.0.0.0/24"}, false, true, "",
			[]IPRange{{"10.0.0.1", "10.0.0.254"}}},
		{"v4 last-host gateway", Subnet{CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.254"}, false, true, "10.0.0.254",
			[]IPRange{{"10.0.0.1", "10.0.0.253"}}},
		{"v4 middle gateway", Subnet{CIDR: "10.1.0.0/16", GatewayIP: "10.1.7.1"}, false, true, "10.1.7.1",
			[]IPRange{{"10.1.0.1", "10.1.7.0"}, {"10.1.7.2", "10.1.255.254"}}},
		{"v4 /30", Subnet{CIDR: "10.0.0.4/30"}, true, true, "10.0.0.5",
			[]IPRange{{"10.0.0.6", "10.0.0.6"}}},
		{"v4 explicit pools sorted", Subnet{CIDR: "10.0.0.0/24", AllocationPools: []IPRange{{"10.0.0.100", "10.0.0.110"}, {"10.0.0.10", "10.0.0.20"}}}, true, false, "10.0.0.1",
			[]IPRange{{"10.0.0.10", "10.0.0.20"}, {"10.0.0.100", "10.0.0.110"}}},
		{"v6 defaults", Subnet{CIDR: "2001:db8::/64", IPVersion: 6}, true, true, "2001:db8::1",
			[]IPRange{{"2001:db8::2", "2001:db8::ffff:ffff:ffff:ffff"}}},
		{"v6 stateful", Subnet{CIDR: "fd00:1::/64", IPv6AddressMode: "dhcpv6-stateful"}, true, true, "fd00:1::1",
			[]IPRange{{"fd00:1::2", "fd00:1::ffff:ffff:ffff:ffff"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.in
			if err := prepareSubnet(&s, tt.gwAuto, tt.pAuto); err != nil {
				t.Fatalf("prepareSubnet(%+v) = %v", tt.in, err)
			}
			if s.GatewayIP != tt.wantGW || !reflect.DeepEqual(s.AllocationPools, tt.wantPools) {
				t.Errorf("prepareSubnet(%+v) = gw %q pools %v; want %q %v", tt.in, s.GatewayIP, s.AllocationPools, tt.wantGW, tt.wantPools)
			}
			if s.DNSNameservers == nil || s.HostRoutes == nil || s.Tags == nil {
				t.Errorf("prepareSubnet left nil lists: %+v", s)
			}
		})
	}
}

func TestIPAMSubnetErrors(t *testing.T) {
	base := func(f func(*Subnet)) Subnet {
		s := Subnet{CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.1", AllocationPools: []IPRange{{"10.0.0.2", "10.0.0.254"}}}
		f(&s)
		return s
	}
	tests := []struct {
		name string
		in   Subnet
		want error
	}{
		{"gateway outside cidr", base(func(s *Subnet) { s.GatewayIP = "192.168.0.1" }), ErrInvalid},
		{"gateway is network address", base(func(s *Subnet) { s.GatewayIP = "10.0.0.0" }), ErrInvalid},
		{"gateway is broadcast", base(func(s *Subnet) { s.GatewayIP = "10.0.0.255"; s.AllocationPools = nil }), ErrInvalid},
		{"gateway garbage", base(func(s *Subnet) { s.GatewayIP = "gw" }), ErrInvalid},
		{"gateway wrong family", base(func(s *Subnet) { s.GatewayIP = "fe80::1" }), ErrInvalid},
		{"overlapping pools", base(func(s *Subnet) {
			s.AllocationPools = []IPRange{{"10.0.0.2", "10.0.0.100"}, {"10.0.0.50", "10.0.0.150"}}
		}), ErrInvalid},
		{"pool outside cidr", base(func(s *Subnet) { s.AllocationPools = []IPRange{{"10.0.1.2", "10.0.1.20"}} }), ErrInvalid},
		{"pool spans broadcast", base(func(s *Subnet) { s.AllocationPools = []IPRange{{"10.0.0.2", "10.0.0.255"}} }), ErrInvalid},
		{"pool reversed", base(func(s *Subnet) { s.AllocationPools = []IPRange{{"10.0.0.20", "10.0.0.2"}} }), ErrInvalid},
		{"pool garbage", base(func(s *Subnet) { s.AllocationPools = []IPRange{{"x", "10.0.0.2"}} }), ErrInvalid},
		{"pool holds gateway", base(func(s *Subnet) { s.AllocationPools = []IPRange{{"10.0.0.1", "10.0.0.9"}} }), ErrConflict},
		{"bad dns", base(func(s *Subnet) { s.DNSNameservers = []string{"dns.example"} }), ErrInvalid},
		{"duplicate dns", base(func(s *Subnet) { s.DNSNameservers = []string{"1.1.1.1", "1.1.1.1"} }), ErrInvalid},
		{"bad route destination", base(func(s *Subnet) { s.HostRoutes = []HostRoute{{"10.9.0.0", "10.0.0.5"}} }), ErrInvalid},
		{"bad route nexthop", base(func(s *Subnet) { s.HostRoutes = []HostRoute{{"10.9.0.0/16", "2001:db8::1"}} }), ErrInvalid},
		{"v6 mode on v4", base(func(s *Subnet) { s.IPv6AddressMode = "dhcpv6-stateful" }), ErrInvalid},
		{"slaac", Subnet{CIDR: "2001:db8::/64", IPv6AddressMode: "slaac"}, ErrInvalid},
		{"bad cidr", Subnet{CIDR: "10.0.0.0/40"}, ErrInvalid},
	}
	for _, tt := range tests {
		s := tt.in
		if err := prepareSubnet(&s, false, false); !errors.Is(err, tt.want) {
			t.Errorf("%s: prepareSubnet(%+v) = %v; want %v", tt.name, tt.in, err, tt.want)
		}
	}
}

func TestIPAMNextFree(t *testing.T) {
	s := &Subnet{CIDR: "10.0.0.0/29", GatewayIP: "10.0.0.1"}
	if err := prepareSubnet(s, false, true); err != nil {
		t.Fatal(err)
	}
	used := map[netip.Addr]bool{}
	var got []string
	for {
		a, ok := nextFreeIP(s, used)
		if !ok {
			break
		}
		used[a] = true
		got = append(got, a.String())
	}
	want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("allocation order = %v; want %v", got, want)
	}
	// Releasing one frees exactly it, and the lowest is chosen first.
	delete(used, netip.MustParseAddr("10.0.0.4"))
	delete(used, netip.MustParseAddr("10.0.0.6"))
	if a, ok := nextFreeIP(s, used); !ok || a.String() != "10.0.0.4" {
		t.Errorf("nextFreeIP after release = %v, %v; want 10.0.0.4", a, ok)
	}
	// Pools with holes: the second pool is used once the first is full.
	s2 := &Subnet{CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.1", AllocationPools: []IPRange{{"10.0.0.50", "10.0.0.51"}, {"10.0.0.10", "10.0.0.10"}}}
	if err := prepareSubnet(s2, false, false); err != nil {
		t.Fatal(err)
	}
	used = map[netip.Addr]bool{}
	got = nil
	for {
		a, ok := nextFreeIP(s2, used)
		if !ok {
			break
		}
		used[a] = true
		got = append(got, a.String())
	}
	if want := []string{"10.0.0.10", "10.0.0.50", "10.0.0.51"}; !reflect.DeepEqual(got, want) {
		t.Errorf("allocation over pools = %v; want %v", got, want)
	}
}

func TestIPAMRequested(t *testing.T) {
	s := &Subnet{ID: "s1", CIDR: "10.0.0.0/24"}
	if err := prepareSubnet(s, true, true); err != nil {
		t.Fatal(err)
	}
	used := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.7"): true}
	tests := []struct {
		ip        string
		gatewayOK bool
		want      error
	}{
		{"10.0.0.9", false, nil},
		{"10.0.0.7", false, ErrConflict},
		{"10.0.0.1", false, ErrConflict},
		{"10.0.0.1", true, nil},
		{"10.0.0.0", false, ErrInvalid},
		{"10.0.0.255", false, ErrInvalid},
		{"10.0.1.5", false, ErrInvalid},
		{"2001:db8::5", false, ErrInvalid},
		{"ten", false, ErrInvalid},
	}
	for _, tt := range tests {
		_, err := checkRequestedIP(s, tt.ip, used, tt.gatewayOK)
		if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("checkRequestedIP(%q, gatewayOK=%v) = %v; want %v", tt.ip, tt.gatewayOK, err, tt.want)
		}
	}
	v6 := &Subnet{ID: "s6", CIDR: "2001:db8::/64"}
	if err := prepareSubnet(v6, true, true); err != nil {
		t.Fatal(err)
	}
	if a, err := checkRequestedIP(v6, "2001:db8::00ff", nil, false); err != nil || a.String() != "2001:db8::ff" {
		t.Errorf("checkRequestedIP(v6) = %v, %v; want 2001:db8::ff", a, err)
	}
}
