package compute

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// serverCreateReq is the "server" object of POST /servers at 2.1. Fields
// whose JSON type varies (Nova accepts ints as strings, and so on) stay
// raw until validated; any other key is a 400 (additionalProperties false).
type serverCreateReq struct {
	Name                *string         `json:"name"`
	ImageRef            *string         `json:"imageRef"`
	FlavorRef           json.RawMessage `json:"flavorRef"`
	AdminPass           *string         `json:"adminPass"`
	Metadata            json.RawMessage `json:"metadata"`
	Networks            json.RawMessage `json:"networks"`
	DiskConfig          *string         `json:"OS-DCF:diskConfig"`
	AccessIPv4          *string         `json:"accessIPv4"`
	AccessIPv6          *string         `json:"accessIPv6"`
	Personality         json.RawMessage `json:"personality"`
	AvailabilityZone    *string         `json:"availability_zone"`
	BlockDeviceMapping  json.RawMessage `json:"block_device_mapping"`
	BlockDeviceMappingV json.RawMessage `json:"block_device_mapping_v2"`
	ConfigDrive         json.RawMessage `json:"config_drive"`
	KeyName             *string         `json:"key_name"`
	MinCount            json.RawMessage `json:"min_count"`
	MaxCount            json.RawMessage `json:"max_count"`
	ReturnReservationID json.RawMessage `json:"return_reservation_id"`
	SecurityGroups      json.RawMessage `json:"security_groups"`
	UserData            *string         `json:"user_data"`
	Tags                json.RawMessage `json:"tags"`                // 2.52
	Description         *string         `json:"description"`         // 2.19
	Host                *string         `json:"host"`                // 2.74
	HypervisorHostname  *string         `json:"hypervisor_hostname"` // 2.74
}

// nicWant is one requested NIC before it is turned into port requests.
type nicWant struct {
	NetworkID string
	PortID    string
	FixedIP   string
}

// serverPlan is a validated create request: everything needed to build
// the CreateInstances command.
type serverPlan struct {
	Name           string
	Flavor         statedb.Flavor
	ImageID        string
	RootVolume     string // boot from this existing volume
	Arch           string
	KeyName        string
	KeyData        string
	UserData       string
	Tags           []string // 2.52
	Description    string   // 2.19
	Metadata       map[string]string
	AZ             string
	GroupID        string
	ConfigDrive    bool
	Min, Max       int
	NICs           []nicWant
	SecurityGroups []string
	AdminPass      string
	ReturnResID    bool
	// BootImage, when set, is the image a new boot volume of BootSizeGB
	// is made from (source image, destination volume).
	BootImage  *statedb.Image
	BootSizeGB int
	BootDelete bool // the boot volume's delete_on_termination
	// RequestedHost is the member an admin asked for (2.74 host, or
	// availability_zone "nova:host"); "" for any.
	RequestedHost string
}

// createServer serves POST /servers: validate, then one CreateInstances
// command for every instance and its ports.
func (s *service) createServer(c *rest.Ctx) (any, error) {
	if c.Cred == nil || c.Cred.ProjectID == "" {
		return nil, rest.Forbiddenf("Creating a server needs a project-scoped token.")
	}
	if err := rest.Check(s.b, c, rest.Write, c.Cred.ProjectID, false, "Server"); err != nil {
		return nil, err
	}
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		return nil, err
	}
	sn := s.b.State()
	p, err := s.parseServerCreate(c, sn, env)
	if err != nil {
		return nil, err
	}
	cmd, ids, err := s.buildCreate(c, sn, p)
	if err != nil {
		return nil, err
	}
	if p.Min < p.Max {
		cmd.MinCount = p.Min // quota may cap the count, never below min_count
	}
	typ := statedb.CmdCreateInstances
	switch {
	case p.RequestedHost != "":
		typ = statedb.CmdCreateInstancesOnHost // only hosts that honour the pin may apply it
	case placesBootVolume(cmd):
		typ = statedb.CmdCreateInstancesPlacedBoot // only hosts that place such volumes may apply it
	}
	if _, err := rest.Propose(c.Context(), s.b, typ, cmd); err != nil {
		return nil, err
	}
	if p.ReturnResID {
		return &rest.Response{Status: http.StatusAccepted, Body: map[string]any{"reservation_id": cmd.Instances[0].Instance.Reservation}}, nil
	}
	sn = s.b.State()
	return &rest.Response{Status: http.StatusAccepted, Body: map[string]any{"server": map[string]any{
		"id": ids[0], "links": links(c, sn, "servers", ids[0]), "adminPass": p.AdminPass,
		"OS-DCF:diskConfig": "MANUAL", "security_groups": securityGroupsView(p.SecurityGroups),
	}}}, nil
}

// parseServerCreate validates a create body against the state. It writes
// nothing, so it is safe to call with any input.
func (s *service) parseServerCreate(c *rest.Ctx, sn *statedb.Snapshot, env map[string]json.RawMessage) (*serverPlan, error) {
	if env == nil {
		return nil, rest.BadRequest("The request body must be a JSON object.")
	}
	var hints json.RawMessage
	for k, v := range env {
		switch k {
		case "server":
		case "os:scheduler_hints", "OS-SCH-HNT:scheduler_hints":
			hints = v
		default:
			return nil, rest.BadRequest("Invalid input for field/attribute server. Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	raw, ok := env["server"]
	if !ok || string(raw) == "null" {
		return nil, rest.BadRequest("Invalid input for field/attribute server. 'server' is a required property")
	}
	var req serverCreateReq
	if err := decodeStrict("server", raw, &req); err != nil {
		return nil, err
	}
	p := &serverPlan{Metadata: map[string]string{}, AZ: "nova"}
	if req.Name == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute server. 'name' is a required property")
	}
	if err := validName("name", *req.Name); err != nil {
		return nil, err
	}
	p.Name = *req.Name
	if err := s.parseCounts(&req, p); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return s.parseFlavor(c, sn, req.FlavorRef, p) },
		func() error { return s.parseBDM(c, sn, &req, p) },
		func() error { return s.parseImage(c, sn, req.ImageRef, p) },
		func() error { return s.parseNetworks(c, sn, req.Networks, p) },
		func() error { return s.parseKey(c, sn, req.KeyName, p) },
		func() error { return parseUserData(req.UserData, p) },
		func() error { return parseMetadata(req.Metadata, p.Metadata) },
		func() error { return parseMisc(&req, p) },
		func() error { return s.parseRequestedHost(c, sn, &req, p) },
		func() error { return s.parseHints(c, sn, hints, p) },
		func() error { return parseVersioned(c, &req, p) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (s *service) parseCounts(req *serverCreateReq, p *serverPlan) error {
	p.Min, p.Max = 1, 0
	if len(req.MinCount) > 0 && string(req.MinCount) != "null" {
		n, err := intValue("min_count", req.MinCount, rest.NovaInt)
		if err != nil {
			return err
		}
		p.Min = n
	}
	if len(req.MaxCount) > 0 && string(req.MaxCount) != "null" {
		n, err := intValue("max_count", req.MaxCount, rest.NovaInt)
		if err != nil {
			return err
		}
		p.Max = n
	} else {
		p.Max = p.Min
	}
	switch {
	case p.Min < 1:
		return rest.BadRequest("Invalid input for field/attribute min_count. Value: %d. %d is less than the minimum of 1", p.Min, p.Min)
	case p.Max < 1:
		return rest.BadRequest("Invalid input for field/attribute max_count. Value: %d. %d is less than the minimum of 1", p.Max, p.Max)
	case p.Min > p.Max:
		return rest.BadRequest("min_count must be <= max_count")
	case p.Max > maxCount:
		return rest.BadRequest("max_count %d is more than the limit of %d instances per request.", p.Max, maxCount)
	}
	return nil
}

// parseFlavor resolves flavorRef (an id or a link ending in one).
func (s *service) parseFlavor(c *rest.Ctx, sn *statedb.Snapshot, raw json.RawMessage, p *serverPlan) error {
	if len(raw) == 0 || string(raw) == "null" {
		return rest.BadRequest("Invalid input for field/attribute server. 'flavorRef' is a required property")
	}
	var ref string
	if err := json.Unmarshal(raw, &ref); err != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return rest.BadRequest("Invalid input for field/attribute flavorRef. Value: %s. %s is not of type 'string', 'integer'", raw, raw)
		}
		ref = n.String()
	}
	if ref == "" {
		return rest.BadRequest("Invalid input for field/attribute flavorRef. Value: . '' is too short")
	}
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	f, ok := sn.Flavor(ref)
	if !ok || !s.flavorVisible(c, f) {
		return rest.BadRequest("Flavor %s could not be found.", ref)
	}
	if f.Disabled {
		return rest.BadRequest("Flavor %s is disabled.", ref)
	}
	p.Flavor = *f
	p.Flavor.Projects = nil
	return nil
}

// imageVisible reports whether an image may be booted by the caller's
// project: its own, public or community, or shared with the project and
// accepted; admins see every image.
func (s *service) imageVisible(c *rest.Ctx, img *statedb.Image) bool {
	if s.isAdmin(c) || img.ProjectID == c.Cred.ProjectID {
		return true
	}
	switch img.Visibility {
	case "public", "community":
		return true
	case "shared":
		return slices.ContainsFunc(img.Members, func(m statedb.ImageMember) bool {
			return m.ProjectID == c.Cred.ProjectID && m.Status == "accepted"
		})
	}
	return false
}

func (s *service) parseImage(c *rest.Ctx, sn *statedb.Snapshot, ref *string, p *serverPlan) error {
	if ref == nil || *ref == "" {
		if p.RootVolume != "" || p.BootImage != nil {
			return nil
		}
		return rest.BadRequest("Missing imageRef attribute")
	}
	id := *ref
	if i := strings.LastIndex(id, "/"); i >= 0 {
		id = id[i+1:]
	}
	if p.BootImage != nil && id == p.BootImage.ID {
		return nil // novaclient's --image next to a boot volume made from it
	}
	if !isUUID(id) {
		return rest.BadRequest("Invalid input for field/attribute imageRef. Value: %s. %q is not a 'uuid'", *ref, *ref)
	}
	if p.RootVolume != "" || p.BootImage != nil {
		return rest.BadRequest("Block Device Mapping is Invalid: a server boots from an image or a volume, not both.")
	}
	img, ok := sn.Image(id)
	if !ok || !s.imageVisible(c, img) {
		return rest.BadRequest("Image %s could not be found.", id)
	}
	if img.Status != "active" {
		return rest.BadRequest("Image %s is not active.", id)
	}
	const gb = int64(1) << 30
	fdisk := int64(p.Flavor.DiskGB) * gb
	switch {
	case p.Flavor.DiskGB == 0 && !s.isAdmin(c):
		return rest.Forbiddenf("Only volume-backed servers are allowed for flavors with zero disk.")
	case p.Flavor.DiskGB > 0 && int64(img.MinDiskGB)*gb > fdisk:
		return rest.BadRequest("Flavor's disk is too small for requested image. Flavor disk is %d bytes, minimum required by image is %d bytes.", fdisk, int64(img.MinDiskGB)*gb)
	case p.Flavor.DiskGB > 0 && max(img.Size, img.VirtualSize) > fdisk:
		return rest.BadRequest("Flavor's disk is too small for requested image. Flavor disk is %d bytes, image is %d bytes.", fdisk, max(img.Size, img.VirtualSize))
	case img.MinRAMMB > p.Flavor.RAMMB:
		return rest.BadRequest("Flavor's memory is too small for requested image.")
	}
	p.ImageID = img.ID
	p.Arch = imageArch(img)
	return nil
}

// networkUsable reports whether the caller's project may put a NIC on a
// network: its own, a shared one, or any for admins.
func (s *service) networkUsable(c *rest.Ctx, n *statedb.Network) bool {
	return n.ProjectID == c.Cred.ProjectID || n.Shared || s.isAdmin(c)
}

// parseNetworks reads "networks": a list of {uuid|port, fixed_ip}, or
// "none"/"auto" (2.37 values, accepted here too), or nothing, which like
// "auto" picks the project's only usable network.
func (s *service) parseNetworks(c *rest.Ctx, sn *statedb.Snapshot, raw json.RawMessage, p *serverPlan) error {
	mode := "auto"
	var list []map[string]json.RawMessage
	if len(raw) > 0 && string(raw) != "null" {
		var str string
		if json.Unmarshal(raw, &str) == nil {
			if str != "none" && str != "auto" {
				return rest.BadRequest("Invalid input for field/attribute networks. Value: %s. %q is not one of ['none', 'auto']", str, str)
			}
			mode = str
		} else if err := json.Unmarshal(raw, &list); err != nil {
			return rest.BadRequest("Invalid input for field/attribute networks. Value: %s. It is not an array or 'none'/'auto'", raw)
		} else if len(list) > 0 {
			mode = "list"
		}
	}
	switch mode {
	case "none":
		return nil
	case "auto":
		var usable []*statedb.Network
		for _, n := range sn.Networks() {
			if (n.ProjectID == c.Cred.ProjectID || n.Shared) && !n.External && len(sn.SubnetsOf(n.ID)) > 0 {
				usable = append(usable, n)
			}
		}
		switch len(usable) {
		case 0:
			return nil
		case 1:
			p.NICs = []nicWant{{NetworkID: usable[0].ID}}
			return nil
		}
		return rest.Conflictf("Multiple possible networks found, use a Network ID to be more specific.")
	}
	for _, entry := range list {
		var w nicWant
		for k, v := range entry {
			var str string
			if string(v) != "null" && json.Unmarshal(v, &str) != nil {
				return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. It is not a string", k, v)
			}
			switch k {
			case "uuid":
				w.NetworkID = str
			case "port":
				w.PortID = str
			case "fixed_ip":
				w.FixedIP = str
			default:
				return rest.BadRequest("Invalid input for field/attribute networks. Additional properties are not allowed ('%s' was unexpected)", k)
			}
		}
		if err := s.checkNIC(c, sn, &w, p.Max); err != nil {
			return err
		}
		p.NICs = append(p.NICs, w)
	}
	return nil
}

func (s *service) checkNIC(c *rest.Ctx, sn *statedb.Snapshot, w *nicWant, maxN int) error {
	if w.FixedIP != "" {
		if net.ParseIP(w.FixedIP) == nil {
			return rest.BadRequest("Invalid fixed IP address (%s)", w.FixedIP)
		}
		if maxN > 1 {
			return rest.BadRequest("Failed to launch instances: a fixed IP cannot be given to more than one instance.")
		}
	}
	if w.PortID != "" {
		if maxN > 1 {
			return rest.BadRequest("Unable to launch multiple instances with a single configured port ID. Please launch your instance one by one with different ports.")
		}
		if !isUUID(w.PortID) {
			return rest.BadRequest("Bad networks format: port uuid is not in proper format (%s)", w.PortID)
		}
		port, ok := sn.Port(w.PortID)
		if !ok || !(port.ProjectID == c.Cred.ProjectID || s.isAdmin(c)) {
			return rest.BadRequest("Port id %s could not be found.", w.PortID)
		}
		if port.DeviceID != "" {
			return rest.Conflictf("Port %s is still in use.", w.PortID)
		}
		w.NetworkID = port.NetworkID
		w.FixedIP = ""
		return nil
	}
	if w.NetworkID == "" {
		return rest.BadRequest("Bad network format: missing 'uuid'")
	}
	if !isUUID(w.NetworkID) {
		return rest.BadRequest("Bad networks format: network uuid is not in proper format (%s)", w.NetworkID)
	}
	n, ok := sn.Network(w.NetworkID)
	if !ok || !s.networkUsable(c, n) {
		return rest.BadRequest("Network %s could not be found.", w.NetworkID)
	}
	if len(sn.SubnetsOf(n.ID)) == 0 {
		return rest.BadRequest("Network %s requires a subnet in order to boot instances on.", n.ID)
	}
	// As in Neutron (create_port:fixed_ips:ip_address is
	// admin_or_network_owner): a tenant on a shared network must not take
	// an address of its choosing there (another host's on a provider LAN).
	// The same rule as the network API's: write access to the owner.
	if w.FixedIP != "" && s.b.Authorize(c.Cred, rest.Write, n.ProjectID, false) != rest.Allow {
		return rest.Forbiddenf("Policy doesn't allow create_port:fixed_ips:ip_address to be performed.")
	}
	return nil
}

func (s *service) parseKey(c *rest.Ctx, sn *statedb.Snapshot, name *string, p *serverPlan) error {
	if name == nil || *name == "" {
		return nil
	}
	k, ok := sn.Keypair(c.Cred.UserID, *name)
	if !ok {
		return rest.BadRequest("Invalid key_name provided.")
	}
	p.KeyName, p.KeyData = k.Name, k.PublicKey
	return nil
}

func parseUserData(ud *string, p *serverPlan) error {
	if ud == nil || *ud == "" {
		return nil
	}
	if len(*ud) > 2*maxUserData {
		return rest.BadRequest("User data too large. User data must be no larger than %d bytes once decoded.", maxUserData)
	}
	raw, err := base64.StdEncoding.DecodeString(*ud)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(*ud, "="))
	}
	if err != nil {
		return rest.BadRequest("User data needs to be valid base 64.")
	}
	if len(raw) > maxUserData {
		return rest.BadRequest("User data too large. User data must be no larger than %d bytes once decoded; it is %d bytes.", maxUserData, len(raw))
	}
	p.UserData = *ud
	return nil
}

// parseMetadata reads a metadata object into dst: string keys of 1-255
// characters with string values of at most 255, at most maxMetadata items.
func parseMetadata(raw json.RawMessage, dst map[string]string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(raw, &md); err != nil || md == nil {
		return rest.BadRequest("Invalid input for field/attribute metadata. Value: %s. It is not an object", raw)
	}
	if len(md) > maxMetadata {
		return rest.Forbiddenf("Quota exceeded for metadata_items: Requested %d, but the limit is %d", len(md), maxMetadata)
	}
	for k, v := range md {
		var str string
		if err := json.Unmarshal(v, &str); err != nil {
			return rest.BadRequest("Invalid input for field/attribute metadata. Value: %s. %s is not of type 'string'", v, v)
		}
		if k == "" || len(k) > maxKeyLen || len(str) > maxKeyLen {
			return rest.BadRequest("Invalid input for field/attribute metadata. Keys must be 1 to 255 and values at most 255 characters long.")
		}
		dst[k] = str
	}
	return nil
}

func parseMisc(req *serverCreateReq, p *serverPlan) error {
	if az := req.AvailabilityZone; az != nil && *az != "" && *az != "nova" && !strings.Contains(*az, ":") {
		return rest.BadRequest("The requested availability zone is not available")
	}
	if d := req.DiskConfig; d != nil && *d != "AUTO" && *d != "MANUAL" {
		return rest.BadRequest("Invalid input for field/attribute OS-DCF:diskConfig. Value: %s. %q is not one of ['AUTO', 'MANUAL']", *d, *d)
	}
	for _, ip := range []struct {
		field string
		v     *string
	}{{"accessIPv4", req.AccessIPv4}, {"accessIPv6", req.AccessIPv6}} {
		if ip.v != nil && *ip.v != "" && net.ParseIP(*ip.v) == nil {
			return rest.BadRequest("Invalid input for field/attribute %s. Value: %s. %q is not an IP address", ip.field, *ip.v, *ip.v)
		}
	}
	if cd := req.ConfigDrive; len(cd) > 0 && string(cd) != "null" {
		if string(cd) != `""` { // Nova's config_drive also takes "" (no drive)
			b, err := boolValue("config_drive", cd)
			if err != nil {
				return err
			}
			p.ConfigDrive = b
		}
	}
	if rr := req.ReturnReservationID; len(rr) > 0 && string(rr) != "null" {
		b, err := boolValue("return_reservation_id", rr)
		if err != nil {
			return err
		}
		p.ReturnResID = b
	}
	if sg := req.SecurityGroups; len(sg) > 0 && string(sg) != "null" {
		var groups []struct {
			Name string `json:"name"`
		}
		if err := decodeStrict("security_groups", sg, &groups); err != nil {
			return err
		}
		for _, g := range groups {
			if g.Name == "" || len(g.Name) > maxNameLength {
				return rest.BadRequest("Invalid input for field/attribute security_groups. A name is required.")
			}
			if !slices.Contains(p.SecurityGroups, g.Name) {
				p.SecurityGroups = append(p.SecurityGroups, g.Name)
			}
		}
	}
	if pers := req.Personality; len(pers) > 0 && string(pers) != "null" {
		var files []struct {
			Path     string `json:"path"`
			Contents string `json:"contents"`
		}
		if err := decodeStrict("personality", pers, &files); err != nil {
			return err
		}
	}
	if req.AdminPass != nil {
		p.AdminPass = *req.AdminPass
	}
	return nil
}

func (s *service) parseHints(c *rest.Ctx, sn *statedb.Snapshot, raw json.RawMessage, p *serverPlan) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var hints map[string]json.RawMessage
	if err := json.Unmarshal(raw, &hints); err != nil || hints == nil {
		return rest.BadRequest("Invalid input for field/attribute os:scheduler_hints. Value: %s. It is not an object", raw)
	}
	g, ok := hints["group"]
	if !ok {
		return nil
	}
	var id string
	if err := json.Unmarshal(g, &id); err != nil || !isUUID(id) {
		return rest.BadRequest("Invalid input for field/attribute group. Value: %s. It is not a 'uuid'", g)
	}
	grp, ok := sn.ServerGroup(id)
	if !ok || grp.ProjectID != c.Cred.ProjectID {
		return rest.BadRequest("Instance group %s could not be found.", id)
	}
	p.GroupID = grp.ID
	return nil
}

// buildCreate turns a plan into the command: Nova's "<name>-<n>" names
// when several instances are asked for, fresh ids for instances, ports
// and boot volumes.
func (s *service) buildCreate(c *rest.Ctx, sn *statedb.Snapshot, p *serverPlan) (statedb.CreateInstancesCmd, []string, error) {
	if p.AdminPass == "" {
		p.AdminPass = randomPassword(12)
	}
	resID := "r-" + strings.ToLower(randomPassword(8))
	var cmd statedb.CreateInstancesCmd
	groups, groupNames, err := secGroupIDs(sn, c.Cred.ProjectID, p.SecurityGroups)
	if err != nil {
		return cmd, nil, err
	}
	p.SecurityGroups = groupNames
	if groups, err = groupsForNICs(sn, c.Cred.ProjectID, p.NICs, groups); err != nil {
		return cmd, nil, err
	}
	ids := make([]string, 0, p.Max)
	for i := range p.Max {
		name := p.Name
		if p.Max > 1 {
			name = p.Name + "-" + strconv.Itoa(i+1)
		}
		inst := statedb.Instance{
			ID: s.b.NewID(), Name: name, ProjectID: c.Cred.ProjectID, UserID: c.Cred.UserID, Flavor: p.Flavor,
			ImageID: p.ImageID, RootVolume: p.RootVolume, KeyName: p.KeyName, KeyData: p.KeyData,
			UserData: p.UserData, Metadata: maps(p.Metadata), AZ: p.AZ, GroupID: p.GroupID, ConfigDrive: p.ConfigDrive,
			LaunchIndex: i, Reservation: resID, Arch: p.Arch, SecurityGroups: p.SecurityGroups,
			Tags: p.Tags, Description: p.Description, RequestedHost: p.RequestedHost,
		}
		ic := statedb.InstanceCreate{Instance: inst, RequestID: c.ReqID}
		root, err := s.rootDisk(c, sn, p)
		if err != nil {
			return cmd, nil, err
		}
		if ic.Root = root; root != nil && root.New != nil {
			ic.Instance.RootVolume = root.New.ID
		}
		for _, w := range p.NICs {
			if w.PortID != "" {
				ic.NICs = append(ic.NICs, statedb.NICRequest{PortID: w.PortID})
				continue
			}
			req := &statedb.PortRequest{ID: s.b.NewID(), NetworkID: w.NetworkID}
			req.SecurityGroups = groups
			if w.FixedIP != "" {
				req.FixedIPs = []statedb.FixedIPWant{{IP: w.FixedIP}}
			}
			ic.NICs = append(ic.NICs, statedb.NICRequest{Create: req})
		}
		cmd.Instances = append(cmd.Instances, ic)
		ids = append(ids, inst.ID)
	}
	return cmd, ids, nil
}

// groupsForNICs is Nova's rule for the groups of a server's new ports: a
// lone default group is dropped (Neutron gives a port it anyway where port
// security is on, and a port without port security can have none), and
// any other group on a network whose port security is off refuses the
// create. Nova drops "default" by name; the openstack client resolves the
// name and sends the group's id, so the id counts as the name here.
func groupsForNICs(sn *statedb.Snapshot, project string, nics []nicWant, groups []string) ([]string, error) {
	if len(groups) == 1 && groups[0] == statedb.DefaultSecGroupID(project) {
		return nil, nil
	}
	for _, w := range nics {
		if n, ok := sn.Network(w.NetworkID); len(groups) > 0 && ok && n.PortSecurityDisabled {
			return nil, rest.BadRequest("Network requires port_security_enabled and subnet associated in order to apply security groups.")
		}
	}
	return groups, nil
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// randomPassword returns n (at most 26) random base32 characters.
func randomPassword(n int) string { return rand.Text()[:n] }
