package agent

import (
	"context"
	"time"
)

// VMState is what the hypervisor says about one VM.
type VMState string

// VM states.
const (
	VMRunning VMState = "running"
	VMPaused  VMState = "paused"
	VMShutoff VMState = "shutoff" // known (files exist) but no process
	VMMissing VMState = "missing" // nothing on this host
)

// VMStatus is the actual state of one VM.
type VMStatus struct {
	ID     string // instance id
	State  VMState
	PID    int
	Reason string // why it is not running (its last exit)
}

// Disk is a block device of a VM: a file path or nfs:// URL.
type Disk struct {
	ID       string // volume id for volumes; "" for the root overlay
	Path     string
	Format   string // qcow2 or raw
	ReadOnly bool
}

// NIC is one virtual NIC on a tap the network reconciler created.
type NIC struct {
	PortID string
	Tap    string
	MAC    string
}

// VMSpec is everything needed to start one VM.
type VMSpec struct {
	ID          string // instance id
	Name        string
	VCPUs       int
	RAMMB       int
	Root        Disk
	Ephemeral   *Disk  // the flavor's blank ephemeral disk (after the root disk); nil when the flavor has none
	ConfigDrive string // path of the config drive ISO
	NICs        []NIC
	ExtraDisks  []Disk // volumes attached at boot
}

// ConfigDrive is the content of an OpenStack config drive.
type ConfigDrive struct {
	UUID             string
	Hostname         string
	Name             string
	AvailabilityZone string
	ProjectID        string
	LaunchIndex      int
	PublicKeys       map[string]string // key name → OpenSSH public key
	Meta             map[string]string
	UserData         []byte // decoded
	NetworkData      any    // network_data.json, OpenStack format
}

// VMEvent is something that happened to a VM on its own.
type VMEvent struct {
	ID     string
	Kind   string
	Detail string
}

// VM event kinds the agent acts on (others are logged).
const (
	EventExited       = "exited" // the VM's process is gone; Detail says why
	EventBlockIOError = "block_io_error"
)

// Hypervisor runs this host's VMs. Operations on one VM may be called
// concurrently with operations on another; the agent never runs two
// operations on the same VM at once.
type Hypervisor interface {
	// Recover adopts the VMs already running (after a daemon restart). It
	// is called once, before anything else.
	Recover(ctx context.Context) ([]VMStatus, error)
	// List reports every VM known on this host.
	List(ctx context.Context) ([]VMStatus, error)
	// CreateRootDisk creates the root overlay of VM id over base, at least
	// sizeGB large; an existing one over the same base is returned as is.
	CreateRootDisk(ctx context.Context, id string, base Disk, sizeGB int) (Disk, error)
	// WriteConfigDrive writes the VM's config drive and returns its path.
	WriteConfigDrive(ctx context.Context, id string, cd ConfigDrive) (string, error)
	// Start boots a VM (ErrAlreadyRunning if it runs).
	Start(ctx context.Context, spec VMSpec) error
	// Stop shuts a VM down (gracefully, then by force).
	Stop(ctx context.Context, id string) error
	// Reboot restarts a running VM; hard resets it.
	Reboot(ctx context.Context, id string, hard bool) error
	// Delete kills the VM and removes every file it had on this host.
	// Deleting an unknown VM is not an error.
	Delete(ctx context.Context, id string) error
	// AttachDisk hot-plugs a volume (recorded for the next start when the
	// VM does not run).
	AttachDisk(ctx context.Context, id string, d Disk) error
	// DetachDisk hot-unplugs a volume, waiting up to timeout for the guest
	// to release it.
	DetachDisk(ctx context.Context, id, diskID string, timeout time.Duration) error
	// Events delivers VM events; it may be closed when the hypervisor is.
	Events() <-chan VMEvent
}

// DiskResizer is implemented by hypervisors that can tell a running guest
// that a volume grew (QMP block_resize).
type DiskResizer interface {
	ResizeDisk(ctx context.Context, id, diskID string, sizeGB int) error
}

// EphemeralDisker is implemented by hypervisors that can give a VM its
// flavor's ephemeral disk: a blank (unformatted) disk of sizeGB among the
// VM's files, removed by Delete. An existing one is returned as is, so a
// restart keeps the guest's data.
type EphemeralDisker interface {
	CreateEphemeralDisk(ctx context.Context, id string, sizeGB int) (Disk, error)
}
