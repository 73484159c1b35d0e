package statedb

import (
	"slices"
	"strings"
	"time"
)

// ---- flavors ----

func applyCreateFlavor(t *Txn, c *Command) error {
	f, err := decode[Flavor](c)
	if err != nil {
		return err
	}
	switch {
	case f.ID == "" || strings.TrimSpace(f.Name) == "":
		return Errorf(KindInvalid, "a flavor needs an id and a name")
	case f.VCPUs <= 0 || f.RAMMB <= 0 || f.DiskGB < 0 || f.EphemeralGB < 0 || f.SwapMB < 0:
		return Errorf(KindInvalid, "flavor sizes must be positive (vcpus, ram) or zero or more (disk, ephemeral, swap)")
	}
	sn := t.read()
	if _, ok := sn.Flavor(f.ID); ok {
		return Errorf(KindConflict, "Flavor with ID %s already exists.", f.ID)
	}
	if _, ok := sn.FlavorByName(f.Name); ok {
		return Errorf(KindConflict, "Flavor with name %s already exists.", f.Name)
	}
	if f.Public {
		f.Projects = nil
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = c.Time
	}
	return t.insert(tblFlavors, f)
}

func flavorOf(t *Txn, id string) (*Flavor, error) {
	f, ok := t.read().Flavor(id)
	if !ok {
		return nil, Errorf(KindNotFound, "Flavor %s could not be found.", id)
	}
	return f, nil
}

func applyDeleteFlavor(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	f, err := flavorOf(t, d.ID)
	if err != nil {
		return err
	}
	// Instances keep their own copy of the flavor.
	return t.delete(tblFlavors, f)
}

// SetFlavorAccessCmd adds (or with Remove drops) a project's access to a
// private flavor.
type SetFlavorAccessCmd struct {
	FlavorID  string `json:"flavor_id"`
	ProjectID string `json:"project_id"`
	Remove    bool   `json:"remove,omitempty"`
}

func applySetFlavorAccess(t *Txn, c *Command) error {
	r, err := decode[SetFlavorAccessCmd](c)
	if err != nil {
		return err
	}
	f, err := flavorOf(t, r.FlavorID)
	if err != nil {
		return err
	}
	if f.Public {
		return Errorf(KindConflict, "Can not add access to a public flavor.")
	}
	if r.ProjectID == "" {
		return Errorf(KindInvalid, "a project id is required")
	}
	has := slices.Contains(f.Projects, r.ProjectID)
	cp := *f
	switch {
	case r.Remove && !has:
		return Errorf(KindNotFound, "Flavor access not found for %s / %s combination.", f.ID, r.ProjectID)
	case r.Remove:
		cp.Projects = slices.DeleteFunc(slices.Clone(f.Projects), func(p string) bool { return p == r.ProjectID })
	case has:
		return Errorf(KindConflict, "Flavor access already exists for flavor %s and project %s combination.", f.ID, r.ProjectID)
	default:
		cp.Projects = append(slices.Clone(f.Projects), r.ProjectID)
		slices.Sort(cp.Projects)
	}
	return t.insert(tblFlavors, &cp)
}

// SetFlavorExtraSpecsCmd sets and removes extra spec keys of a flavor.
type SetFlavorExtraSpecsCmd struct {
	FlavorID string            `json:"flavor_id"`
	Set      map[string]string `json:"set,omitempty"`
	Unset    []string          `json:"unset,omitempty"`
}

func applySetFlavorExtraSpecs(t *Txn, c *Command) error {
	r, err := decode[SetFlavorExtraSpecsCmd](c)
	if err != nil {
		return err
	}
	f, err := flavorOf(t, r.FlavorID)
	if err != nil {
		return err
	}
	cp := *f
	cp.ExtraSpecs = map[string]string{}
	for k, v := range f.ExtraSpecs {
		cp.ExtraSpecs[k] = v
	}
	for _, k := range r.Unset {
		if _, ok := cp.ExtraSpecs[k]; !ok {
			return Errorf(KindNotFound, "Flavor %s has no extra specs with key %s.", f.ID, k)
		}
		delete(cp.ExtraSpecs, k)
	}
	for k, v := range r.Set {
		if k == "" {
			return Errorf(KindInvalid, "extra spec keys must not be empty")
		}
		cp.ExtraSpecs[k] = v
	}
	return t.insert(tblFlavors, &cp)
}

// ---- keypairs ----

func applyCreateKeypair(t *Txn, c *Command) error {
	k, err := decode[Keypair](c)
	if err != nil {
		return err
	}
	if k.UserID == "" || k.Name == "" || k.PublicKey == "" {
		return Errorf(KindInvalid, "a keypair needs a user, a name and a public key")
	}
	k.ID = KeypairID(k.UserID, k.Name)
	if _, ok := t.read().Keypair(k.UserID, k.Name); ok {
		return Errorf(KindConflict, "Key pair '%s' already exists.", k.Name)
	}
	if err := quotaCreateKeypair(t, k); err != nil {
		return err
	}
	if k.Type == "" {
		k.Type = "ssh"
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = c.Time
	}
	return t.insert(tblKeypairs, k)
}

// DeleteKeypairCmd deletes a user's keypair.
type DeleteKeypairCmd struct {
	UserID string `json:"user_id"`
	Name   string `json:"name"`
}

func applyDeleteKeypair(t *Txn, c *Command) error {
	r, err := decode[DeleteKeypairCmd](c)
	if err != nil {
		return err
	}
	k, ok := t.read().Keypair(r.UserID, r.Name)
	if !ok {
		return Errorf(KindNotFound, "Keypair %s not found for user %s", r.Name, r.UserID)
	}
	return t.delete(tblKeypairs, k)
}

// ---- server groups ----

func applyCreateServerGroup(t *Txn, c *Command) error {
	g, err := decode[ServerGroup](c)
	if err != nil {
		return err
	}
	if !ValidPolicy(g.Policy) {
		return Errorf(KindInvalid, "Invalid server group policy %q.", g.Policy)
	}
	if c.Type != CmdCreateGroupWithRules {
		g.MaxServerPerHost = 0 // a CreateServerGroup entry applies alike on every version
	} else if g.Policy != PolicyAntiAffinity {
		return Errorf(KindInvalid, "Only anti-affinity policy supports rules.")
	} else if g.MaxServerPerHost < 1 {
		return Errorf(KindInvalid, "Invalid input for field/attribute max_server_per_host. Value: %d. %d is less than the minimum of 1", g.MaxServerPerHost, g.MaxServerPerHost)
	}
	if g.ID == "" || g.ProjectID == "" {
		return Errorf(KindInvalid, "a server group needs an id and a project")
	}
	if _, ok := t.read().ServerGroup(g.ID); ok {
		return Errorf(KindConflict, "Server group %s already exists.", g.ID)
	}
	if err := checkQuota(t, g.ProjectID, "", charge{QuotaServerGroups, 1}); err != nil {
		return err
	}
	g.Members = []string{}
	if g.CreatedAt.IsZero() {
		g.CreatedAt = c.Time
	}
	return t.insert(tblServerGroups, g)
}

func applyDeleteServerGroup(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	g, ok := t.read().ServerGroup(d.ID)
	if !ok {
		return Errorf(KindNotFound, "Instance group %s could not be found.", d.ID)
	}
	// Members leave the group: a pending one must not wait for a group the
	// scheduler can no longer see.
	for _, id := range g.Members {
		if inst, ok := t.read().Instance(id); ok && inst.GroupID == g.ID {
			cp := *inst
			cp.GroupID = ""
			if err := t.insert(tblInstances, &cp); err != nil {
				return err
			}
		}
	}
	return t.delete(tblServerGroups, g)
}

// ---- instances: create, delete, actions, updates ----

// CreateInstancesCmd creates one or more instances (min_count/max_count)
// with their ports in one transaction: all of them or nothing, or, when
// quota allows fewer than all but at least MinCount, the first that fit.
// MinCount only acts while quotas are enforced, which their gated command
// turns on once every host runs a release that knows MinCount.
type CreateInstancesCmd struct {
	Instances []InstanceCreate `json:"instances"`
	MinCount  int              `json:"min_count,omitempty"`
}

// InstanceCreate is one instance of a CreateInstancesCmd. The instance
// starts BUILD/scheduling whatever placement or state fields it carries.
type InstanceCreate struct {
	Instance Instance     `json:"instance"`
	NICs     []NICRequest `json:"nics,omitempty"` // in the guest's NIC order
	// Root, when set, creates or reserves the boot volume in the same
	// transaction (volumes_boot.go). Without it an Instance.RootVolume is
	// used as it is (entries written before boot volumes were reserved).
	Root *RootDisk `json:"root,omitempty"`
	// RequestID is the API request that created it (its create action).
	RequestID string `json:"request_id,omitempty"`
}

// NICRequest is one NIC: an existing port to bind, or a port to create.
type NICRequest struct {
	PortID string       `json:"port_id,omitempty"`
	Create *PortRequest `json:"create,omitempty"`
}

func applyCreateInstances(t *Txn, c *Command) error {
	r, err := decode[CreateInstancesCmd](c)
	if err != nil {
		return err
	}
	if len(r.Instances) == 0 {
		return Errorf(KindInvalid, "no instances to create")
	}
	if err := quotaCreateInstances(t, r); err != nil {
		return err
	}
	for i := range r.Instances {
		inst := &r.Instances[i].Instance
		if c.Type != CmdCreateInstancesOnHost {
			inst.RequestedHost = "" // a CreateInstances entry applies alike on every version
		} else if _, ok := t.read().Member(inst.RequestedHost); !ok {
			return Errorf(KindInvalid, "Compute host %s could not be found.", inst.RequestedHost)
		}
		// Both wave-2 create commands may carry a boot volume to make with
		// its server (no host or path yet); the plain one may not.
		placedBoot := c.Type == CmdCreateInstancesPlacedBoot || c.Type == CmdCreateInstancesOnHost
		if err := createInstance(t, c.Time, &r.Instances[i], placedBoot); err != nil {
			return err
		}
	}
	return nil
}

// createInstance creates one instance of a CreateInstances command;
// placedBoot lets a new boot volume on local storage come without a host
// or path (its server's placement chooses them).
func createInstance(t *Txn, now time.Time, ic *InstanceCreate, placedBoot bool) error {
	inst := ic.Instance
	sn := t.read()
	switch {
	case inst.ID == "" || inst.ProjectID == "" || strings.TrimSpace(inst.Name) == "":
		return Errorf(KindInvalid, "an instance needs an id, a project and a name")
	case inst.Flavor.VCPUs <= 0 || inst.Flavor.RAMMB <= 0:
		return Errorf(KindInvalid, "instance %s has no valid flavor", inst.ID)
	}
	if _, ok := sn.Instance(inst.ID); ok {
		return Errorf(KindConflict, "Instance %s already exists.", inst.ID)
	}
	if inst.GroupID != "" {
		g, ok := sn.ServerGroup(inst.GroupID)
		if !ok || g.ProjectID != inst.ProjectID {
			return Errorf(KindInvalid, "Instance group %s could not be found.", inst.GroupID)
		}
		cp := *g
		cp.Members = append(slices.Clone(g.Members), inst.ID)
		if err := t.insert(tblServerGroups, &cp); err != nil {
			return err
		}
	}
	inst.PortIDs, inst.CreatedPorts = nil, nil
	for _, nic := range ic.NICs {
		switch {
		case nic.PortID != "" && nic.Create == nil:
			p, ok := sn.Port(nic.PortID)
			if !ok || p.ProjectID != inst.ProjectID {
				return Errorf(KindInvalid, "Port id %s could not be found.", nic.PortID)
			}
			if p.DeviceID != "" {
				return Errorf(KindConflict, "Port %s is still in use.", p.ID)
			}
			cp := *p
			cp.DeviceID, cp.DeviceOwner, cp.UpdatedAt = inst.ID, "compute:nova", now
			cp.Revision++
			if err := t.insert(tblPorts, &cp); err != nil {
				return err
			}
			inst.PortIDs = append(inst.PortIDs, p.ID)
		case nic.PortID == "" && nic.Create != nil:
			req := *nic.Create
			req.ProjectID, req.DeviceID, req.DeviceOwner = inst.ProjectID, inst.ID, "compute:nova"
			p, err := createPort(t, now, req)
			if err != nil {
				return err
			}
			inst.PortIDs = append(inst.PortIDs, p.ID)
			inst.CreatedPorts = append(inst.CreatedPorts, p.ID)
		default:
			return Errorf(KindInvalid, "a NIC is either an existing port or a port to create")
		}
	}
	if inst.Metadata == nil {
		inst.Metadata = map[string]string{}
	}
	if inst.AZ == "" {
		inst.AZ = "nova"
	}
	if ic.Root != nil {
		if err := reserveRootVolume(t, now, &inst, ic.Root, placedBoot); err != nil {
			return err
		}
	}
	inst.Host, inst.Desired = "", DesiredRunning
	inst.VMState, inst.TaskState, inst.PowerState = VMBuilding, TaskScheduling, PowerNoState
	inst.RebootSeq, inst.RebootDone, inst.RebootHard = 0, 0, false
	inst.Fault, inst.LaunchedAt, inst.Placements = nil, time.Time{}, 0
	inst.CreatedAt, inst.UpdatedAt = now, now
	if err := t.insert(tblInstances, &inst); err != nil {
		return err
	}
	return recordAction(t, &Command{ReqID: "create/" + inst.ID, Time: now}, &inst, "create", ActionBy{RequestID: ic.RequestID}, false)
}

// instanceOf returns an instance or Nova's not-found error.
func instanceOf(t *Txn, id string) (*Instance, error) {
	inst, ok := t.read().Instance(id)
	if !ok {
		return nil, Errorf(KindNotFound, "Instance %s could not be found.", id)
	}
	return inst, nil
}

func applyDeleteInstance(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, d.ID)
	if err != nil {
		return err
	}
	if inst.Host == "" {
		// Never placed: nothing on any host to tear down.
		return removeInstance(t, c.Time, inst)
	}
	if inst.Desired == DesiredDeleted {
		return nil
	}
	cp := *inst
	cp.Desired, cp.TaskState, cp.UpdatedAt = DesiredDeleted, TaskDeleting, c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, "delete", ActionBy{}, false)
}

// removeInstance drops an instance record and what hangs off it: the ports
// server create made are deleted, ports passed in are unbound and it leaves
// its server group; its boot volume is deleted or detached
// (releaseRootVolume). Other volume attachments are released by the
// volumes leader loop (ReleaseVolumeCmd) once the server is gone.
func removeInstance(t *Txn, now time.Time, inst *Instance) error {
	if err := recordUsage(t, now, inst); err != nil {
		return err
	}
	if err := releaseRootVolume(t, now, inst); err != nil {
		return err
	}
	sn := t.read()
	for _, pid := range inst.PortIDs {
		p, ok := sn.Port(pid)
		if !ok || p.DeviceID != inst.ID {
			continue
		}
		if slices.Contains(inst.CreatedPorts, pid) {
			if err := t.delete(tblPorts, p); err != nil {
				return err
			}
			continue
		}
		cp := *p
		cp.DeviceID, cp.DeviceOwner, cp.HostID, cp.Status, cp.UpdatedAt = "", "", "", "DOWN", now
		cp.Revision++
		if err := t.insert(tblPorts, &cp); err != nil {
			return err
		}
	}
	if inst.GroupID != "" {
		if g, ok := sn.ServerGroup(inst.GroupID); ok {
			cp := *g
			cp.Members = slices.DeleteFunc(slices.Clone(g.Members), func(id string) bool { return id == inst.ID })
			if err := t.insert(tblServerGroups, &cp); err != nil {
				return err
			}
		}
	}
	if err := dropOrphanSecGroups(t, inst.ProjectID); err != nil {
		return err
	}
	return t.delete(tblInstances, inst)
}

// Instance actions.
const (
	ActionStop   = "stop"
	ActionStart  = "start"
	ActionReboot = "reboot"
)

// InstanceActionCmd asks for a power change; the agent converges.
type InstanceActionCmd struct {
	ID     string   `json:"id"`
	Action string   `json:"action"`         // stop, start, reboot
	Hard   bool     `json:"hard,omitempty"` // reboot only
	By     ActionBy `json:"by,omitempty"`
}

func applyInstanceAction(t *Txn, c *Command) error {
	r, err := decode[InstanceActionCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	nova := map[string]string{ActionStop: "stop", ActionStart: "start", ActionReboot: "reboot"}[r.Action]
	if nova == "" {
		return Errorf(KindInvalid, "unknown instance action %q", r.Action)
	}
	if inst.Desired == DesiredDeleted {
		return Errorf(KindConflict, "Cannot '%s' instance %s while it is in task_state %s", nova, inst.ID, TaskDeleting)
	}
	if inst.Locked && !r.By.Admin {
		return LockedError(inst.ID)
	}
	inState := func(states ...string) bool { return slices.Contains(states, inst.VMState) }
	cp := *inst
	switch r.Action {
	case ActionStop:
		if !inState(VMActive, VMError) || inst.Host == "" {
			return vmStateConflict(nova, inst)
		}
		if inst.TaskState != "" {
			return taskStateConflict(nova, inst)
		}
		cp.Desired, cp.TaskState = DesiredStopped, TaskPoweringOff
	case ActionStart:
		if !inState(VMStopped) {
			return vmStateConflict(nova, inst)
		}
		if inst.TaskState != "" {
			return taskStateConflict(nova, inst)
		}
		cp.Desired, cp.TaskState = DesiredRunning, TaskPoweringOn
	case ActionReboot:
		if !inState(VMActive, VMStopped, VMError) || inst.Host == "" {
			return vmStateConflict(nova, inst)
		}
		// A hard reboot may override a soft one in progress, as in Nova.
		if inst.TaskState != "" && !(r.Hard && inst.TaskState == TaskRebooting) {
			return taskStateConflict(nova, inst)
		}
		cp.RebootSeq++
		cp.RebootHard = r.Hard
		cp.Desired = DesiredRunning
		cp.TaskState = TaskRebooting
		if r.Hard {
			cp.TaskState = TaskRebootingHard
		}
	}
	cp.UpdatedAt = c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return recordAction(t, c, &cp, nova, r.By, false)
}

func vmStateConflict(action string, inst *Instance) error {
	return Errorf(KindConflict, "Cannot '%s' instance %s while it is in vm_state %s", action, inst.ID, inst.VMState)
}

func taskStateConflict(action string, inst *Instance) error {
	return Errorf(KindConflict, "Cannot '%s' instance %s while it is in task_state %s", action, inst.ID, inst.TaskState)
}

// UpdateInstanceCmd renames an instance and edits its metadata: with
// ReplaceMetadata the metadata becomes Metadata, otherwise Metadata is
// merged in; DeleteKeys are removed (each must exist).
type UpdateInstanceCmd struct {
	ID              string            `json:"id"`
	Name            *string           `json:"name,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	ReplaceMetadata bool              `json:"replace_metadata,omitempty"`
	DeleteKeys      []string          `json:"delete_keys,omitempty"`
	MaxMetadata     int               `json:"max_metadata,omitempty"` // 0 = no limit
}

func applyUpdateInstance(t *Txn, c *Command) error {
	r, err := decode[UpdateInstanceCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	cp := *inst
	if r.Name != nil {
		if strings.TrimSpace(*r.Name) == "" {
			return Errorf(KindInvalid, "the name must not be empty")
		}
		cp.Name = *r.Name
	}
	md := map[string]string{}
	if !r.ReplaceMetadata {
		for k, v := range inst.Metadata {
			md[k] = v
		}
	}
	for k, v := range r.Metadata {
		md[k] = v
	}
	for _, k := range r.DeleteKeys {
		if _, ok := md[k]; !ok {
			return Errorf(KindNotFound, "Metadata item was not found")
		}
		delete(md, k)
	}
	if r.MaxMetadata > 0 && len(md) > r.MaxMetadata {
		return Errorf(KindForbidden, "Quota exceeded for metadata_items: the limit is %d", r.MaxMetadata)
	}
	cp.Metadata = md
	cp.UpdatedAt = c.Time
	return t.insert(tblInstances, &cp)
}

// ---- scheduler plans and agent reports ----

func applyPlaceInstances(t *Txn, c *Command) error {
	p, err := decode[PlaceInstancesCmd](c)
	if err != nil {
		return err
	}
	used := map[string]HostCap{} // claims per host, as this plan adds them
	claimsOn := func(host string) HostCap {
		u, ok := used[host]
		if !ok {
			u = t.read().ClaimsOn(host)
			used[host] = u
		}
		return u
	}
	for _, pl := range p.Placements {
		sn := t.read()
		inst, ok := sn.Instance(pl.InstanceID)
		if !ok || !inst.Pending() {
			continue // deleted or placed meanwhile: a stale or repeated plan
		}
		total, ok := p.HostCaps[pl.HostID]
		if !ok {
			continue
		}
		if m, ok := sn.Member(pl.HostID); !ok || m.Disabled {
			continue
		}
		need := sn.PlacementNeed(inst)
		u := claimsOn(pl.HostID)
		// The placement rule (placement.go), as the scheduler applied it.
		if cons := sn.PlacementConstraints(inst, nil); !Fits(total, u, need, p.Ratios) || !cons.Allows(pl.HostID) {
			continue // stays pending; the leader plans it again
		}
		used[pl.HostID] = u.Add(need)
		cp := *inst
		cp.Host, cp.TaskState, cp.UpdatedAt = pl.HostID, TaskSpawning, c.Time
		cp.Placements++
		if err := placeBootVolume(t, c.Time, &cp); err != nil {
			return err
		}
		if err := t.insert(tblInstances, &cp); err != nil {
			return err
		}
		if err := bindPorts(t, c.Time, inst.ID, pl.HostID); err != nil {
			return err
		}
	}
	for _, f := range p.Failures {
		inst, ok := t.read().Instance(f.InstanceID)
		if !ok || !inst.Pending() {
			continue
		}
		reason := f.Reason
		if reason == "" {
			reason = NoValidHost
		}
		cp := *inst
		cp.VMState, cp.TaskState, cp.PowerState, cp.UpdatedAt = VMError, "", PowerNoState, c.Time
		cp.Fault = &Fault{Code: 500, Message: reason, Created: c.Time}
		if err := t.insert(tblInstances, &cp); err != nil {
			return err
		}
		if err := failBootVolume(t, c.Time, &cp, reason); err != nil {
			return err
		}
	}
	return nil
}

func applyReportInstance(t *Txn, c *Command) error {
	r, err := decode[ReportInstanceCmd](c)
	if err != nil {
		return err
	}
	inst, ok := t.read().Instance(r.InstanceID)
	if !ok || r.HostID == "" || inst.Host != r.HostID {
		return nil // not this host's instance (any more): ignored
	}
	if r.Gone && inst.Desired == DesiredDeleted {
		return removeInstance(t, c.Time, inst)
	}
	cp := *inst
	if r.VMState != "" {
		cp.VMState = r.VMState
	}
	cp.TaskState, cp.PowerState = r.TaskState, r.PowerState
	if inst.SnapshotImage != "" && cp.TaskState == "" {
		// A report the agent made before it saw the snapshot: the server
		// stays in image_snapshot until FinishSnapshot (only a command
		// of this release sets SnapshotImage, so older logs replay alike).
		cp.TaskState = TaskImageSnapshot
	}
	if inst.Desired == DesiredDeleted {
		cp.TaskState = TaskDeleting
	}
	if r.RebootDone > cp.RebootDone {
		cp.RebootDone = r.RebootDone
	}
	switch {
	case r.Fault != nil:
		f := *r.Fault
		if f.Created.IsZero() {
			f.Created = c.Time
		}
		cp.Fault = &f
	case cp.VMState != VMError:
		cp.Fault = nil
	}
	if cp.LaunchedAt.IsZero() && !r.LaunchedAt.IsZero() {
		cp.LaunchedAt = r.LaunchedAt
	}
	resizeReported(inst, &cp)
	cp.UpdatedAt = c.Time
	if err := t.insert(tblInstances, &cp); err != nil {
		return err
	}
	return finishActions(t, c.Time, inst, &cp)
}
