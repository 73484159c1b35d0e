package statedb

import "time"

// Compute: flavors, keypairs, instances (servers), server groups.
// Commands 50-99. Apply functions live in compute_apply.go.
const (
	tblFlavors      = "flavors"
	tblKeypairs     = "keypairs"
	tblInstances    = "instances"
	tblServerGroups = "server_groups"
)

var computeTables = []table{
	idTable(tblFlavors, func() any { return &Flavor{} }, "Name"),
	idTable(tblKeypairs, func() any { return &Keypair{} }, "UserID"),
	idTable(tblInstances, func() any { return &Instance{} }, "ProjectID", "Host"),
	idTable(tblServerGroups, func() any { return &ServerGroup{} }, "ProjectID"),
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

	// Placement (scheduler).
	Host string `json:"host,omitempty"` // member id

	// Desired power: "running", "stopped" or "deleted"; the agent converges.
	Desired    string `json:"desired"`
	RebootSeq  int    `json:"reboot_seq,omitempty"` // bumped per reboot request
	RebootHard bool   `json:"reboot_hard,omitempty"`

	// Actual (agent reports and scheduler).
	VMState    string    `json:"vm_state"`   // building, active, stopped, error, deleted
	TaskState  string    `json:"task_state"` // scheduling, spawning, powering-off, powering-on, rebooting, rebooting_hard, deleting, ""
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
