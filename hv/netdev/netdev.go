package netdev

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultPrefix is the device name prefix used when Config.Prefix is empty.
const DefaultPrefix = "ps"

// DefaultMTU is the overlay MTU used when Network.MTU is zero: a 1500-byte
// underlay minus the 50 bytes of VXLAN encapsulation.
const DefaultMTU = 1450

// VXLANPort is the UDP destination port of every VXLAN device.
const VXLANPort = 4789

const (
	maxIfName   = 15
	maxPrefix   = 5
	maxVNI      = 1<<24 - 1
	defaultWait = 10 * time.Second
	defaultTerm = 24 * time.Hour
)

// Sentinel errors. Errors returned by the package wrap one of them when they
// apply, together with the underlying error.
var (
	// ErrInvalid: the desired state or the configuration is malformed.
	ErrInvalid = errors.New("netdev: invalid argument")
	// ErrPermission: the process lacks CAP_NET_ADMIN or CAP_NET_RAW.
	ErrPermission = errors.New("netdev: permission denied: needs CAP_NET_ADMIN (devices, FDB) and CAP_NET_RAW (DHCP)")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("netdev: manager closed")
)

// Port is one local port: a tap that QEMU attaches to, and its DHCP lease.
type Port struct {
	ID       string           // port uuid
	Tap      string           // tap device name, see TapName
	MAC      net.HardwareAddr // the guest's MAC
	IP       net.IP           // fixed IPv4 address handed out by DHCP
	Prefix   int              // subnet prefix length
	Gateway  net.IP           // may be nil
	DNS      []net.IP         // may be empty
	Routes   []net.IPNet      // host routes (option 121) via RouteVia, same order
	RouteVia []net.IP         //
	Hostname string           // option 12; may be empty
	DHCP     bool             // the subnet has enable_dhcp

	// Provider ports only: the sources the guest may send from besides
	// DHCP, ARP probes and IPv6 link-local (its fixed IPs with its MAC, and
	// its allowed address pairs); Unfiltered (port security disabled) lets
	// it send any IPv4, ARP or IPv6 frame. See wire.go.
	Sources    []Source
	Unfiltered bool
}

// RemoteMAC is a port on another host: its MAC lives behind that host's VTEP.
type RemoteMAC struct {
	MAC  net.HardwareAddr
	VTEP net.IP
}

// Network is one tenant network as this host must see it.
type Network struct {
	ID      string
	VNI     uint32
	MTU     int         // overlay MTU; 0 means DefaultMTU
	Routed  bool        // plumb it even without local ports (a router here needs it)
	Ports   []Port      // local ports
	Remotes []net.IP    // remote VTEPs with ports on this network (flood entries)
	MACs    []RemoteMAC // remote port MACs
}

// Desired is everything this host must have. A network with no local ports
// is not plumbed at all (no bridge, no VXLAN device) unless it is Routed.
type Desired struct {
	LocalVTEP   net.IP // this host's underlay address, source of VXLAN packets
	UnderlayDev string // optional: device the VXLAN devices send through
	Networks    []Network
	Providers   []Provider // flat and VLAN provider networks
}

// Config configures a Manager.
type Config struct {
	Prefix    string        // device name prefix, default "ps", at most 5 characters
	Logger    *slog.Logger  // default slog.Default()
	NetNS     string        // optional path of a network namespace to operate in; "" = current
	Timeout   time.Duration // per netlink call; default 10s
	LeaseTime time.Duration // DHCP lease time; default 24h
}

// Stats counts what one Apply did.
type Stats struct {
	Ops         int // netlink (and tun ioctl) write operations performed, undo included
	Created     int // links created
	Deleted     int // links deleted
	Updated     int // link attribute changes (master, MTU, up)
	FDBAdded    int // FDB entries added or replaced
	FDBDeleted  int // FDB entries deleted
	DHCPStarted int // DHCP responders started
	DHCPStopped int // DHCP responders stopped
}

// TapName is the tap name of a port with the default prefix: "pstap" and the
// first 10 characters of the id without dashes.
func TapName(id string) string { return tapName(DefaultPrefix, id) }

// TapName is the tap name of a port under this Manager's prefix.
func (m *Manager) TapName(id string) string { return tapName(m.prefix, id) }

func tapName(prefix, id string) string { return portIfName(prefix+"tap", id) }

// portIfName is base followed by as much of port id (without dashes) as
// an interface name holds.
func portIfName(base, id string) string {
	id = strings.ReplaceAll(id, "-", "")
	if n := maxIfName - len(base); len(id) > n {
		id = id[:n]
	}
	return base + id
}

func bridgeName(prefix string, vni uint32) string {
	return prefix + "br" + strconv.FormatUint(uint64(vni), 10)
}

func vxlanName(prefix string, vni uint32) string {
	return prefix + "vx" + strconv.FormatUint(uint64(vni), 10)
}

func networkMTU(n Network) int {
	if n.MTU == 0 {
		return DefaultMTU
	}
	return n.MTU
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func validPrefix(p string) error {
	if p == "" || len(p) > maxPrefix || strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return invalid("prefix %q: 1 to %d characters of a-z, 0-9, '-'", p, maxPrefix)
	}
	return nil
}

// validate checks what Diff and the executor assume about desired; it
// returns desired without the provider networks it refuses alone (bad).
func validate(d Desired, prefix string) (Desired, *ProvidersFailed, error) {
	if (d.LocalVTEP.To4() == nil && len(d.Networks) > 0) || len(d.UnderlayDev) > maxIfName {
		return d, nil, invalid("local VTEP %v (must be IPv4), underlay device %q", d.LocalVTEP, d.UnderlayDev)
	}
	seen := map[any]bool{}
	for _, n := range d.Networks {
		if mtu := networkMTU(n); n.VNI == 0 || n.VNI > maxVNI || seen[n.VNI] || mtu < 68 || mtu > 65535 {
			return d, nil, invalid("network %s: VNI %d (1 to 2^24-1, unique), MTU %d", n.ID, n.VNI, mtu)
		}
		seen[n.VNI] = true
		for _, p := range n.Ports {
			if err := validPort(p, prefix, seen); err != nil {
				return d, nil, err
			}
		}
		for _, r := range n.Remotes {
			if r.To4() == nil {
				return d, nil, invalid("network %s: remote VTEP %v is not IPv4", n.ID, r)
			}
		}
		for _, r := range n.MACs {
			if len(r.MAC) != 6 || r.VTEP.To4() == nil {
				return d, nil, invalid("network %s: remote MAC %v at %v", n.ID, r.MAC, r.VTEP)
			}
		}
	}
	ok, bad, err := validateProviders(d, prefix, seen)
	d.Providers = ok
	return d, bad, err
}

// validPort checks one local port and records its tap in seen.
func validPort(p Port, prefix string, seen map[any]bool) error {
	switch {
	case !strings.HasPrefix(p.Tap, prefix+"tap") || len(p.Tap) > maxIfName || len(p.Tap) == len(prefix)+3 || seen[p.Tap]:
		return invalid("port %s: tap %q must be unique, %stap... and at most %d characters", p.ID, p.Tap, prefix, maxIfName)
	case len(p.MAC) != 6:
		return invalid("port %s: MAC %v", p.ID, p.MAC)
	case p.DHCP && (p.IP.To4() == nil || p.Prefix < 1 || p.Prefix > 32):
		return invalid("port %s: DHCP needs an IPv4 address and prefix, have %v/%d", p.ID, p.IP, p.Prefix)
	}
	seen[p.Tap] = true
	return nil
}
