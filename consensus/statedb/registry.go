package statedb

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
)

// CmdType numbers a command. Numbers are part of the Raft log format: never
// reuse or renumber one (registry_test.go pins every number to its name).
type CmdType uint16

// Every command number of the state, in one block. Ranges by resource:
// cluster 1-19, identity 20-49, compute 50-99, images 100-129, networks
// 130-179, volumes 180-219. A new command takes the next free number of its
// range and gets a row in commands below.
const (
	// Cluster: 1-19.
	CmdBootstrap        CmdType = 1
	CmdRegisterMember   CmdType = 2
	CmdRemoveMember     CmdType = 3
	CmdCreateJoinToken  CmdType = 4
	CmdConsumeJoinToken CmdType = 5
	CmdSetHostEnabled   CmdType = 6
	CmdUpdateSettings   CmdType = 7
	CmdSetHostHealth    CmdType = 8  // leader: a host is down, fenced or back
	CmdFailoverInstance CmdType = 9  // leader: restart a fenced host's servers elsewhere
	CmdEvacuateInstance CmdType = 10 // admin: Nova's evacuate
	CmdRemoveHost       CmdType = 13 // admin: remove a member and revoke its certificates

	// Host failure: changing T_fence safely (fencetimeout.go).
	CmdUpdateHASettings   CmdType = 11 // admin: settings with fence_timeout or ha_disabled
	CmdSettleFenceTimeout CmdType = 12 // leader: every host fences on the current T_fence
	CmdCoverFenceTimeout  CmdType = 66 // leader: a host fences on longer than the state's wait

	// Identity: 20-49.
	CmdCreateProject     CmdType = 20
	CmdUpdateProject     CmdType = 21
	CmdDeleteProject     CmdType = 22
	CmdCreateUser        CmdType = 23
	CmdUpdateUser        CmdType = 24
	CmdDeleteUser        CmdType = 25
	CmdCreateRole        CmdType = 26
	CmdDeleteRole        CmdType = 27
	CmdGrantRole         CmdType = 28
	CmdRevokeRole        CmdType = 29
	CmdCreateAppCred     CmdType = 30
	CmdDeleteAppCred     CmdType = 31
	CmdRotateSigningKeys CmdType = 32
	CmdRevokeToken       CmdType = 33
	CmdLoginFailed       CmdType = 34
	CmdLoginSucceeded    CmdType = 35
	CmdUpdateRole        CmdType = 36
	CmdLoginAttempt      CmdType = 37 // reserve a password check before it runs
	CmdRevokeRoleTokens  CmdType = 38 // revoke a grant and its user's tokens
	CmdDeleteRoleTokens  CmdType = 39 // delete a role and its holders' tokens
	CmdUpdateRoleTokens  CmdType = 40 // update a role; a rename revokes its holders' tokens

	// Compute: 50-99.
	CmdCreateFlavor          CmdType = 50
	CmdDeleteFlavor          CmdType = 51
	CmdSetFlavorAccess       CmdType = 52
	CmdSetFlavorExtraSpecs   CmdType = 53
	CmdCreateKeypair         CmdType = 54
	CmdDeleteKeypair         CmdType = 55
	CmdCreateInstances       CmdType = 56
	CmdDeleteInstance        CmdType = 57
	CmdInstanceAction        CmdType = 58
	CmdUpdateInstance        CmdType = 59
	CmdPlaceInstances        CmdType = 60 // the leader's scheduler plan
	CmdReportInstance        CmdType = 61 // a host agent's report
	CmdCreateServerGroup     CmdType = 62
	CmdDeleteServerGroup     CmdType = 63
	CmdServerAction          CmdType = 64 // pause, unpause, suspend, resume, lock, unlock
	CmdSetInstanceTags       CmdType = 65 // server tags
	CmdRescueServer          CmdType = 70 // rescue, unrescue
	CmdSnapshotServer        CmdType = 71 // createImage
	CmdFinishSnapshot        CmdType = 72 // a host agent's report that a snapshot ended
	CmdResizeServer          CmdType = 73 // resize, confirmResize, revertResize
	CmdSetInstanceDesc       CmdType = 74 // server description (2.19)
	CmdSetFlavorDesc         CmdType = 75 // flavor description (2.55)
	CmdAttachVolumeTagged    CmdType = 76 // attach with a tag (2.49) or delete_on_termination (2.79)
	CmdCreateInstancesOnHost CmdType = 77 // server create on a host the admin names (2.74, nova:host)
	CmdCreateGroupWithRules  CmdType = 78 // server group with rules (2.64 max_server_per_host)
	// server create whose new boot volume on local storage has no host or
	// path yet: the server's placement chooses its host, that host's agent
	// its path
	CmdCreateInstancesPlacedBoot CmdType = 79

	// Images: 100-129.
	CmdCreateImage       CmdType = 100
	CmdUpdateImage       CmdType = 101
	CmdDeleteImage       CmdType = 102
	CmdStartImageUpload  CmdType = 103
	CmdFinishImageUpload CmdType = 104
	CmdKillImage         CmdType = 105
	CmdAddImageTag       CmdType = 106
	CmdRemoveImageTag    CmdType = 107
	CmdAddImageMember    CmdType = 108
	CmdUpdateImageMember CmdType = 109
	CmdReportImageHolder CmdType = 110 // a host's report that it holds a blob
	CmdRemoveImageMember CmdType = 111
	CmdSetImageCopies    CmdType = 112 // leader: the hosts that should hold an image

	// Networks: 130-179.
	CmdCreateNetwork CmdType = 130
	CmdUpdateNetwork CmdType = 131
	CmdDeleteNetwork CmdType = 132
	CmdCreateSubnet  CmdType = 133
	CmdUpdateSubnet  CmdType = 134
	CmdDeleteSubnet  CmdType = 135
	CmdCreatePort    CmdType = 136
	CmdUpdatePort    CmdType = 137
	CmdDeletePort    CmdType = 138
	CmdReportPort    CmdType = 140 // a host agent's report
	CmdTagResource   CmdType = 141 // add or remove one tag of a network, subnet or port

	// Security groups: 150-164.
	CmdCreateSecGroup        CmdType = 150
	CmdUpdateSecGroup        CmdType = 151
	CmdDeleteSecGroup        CmdType = 152
	CmdCreateSecGroupRule    CmdType = 153
	CmdDeleteSecGroupRule    CmdType = 154
	CmdEnsureDefaultSecGroup CmdType = 155
	CmdSetServerSecGroup     CmdType = 156
	CmdCreateAddressGroup    CmdType = 157
	CmdUpdateAddressGroup    CmdType = 158
	CmdDeleteAddressGroup    CmdType = 159
	CmdSetNetPortSecurity    CmdType = 160

	// Routers and floating IPs: 165-179.
	CmdCreateRouter          CmdType = 165
	CmdUpdateRouter          CmdType = 166
	CmdDeleteRouter          CmdType = 167
	CmdAddRouterInterface    CmdType = 168
	CmdRemoveRouterInterface CmdType = 169
	CmdCreateFloatingIP      CmdType = 170
	CmdUpdateFloatingIP      CmdType = 171
	CmdDeleteFloatingIP      CmdType = 172
	CmdReportFloatingIP      CmdType = 173 // a host agent's report
	CmdSetHostNetworks       CmdType = 174 // a host agent's physical networks, at start

	// Volumes: 180-219.
	CmdCreateVolume      CmdType = 180
	CmdUpdateVolume      CmdType = 181
	CmdDeleteVolume      CmdType = 182
	CmdExtendVolume      CmdType = 183
	CmdAttachVolume      CmdType = 184
	CmdDetachVolume      CmdType = 185
	CmdResetVolumeStatus CmdType = 186 // admin os-reset_status
	CmdReleaseVolume     CmdType = 187 // leader: the server is gone
	CmdVolumeHostGone    CmdType = 188 // leader: Volume.Host left
	CmdPlaceVolume       CmdType = 189 // leader: a local volume's host
	CmdReportVolume      CmdType = 190 // a host agent's report

	// Quotas: 191-199.
	CmdSetQuotas        CmdType = 191 // admin: a project's limits
	CmdDeleteQuotas     CmdType = 192 // admin: a project back to the defaults
	CmdSetDefaultQuotas CmdType = 193 // admin: the cluster's default limits
	CmdEnableQuotas     CmdType = 194 // leader, once: enforcement on for a cluster made before quotas
)

// wave2 is the release that added security groups, routing, login
// reservations, image copies in the state and volume placement: a member
// older than it cannot apply their commands.
const wave2 = "0.2.0"

// commands is the registry: for every command its number, its name, the
// type its payload decodes into, its apply function and, for commands
// newer than the first release, the oldest member version that may apply
// it (Since). One row per command; the FSM and the leader's admission
// check read nothing else.
var commands = mustRegistry(
	// Cluster.
	Cmd[BootstrapCmd](CmdBootstrap, "Bootstrap", applyBootstrap),
	Cmd[Member](CmdRegisterMember, "RegisterMember", applyRegisterMember),
	Cmd[RemoveMemberCmd](CmdRemoveMember, "RemoveMember", applyRemoveMember),
	Cmd[JoinToken](CmdCreateJoinToken, "CreateJoinToken", applyCreateJoinToken),
	Cmd[ConsumeJoinTokenCmd](CmdConsumeJoinToken, "ConsumeJoinToken", applyConsumeJoinToken),
	Cmd[SetHostEnabledCmd](CmdSetHostEnabled, "SetHostEnabled", applySetHostEnabled),
	Cmd[UpdateSettingsCmd](CmdUpdateSettings, "UpdateSettings", applyUpdateSettings),
	Cmd[SetHostHealthCmd](CmdSetHostHealth, "SetHostHealth", applySetHostHealth).Since(wave2),
	Cmd[FailoverCmd](CmdFailoverInstance, "FailoverInstance", applyFailoverInstances).Since(wave2),
	Cmd[EvacuateCmd](CmdEvacuateInstance, "EvacuateInstance", applyEvacuateInstance).Since(wave2),
	Cmd[UpdateSettingsCmd](CmdUpdateHASettings, "UpdateHASettings", applyUpdateHASettings).Since(wave2),
	Cmd[SettleFenceTimeoutCmd](CmdSettleFenceTimeout, "SettleFenceTimeout", applySettleFenceTimeout).Since(wave2),
	Cmd[CoverFenceTimeoutCmd](CmdCoverFenceTimeout, "CoverFenceTimeout", applyCoverFenceTimeout).Since(wave2),
	Cmd[RemoveHostCmd](CmdRemoveHost, "RemoveHost", applyRemoveHost).Since(wave2),

	// Identity.
	Cmd[Project](CmdCreateProject, "CreateProject", applyCreateProject),
	Cmd[Project](CmdUpdateProject, "UpdateProject", applyUpdateProject),
	Cmd[DeleteCmd](CmdDeleteProject, "DeleteProject", applyDeleteProject),
	Cmd[User](CmdCreateUser, "CreateUser", applyCreateUser),
	Cmd[UpdateUserCmd](CmdUpdateUser, "UpdateUser", applyUpdateUser),
	Cmd[DeleteCmd](CmdDeleteUser, "DeleteUser", applyDeleteUser),
	Cmd[Role](CmdCreateRole, "CreateRole", applyCreateRole),
	Cmd[DeleteCmd](CmdDeleteRole, "DeleteRole", applyDeleteRole),
	Cmd[Assignment](CmdGrantRole, "GrantRole", applyGrantRole),
	Cmd[Assignment](CmdRevokeRole, "RevokeRole", applyRevokeRole),
	Cmd[AppCredential](CmdCreateAppCred, "CreateAppCred", applyCreateAppCred),
	Cmd[DeleteCmd](CmdDeleteAppCred, "DeleteAppCred", applyDeleteAppCred),
	Cmd[RotateSigningKeysCmd](CmdRotateSigningKeys, "RotateSigningKeys", applyRotateSigningKeys),
	Cmd[RevokeTokenCmd](CmdRevokeToken, "RevokeToken", applyRevokeToken),
	Cmd[LoginCmd](CmdLoginFailed, "LoginFailed", applyLoginFailed),
	Cmd[LoginCmd](CmdLoginSucceeded, "LoginSucceeded", applyLoginSucceeded),
	Cmd[Role](CmdUpdateRole, "UpdateRole", applyUpdateRole),
	Cmd[LoginCmd](CmdLoginAttempt, "LoginAttempt", applyLoginAttempt).Since(wave2),
	Cmd[RevokeRoleCmd](CmdRevokeRoleTokens, "RevokeRoleTokens", applyRevokeRoleTokens).Since(wave2),
	Cmd[DeleteRoleCmd](CmdDeleteRoleTokens, "DeleteRoleTokens", applyDeleteRoleTokens).Since(wave2),
	Cmd[UpdateRoleCmd](CmdUpdateRoleTokens, "UpdateRoleTokens", applyUpdateRoleTokens).Since(wave2),

	// Compute.
	Cmd[Flavor](CmdCreateFlavor, "CreateFlavor", applyCreateFlavor),
	Cmd[DeleteCmd](CmdDeleteFlavor, "DeleteFlavor", applyDeleteFlavor),
	Cmd[SetFlavorAccessCmd](CmdSetFlavorAccess, "SetFlavorAccess", applySetFlavorAccess),
	Cmd[SetFlavorExtraSpecsCmd](CmdSetFlavorExtraSpecs, "SetFlavorExtraSpecs", applySetFlavorExtraSpecs),
	Cmd[Keypair](CmdCreateKeypair, "CreateKeypair", applyCreateKeypair),
	Cmd[DeleteKeypairCmd](CmdDeleteKeypair, "DeleteKeypair", applyDeleteKeypair),
	Cmd[CreateInstancesCmd](CmdCreateInstances, "CreateInstances", applyCreateInstances),
	Cmd[DeleteCmd](CmdDeleteInstance, "DeleteInstance", applyDeleteInstance),
	Cmd[InstanceActionCmd](CmdInstanceAction, "InstanceAction", applyInstanceAction),
	Cmd[UpdateInstanceCmd](CmdUpdateInstance, "UpdateInstance", applyUpdateInstance),
	Cmd[PlaceInstancesCmd](CmdPlaceInstances, "PlaceInstances", applyPlaceInstances),
	Cmd[ReportInstanceCmd](CmdReportInstance, "ReportInstance", applyReportInstance),
	Cmd[ServerGroup](CmdCreateServerGroup, "CreateServerGroup", applyCreateServerGroup),
	Cmd[DeleteCmd](CmdDeleteServerGroup, "DeleteServerGroup", applyDeleteServerGroup),
	Cmd[ServerActionCmd](CmdServerAction, "ServerAction", applyServerAction).Since(wave2),
	Cmd[SetInstanceTagsCmd](CmdSetInstanceTags, "SetInstanceTags", applySetInstanceTags).Since(wave2),
	Cmd[RescueCmd](CmdRescueServer, "RescueServer", applyRescueServer).Since(wave2),
	Cmd[SnapshotServerCmd](CmdSnapshotServer, "SnapshotServer", applySnapshotServer).Since(wave2),
	Cmd[FinishSnapshotCmd](CmdFinishSnapshot, "FinishSnapshot", applyFinishSnapshot).Since(wave2),
	Cmd[ResizeCmd](CmdResizeServer, "ResizeServer", applyResizeServer).Since(wave2),
	Cmd[SetDescriptionCmd](CmdSetInstanceDesc, "SetInstanceDescription", applySetInstanceDescription).Since(wave2),
	Cmd[SetDescriptionCmd](CmdSetFlavorDesc, "SetFlavorDescription", applySetFlavorDescription).Since(wave2),
	Cmd[AttachVolumeCmd](CmdAttachVolumeTagged, "AttachVolumeTagged", applyAttachVolume).Since(wave2),
	Cmd[CreateInstancesCmd](CmdCreateInstancesOnHost, "CreateInstancesOnHost", applyCreateInstances).Since(wave2),
	Cmd[ServerGroup](CmdCreateGroupWithRules, "CreateServerGroupWithRules", applyCreateServerGroup).Since(wave2),
	Cmd[CreateInstancesCmd](CmdCreateInstancesPlacedBoot, "CreateInstancesPlacedBoot", applyCreateInstances).Since(wave2),

	// Images.
	Cmd[Image](CmdCreateImage, "CreateImage", applyCreateImage),
	Cmd[UpdateImageCmd](CmdUpdateImage, "UpdateImage", applyUpdateImage),
	Cmd[ImageRef](CmdDeleteImage, "DeleteImage", applyDeleteImage),
	Cmd[ImageUploadCmd](CmdStartImageUpload, "StartImageUpload", applyStartImageUpload),
	Cmd[FinishImageUploadCmd](CmdFinishImageUpload, "FinishImageUpload", applyFinishImageUpload),
	Cmd[ImageUploadCmd](CmdKillImage, "KillImage", applyKillImage),
	Cmd[ImageTagCmd](CmdAddImageTag, "AddImageTag", applyAddImageTag),
	Cmd[ImageTagCmd](CmdRemoveImageTag, "RemoveImageTag", applyRemoveImageTag),
	Cmd[ImageMemberCmd](CmdAddImageMember, "AddImageMember", applyAddImageMember),
	Cmd[ImageMemberCmd](CmdUpdateImageMember, "UpdateImageMember", applyUpdateImageMember),
	Cmd[ReportImageHolderCmd](CmdReportImageHolder, "ReportImageHolder", applyReportImageHolder),
	Cmd[ImageMemberCmd](CmdRemoveImageMember, "RemoveImageMember", applyRemoveImageMember),
	Cmd[SetImageCopiesCmd](CmdSetImageCopies, "SetImageCopies", applySetImageCopies).Since(wave2),

	// Networks. CreateNetwork: VNI 0 = allocate, MTU 0 = Settings.MTU.
	Cmd[Network](CmdCreateNetwork, "CreateNetwork", applyCreateNetwork),
	Cmd[UpdateNetworkCmd](CmdUpdateNetwork, "UpdateNetwork", applyUpdateNetwork),
	Cmd[DeleteCmd](CmdDeleteNetwork, "DeleteNetwork", applyDeleteNetwork),
	Cmd[CreateSubnetCmd](CmdCreateSubnet, "CreateSubnet", applyCreateSubnet),
	Cmd[UpdateSubnetCmd](CmdUpdateSubnet, "UpdateSubnet", applyUpdateSubnet),
	Cmd[DeleteCmd](CmdDeleteSubnet, "DeleteSubnet", applyDeleteSubnet),
	Cmd[CreatePortCmd](CmdCreatePort, "CreatePort", applyCreatePort),
	Cmd[UpdatePortCmd](CmdUpdatePort, "UpdatePort", applyUpdatePort),
	Cmd[DeleteCmd](CmdDeletePort, "DeletePort", applyDeletePort),
	Cmd[ReportPortCmd](CmdReportPort, "ReportPort", applyReportPort),
	Cmd[TagResourceCmd](CmdTagResource, "TagResource", applyTagResource).Since(wave2),

	// Security groups.
	Cmd[CreateSecGroupCmd](CmdCreateSecGroup, "CreateSecGroup", applyCreateSecGroup).Since(wave2),
	Cmd[UpdateSecGroupCmd](CmdUpdateSecGroup, "UpdateSecGroup", applyUpdateSecGroup).Since(wave2),
	Cmd[DeleteCmd](CmdDeleteSecGroup, "DeleteSecGroup", applyDeleteSecGroup).Since(wave2),
	Cmd[SecurityGroupRule](CmdCreateSecGroupRule, "CreateSecGroupRule", applyCreateSecGroupRule).Since(wave2),
	Cmd[DeleteCmd](CmdDeleteSecGroupRule, "DeleteSecGroupRule", applyDeleteSecGroupRule).Since(wave2),
	Cmd[EnsureDefaultSecGroupCmd](CmdEnsureDefaultSecGroup, "EnsureDefaultSecGroup", applyEnsureDefaultSecGroup).Since(wave2),
	Cmd[SetServerSecGroupCmd](CmdSetServerSecGroup, "SetServerSecGroup", applySetServerSecGroup).Since(wave2),
	Cmd[CreateAddressGroupCmd](CmdCreateAddressGroup, "CreateAddressGroup", applyCreateAddressGroup).Since(wave2),
	Cmd[UpdateAddressGroupCmd](CmdUpdateAddressGroup, "UpdateAddressGroup", applyUpdateAddressGroup).Since(wave2),
	Cmd[DeleteCmd](CmdDeleteAddressGroup, "DeleteAddressGroup", applyDeleteAddressGroup).Since(wave2),
	Cmd[SetNetworkPortSecurityCmd](CmdSetNetPortSecurity, "SetNetworkPortSecurity", applySetNetworkPortSecurity).Since(wave2),

	// Routers and floating IPs.
	Cmd[CreateRouterCmd](CmdCreateRouter, "CreateRouter", applyCreateRouter).Since(wave2),
	Cmd[UpdateRouterCmd](CmdUpdateRouter, "UpdateRouter", applyUpdateRouter).Since(wave2),
	Cmd[DeleteCmd](CmdDeleteRouter, "DeleteRouter", applyDeleteRouter).Since(wave2),
	Cmd[RouterInterfaceCmd](CmdAddRouterInterface, "AddRouterInterface", applyAddRouterInterface).Since(wave2),
	Cmd[RouterInterfaceCmd](CmdRemoveRouterInterface, "RemoveRouterInterface", applyRemoveRouterInterface).Since(wave2),
	Cmd[CreateFloatingIPCmd](CmdCreateFloatingIP, "CreateFloatingIP", applyCreateFloatingIP).Since(wave2),
	Cmd[UpdateFloatingIPCmd](CmdUpdateFloatingIP, "UpdateFloatingIP", applyUpdateFloatingIP).Since(wave2),
	Cmd[DeleteCmd](CmdDeleteFloatingIP, "DeleteFloatingIP", applyDeleteFloatingIP).Since(wave2),
	Cmd[ReportFloatingIPCmd](CmdReportFloatingIP, "ReportFloatingIP", applyReportFloatingIP).Since(wave2),
	Cmd[HostNetworks](CmdSetHostNetworks, "SetHostNetworks", applySetHostNetworks).Since(wave2),

	// Volumes.
	Cmd[CreateVolumeCmd](CmdCreateVolume, "CreateVolume", applyCreateVolume),
	Cmd[UpdateVolumeCmd](CmdUpdateVolume, "UpdateVolume", applyUpdateVolume),
	Cmd[DeleteVolumeCmd](CmdDeleteVolume, "DeleteVolume", applyDeleteVolume),
	Cmd[ExtendVolumeCmd](CmdExtendVolume, "ExtendVolume", applyExtendVolume),
	Cmd[AttachVolumeCmd](CmdAttachVolume, "AttachVolume", applyAttachVolume),
	Cmd[DetachVolumeCmd](CmdDetachVolume, "DetachVolume", applyDetachVolume),
	Cmd[ResetVolumeStatusCmd](CmdResetVolumeStatus, "ResetVolumeStatus", applyResetVolumeStatus),
	Cmd[ReleaseVolumeCmd](CmdReleaseVolume, "ReleaseVolume", applyReleaseVolume),
	Cmd[VolumeHostGoneCmd](CmdVolumeHostGone, "VolumeHostGone", applyVolumeHostGone),
	Cmd[PlaceVolumeCmd](CmdPlaceVolume, "PlaceVolume", applyPlaceVolume).Since(wave2),

	// Quotas.
	Cmd[SetQuotasCmd](CmdSetQuotas, "SetQuotas", applySetQuotas).Since(wave2),
	Cmd[DeleteCmd](CmdDeleteQuotas, "DeleteQuotas", applyDeleteQuotas).Since(wave2),
	Cmd[SetQuotasCmd](CmdSetDefaultQuotas, "SetDefaultQuotas", applySetDefaultQuotas).Since(wave2),
	Cmd[struct{}](CmdEnableQuotas, "EnableQuotas", applyEnableQuotas).Since(wave2),
	Cmd[ReportVolumeCmd](CmdReportVolume, "ReportVolume", applyReportVolume),
)

// ApplyFunc applies one command inside a write transaction. It gets the
// payload with decode[T](c), T being the command's registered payload type.
// Business failures return *Error; the transaction is then discarded.
type ApplyFunc func(t *Txn, c *Command) error

// CmdSpec is one row of a command registry.
type CmdSpec struct {
	Type CmdType
	Name string
	// MinVersion is the oldest member software version that can apply the
	// command; "" for commands every release knows. The leader refuses a
	// command while any member reports an older version (or none).
	MinVersion string
	payload    reflect.Type
	apply      ApplyFunc
}

// Cmd builds a registry row for command t whose payload decodes into a T.
func Cmd[T any](t CmdType, name string, apply ApplyFunc) CmdSpec {
	return CmdSpec{Type: t, Name: name, payload: reflect.TypeFor[T](), apply: apply}
}

// Since gates the command at a member software version (see MinVersion).
func (s CmdSpec) Since(version string) CmdSpec {
	s.MinVersion = version
	return s
}

// PayloadType is the type the command's payload decodes into.
func (s CmdSpec) PayloadType() reflect.Type { return s.payload }

// decodePayload decodes c.Data into a new value of the registered payload
// type.
func (s CmdSpec) decodePayload(c *Command) (any, error) {
	v := reflect.New(s.payload).Interface()
	if err := json.Unmarshal(c.Data, v); err != nil {
		return nil, fmt.Errorf("decode %s payload: %w", s.Name, err)
	}
	return v, nil
}

// String names the command with its number, for logs and errors.
func (s CmdSpec) String() string { return fmt.Sprintf("%s (%d)", s.Name, s.Type) }

// Registry maps command numbers to their rows. It is immutable once built.
type Registry struct {
	byType map[CmdType]CmdSpec
}

// NewRegistry builds a registry; a number or name registered twice, a
// missing apply function or payload type, or a bad MinVersion is an error.
func NewRegistry(specs ...CmdSpec) (*Registry, error) {
	r := &Registry{byType: make(map[CmdType]CmdSpec, len(specs))}
	names := map[string]CmdType{}
	for _, s := range specs {
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("command %d has no name", s.Type)
		case s.apply == nil:
			return nil, fmt.Errorf("command %s has no apply function", s)
		case s.payload == nil:
			return nil, fmt.Errorf("command %s has no payload type", s)
		case s.MinVersion != "" && !validVersion(s.MinVersion):
			return nil, fmt.Errorf("command %s: bad MinVersion %q", s, s.MinVersion)
		}
		if old, dup := r.byType[s.Type]; dup {
			return nil, fmt.Errorf("command number %d registered twice (%s and %s)", s.Type, old.Name, s.Name)
		}
		if n, dup := names[s.Name]; dup {
			return nil, fmt.Errorf("command name %s registered twice (%d and %d)", s.Name, n, s.Type)
		}
		r.byType[s.Type], names[s.Name] = s, s.Type
	}
	return r, nil
}

func mustRegistry(specs ...CmdSpec) *Registry {
	r, err := NewRegistry(specs...)
	if err != nil {
		panic("statedb: " + err.Error()) // a programming error, caught by every test run
	}
	return r
}

// Commands returns the registry of this build's commands.
func Commands() *Registry { return commands }

// With returns a new registry holding r's rows and specs (which may not
// reuse a number or name of r).
func (r *Registry) With(specs ...CmdSpec) (*Registry, error) {
	return NewRegistry(append(r.All(), specs...)...)
}

// Lookup returns the row of command t.
func (r *Registry) Lookup(t CmdType) (CmdSpec, bool) {
	s, ok := r.byType[t]
	return s, ok
}

// All returns every row in number order.
func (r *Registry) All() []CmdSpec {
	out := make([]CmdSpec, 0, len(r.byType))
	for _, s := range r.byType {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// Name returns the name of command t, or its number if unknown.
func (r *Registry) Name(t CmdType) string {
	if s, ok := r.byType[t]; ok {
		return s.Name
	}
	return fmt.Sprintf("unknown command %d", t)
}
