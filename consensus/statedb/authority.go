package statedb

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
)

// Authority: who may put a command into the log.
//
// A host's certificate proves which member is talking, not what it may do.
// Every command says who may propose it (Proposers):
//
//   - ByUser: an API handler on behalf of an authenticated caller. The
//     command carries the caller (Command.Caller); a leader that receives
//     it from another host admits it only with the caller's own token, and
//     apply checks the caller's rights against the state as it is then
//     (admin only, the caller's project, the caller's own user, a network
//     owned or shared), so a command that passed the API's check on a
//     follower but whose object changed owner, stopped being shared or went
//     away meanwhile fails cleanly.
//   - ByHost: any member about itself (agent reports, registration, the
//     login and join flows the host runs); a forwarded one must name the
//     sending member wherever its payload names a host.
//   - ByLeader: the leader's own routines. The leader applies them without
//     forwarding, so a forwarded one is refused.
//
// The table below is the per-command row of that rule; a command missing
// from it is admitted as before (TestEveryCommandHasAuthority fails until
// it has a row).

// Proposers is the set of origins that may propose a command.
type Proposers uint8

const (
	ByUser Proposers = 1 << iota
	ByHost
	ByLeader
)

// Caller is the verified identity a user command was proposed for. The
// proposing host fills it from the request's token; a leader receiving the
// command from another host compares it with the forwarded token.
type Caller struct {
	UserID    string `json:"user"`
	ProjectID string `json:"project,omitempty"`
	// Admin: the cloud-wide admin role (admin on the admin project).
	Admin bool `json:"admin,omitempty"`
	// Writer: the member or admin role on ProjectID (a reader is not).
	Writer bool `json:"writer,omitempty"`
}

// ref names an object a command touches: the table and the payload field
// that holds the object's id.
type ref struct{ tbl, field string }

// authority is one command's row.
type authority struct {
	by Proposers
	// For ByUser commands:
	admin    bool     // cloud admin only
	read     bool     // a reader may propose it (proposed while reading)
	projects []string // payload fields naming a project: the caller's
	owned    []ref    // objects that must belong to the caller's project
	shared   []ref    // networks owned by the caller's project or shared
	self     []string // payload fields naming a user: the caller
	selfObj  []ref    // objects whose UserID must be the caller
	// For forwarded ByHost commands: payload fields naming the host the
	// command speaks for, which must be the sender.
	host []string
	// newMember: the host field may also name a member not yet in the
	// state (the join flow registers the joiner).
	newMember bool
	// upload: for forwarded ByHost commands, the payload field naming an
	// image whose upload the sender must be holding (Image.UploadHost).
	upload string
}

func user(opts ...func(*authority)) authority {
	a := authority{by: ByUser}
	for _, o := range opts {
		o(&a)
	}
	return a
}

func adminOnly(a *authority)            { a.admin = true }
func readable(a *authority)             { a.read = true }
func also(p Proposers) func(*authority) { return func(a *authority) { a.by |= p } }
func project(fields ...string) func(*authority) {
	return func(a *authority) { a.projects = append(a.projects, fields...) }
}
func owned(tbl, field string) func(*authority) {
	return func(a *authority) { a.owned = append(a.owned, ref{tbl, field}) }
}
func sharedNet(field string) func(*authority) {
	return func(a *authority) { a.shared = append(a.shared, ref{tblNetworks, field}) }
}
func self(fields ...string) func(*authority) {
	return func(a *authority) { a.self = append(a.self, fields...) }
}
func selfObj(tbl, field string) func(*authority) {
	return func(a *authority) { a.selfObj = append(a.selfObj, ref{tbl, field}) }
}

func host(fields ...string) authority { return authority{by: ByHost, host: fields} }

var leaderOnly = authority{by: ByLeader}

// withHost lets a member also propose a user command about itself: the
// payload fields named must name the sending member.
func withHost(a authority, fields ...string) authority {
	a.by |= ByHost
	a.host = append(a.host, fields...)
	return a
}

// holdingUpload limits a host's command about an image upload ("ID") to
// the host holding that upload.
func holdingUpload(a authority) authority {
	a.upload = "ID"
	return a
}

// authorities is the authority row of every command.
var authorities = map[CmdType]authority{
	CmdBootstrap:        leaderOnly,
	CmdRegisterMember:   {by: ByHost, host: []string{"ID"}, newMember: true},
	CmdRemoveMember:     {by: ByHost | ByUser, host: []string{"ID"}, admin: true},
	CmdCreateJoinToken:  user(adminOnly),
	CmdConsumeJoinToken: host(),
	CmdSetHostEnabled:   user(adminOnly, also(ByLeader)),
	CmdUpdateSettings:   user(adminOnly),
	CmdRemoveHost:       withHost(user(adminOnly), "ID"), // or a leaving host, itself
	// The leader's verdicts; a host marks itself draining (and back).
	CmdSetHostHealth:    {by: ByLeader | ByHost, host: []string{"ID"}},
	CmdFailoverInstance: leaderOnly,
	CmdEvacuateInstance: user(adminOnly),
	// Changing T_fence safely (fencetimeout.go).
	CmdUpdateHASettings:   user(adminOnly),
	CmdSettleFenceTimeout: leaderOnly,
	CmdCoverFenceTimeout:  leaderOnly,

	CmdCreateProject:     user(adminOnly),
	CmdUpdateProject:     user(adminOnly),
	CmdDeleteProject:     user(adminOnly),
	CmdCreateUser:        user(adminOnly),
	CmdUpdateUser:        user(self("ID")),
	CmdDeleteUser:        user(adminOnly),
	CmdCreateRole:        user(adminOnly),
	CmdDeleteRole:        user(adminOnly),
	CmdGrantRole:         user(adminOnly),
	CmdRevokeRole:        user(adminOnly),
	CmdCreateAppCred:     user(readable, self("UserID")),
	CmdDeleteAppCred:     user(readable, selfObj(tblAppCreds, "ID")),
	CmdRotateSigningKeys: leaderOnly,
	CmdRevokeToken:       user(readable, self("UserID")),
	CmdLoginFailed:       host(),
	CmdLoginSucceeded:    {by: ByHost | ByUser, read: true},
	CmdUpdateRole:        user(adminOnly),
	CmdLoginAttempt:      {by: ByHost | ByUser, read: true},
	CmdRevokeRoleTokens:  user(adminOnly),
	CmdDeleteRoleTokens:  user(adminOnly),
	CmdUpdateRoleTokens:  user(adminOnly),

	CmdCreateFlavor:              user(adminOnly),
	CmdDeleteFlavor:              user(adminOnly),
	CmdSetFlavorAccess:           user(adminOnly),
	CmdSetFlavorExtraSpecs:       user(adminOnly),
	CmdCreateKeypair:             user(readable, self("UserID")),
	CmdDeleteKeypair:             user(readable, self("UserID")),
	CmdCreateInstances:           user(project("ProjectID")),
	CmdCreateInstancesOnHost:     user(adminOnly, project("ProjectID")),
	CmdCreateInstancesPlacedBoot: user(project("ProjectID")),
	CmdDeleteInstance:            user(owned(tblInstances, "ID")),
	CmdInstanceAction:            user(owned(tblInstances, "ID")),
	CmdUpdateInstance:            user(owned(tblInstances, "ID")),
	CmdPlaceInstances:            leaderOnly,
	CmdReportInstance:            host("HostID"),
	CmdCreateServerGroup:         user(project("ProjectID")),
	CmdCreateGroupWithRules:      user(project("ProjectID")),
	CmdDeleteServerGroup:         user(owned(tblServerGroups, "ID")),
	CmdServerAction:              user(owned(tblInstances, "ID")),
	CmdSetInstanceTags:           user(owned(tblInstances, "ID")),
	CmdRescueServer:              user(owned(tblInstances, "ID")),
	CmdSnapshotServer:            user(owned(tblInstances, "ID"), project("ProjectID")),
	CmdFinishSnapshot:            host("HostID"),
	CmdResizeServer:              user(owned(tblInstances, "ID")),
	CmdSetInstanceDesc:           user(owned(tblInstances, "ID")),
	CmdSetFlavorDesc:             user(adminOnly),

	CmdCreateImage: user(project("ProjectID")),
	CmdUpdateImage: user(owned(tblImages, "ID")),
	CmdDeleteImage: user(owned(tblImages, "ID")),
	// A host saving a server snapshot into the image store uploads it
	// itself (naming itself as the uploading host).
	CmdStartImageUpload: withHost(user(owned(tblImages, "ID")), "HostID"),
	// Only the host holding the upload may finish or kill it.
	CmdFinishImageUpload: holdingUpload(withHost(user(owned(tblImages, "ID")))),
	CmdKillImage:         holdingUpload(withHost(user(owned(tblImages, "ID"), also(ByLeader)), "HostID")),
	CmdAddImageTag:       user(owned(tblImages, "ID")),
	CmdRemoveImageTag:    user(owned(tblImages, "ID")),
	CmdAddImageMember:    user(owned(tblImages, "ImageID")),
	CmdUpdateImageMember: user(project("MemberID")),
	CmdReportImageHolder: {by: ByHost | ByLeader, host: []string{"HostID"}},
	CmdRemoveImageMember: user(owned(tblImages, "ImageID")),
	CmdSetImageCopies:    leaderOnly,
	CmdCreateNetwork:     user(project("ProjectID")),
	CmdUpdateNetwork:     user(owned(tblNetworks, "ID")),
	CmdDeleteNetwork:     user(owned(tblNetworks, "ID")),
	CmdCreateSubnet:      user(project("ProjectID"), owned(tblNetworks, "NetworkID")),
	CmdUpdateSubnet:      user(owned(tblSubnets, "ID")),
	CmdDeleteSubnet:      user(owned(tblSubnets, "ID")),
	CmdCreatePort:        user(project("ProjectID"), sharedNet("NetworkID")),
	CmdUpdatePort:        user(owned(tblPorts, "ID")),
	CmdDeletePort:        user(owned(tblPorts, "ID")),
	CmdReportPort:        host("HostID"),
	// The handler checked the network, subnet or port; the table depends
	// on the payload's kind.
	CmdTagResource:        user(),
	CmdSetNetPortSecurity: user(owned(tblNetworks, "ID")),
	CmdCreateAddressGroup: user(project("ProjectID")),
	CmdUpdateAddressGroup: user(owned(tblAddrGroups, "ID")),
	CmdDeleteAddressGroup: user(owned(tblAddrGroups, "ID")),
	CmdCreateSecGroup:     user(project("ProjectID")),
	CmdUpdateSecGroup:     user(owned(tblSecGroups, "ID")),
	CmdDeleteSecGroup:     user(owned(tblSecGroups, "ID")),
	CmdCreateSecGroupRule: user(project("ProjectID"), owned(tblSecGroups, "GroupID")),
	CmdDeleteSecGroupRule: user(owned(tblSecRules, "ID")),
	// Proposed while listing: a reader of the project may cause it.
	CmdEnsureDefaultSecGroup: user(readable, project("ProjectID")),
	CmdSetServerSecGroup:     user(owned(tblInstances, "InstanceID"), owned(tblSecGroups, "GroupID")),

	CmdCreateRouter:          user(project("ProjectID")),
	CmdUpdateRouter:          user(owned(tblRouters, "ID")),
	CmdDeleteRouter:          user(owned(tblRouters, "ID")),
	CmdAddRouterInterface:    user(owned(tblRouters, "RouterID")),
	CmdRemoveRouterInterface: user(owned(tblRouters, "RouterID")),
	CmdCreateFloatingIP:      user(project("ProjectID")),
	CmdUpdateFloatingIP:      user(owned(tblFloatingIPs, "ID")),
	CmdDeleteFloatingIP:      user(owned(tblFloatingIPs, "ID")),
	CmdReportFloatingIP:      host("HostID"),
	CmdSetHostNetworks:       host("ID"),

	CmdCreateVolume:       user(project("ProjectID")),
	CmdUpdateVolume:       user(owned(tblVolumes, "ID")),
	CmdDeleteVolume:       user(owned(tblVolumes, "ID")),
	CmdExtendVolume:       user(owned(tblVolumes, "ID")),
	CmdAttachVolume:       user(owned(tblVolumes, "VolumeID"), owned(tblInstances, "ServerID")),
	CmdAttachVolumeTagged: user(owned(tblVolumes, "VolumeID"), owned(tblInstances, "ServerID")),
	CmdDetachVolume:       user(owned(tblVolumes, "VolumeID")),
	CmdResetVolumeStatus:  user(adminOnly),
	CmdReleaseVolume:      leaderOnly,
	CmdVolumeHostGone:     leaderOnly,
	CmdPlaceVolume:        leaderOnly,
	CmdReportVolume:       host("HostID"),

	CmdSetQuotas:        user(adminOnly),
	CmdDeleteQuotas:     user(adminOnly),
	CmdSetDefaultQuotas: user(adminOnly),
	CmdEnableQuotas:     leaderOnly,
}

// authorityOf returns command t's row; ok is false for a command without
// one.
func authorityOf(t CmdType) (authority, bool) {
	a, ok := authorities[t]
	return a, ok
}

// Proposers returns who may propose the command; ok is false when the
// command has no authority row (it is then admitted from any origin).
func (s CmdSpec) Proposers() (Proposers, bool) {
	a, ok := authorityOf(s.Type)
	return a.by, ok
}

// Origin is where a forwarded command came from, as the receiving leader
// verified it: the member whose certificate the connection presented and,
// when the request carried a token, the caller that token proves.
type Origin struct {
	Host   string
	Caller *Caller
}

// CheckForwarded decides whether a command another host forwarded may
// enter the log. A user command needs the caller's token (Origin.Caller
// equal to Command.Caller) and the caller's rights on sn; a command
// without a caller must be one a host may propose about itself. Refusals
// are KindForbidden; a command that does not parse is left to Admit.
func (r *Registry) CheckForwarded(sn *Snapshot, data []byte, from Origin) error {
	c, spec, perr := r.parse(data)
	if perr != nil {
		return nil
	}
	a, ok := authorityOf(spec.Type)
	if !ok {
		return nil
	}
	if c.Caller != nil {
		switch {
		case a.by&ByUser == 0:
			return Errorf(KindForbidden, "Command %s is not one an API caller may propose.", spec.Name)
		case from.Caller == nil:
			return Errorf(KindForbidden, "Command %s was forwarded on behalf of a caller without the caller's token.", spec.Name)
		case *from.Caller != *c.Caller:
			return Errorf(KindForbidden, "Command %s names a caller other than the forwarded token's.", spec.Name)
		}
		return a.check(sn, c)
	}
	if a.by&ByHost == 0 {
		return Errorf(KindForbidden, "Command %s may not be proposed by host %s.", spec.Name, from.Host)
	}
	for _, f := range a.host {
		id, _ := stringField(c.payload, f)
		if id == from.Host {
			continue
		}
		if _, member := sn.Member(id); a.newMember && !member && id != "" {
			continue
		}
		return Errorf(KindForbidden, "Host %s may not propose %s for host %q.", from.Host, spec.Name, id)
	}
	if a.upload != "" {
		id, _ := stringField(c.payload, a.upload)
		if img, ok := sn.Image(id); !ok || img.UploadHost != from.Host {
			return Errorf(KindForbidden, "Host %s may not propose %s for image %q: it does not hold that image's upload.", from.Host, spec.Name, id)
		}
	}
	return nil
}

// checkCaller is apply's re-check of a user command's caller against the
// state the command applies to.
func checkCaller(t *Txn, spec CmdSpec, c *Command) error {
	a, ok := authorityOf(spec.Type)
	if c.Caller == nil || !ok || a.by&ByUser == 0 {
		return nil
	}
	if c.payload == nil {
		v, err := spec.decodePayload(c)
		if err != nil {
			return Errorf(KindInvalid, "%v", err)
		}
		c.payload = v
	}
	return a.check(t.read(), c)
}

// check applies a user row to the command's caller and payload.
func (a authority) check(sn *Snapshot, c *Command) error {
	who := c.Caller
	if who.Admin {
		return nil
	}
	deny := func(format string, args ...any) error {
		return Errorf(KindForbidden, "You are not authorized to perform the requested action: %s.", fmt.Sprintf(format, args...))
	}
	if a.admin {
		return deny("admin only")
	}
	if !who.Writer && !a.read {
		return deny("the caller's role on project %s does not allow changes", who.ProjectID)
	}
	for _, f := range a.self {
		if id, _ := stringField(c.payload, f); id != "" && id != who.UserID {
			return deny("user %s is not the caller", id)
		}
	}
	for _, f := range a.projects {
		for _, p := range stringFields(c.payload, f) {
			if p != "" && p != who.ProjectID {
				return deny("project %s is not the caller's", p)
			}
		}
	}
	for _, rf := range a.owned {
		id, _ := stringField(c.payload, rf.field)
		if obj, ok := lookup(sn, rf.tbl, id); ok {
			if p, _ := stringField(obj, "ProjectID"); p != who.ProjectID {
				return Errorf(KindNotFound, "No %s with id %s in the caller's project.", rf.tbl, id)
			}
		}
	}
	for _, rf := range a.shared {
		id, _ := stringField(c.payload, rf.field)
		if obj, ok := lookup(sn, rf.tbl, id); ok {
			p, _ := stringField(obj, "ProjectID")
			sh, _ := fieldValue(obj, "Shared")
			if p != who.ProjectID && !(sh.Kind() == reflect.Bool && sh.Bool()) {
				return Errorf(KindNotFound, "No %s with id %s owned by or shared with the caller's project.", rf.tbl, id)
			}
		}
	}
	for _, rf := range a.selfObj {
		id, _ := stringField(c.payload, rf.field)
		if obj, ok := lookup(sn, rf.tbl, id); ok {
			if u, _ := stringField(obj, "UserID"); u != who.UserID {
				return Errorf(KindNotFound, "No %s with id %s of the caller.", rf.tbl, id)
			}
		}
	}
	return nil
}

// lookup finds an object by id in any table.
func lookup(sn *Snapshot, tbl, id string) (any, bool) {
	if id == "" {
		return nil, false
	}
	o, err := sn.txn.First(tbl, "id", id)
	if err != nil || o == nil {
		return nil, false
	}
	return o, true
}

// fieldValue finds a field by name in v (a struct or pointer to one),
// looking into embedded and nested struct fields breadth first.
func fieldValue(v any, name string) (reflect.Value, bool) {
	vals := collect(reflect.ValueOf(v), name, 3, true)
	if len(vals) == 0 {
		return reflect.Value{}, false
	}
	return vals[0], true
}

func stringField(v any, name string) (string, bool) {
	f, ok := fieldValue(v, name)
	if !ok || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// stringFields is every string field called name in v, in nested structs
// and slices of them too (the instances of one CreateInstances).
func stringFields(v any, name string) []string {
	var out []string
	for _, f := range collect(reflect.ValueOf(v), name, 4, false) {
		if f.Kind() == reflect.String && !slices.Contains(out, f.String()) {
			out = append(out, f.String())
		}
	}
	return out
}

// collect walks v up to depth levels of structs, pointers and slices and
// returns the fields called name; first stops at the shallowest match.
func collect(v reflect.Value, name string, depth int, first bool) []reflect.Value {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if depth < 0 {
		return nil
	}
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		var out []reflect.Value
		for i := 0; i < v.Len(); i++ {
			out = append(out, collect(v.Index(i), name, depth-1, first)...)
			if first && len(out) > 0 {
				return out
			}
		}
		return out
	case reflect.Struct:
	default:
		return nil
	}
	t := v.Type()
	var out []reflect.Value
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Name == name && t.Field(i).IsExported() {
			out = append(out, v.Field(i))
			if first {
				return out
			}
		}
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Name == name {
			continue
		}
		k := f.Type.Kind()
		if k == reflect.Struct || k == reflect.Pointer || k == reflect.Slice {
			out = append(out, collect(v.Field(i), name, depth-1, first)...)
			if first && len(out) > 0 {
				return out
			}
		}
	}
	return out
}

// ForLog returns the command bytes the leader puts into the log: a user
// command's caller is kept only when every member applies the caller
// check (wave2 or newer), so hosts of a cluster being upgraded cannot
// disagree on whether a command applied.
func (r *Registry) ForLog(sn *Snapshot, data []byte) []byte {
	if !bytes.Contains(data, []byte(`"caller":`)) {
		return data
	}
	c, _, perr := r.parse(data)
	if perr != nil || c.Caller == nil {
		return data
	}
	if checkVersions(sn, CmdSpec{Name: "caller check", MinVersion: wave2}) == nil {
		return data
	}
	c.Caller = nil
	out, err := c.Encode()
	if err != nil {
		return data
	}
	return out
}
