// Package router owns a host's share of tenant routing: per router with
// local presence a network namespace, the anycast gateway of each of its
// subnets, its extra routes, source NAT of its egress and the 1:1 NAT and
// ARP answers of the floating IPs of this host's ports. It imports nothing
// of the project, talks to the kernel only through netlink, nftables (one
// atomic transaction per changed table) and a packet socket for gratuitous
// ARP (never ip(8) or nft(8)), and touches only what carries its prefix.
//
// Layout, per router on a host (namespace "<NSPrefix><router id>"):
//
//   - per subnet interface a veth pair: "psrq<hash>" in the host namespace,
//     enslaved to the network's bridge, and "psri<hash>" in the router
//     namespace holding the subnet's gateway address and the interface
//     port's MAC. Every host with ports on the network has the same address
//     and MAC: an anycast gateway. The bridge table "peerstack-r-br" keeps
//     ARP for the gateway and frames from the gateway MAC off the VXLAN
//     ports, and rewrites the source MAC of frames the gateway routed onto
//     the overlay to this host's own MAC. East-west traffic is routed on
//     the sending host; remote ports are static neighbours, so the router
//     never ARPs across the overlay.
//   - with an external gateway, a veth pair "psrx<hash>" (host, address
//     169.254.0.1/32) and "psrxg" (router namespace, default route). The
//     router has a transit address in 169.254.64.0/18; the router table
//     "peerstack-r" DNATs each floating IP to its fixed address and SNATs
//     the fixed address back (two maps, so a floating IP is an element,
//     not a rule), and SNATs all other egress to the transit
//     address, which the host table "peerstack-r" masquerades to the
//     host's own address on the external interface (and, for traffic
//     routed out of a router towards the cluster's protected addresses,
//     on whichever interface leads there). Overlapping tenant
//     CIDRs of different routers never meet: each router is its own
//     namespace and leaves it under its own transit address.
//   - a floating IP gets a /32 route to its router's veth and a proxy ARP
//     entry on the external interface: only the host that runs the port
//     answers ARP for it. A floating IP new on this host is announced with
//     gratuitous ARP (one an Apply failed to announce stays pending for the
//     next). Its NAT map entries go in before its address, route and proxy
//     entry, and come out after them. Proxy ARP entries on the external
//     interfaces belong to this package.
//   - the host table also guards the cluster: traffic from router
//     namespaces may reach this host only on Desired.AllowTCP ports (and as
//     replies), and may reach Desired.Protected prefixes only on those
//     ports.
//
// Apply converges to the whole desired state: it reads the actual state
// and writes only differences, so an unchanged state costs no netlink or
// nftables write; whatever carries the prefix and is not wanted (after a
// crash mid-change too) is removed. A change of floating IPs alone
// (nothing else differs from the last state applied) writes just those
// without reading the rest; an unchanged state takes the full path, so a
// periodic resync repairs drift. Cleanup removes everything.
package router
