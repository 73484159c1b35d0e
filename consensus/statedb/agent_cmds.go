package statedb

import "time"

// Payloads of the commands that connect the leader's scheduler and the host
// agents to the state (PlaceInstances, ReportInstance, ReportImageHolder,
// ReportPort, ReportVolume). They are fixed here so both sides code against
// one contract; numbers and apply functions are rows of the registry
// (registry.go), apply functions live with their resource.

// HostCap is what the scheduler believed a host offers when it planned.
type HostCap struct {
	VCPUs  int `json:"vcpus"`
	RAMMB  int `json:"ram_mb"`
	DiskGB int `json:"disk_gb"`
}

// Ratios are allocation ratios (CPU 4.0, RAM 1.0, disk 1.0 by default).
type Ratios struct {
	CPU  float64 `json:"cpu"`
	RAM  float64 `json:"ram"`
	Disk float64 `json:"disk"`
}

// PlaceInstancesCmd is a scheduler plan. Apply accepts each placement only
// if the instance is still pending and the claims on the host (instances
// already placed there plus this one) fit HostCaps under Ratios; the
// rejected ones stay pending (the leader re-plans). Failures put the
// instance into ERROR with the reason as its fault.
type PlaceInstancesCmd struct {
	PlanIndex  uint64             `json:"plan_index"` // state index the plan was computed at
	Placements []PlacementRec     `json:"placements"`
	Failures   []PlacementFailure `json:"failures"`
	HostCaps   map[string]HostCap `json:"host_caps"`
	Ratios     Ratios             `json:"ratios"`
}

// PlacementRec puts one instance on one host.
type PlacementRec struct {
	InstanceID string `json:"instance_id"`
	HostID     string `json:"host_id"`
}

// PlacementFailure says no host fits an instance.
type PlacementFailure struct {
	InstanceID string `json:"instance_id"`
	Reason     string `json:"reason"`
}

// ReportInstanceCmd is what a host agent observed for one instance. Apply
// ignores reports from a host the instance is not placed on. Gone=true
// with Desired "deleted" removes the instance record (and its claims).
type ReportInstanceCmd struct {
	InstanceID string    `json:"instance_id"`
	HostID     string    `json:"host_id"`
	VMState    string    `json:"vm_state"`
	TaskState  string    `json:"task_state"`
	PowerState int       `json:"power_state"`
	RebootDone int       `json:"reboot_done"`
	Fault      *Fault    `json:"fault,omitempty"`
	LaunchedAt time.Time `json:"launched_at,omitempty"`
	Gone       bool      `json:"gone,omitempty"`
}

// ReportImageHolderCmd adds (or with Drop removes) a holder of an image blob.
type ReportImageHolderCmd struct {
	ImageID string `json:"image_id"`
	HostID  string `json:"host_id"`
	Drop    bool   `json:"drop,omitempty"`
}

// ReportPortCmd sets a port's status as its host sees it.
type ReportPortCmd struct {
	PortID string `json:"port_id"`
	HostID string `json:"host_id"`
	Status string `json:"status"` // ACTIVE or DOWN
}

// ReportVolumeCmd is a host agent's report on a volume: the file was
// created/extended/deleted (Status), or an attachment reached a state
// (AttachmentID + AttachmentState "attached" or "detached"), or failed
// (Error).
type ReportVolumeCmd struct {
	VolumeID        string `json:"volume_id"`
	HostID          string `json:"host_id"`
	Status          string `json:"status,omitempty"` // available, error, deleted (record removed), error_deleting
	AttachmentID    string `json:"attachment_id,omitempty"`
	AttachmentState string `json:"attachment_state,omitempty"` // attached, detached
	Device          string `json:"device,omitempty"`
	Error           string `json:"error,omitempty"`
	// Path is where the host made the file of a volume placed on its local
	// storage without one (status available after creating).
	Path string `json:"path,omitempty"`
}
