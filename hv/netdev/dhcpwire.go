package netdev

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// noGatewayServerID is the server identifier when a subnet has no gateway.
var noGatewayServerID = net.IPv4(169, 254, 169, 254).To4()

// lease is what one port's responder hands out. All addresses are 4-byte.
type lease struct {
	MAC      net.HardwareAddr
	IP       net.IP
	Mask     net.IPMask
	Gateway  net.IP
	DNS      []net.IP
	Routes   []*dhcpv4.Route // option 121, the default route first
	Hostname string
	MTU      int
	ServerID net.IP
	Time     time.Duration
}

func leaseFor(p Port, mtu int, t time.Duration) lease {
	l := lease{MAC: p.MAC, IP: p.IP.To4(), Mask: net.CIDRMask(p.Prefix, 32),
		Hostname: p.Hostname, MTU: mtu, ServerID: noGatewayServerID, Time: t}
	if gw := p.Gateway.To4(); gw != nil {
		l.Gateway, l.ServerID = gw, gw
	}
	for _, d := range p.DNS {
		if d4 := d.To4(); d4 != nil {
			l.DNS = append(l.DNS, d4)
		}
	}
	// With option 121 clients ignore option 3 (RFC 3442): the default
	// route goes in it too.
	for i, r := range p.Routes {
		if i >= len(p.RouteVia) || r.IP.To4() == nil || p.RouteVia[i].To4() == nil {
			continue
		}
		if len(l.Routes) == 0 && l.Gateway != nil {
			l.Routes = append(l.Routes, &dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: l.Gateway})
		}
		l.Routes = append(l.Routes, &dhcpv4.Route{Dest: &net.IPNet{IP: r.IP.To4(), Mask: r.Mask}, Router: p.RouteVia[i].To4()})
	}
	return l
}

// buildReply answers a request from l's MAC; nil means no answer. It is pure.
func buildReply(req *dhcpv4.DHCPv4, l lease) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HopCount > 0 || req.ClientHWAddr.String() != l.MAC.String() {
		return nil
	}
	typ := dhcpv4.MessageTypeAck
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(l.ServerID) {
			return nil // the client selected another server
		}
		want := req.RequestedIPAddress()
		if want == nil {
			want = req.ClientIPAddr // renewing or rebinding
		}
		if !want.Equal(l.IP) {
			typ = dhcpv4.MessageTypeNak
		}
	case dhcpv4.MessageTypeInform:
	default:
		return nil // RELEASE, DECLINE: nothing to do, the address is fixed
	}
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(typ), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(l.ServerID))}
	if typ != dhcpv4.MessageTypeNak {
		bcast := make(net.IP, 4)
		for i := range bcast {
			bcast[i] = l.IP[i] | ^l.Mask[i]
		}
		mods = append(mods, dhcpv4.WithNetmask(l.Mask), dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(bcast)))
		if req.MessageType() != dhcpv4.MessageTypeInform {
			mods = append(mods, dhcpv4.WithYourIP(l.IP),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(l.Time)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(l.Time/2)),
				dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(l.Time*7/8)))
		}
		if l.Gateway != nil {
			mods = append(mods, dhcpv4.WithRouter(l.Gateway))
		}
		if len(l.DNS) > 0 {
			mods = append(mods, dhcpv4.WithDNS(l.DNS...))
		}
		if len(l.Routes) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(l.Routes...)))
		}
		if l.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname)))
		}
		if l.MTU > 0 {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(l.MTU))))
		}
	}
	reply, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil
	}
	return reply
}

// replyDst is where a reply goes: the client's MAC (the frame only ever
// reaches that VM), and its address when it has one, else broadcast.
func replyDst(req, reply *dhcpv4.DHCPv4) (net.HardwareAddr, net.IP) {
	if reply.MessageType() == dhcpv4.MessageTypeNak || req.ClientIPAddr.To4() == nil || req.ClientIPAddr.IsUnspecified() {
		return req.ClientHWAddr, net.IPv4bcast.To4()
	}
	return req.ClientHWAddr, req.ClientIPAddr.To4()
}

// parseFrame extracts the DHCP message of an Ethernet/IPv4/UDP frame.
func parseFrame(b []byte) (*dhcpv4.DHCPv4, error) {
	if len(b) < 14+20+8 || binary.BigEndian.Uint16(b[12:]) != unix.ETH_P_IP || b[14]>>4 != 4 || b[23] != unix.IPPROTO_UDP {
		return nil, errors.New("not an IPv4/UDP frame")
	}
	udp := b[14+int(b[14]&0xf)*4:]
	if len(udp) < 8 || binary.BigEndian.Uint16(udp[2:]) != 67 {
		return nil, errors.New("not to the DHCP server port")
	}
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < 8 || n > len(udp) {
		return nil, errors.New("bad UDP length")
	}
	return dhcpv4.FromBytes(udp[8:n])
}

// encodeFrame wraps payload in UDP 67→68, IPv4 and Ethernet headers.
func encodeFrame(dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, payload []byte) []byte {
	b := make([]byte, 14+20+8+len(payload))
	copy(b[0:], dstMAC)
	copy(b[6:], srcMAC)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip, udp := b[14:34], b[34:]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], src.To4())
	copy(ip[16:], dst.To4())
	binary.BigEndian.PutUint16(ip[10:], ^uint16(csum(0, ip)))
	binary.BigEndian.PutUint16(udp[0:], 67)
	binary.BigEndian.PutUint16(udp[2:], 68)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	c := ^uint16(csum(csum(csum(0, ip[12:20]), []byte{0, unix.IPPROTO_UDP, udp[4], udp[5]}), udp))
	if c == 0 {
		c = 0xffff // 0 means "no checksum"
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}

// csum is the Internet checksum's one's-complement sum, folded.
func csum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum
}
