package statedb

import (
	"crypto/sha1"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Security groups: Neutron security groups and their rules, which the
// ports of a network refer to by id. Commands 150-164 (the networks
// block); apply functions live in secgroups_apply.go.
const (
	tblSecGroups = "secgroups"
	tblSecRules  = "secgroup_rules"
)

var secGroupTables = []table{
	idTable(tblSecGroups, func() any { return &SecurityGroup{} }, "ProjectID", "Name"),
	idTable(tblSecRules, func() any { return &SecurityGroupRule{} }, "GroupID", "RemoteGroupID", "ProjectID", "RemoteAddressGroupID"),
	idTable(tblAddrGroups, func() any { return &AddressGroup{} }, "ProjectID"), // addrgroups.go
}

// Rule directions and ether types.
const (
	Ingress = "ingress"
	Egress  = "egress"
	IPv4    = "IPv4"
	IPv6    = "IPv6"
)

// DefaultSecGroupName is the name of the group every project gets on
// first use.
const DefaultSecGroupName = "default"

// SecurityGroup is a named set of rules ports refer to. Stateful groups
// track connections (replies are allowed); stateless ones do not.
type SecurityGroup struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	ProjectID   string    `json:"project_id"`
	Description string    `json:"description"`
	Stateful    bool      `json:"stateful"`
	Tags        []string  `json:"tags"`
	Revision    int       `json:"revision_number"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// SecurityGroupRule allows one kind of traffic into or out of the ports
// of its group. Protocol is "" (any), a name Neutron knows, or a number
// 0-255 as a string. PortMin/PortMax are the port range for TCP, UDP,
// SCTP and DCCP, or the ICMP type and code; nil means any. RemoteIP is a
// normalised CIDR, RemoteGroupID a group whose members' addresses match,
// RemoteAddressGroupID an address group's prefixes; all empty means
// anywhere.
type SecurityGroupRule struct {
	ID            string    `json:"id"`
	GroupID       string    `json:"security_group_id"`
	ProjectID     string    `json:"project_id"`
	Direction     string    `json:"direction"`
	EtherType     string    `json:"ethertype"`
	Protocol      string    `json:"protocol,omitempty"`
	PortMin       *int      `json:"port_range_min,omitempty"`
	PortMax       *int      `json:"port_range_max,omitempty"`
	RemoteIP      string    `json:"remote_ip_prefix,omitempty"`
	RemoteGroupID string    `json:"remote_group_id,omitempty"`
	Description   string    `json:"description"`
	Revision      int       `json:"revision_number"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`

	RemoteAddressGroupID string `json:"remote_address_group_id,omitempty"`
}

// AddressPair is an extra address (and optionally MAC) a port may send
// from besides its own.
type AddressPair struct {
	IP  string `json:"ip_address"` // address or CIDR
	MAC string `json:"mac_address"`
}

// SecGroup returns a security group by id.
func (sn *Snapshot) SecGroup(id string) (*SecurityGroup, bool) {
	return get[SecurityGroup](sn, tblSecGroups, id)
}

// SecGroups lists all security groups.
func (sn *Snapshot) SecGroups() []*SecurityGroup { return list[SecurityGroup](sn, tblSecGroups) }

// SecGroupsOfProject lists a project's security groups.
func (sn *Snapshot) SecGroupsOfProject(projectID string) []*SecurityGroup {
	return listBy[SecurityGroup](sn, tblSecGroups, "ProjectID", projectID)
}

// SecRule returns a security group rule by id.
func (sn *Snapshot) SecRule(id string) (*SecurityGroupRule, bool) {
	return get[SecurityGroupRule](sn, tblSecRules, id)
}

// SecRules lists all security group rules.
func (sn *Snapshot) SecRules() []*SecurityGroupRule { return list[SecurityGroupRule](sn, tblSecRules) }

// SecRulesOf lists the rules of a group.
func (sn *Snapshot) SecRulesOf(groupID string) []*SecurityGroupRule {
	return listBy[SecurityGroupRule](sn, tblSecRules, "GroupID", groupID)
}

// SecRulesReferring lists the rules whose remote group is groupID.
func (sn *Snapshot) SecRulesReferring(groupID string) []*SecurityGroupRule {
	return listBy[SecurityGroupRule](sn, tblSecRules, "RemoteGroupID", groupID)
}

// DefaultSecGroup returns a project's default group if it exists.
func (sn *Snapshot) DefaultSecGroup(projectID string) (*SecurityGroup, bool) {
	return sn.SecGroup(DefaultSecGroupID(projectID))
}

// PortsOfSecGroup lists the ports that are members of a group.
func (sn *Snapshot) PortsOfSecGroup(groupID string) []*Port {
	var out []*Port
	for _, p := range sn.Ports() {
		for _, g := range p.SecurityGroups {
			if g == groupID {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// DefaultSecGroupID is the id of a project's default group: derived from
// the project, so every host creating it in apply picks the same one.
func DefaultSecGroupID(projectID string) string { return derivedID("default-secgroup/" + projectID) }

// derivedID is a UUID-shaped id derived from a seed (name-based, SHA-1).
func derivedID(seed string) string {
	h := sha1.Sum([]byte(seed))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// protocolNumbers are the protocol names Neutron accepts.
var protocolNumbers = map[string]int{
	"ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "icmpv6": 58,
	"igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "ipv6-nonxt": 59,
	"ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6,
	"udp": 17, "udplite": 136, "vrrp": 112,
}

// ProtocolNumber is the IP protocol number of a rule protocol; -1 for
// any ("").
func ProtocolNumber(proto string) (int, bool) {
	if proto == "" || proto == "any" {
		return -1, true
	}
	if n, ok := protocolNumbers[strings.ToLower(proto)]; ok {
		return n, true
	}
	n, err := strconv.Atoi(proto)
	if err != nil || n < 0 || n > 255 {
		return 0, false
	}
	return n, true
}

// portProtocols are the protocols with port ranges.
func portProtocol(n int) bool { return n == 6 || n == 17 || n == 132 || n == 33 || n == 136 }

// icmpProtocol reports whether n is ICMP or ICMPv6 (min/max = type/code).
func icmpProtocol(n int) bool { return n == 1 || n == 58 }

// Messages of security group failures; the API maps their leading words
// to Neutron error types, so keep those stable.
const (
	MsgSecGroupNotFound   = "Security group %s does not exist"
	MsgSecRuleNotFound    = "Security group rule %s does not exist"
	MsgSecGroupInUse      = "Security Group %s in use."
	MsgSecGroupDefault    = "Insufficient rights for removing default security group."
	MsgSecRuleExists      = "Security group rule already exists. Rule id is %s."
	MsgSecRuleProtocol    = "Security group rule protocol %s not supported. Only protocol values [None, 'ah', 'dccp', 'egp', 'esp', 'gre', 'hopopt', 'icmp', 'igmp', 'ipip', 'ipv6-encap', 'ipv6-frag', 'ipv6-icmp', 'icmpv6', 'ipv6-nonxt', 'ipv6-opts', 'ipv6-route', 'ospf', 'pgm', 'rsvp', 'sctp', 'tcp', 'udp', 'udplite', 'vrrp'] and integer representations [0 to 255] are supported."
	MsgSecRulePortRange   = "For TCP/UDP protocols, port_range_min must be <= port_range_max"
	MsgSecRulePortValue   = "Invalid value for port %d"
	MsgSecRuleICMP        = "Invalid value for ICMP %s (%s) %d. It must be 0 to 255."
	MsgSecRuleICMPCode    = "ICMP code (port-range-max) %d is provided but ICMP type (port-range-min) is missing."
	MsgSecRulePortsNoProt = "Must also specify protocol if port range is given."
	MsgSecRuleRemoteBoth  = "Only remote_ip_prefix or remote_group_id may be provided."
	MsgSecRuleRemoteMany  = "Only one of remote_ip_prefix, remote_group_id or remote_address_group_id may be provided."
	MsgSecRuleConflict    = "Conflicting value ethertype %s for CIDR %s"
	MsgSecRuleDirection   = "Invalid input for direction. Reason: %s is not in [ingress, egress]."
	MsgSecRuleEtherType   = "Invalid input for ethertype. Reason: %s is not in [IPv4, IPv6]."
	MsgSecRuleRemoteIP    = "Invalid input for remote_ip_prefix. Reason: '%s' is not a valid IP prefix."
	MsgPortSecurityGroups = "Port has security group associated. Cannot disable port security or ip address until security group is removed"
	MsgAddressPairsNoSec  = "Address pairs need port security enabled."
)

// NormalizeRule validates a rule as Neutron does and puts it in canonical
// form: direction and ether type checked, protocol lowercased (numbers of
// named protocols stay as given), the remote prefix masked. It does not
// look at other objects.
func NormalizeRule(r *SecurityGroupRule) error {
	if r.Direction != Ingress && r.Direction != Egress {
		return Errorf(KindInvalid, MsgSecRuleDirection, r.Direction)
	}
	if r.EtherType == "" {
		r.EtherType = IPv4
	}
	switch strings.ToLower(r.EtherType) {
	case "ipv4":
		r.EtherType = IPv4
	case "ipv6":
		r.EtherType = IPv6
	default:
		return Errorf(KindInvalid, MsgSecRuleEtherType, r.EtherType)
	}
	r.Protocol = strings.ToLower(r.Protocol)
	if r.Protocol == "any" {
		r.Protocol = ""
	}
	proto, ok := ProtocolNumber(r.Protocol)
	if !ok {
		return Errorf(KindInvalid, MsgSecRuleProtocol, r.Protocol)
	}
	switch {
	case proto < 0 && (r.PortMin != nil || r.PortMax != nil):
		return Errorf(KindInvalid, MsgSecRulePortsNoProt)
	case portProtocol(proto):
		for _, p := range []*int{r.PortMin, r.PortMax} {
			if p != nil && (*p < 1 || *p > 65535) {
				return Errorf(KindInvalid, MsgSecRulePortValue, *p)
			}
		}
		if r.PortMin != nil && r.PortMax == nil {
			v := *r.PortMin
			r.PortMax = &v
		}
		if r.PortMax != nil && r.PortMin == nil {
			return Errorf(KindInvalid, MsgSecRulePortRange)
		}
		if r.PortMin != nil && *r.PortMin > *r.PortMax {
			return Errorf(KindInvalid, MsgSecRulePortRange)
		}
	case icmpProtocol(proto):
		if r.PortMin != nil && (*r.PortMin < 0 || *r.PortMin > 255) {
			return Errorf(KindInvalid, MsgSecRuleICMP, "type", "port_range_min", *r.PortMin)
		}
		if r.PortMax != nil && (*r.PortMax < 0 || *r.PortMax > 255) {
			return Errorf(KindInvalid, MsgSecRuleICMP, "code", "port_range_max", *r.PortMax)
		}
		if r.PortMax != nil && r.PortMin == nil {
			return Errorf(KindInvalid, MsgSecRuleICMPCode, *r.PortMax)
		}
	case r.PortMin != nil || r.PortMax != nil:
		// Neutron ignores ranges of protocols without ports.
		r.PortMin, r.PortMax = nil, nil
	}
	if r.RemoteIP != "" && r.RemoteGroupID != "" {
		return Errorf(KindInvalid, MsgSecRuleRemoteBoth)
	}
	if r.RemoteAddressGroupID != "" && (r.RemoteIP != "" || r.RemoteGroupID != "") {
		return Errorf(KindInvalid, MsgSecRuleRemoteMany)
	}
	if r.RemoteIP != "" {
		pfx, err := parsePrefix(r.RemoteIP)
		if err != nil {
			return Errorf(KindInvalid, MsgSecRuleRemoteIP, r.RemoteIP)
		}
		if pfx.Addr().Is4() != (r.EtherType == IPv4) {
			return Errorf(KindInvalid, MsgSecRuleConflict, r.EtherType, r.RemoteIP)
		}
		r.RemoteIP = pfx.Masked().String()
	}
	return nil
}

// parsePrefix reads a CIDR or a bare address (a host prefix).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// sameRule reports whether two rules of a group match the same traffic
// (Neutron's duplicate check): protocol names and numbers are equal.
func sameRule(a, b *SecurityGroupRule) bool {
	pa, _ := ProtocolNumber(a.Protocol)
	pb, _ := ProtocolNumber(b.Protocol)
	eq := func(x, y *int) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) }
	return a.Direction == b.Direction && a.EtherType == b.EtherType && pa == pb &&
		eq(a.PortMin, b.PortMin) && eq(a.PortMax, b.PortMax) && a.RemoteIP == b.RemoteIP &&
		a.RemoteGroupID == b.RemoteGroupID && a.RemoteAddressGroupID == b.RemoteAddressGroupID
}
