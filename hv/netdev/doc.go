// Package netdev owns a host's tenant-network plumbing: per network a Linux
// bridge and a VXLAN device, one persistent tap per local port, the static
// VXLAN forwarding (FDB) entries that replace multicast and learning, and a
// DHCP responder per local port. It imports nothing of the project, talks to
// the kernel only through netlink and the /dev/net/tun ioctls (never ip(8) or
// bridge(8)), and touches only devices whose names carry its prefix.
//
// A network with local ports gets a bridge "<prefix>br<vni>", a VXLAN device
// "<prefix>vx<vni>" (VNI, local VTEP, UDP 4789, learning off) and the ports'
// taps (see [TapName]) enslaved to it; QEMU attaches to a tap by name. The
// VXLAN device holds one all-zeros MAC entry per remote host with ports on the
// network (head-end replication of broadcast) and one entry per remote port
// MAC pointing at its host's VTEP.
//
// A flat or VLAN provider network ([Provider]) has no bridge: each local
// port's tap is wired by a tc ingress redirect on both sides to a macvlan
// "<prefix>pm<id>" carrying the guest's MAC on the mapped host interface
// (or on an 802.1Q sub-interface "<prefix>pv<hash>" of it for a VLAN). The
// host interface is never enslaved and keeps its addresses.
//
// [Manager.Apply] reads the actual state, computes operations with the pure
// [Diff] and executes them. The diff is per object, so one port changing among
// thousands costs O(1) writes, and an Apply of an unchanged state writes
// nothing. Creations and changes register an undo as they succeed and are
// undone in reverse if a later step fails (deletions of unwanted objects are
// not undone). [Manager.Close] stops the DHCP responders but keeps the
// devices, so VMs survive daemon restarts and a new Manager adopts them;
// [Manager.Cleanup] deletes every device with the prefix.
//
// DHCP: each host answers only for its own ports. Per port with DHCP enabled
// an AF_PACKET socket is bound to the port's tap with ETH_P_ALL (those hooks
// run before the bridge consumes the frame; a protocol-specific binding would
// never see it) and a classic BPF filter that lets only inbound IPv4/UDP to
// port 67 reach user space. The responder answers DISCOVER, REQUEST and
// INFORM from the port's MAC with its fixed address, mask, router, DNS, host
// name (12), MTU (26), lease times and server identifier, builds the
// Ethernet/IPv4/UDP frame itself and writes it back into the tap: the reply
// reaches exactly that VM, never the bridge or the overlay, the bridge needs
// no address on the tenant subnet, and nobody else's lease is visible. server4
// was not used: it needs a UDP socket on an interface with an address on the
// subnet, would hear every MAC of the segment (remote ports included) and its
// broadcast replies would flood the overlay. The server identifier is the
// gateway (as in OVN), or 169.254.169.254 without one; unicast renewals are
// seen on the tap whatever their destination, and without a gateway to
// resolve the client falls back to a broadcast rebind, which is answered.
//
// Responder goroutines belong to the Manager; Apply starts and stops them to
// follow the ports, Close stops them all. netdev needs CAP_NET_ADMIN and
// CAP_NET_RAW; without them operations fail with [ErrPermission].
package netdev
