package statedb

import (
	"sort"
	"time"
)

// Compute: flavors, keypairs, instances (servers), server groups.
// Commands 50-99. Apply functions live in computes_apply.go.
const (
	tblFlavors      = "flavors"
	tblKeypairs     = "keypairs"
	tblInstances    = "instances"
	tblServerGroups = "server_groups"
)

var computeTables = []table{
	idTable(tblFlavors, func() any { return &Flavor{} }, "Name"),
	idTable(tblKeypairs, func() any { return &Keypair{} }, "UserID"),
	idTable(tblInstances, func() any { return &Instance{} }, "ProjectID", "Host", "TaskState"),
	idTable(tblServerGroups, func() any { return &ServerGroup{} }, "ProjectID"),
	instanceActionTables[0], instanceActionTables[1],
}

// Flavor is a Nova flavor.
type Flavor struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	VCPUs       int               `json:"vcpus"`
	RAMMB       int               `json:"ram_mb"`
	DiskGB      int               `json:"disk_gb"`
	EphemeralGB int               `json:"ephemeral_gb"`
	SwapMB      int               `json:"swap_mb"`
	RxTxFactor  float64           `json:"rxtx_factor"`
	Public      bool              `json:"public"`
	Disabled    bool              `json:"disabled"`
	ExtraSpecs  map[string]string `json:"extra_specs,omitempty"`
	Projects    []string          `json:"projects,omitempty"` // access list of a private flavor
	CreatedAt   time.Time         `json:"created_at"`
}

// Keypair is a user's SSH public key. ID is "<user id>/<name>".
type Keypair struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	UserID      string    `json:"user_id"`
	PublicKey   string    `json:"public_key"`
	Fingerprint string    `json:"fingerprint"`
	Type        string    `json:"type"` // "ssh"
	CreatedAt   time.Time `json:"created_at"`
}

// KeypairID is the key of a keypair.
func KeypairID(userID, name string) string { return userID + "/" + name }

// Power states as Nova numbers them.
const (
	PowerNoState  = 0
	PowerRunning  = 1
	PowerShutdown = 4
	PowerCrashed  = 6
)

// Instance is a server: the desired state (set by the API), its placement
// (set by the scheduler) and its actual state (reported by the host agent).
type Instance struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	ProjectID   string            `json:"project_id"`
	UserID      string            `json:"user_id"`
	Flavor      Flavor            `json:"flavor"` // copy at create time
	ImageID     string            `json:"image_id,omitempty"`
	RootVolume  string            `json:"root_volume,omitempty"` // boot from volume
	KeyName     string            `json:"key_name,omitempty"`
	KeyData     string            `json:"key_data,omitempty"`
	UserData    string            `json:"user_data,omitempty"` // base64 as sent
	Metadata    map[string]string `json:"metadata"`
	AZ          string            `json:"az"`
	GroupID     string            `json:"group_id,omitempty"`
	PortIDs     []string          `json:"port_ids,omitempty"`
	ConfigDrive bool              `json:"config_drive"`
	LaunchIndex int               `json:"launch_index"`
	Reservation string            `json:"reservation_id"`
	Arch        string            `json:"arch,omitempty"` // from the image's hw_architecture
	// RequestedHost is the member id an admin asked the first placement
	// to use (compute 2.74 host, or availability_zone "nova:host"); only
	// a CreateInstancesOnHost entry sets it.
	RequestedHost string `json:"requested_host,omitempty"`

	// CreatedPorts are the PortIDs server create made: they go with the
	// instance, while ports the caller passed in are only unbound.
	CreatedPorts   []string `json:"created_ports,omitempty"`
	SecurityGroups []string `json:"security_groups,omitempty"` // names as requested

	// Placement (scheduler).
	Host       string `json:"host,omitempty"`       // member id
	Placements int    `json:"placements,omitempty"` // accepted placements: an audit counter, never above 1

	// A locked server refuses actions from anyone but an admin, as in
	// Nova; LockedBy is "owner" or "admin" (instance_actions.go).
	Locked       bool     `json:"locked,omitempty"`
	LockedBy     string   `json:"locked_by,omitempty"`
	LockedReason string   `json:"locked_reason,omitempty"`
	Tags         []string `json:"tags,omitempty"`
	Description  string   `json:"description,omitempty"`

	// Day-2 actions (day2_compute.go): the image a rescue boots from, the
	// image a snapshot under way fills.
	RescueImage   string       `json:"rescue_image,omitempty"`
	SnapshotImage string       `json:"snapshot_image,omitempty"`
	Resize        *ResizeState `json:"resize,omitempty"` // day2_resize.go

	// Desired power: "running", "stopped", "paused", "suspended" or
	// "deleted"; the agent converges.
	Desired    string `json:"desired"`
	RebootSeq  int    `json:"reboot_seq,omitempty"` // bumped per reboot request
	RebootHard bool   `json:"reboot_hard,omitempty"`

	// Actual (agent reports and scheduler).
	VMState    string    `json:"vm_state"`   // building, active, stopped, error, deleted
	TaskState  string    `json:"task_state"` // scheduling, block_device_mapping, spawning, powering-off, powering-on, rebooting, rebooting_hard, deleting, ""
	PowerState int       `json:"power_state"`
	RebootDone int       `json:"reboot_done,omitempty"` // last RebootSeq the agent carried out
	Fault      *Fault    `json:"fault,omitempty"`
	LaunchedAt time.Time `json:"launched_at,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Fault is why an instance is in ERROR.
type Fault struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Details string    `json:"details,omitempty"`
	Created time.Time `json:"created"`
}

// ServerGroup is a Nova server group.
type ServerGroup struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	ProjectID string    `json:"project_id"`
	UserID    string    `json:"user_id"`
	Policy    string    `json:"policy"` // affinity, anti-affinity, soft-affinity, soft-anti-affinity
	Members   []string  `json:"members"`
	CreatedAt time.Time `json:"created_at"`

	// MaxServerPerHost is Nova's max_server_per_host rule (2.64): with
	// anti-affinity, up to this many members may run on one host; 0 is
	// no rule (one per host). Only CreateServerGroupWithRules sets it.
	MaxServerPerHost int `json:"max_server_per_host,omitempty"`
}

// Flavor returns a flavor by id.
func (sn *Snapshot) Flavor(id string) (*Flavor, bool) { return get[Flavor](sn, tblFlavors, id) }

// Flavors lists flavors sorted by name.
func (sn *Snapshot) Flavors() []*Flavor {
	return sortByName(list[Flavor](sn, tblFlavors), func(f *Flavor) string { return f.Name })
}

// Keypair returns a user's keypair by name.
func (sn *Snapshot) Keypair(userID, name string) (*Keypair, bool) {
	return get[Keypair](sn, tblKeypairs, KeypairID(userID, name))
}

// Keypairs lists a user's keypairs.
func (sn *Snapshot) Keypairs(userID string) []*Keypair {
	return sortByName(listBy[Keypair](sn, tblKeypairs, "UserID", userID), func(k *Keypair) string { return k.Name })
}

// Instance returns an instance by id.
func (sn *Snapshot) Instance(id string) (*Instance, bool) { return get[Instance](sn, tblInstances, id) }

// Instances lists all instances.
func (sn *Snapshot) Instances() []*Instance { return list[Instance](sn, tblInstances) }

// InstancesOnHost lists instances placed on a host.
func (sn *Snapshot) InstancesOnHost(hostID string) []*Instance {
	return listBy[Instance](sn, tblInstances, "Host", hostID)
}

// ServerGroup returns a server group by id.
func (sn *Snapshot) ServerGroup(id string) (*ServerGroup, bool) {
	return get[ServerGroup](sn, tblServerGroups, id)
}

// ServerGroups lists all server groups.
func (sn *Snapshot) ServerGroups() []*ServerGroup { return list[ServerGroup](sn, tblServerGroups) }

// Instance desired power states.
const (
	DesiredRunning = "running"
	DesiredStopped = "stopped"
	DesiredDeleted = "deleted"
)

// Instance VM states (Nova's vm_state).
const (
	VMBuilding = "building"
	VMActive   = "active"
	VMStopped  = "stopped"
	VMError    = "error"
	VMDeleted  = "deleted"
)

// Instance task states (Nova's task_state, "" is none).
const (
	TaskScheduling = "scheduling"
	// TaskBlockDeviceMapping: placed, waiting for its new boot volume.
	TaskBlockDeviceMapping = "block_device_mapping"
	TaskSpawning           = "spawning"
	TaskPoweringOff        = "powering-off"
	TaskPoweringOn         = "powering-on"
	TaskRebooting          = "rebooting"
	TaskRebootingHard      = "rebooting_hard"
	TaskDeleting           = "deleting"
)

// Pending reports whether the instance waits for the scheduler.
func (i *Instance) Pending() bool {
	return i.Host == "" && i.VMState == VMBuilding && i.TaskState == TaskScheduling && i.Desired != DesiredDeleted
}

// Claim is what the instance claims on its host: the flavor's vCPUs and
// RAM, and its root (unless it boots from a volume), ephemeral and swap
// disk rounded up to whole GB.
// During a resize it claims both flavors.
func (i *Instance) Claim() HostCap {
	if i.Resize != nil {
		return i.flavorClaim(i.Resize.OldFlavor).Add(i.flavorClaim(i.Resize.NewFlavor))
	}
	return i.flavorClaim(i.Flavor)
}

// Add returns the sum of two claims.
func (h HostCap) Add(o HostCap) HostCap {
	return HostCap{VCPUs: h.VCPUs + o.VCPUs, RAMMB: h.RAMMB + o.RAMMB, DiskGB: h.DiskGB + o.DiskGB}
}

// PendingInstances lists the instances waiting for the scheduler, oldest
// first (then by id), so plans are fair and deterministic.
func (sn *Snapshot) PendingInstances() []*Instance {
	var out []*Instance
	for _, i := range listBy[Instance](sn, tblInstances, "TaskState", TaskScheduling) {
		if i.Pending() {
			out = append(out, i)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.Before(out[b].CreatedAt)
		}
		if out[a].LaunchIndex != out[b].LaunchIndex {
			return out[a].LaunchIndex < out[b].LaunchIndex
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// ClaimsOn sums the claims of the instances placed on a host.
func (sn *Snapshot) ClaimsOn(hostID string) HostCap {
	var c HostCap
	for _, i := range listBy[Instance](sn, tblInstances, "Host", hostID) {
		c = c.Add(i.Claim())
	}
	return c
}

// Claims sums the claims of placed instances per host.
func (sn *Snapshot) Claims() map[string]HostCap {
	out := map[string]HostCap{}
	for _, i := range list[Instance](sn, tblInstances) {
		if i.Host != "" {
			out[i.Host] = out[i.Host].Add(i.Claim())
		}
	}
	return out
}

// InstancesOfProject lists a project's instances.
func (sn *Snapshot) InstancesOfProject(projectID string) []*Instance {
	return listBy[Instance](sn, tblInstances, "ProjectID", projectID)
}

// FlavorByName returns a flavor by name.
func (sn *Snapshot) FlavorByName(name string) (*Flavor, bool) {
	return firstBy[Flavor](sn, tblFlavors, "Name", name)
}

// ServerGroupsOfProject lists a project's server groups.
func (sn *Snapshot) ServerGroupsOfProject(projectID string) []*ServerGroup {
	return listBy[ServerGroup](sn, tblServerGroups, "ProjectID", projectID)
}

// MembersByID lists the members in id order, without the sort by name
// Members does (the scheduler reads every member each round).
func (sn *Snapshot) MembersByID() []*Member { return list[Member](sn, tblMembers) }
