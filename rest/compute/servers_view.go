package compute

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// novaStatus maps vm_state and task_state to Nova's server status.
func novaStatus(i *statedb.Instance) string {
	switch i.VMState {
	case statedb.VMBuilding:
		return "BUILD"
	case statedb.VMActive, statedb.VMStopped:
		switch i.TaskState {
		case statedb.TaskRebooting:
			return "REBOOT"
		case statedb.TaskRebootingHard:
			return "HARD_REBOOT"
		case statedb.TaskResizePrep:
			return "RESIZE"
		}
		if i.VMState == statedb.VMStopped {
			return "SHUTOFF"
		}
		return "ACTIVE"
	case statedb.VMPaused:
		return "PAUSED"
	case statedb.VMSuspended:
		return "SUSPENDED"
	case statedb.VMRescued:
		return "RESCUE"
	case statedb.VMResized:
		if i.TaskState == statedb.TaskResizeReverting {
			return "REVERT_RESIZE"
		}
		return "VERIFY_RESIZE"
	case statedb.VMError:
		return "ERROR"
	case statedb.VMDeleted:
		return "DELETED"
	}
	return "UNKNOWN"
}

// viewCtx holds what rendering many servers needs once per request.
type viewCtx struct {
	c       *rest.Ctx
	sn      *statedb.Snapshot
	admin   bool
	base    string
	volumes map[string][]string // server id → attached volume ids
}

func (s *service) newViewCtx(c *rest.Ctx, sn *statedb.Snapshot) *viewCtx {
	v := &viewCtx{c: c, sn: sn, admin: s.isAdmin(c), base: base(c, sn), volumes: map[string][]string{}}
	for _, vol := range sn.Volumes() {
		for _, a := range vol.Attachments {
			v.volumes[a.ServerID] = append(v.volumes[a.ServerID], vol.ID)
		}
	}
	return v
}

func (v *viewCtx) links(coll, id string) []link {
	b := v.base + "/compute"
	return []link{{Rel: "self", Href: b + "/v2.1/" + coll + "/" + id}, {Rel: "bookmark", Href: b + "/" + coll + "/" + id}}
}

func (v *viewCtx) bookmark(coll, id string) []link {
	return []link{{Rel: "bookmark", Href: v.base + "/compute/" + coll + "/" + id}}
}

// hostName is the name of a member id, or the id if the member is gone.
func (v *viewCtx) hostName(id string) string {
	if m, ok := v.sn.Member(id); ok {
		return m.Name
	}
	return id
}

type addressView struct {
	Version int    `json:"version"`
	Addr    string `json:"addr"`
	Type    string `json:"OS-EXT-IPS:type"`
	MAC     string `json:"OS-EXT-IPS-MAC:mac_addr"`
}

// addresses groups the instance's port addresses by network name.
func (v *viewCtx) addresses(i *statedb.Instance) map[string][]addressView {
	out := map[string][]addressView{}
	for _, pid := range i.PortIDs {
		p, ok := v.sn.Port(pid)
		if !ok {
			continue
		}
		name := p.NetworkID
		if n, ok := v.sn.Network(p.NetworkID); ok {
			name = n.Name
		}
		for _, ip := range p.FixedIPs {
			ver := 4
			if parsed := net.ParseIP(ip.IP); parsed != nil && parsed.To4() == nil {
				ver = 6
			}
			out[name] = append(out[name], addressView{Version: ver, Addr: ip.IP, Type: "fixed", MAC: p.MAC})
		}
	}
	return out
}

func securityGroupsView(names []string) []map[string]string {
	if len(names) == 0 {
		names = []string{"default"}
	}
	out := make([]map[string]string, 0, len(names))
	for _, n := range names {
		out = append(out, map[string]string{"name": n})
	}
	return out
}

// hostID is Nova's opaque per-project host id: sha224(project + host).
func hostID(project, host string) string {
	if host == "" {
		return ""
	}
	h := sha256.Sum224([]byte(project + host))
	return hex.EncodeToString(h[:])
}

// instanceName is the libvirt-style name Nova shows to admins.
func instanceName(id string) string {
	hexID := strings.ReplaceAll(id, "-", "")
	if len(hexID) > 8 {
		hexID = hexID[:8]
	}
	return "instance-" + hexID
}

// server renders the detailed server view at 2.1.
func (v *viewCtx) server(i *statedb.Instance) map[string]any {
	var image any = ""
	if i.ImageID != "" {
		image = map[string]any{"id": i.ImageID, "links": v.bookmark("images", i.ImageID)}
	}
	var keyName any
	if i.KeyName != "" {
		keyName = i.KeyName
	}
	md := i.Metadata
	if md == nil {
		md = map[string]string{}
	}
	vols := make([]map[string]string, 0, len(v.volumes[i.ID]))
	for _, id := range v.volumes[i.ID] {
		vols = append(vols, map[string]string{"id": id})
	}
	configDrive := ""
	if i.ConfigDrive {
		configDrive = "True"
	}
	var task any
	if i.TaskState != "" {
		task = i.TaskState
	}
	host := ""
	if i.Host != "" {
		host = v.hostName(i.Host)
	}
	out := map[string]any{
		"id": i.ID, "name": i.Name, "status": novaStatus(i), "tenant_id": i.ProjectID, "user_id": i.UserID,
		"metadata": md, "hostId": hostID(i.ProjectID, host), "image": image,
		"flavor":  map[string]any{"id": i.Flavor.ID, "links": v.bookmark("flavors", i.Flavor.ID)},
		"created": fmtZ(i.CreatedAt), "updated": fmtZ(i.UpdatedAt), "addresses": v.addresses(i),
		"accessIPv4": "", "accessIPv6": "", "links": v.links("servers", i.ID), "key_name": keyName,
		"progress": 0, "config_drive": configDrive, "security_groups": securityGroupsView(i.SecurityGroups),
		"OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": i.AZ,
		"OS-EXT-STS:vm_state": i.VMState, "OS-EXT-STS:task_state": task, "OS-EXT-STS:power_state": i.PowerState,
		"OS-SRV-USG:launched_at": fmtUSG(i.LaunchedAt), "OS-SRV-USG:terminated_at": nil,
		"os-extended-volumes:volumes_attached": vols,
	}
	if v.admin {
		var h any
		if host != "" {
			h = host
		}
		out["OS-EXT-SRV-ATTR:host"] = h
		out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = h
		out["OS-EXT-SRV-ATTR:instance_name"] = instanceName(i.ID)
	}
	if i.VMState == statedb.VMError && i.Fault != nil {
		f := map[string]any{"code": i.Fault.Code, "message": i.Fault.Message, "created": fmtZ(i.Fault.Created)}
		if v.admin && i.Fault.Details != "" {
			f["details"] = i.Fault.Details
		}
		out["fault"] = f
	}
	v.versionedFields(i, out, host)
	return out
}

// server finds a server the caller may access, or 404 (also for names,
// which osc-lib then looks up with ?name=).
func (s *service) server(c *rest.Ctx, sn *statedb.Snapshot, access rest.Access) (*statedb.Instance, error) {
	id := c.Var("server_id")
	inst, ok := sn.Instance(id)
	if !ok {
		return nil, rest.NotFoundf("Instance %s could not be found.", id)
	}
	if err := rest.Check(s.b, c, access, inst.ProjectID, false, "Instance "+id); err != nil {
		return nil, err
	}
	return inst, nil
}

func (s *service) getServer(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	inst, err := s.server(c, sn, rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"server": s.newViewCtx(c, sn).server(inst)}, nil
}

// filterServers applies Nova's list rules: own project (admins with
// all_tenants see every project, optionally one), then name (a regular
// expression, searched), status, host (admins), image and flavor, newest
// first, then limit and marker.
func (s *service) filterServers(c *rest.Ctx, sn *statedb.Snapshot) ([]*statedb.Instance, error) {
	if c.Cred == nil {
		return nil, rest.Unauthorized("The request you have made requires authentication.")
	}
	q := c.R.URL.Query()
	admin := s.isAdmin(c)
	all := false
	if q.Has("all_tenants") {
		v := q.Get("all_tenants")
		b, ok := queryBool(v)
		if v == "" {
			b, ok = true, true
		}
		if !ok {
			return nil, rest.BadRequest("Invalid all_tenants value: %s", v)
		}
		if b && !admin {
			return nil, rest.Forbiddenf("Policy doesn't allow os_compute_api:servers:detail:get_all_tenants to be performed.")
		}
		all = b
	}
	project := c.Cred.ProjectID
	if all {
		project = ""
		if p := firstNonEmpty(q.Get("project_id"), q.Get("tenant_id")); p != "" {
			project = p
		}
	}
	var insts []*statedb.Instance
	if project == "" {
		insts = sn.Instances()
	} else {
		insts = sn.InstancesOfProject(project)
	}
	var nameRE *regexp.Regexp
	if n := q.Get("name"); n != "" {
		re, err := regexp.Compile(n)
		if err != nil {
			re = regexp.MustCompile(regexp.QuoteMeta(n))
		}
		nameRE = re
	}
	statuses := map[string]bool{}
	for _, st := range q["status"] {
		statuses[strings.ToUpper(st)] = true
	}
	host := ""
	if admin {
		host = q.Get("host")
	}
	image, flavor := lastSegment(q.Get("image")), lastSegment(q.Get("flavor"))
	out := insts[:0:0]
	for _, i := range insts {
		switch {
		case !rest.Visible(s.b, c, i.ProjectID, false):
		case nameRE != nil && !nameRE.MatchString(i.Name):
		case len(statuses) > 0 && !statuses[novaStatus(i)]:
		case host != "" && (i.Host == "" || (i.Host != host && hostNameOf(sn, i.Host) != host)):
		case image != "" && i.ImageID != image:
		case flavor != "" && i.Flavor.ID != flavor:
		default:
			out = append(out, i)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.After(out[b].CreatedAt)
		}
		if out[a].LaunchIndex != out[b].LaunchIndex {
			return out[a].LaunchIndex > out[b].LaunchIndex
		}
		return out[a].ID > out[b].ID
	})
	return paginate(c, out, func(i *statedb.Instance) string { return i.ID })
}

func hostNameOf(sn *statedb.Snapshot, id string) string {
	if m, ok := sn.Member(id); ok {
		return m.Name
	}
	return ""
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

func lastSegment(ref string) string {
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		return ref[i+1:]
	}
	return ref
}

// nextLink is the servers_links entry when a page was cut at limit.
func nextLink(c *rest.Ctx, sn *statedb.Snapshot, n int, lastID string) []link {
	l := c.Query("limit")
	if l == "" || lastID == "" {
		return nil
	}
	if lim, err := strconv.Atoi(l); err != nil || n < lim {
		return nil
	}
	q := c.R.URL.Query()
	q.Set("marker", lastID)
	u := url.URL{Path: c.R.URL.Path, RawQuery: q.Encode()}
	return []link{{Rel: "next", Href: base(c, sn) + u.String()}}
}

func (s *service) listServers(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	insts, err := s.filterServers(c, sn)
	if err != nil {
		return nil, err
	}
	v := s.newViewCtx(c, sn)
	out := make([]map[string]any, 0, len(insts))
	for _, i := range insts {
		out = append(out, map[string]any{"id": i.ID, "name": i.Name, "links": v.links("servers", i.ID)})
	}
	return listBody(c, sn, out, insts), nil
}

func (s *service) listServersDetail(c *rest.Ctx) (any, error) {
	sn := s.b.State()
	insts, err := s.filterServers(c, sn)
	if err != nil {
		return nil, err
	}
	v := s.newViewCtx(c, sn)
	out := make([]map[string]any, 0, len(insts))
	for _, i := range insts {
		out = append(out, v.server(i))
	}
	return listBody(c, sn, out, insts), nil
}

func listBody(c *rest.Ctx, sn *statedb.Snapshot, out []map[string]any, insts []*statedb.Instance) map[string]any {
	body := map[string]any{"servers": out}
	last := ""
	if len(insts) > 0 {
		last = insts[len(insts)-1].ID
	}
	if l := nextLink(c, sn, len(insts), last); l != nil {
		body["servers_links"] = l
	}
	return body
}
