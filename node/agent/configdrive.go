package agent

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// buildConfigDrive computes the OpenStack config drive of inst: identity,
// keys, metadata, user data (decoded from base64) and network_data.json
// from its ports. tap names a port's tap device (the link id). It is pure.
func buildConfigDrive(sn *statedb.Snapshot, inst *statedb.Instance, ports []*statedb.Port, tap func(portID string) string) (ConfigDrive, error) {
	cd := ConfigDrive{
		UUID: inst.ID, Hostname: Hostname(inst.Name, inst.ID), Name: inst.Name, AvailabilityZone: inst.AZ,
		ProjectID: inst.ProjectID, LaunchIndex: inst.LaunchIndex, Meta: inst.Metadata,
	}
	if inst.KeyData != "" {
		name := inst.KeyName
		if name == "" {
			name = "key"
		}
		cd.PublicKeys = map[string]string{name: inst.KeyData}
	}
	if inst.UserData != "" {
		ud, err := decodeUserData(inst.UserData)
		if err != nil {
			return cd, fmt.Errorf("server %s: user_data: %w", inst.ID, err)
		}
		cd.UserData = ud
	}
	cd.NetworkData = networkData(sn, ports, tap)
	return cd, nil
}

// decodeUserData decodes base64 user data (padded or not).
func decodeUserData(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("not valid base64: %w", err)
	}
	return b, nil
}

// Hostname derives a guest host name from a server name as Nova does:
// lower case, spaces and underscores become dashes, other characters
// outside [a-z0-9.-] are dropped, leading and trailing dots and dashes are
// trimmed, at most 63 characters; an empty result becomes "server-<id>".
func Hostname(name, id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r == ' ' || r == '_':
			b.WriteByte('-')
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		}
	}
	h := strings.Trim(b.String(), ".-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], ".-")
	}
	if h == "" {
		h = "server-" + id
	}
	return h
}

// compactID is id without dashes, cut to n characters.
func compactID(id string, n int) string {
	s := strings.ReplaceAll(id, "-", "")
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// ndLink, ndNetwork, ndRoute and ndService are network_data.json's shapes
// (OpenStack metadata format, as Nova writes it).
type ndLink struct {
	ID   string `json:"id"`
	VIF  string `json:"vif_id"`
	Type string `json:"type"`
	MTU  int    `json:"mtu,omitempty"`
	MAC  string `json:"ethernet_mac_address"`
}

type ndRoute struct {
	Network string `json:"network"`
	Netmask string `json:"netmask"`
	Gateway string `json:"gateway"`
}

type ndService struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

type ndNetwork struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	Link      string      `json:"link"`
	IPAddress string      `json:"ip_address,omitempty"`
	Netmask   string      `json:"netmask,omitempty"`
	Routes    []ndRoute   `json:"routes,omitempty"`
	NetworkID string      `json:"network_id"`
	Services  []ndService `json:"services,omitempty"`
}

// netData is network_data.json.
type netData struct {
	Links    []ndLink    `json:"links"`
	Networks []ndNetwork `json:"networks"`
	Services []ndService `json:"services"`
}

// networkData renders the ports' links, networks and DNS services: an IPv4
// address on a subnet with DHCP is "ipv4_dhcp" (the host's DHCP responder
// hands it out), otherwise a static entry with netmask and routes.
func networkData(sn *statedb.Snapshot, ports []*statedb.Port, tap func(string) string) netData {
	nd := netData{Links: []ndLink{}, Networks: []ndNetwork{}, Services: []ndService{}}
	seenDNS := map[string]bool{}
	for _, p := range ports {
		mtu := 0
		if n, ok := sn.Network(p.NetworkID); ok {
			mtu = n.MTU
		}
		link := tap(p.ID)
		nd.Links = append(nd.Links, ndLink{ID: link, VIF: p.ID, Type: "bridge", MTU: mtu, MAC: p.MAC})
		for _, f := range p.FixedIPs {
			s, ok := sn.Subnet(f.SubnetID)
			if !ok {
				continue
			}
			addr, err := netip.ParseAddr(f.IP)
			if err != nil {
				continue
			}
			var svc []ndService
			for _, d := range s.DNSNameservers {
				svc = append(svc, ndService{Type: "dns", Address: d})
				if !seenDNS[d] {
					seenDNS[d] = true
					nd.Services = append(nd.Services, ndService{Type: "dns", Address: d})
				}
			}
			id := fmt.Sprintf("network%d", len(nd.Networks))
			if addr.Is4() && s.EnableDHCP {
				nd.Networks = append(nd.Networks, ndNetwork{ID: id, Type: "ipv4_dhcp", Link: link, NetworkID: p.NetworkID, Services: svc})
				continue
			}
			typ := "ipv4"
			if !addr.Is4() {
				typ = "ipv6"
			}
			n := ndNetwork{ID: id, Type: typ, Link: link, IPAddress: f.IP, NetworkID: p.NetworkID, Services: svc}
			if pfx, err := netip.ParsePrefix(s.CIDR); err == nil {
				n.Netmask = maskString(pfx)
			}
			if s.GatewayIP != "" {
				def, mask := "0.0.0.0", "0.0.0.0"
				if !addr.Is4() {
					def, mask = "::", "::"
				}
				n.Routes = append(n.Routes, ndRoute{Network: def, Netmask: mask, Gateway: s.GatewayIP})
			}
			for _, r := range s.HostRoutes {
				if pfx, err := netip.ParsePrefix(r.Destination); err == nil {
					n.Routes = append(n.Routes, ndRoute{Network: pfx.Addr().String(), Netmask: maskString(pfx), Gateway: r.NextHop})
				}
			}
			nd.Networks = append(nd.Networks, n)
		}
	}
	return nd
}

// maskString is a prefix's netmask in dotted (IPv4) or colon (IPv6) form.
func maskString(p netip.Prefix) string {
	bits := 32
	if !p.Addr().Is4() {
		bits = 128
	}
	m := net.CIDRMask(p.Bits(), bits)
	if bits == 32 {
		return net.IP(m).String()
	}
	return net.IP(m).To16().String()
}
