// Package hvagent adapts the host drivers (hv/qemu, hv/netdev,
// hv/firewall, hv/router) to the interfaces the agent (node/agent) drives:
// type conversions and error translation only, no decisions. node wires
// them; the agent never sees an hv type.
package hvagent
