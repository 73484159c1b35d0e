// Package firewall owns a host's packet filtering of its own ports: port
// security (a port sends only from its MAC and addresses, plus allowed
// address pairs; no DHCP server replies, router advertisements or ARP
// spoofing from VMs) and security group rules, in nftables tables named
// "peerstack-sg" (bridge and inet families). It imports nothing of the
// project, talks to the kernel only through netlink (github.com/google/nftables
// for rules and sets, github.com/ti-mo/conntrack for connection tracking;
// never nft(8) or conntrack(8)), and touches no table but its own.
//
// Layout. Ports are taps enslaved to one Linux bridge per network. The
// kernel tracks bridged IP traffic through br_netfilter (New turns on
// bridge-nf-call-iptables/ip6tables), which runs the inet hooks inside the
// bridge's prerouting at priority 0:
//
//   - bridge prerouting (-300), chain "from": per secured port "iifname <tap>
//     jump o-<port>"; o-<port> stamps the port's index into the packet mark
//     and lets through only ARP and IP from the port's (MAC, address) pairs,
//     DHCP client requests, and IPv6 link-local/DAD traffic; DHCP server
//     replies and router advertisements are dropped, everything else too.
//   - inet prerouting (-300), chain "zone": "iifname <bridge> ct zone set
//     <zone>" per network (br_netfilter shows the bridge as input device), so
//     overlapping tenant CIDRs of different networks stay apart, and notrack
//     for the traffic of stateless ports.
//   - inet prerouting (-150), chain "ctmark": copies the connection state
//     into two mark bits (established/related, invalid), because the bridge
//     family cannot read conntrack without nf_conntrack_bridge.
//   - bridge postrouting (0), chain "to": the sender's egress rules
//     ("meta mark & portmask == <index> jump e-<port>", which returns when
//     allowed) and then the receiver's ingress rules ("oifname <tap> jump
//     i-<port>"). Stateful chains accept established/related first and drop
//     invalid; stateless ones (notrack) evaluate every packet.
//
// Remote groups are named sets "g4-<group>"/"g6-<group>" of member
// addresses shared by every rule that names the group, so a member joining
// or leaving edits one set element, not rules.
//
// [Manager.Apply] builds the desired tables in memory, diffs them with what
// it applied last (chains by their rules, sets by their elements) and sends
// the difference as one nftables batch: one atomic transaction, and none at
// all when nothing changed. A changed chain is edited in place (only the
// rules that differ) after reading it back: every rule carries a tag (an
// nft comment hashing its expressions), and a chain that does not hold
// exactly the tags of what was applied last — changed from outside, or
// written by a release without tags — is flushed and rewritten in the same
// batch instead. [Desired.Verify] (the periodic full resync) reads every
// chain back so, and rewrites those that differ, and reads every set's
// members back and puts the desired ones back in place (members added
// from outside count as a narrowing: their connections are cut). After a change that narrows what a port
// allows, it deletes the conntrack entries of that port's zone the new rules
// no longer allow, so open connections are cut. [Manager.Cleanup] deletes
// the tables. Needs CAP_NET_ADMIN.
package firewall
