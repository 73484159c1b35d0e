package netdev

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func testLease() lease {
	p := Port{MAC: mac(1), IP: net.IPv4(192, 168, 77, 11), Prefix: 24, Gateway: net.IPv4(192, 168, 77, 1),
		DNS: []net.IP{net.IPv4(192, 168, 77, 2)}, Hostname: "vm-a", DHCP: true}
	return leaseFor(p, 1450, time.Hour)
}

func TestBuildReply(t *testing.T) {
	l := testLease()
	disc, _ := dhcpv4.NewDiscovery(l.MAC)
	offer := buildReply(disc, l)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("buildReply(DISCOVER) = %v; want an OFFER", offer)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"yiaddr", offer.YourIPAddr.String(), "192.168.77.11"},
		{"mask", net.IP(offer.SubnetMask()).String(), "255.255.255.0"},
		{"router", offer.Router()[0].String(), "192.168.77.1"},
		{"dns", offer.DNS()[0].String(), "192.168.77.2"},
		{"hostname", offer.HostName(), "vm-a"},
		{"mtu", binary.BigEndian.Uint16(offer.Options.Get(dhcpv4.OptionInterfaceMTU)), uint16(1450)},
		{"lease", offer.IPAddressLeaseTime(0), time.Hour},
		{"server id", offer.ServerIdentifier().String(), "192.168.77.1"},
		{"xid", offer.TransactionID, disc.TransactionID},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("OFFER %s = %v; want %v", c.what, c.got, c.want)
		}
	}

	req, _ := dhcpv4.NewRequestFromOffer(offer)
	if ack := buildReply(req, l); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("buildReply(REQUEST) = %v; want an ACK", ack)
	}
	wrong, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 168, 77, 99))))
	if nak := buildReply(wrong, l); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("buildReply(REQUEST other IP) = %v; want a NAK", nak)
	}
	other, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(1, 2, 3, 4))))
	if r := buildReply(other, l); r != nil {
		t.Errorf("buildReply(REQUEST for another server) = %v; want nil", r)
	}
	stranger, _ := dhcpv4.NewDiscovery(mac(2))
	if r := buildReply(stranger, l); r != nil {
		t.Errorf("buildReply(DISCOVER from another MAC) = %v; want nil", r)
	}
	noGW := l
	noGW.Gateway, noGW.ServerID = nil, noGatewayServerID
	if r := buildReply(disc, noGW); r.Router() != nil || !r.ServerIdentifier().Equal(noGatewayServerID) {
		t.Errorf("OFFER without gateway: router %v server id %v", r.Router(), r.ServerIdentifier())
	}
}

func TestFrameRoundTrip(t *testing.T) {
	l := testLease()
	disc, _ := dhcpv4.NewDiscovery(l.MAC)
	frame := encodeFrame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, l.MAC, net.IPv4zero, net.IPv4bcast, disc.ToBytes())
	// encodeFrame writes 67→68; a request goes 68→67.
	binary.BigEndian.PutUint16(frame[34:], 68)
	binary.BigEndian.PutUint16(frame[36:], 67)
	got, err := parseFrame(frame)
	if err != nil || got.TransactionID != disc.TransactionID {
		t.Fatalf("parseFrame(encodeFrame(DISCOVER)) = %v, %v", got, err)
	}
	if sum := csum(0, frame[14:34]); sum != 0xffff {
		t.Errorf("IPv4 header checksum does not verify: %#x", sum)
	}
	udp := frame[34:]
	if sum := csum(csum(csum(0, frame[26:34]), []byte{0, 17, udp[4], udp[5]}), udp); sum != 0xffff {
		t.Errorf("UDP checksum does not verify: %#x", sum)
	}
	if _, err := parseFrame(frame[:30]); err == nil {
		t.Errorf("parseFrame(short) = nil error")
	}
}

func TestReplyDst(t *testing.T) {
	l := testLease()
	disc, _ := dhcpv4.NewDiscovery(l.MAC)
	disc.SetBroadcast()
	offer := buildReply(disc, l)
	if m, ip := replyDst(disc, offer); m.String() != l.MAC.String() || !ip.Equal(net.IPv4bcast) {
		t.Errorf("replyDst(DISCOVER) = %v %v; want the client MAC and broadcast", m, ip)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithClientIP(l.IP))
	if m, ip := replyDst(req, buildReply(req, l)); m.String() != l.MAC.String() || !ip.Equal(l.IP) {
		t.Errorf("replyDst(renewing REQUEST) = %v %v; want the client", m, ip)
	}
}
