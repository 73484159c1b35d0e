package e2e

// The box's LAN: a bridge in the root namespace with a LAN namespace (a
// client and the external network's gateway) and every host's interface
// lan0 as ports, the hosts mapping it as physical network physnet1. The
// root namespace has no address on it, so nothing outside the box reaches
// it. Behind the LAN namespace, routed and not on the bridge, an
// "internet" namespace: the hosts reach it through the LAN's gateway, as a
// homelab host reaches the internet through its router, and it has no
// route to anything but the LAN. The bridge, the namespace and the veths carry the run prefix and are
// registered in the run's state like the underlay's, so teardown removes
// them by name.

import (
	"context"
	"fmt"
	"strconv"
)

// BoxPhysnet is the physical network the hosts map their lan0 to.
const BoxPhysnet = "physnet1"

// boxLANIface is each host's interface on the LAN.
const boxLANIface = "lan0"

// BoxLAN is the box's external network.
type BoxLAN struct {
	NS      string // the LAN namespace
	CIDR    string // the LAN's prefix
	Gateway string // the LAN namespace's address: the external subnet's gateway
	Bridge  string
	// Internet is the namespace behind the LAN namespace, at InternetAddr
	// on InternetCIDR.
	Internet, InternetCIDR, InternetAddr string
}

// HostAddr is host i's own address on the LAN (its SNAT source).
func (l *BoxLAN) HostAddr(i int) string { return fmt.Sprintf("203.0.113.%d", 10+i) }

// Pool is the floating IP range of the external subnet, clear of the
// gateway and the hosts' addresses.
func (l *BoxLAN) Pool() (start, end string) { return "203.0.113.100", "203.0.113.199" }

// startLAN creates the LAN bridge and namespace and gives every host a
// lan0 on it with its own address, forwarding on.
func (b *Box) startLAN(ctx context.Context) error {
	l := &BoxLAN{NS: b.Prefix + "lan", CIDR: "203.0.113.0/24", Gateway: "203.0.113.1", Bridge: b.Prefix + "lanbr"}
	if err := ip(ctx, "link", "add", l.Bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := b.addLink(l.Bridge); err != nil {
		return err
	}
	if err := ip(ctx, "link", "set", l.Bridge, "up"); err != nil {
		return err
	}
	if err := ip(ctx, "netns", "add", l.NS); err != nil {
		return err
	}
	if err := b.addNetns(l.NS); err != nil {
		return err
	}
	if err := b.lanPort(ctx, b.Prefix+"lv0", l.NS, "eth0", l.Gateway, l.Bridge); err != nil {
		return err
	}
	if err := b.startInternet(ctx, l); err != nil {
		return err
	}
	for _, h := range b.Hosts {
		if err := b.lanPort(ctx, b.Prefix+"lh"+strconv.Itoa(h.Index), h.NS, boxLANIface, l.HostAddr(h.Index), l.Bridge); err != nil {
			return err
		}
		if _, err := sh(ctx, "ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
		if err := ip(ctx, "-n", h.NS, "route", "add", l.InternetCIDR, "via", l.Gateway, "dev", boxLANIface); err != nil {
			return err
		}
	}
	b.LAN = l
	b.logf("LAN %s: namespace %s at %s, hosts' %s mapped as %s; internet %s at %s behind it", l.CIDR, l.NS, l.Gateway,
		boxLANIface, BoxPhysnet, l.Internet, l.InternetAddr)
	return nil
}

// startInternet creates the internet namespace, wired to the LAN
// namespace by a veth pair that lives only in those two namespaces (gone
// with them), the LAN namespace forwarding.
func (b *Box) startInternet(ctx context.Context, l *BoxLAN) error {
	l.Internet, l.InternetCIDR, l.InternetAddr = b.Prefix+"inet", "198.51.100.0/24", "198.51.100.2"
	if err := ip(ctx, "netns", "add", l.Internet); err != nil {
		return err
	}
	if err := b.addNetns(l.Internet); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"-n", l.NS, "link", "add", "inet0", "type", "veth", "peer", "name", "eth0", "netns", l.Internet},
		{"-n", l.NS, "addr", "add", "198.51.100.1/24", "dev", "inet0"},
		{"-n", l.NS, "link", "set", "inet0", "up"},
		{"-n", l.Internet, "link", "set", "lo", "up"},
		{"-n", l.Internet, "addr", "add", l.InternetAddr + "/24", "dev", "eth0"},
		{"-n", l.Internet, "link", "set", "eth0", "up"},
		{"-n", l.Internet, "route", "add", "default", "via", "198.51.100.1"},
	} {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	_, err := sh(ctx, "ip", "netns", "exec", l.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return err
}

// lanPort connects namespace ns to the LAN bridge: veth (root side,
// registered) with its peer named dev in ns holding addr/24.
func (b *Box) lanPort(ctx context.Context, veth, ns, dev, addr, bridge string) error {
	if err := ip(ctx, "link", "add", veth, "type", "veth", "peer", "name", dev, "netns", ns); err != nil {
		return err
	}
	if err := b.addLink(veth); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"link", "set", veth, "master", bridge, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", dev, "up"},
		{"-n", ns, "addr", "add", addr + "/24", "dev", dev},
	} {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}
