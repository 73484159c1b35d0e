package statedb

import "time"

// networkApply maps this resource's commands to their apply functions.
var networkApply = map[CmdType]applyFunc{}

// PortRequest asks for a port inside another command's apply (server
// create): on NetworkID, optionally on given subnets / addresses.
type PortRequest struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	ProjectID   string        `json:"project_id"`
	NetworkID   string        `json:"network_id"`
	FixedIPs    []FixedIPWant `json:"fixed_ips,omitempty"`
	MAC         string        `json:"mac,omitempty"`
	DeviceID    string        `json:"device_id"`
	DeviceOwner string        `json:"device_owner"`
}

// FixedIPWant is a requested subnet and/or address.
type FixedIPWant struct {
	SubnetID string `json:"subnet_id,omitempty"`
	IP       string `json:"ip_address,omitempty"`
}

// createPort allocates a port (MAC, fixed IPs) inside a transaction. Used by
// the port API and by server create.
func createPort(t *Txn, now time.Time, req PortRequest) (*Port, error) {
	return nil, Errorf(KindInternal, "ports are not available yet")
}
