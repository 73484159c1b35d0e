package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// snapshotOf builds a state holding exactly objs (table name → objects),
// through Restore, so pure functions can be tested on any shape.
func snapshotOf(t testing.TB, objs map[string][]any) *statedb.Snapshot {
	t.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for tbl, list := range objs {
		for _, o := range list {
			raw, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := enc.Encode(map[string]any{"t": tbl, "o": json.RawMessage(raw)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := statedb.NewStore()
	if err := st.Restore(json.NewDecoder(strings.NewReader(b.String())), 1); err != nil {
		t.Fatalf("restore: %v", err)
	}
	return st.Snapshot()
}

func inst(id, desired, vm, task string, power int, mod ...func(*statedb.Instance)) *statedb.Instance {
	i := &statedb.Instance{ID: id, Name: "vm-" + id, Host: "me", Desired: desired, VMState: vm, TaskState: task, PowerState: power}
	for _, m := range mod {
		m(i)
	}
	return i
}

func TestAgentDiffInstances(t *testing.T) {
	const (
		run = statedb.DesiredRunning
		stp = statedb.DesiredStopped
		del = statedb.DesiredDeleted
	)
	reboot := func(hard bool) func(*statedb.Instance) {
		return func(i *statedb.Instance) { i.RebootSeq, i.RebootDone, i.RebootHard = 3, 2, hard }
	}
	running := VMStatus{State: VMRunning, PID: 42}
	shutoff := VMStatus{State: VMShutoff, Reason: "guest shutdown"}
	missing := VMStatus{State: VMMissing}
	cases := []struct {
		name   string
		inst   *statedb.Instance
		actual VMStatus
		want   string // "op vm_state/power" or "" for nothing
	}{
		{"new server boots", inst("a", run, statedb.VMBuilding, statedb.TaskSpawning, 0), missing, "start active/1"},
		{"new server already running (agent restarted before reporting)", inst("a", run, statedb.VMBuilding, statedb.TaskSpawning, 0), running, "report active/1"},
		{"active and running: nothing", inst("a", run, statedb.VMActive, "", 1), running, ""},
		{"active but exited on its own: stopped, not restarted", inst("a", run, statedb.VMActive, "", 1), shutoff, "report stopped/4"},
		{"active but files gone: stopped", inst("a", run, statedb.VMActive, "", 1), missing, "report stopped/4"},
		{"stopped on its own, already reported: nothing", inst("a", run, statedb.VMStopped, "", 4), shutoff, ""},
		{"start requested", inst("a", run, statedb.VMStopped, statedb.TaskPoweringOn, 4), shutoff, "start active/1"},
		{"error, not running: left alone", inst("a", run, statedb.VMError, "", 0), missing, ""},
		{"error but running: active", inst("a", run, statedb.VMError, "", 0), running, "report active/1"},
		{"stop requested", inst("a", stp, statedb.VMActive, statedb.TaskPoweringOff, 1), running, "stop stopped/4"},
		{"stop requested, already down", inst("a", stp, statedb.VMActive, statedb.TaskPoweringOff, 1), shutoff, "report stopped/4"},
		{"stopped and down: nothing", inst("a", stp, statedb.VMStopped, "", 4), shutoff, ""},
		{"stop of an error server that does not run", inst("a", stp, statedb.VMError, statedb.TaskPoweringOff, 0), missing, "report stopped/4"},
		{"soft reboot", inst("a", run, statedb.VMActive, statedb.TaskRebooting, 1, reboot(false)), running, "reboot active/1 soft done=3"},
		{"hard reboot", inst("a", run, statedb.VMActive, statedb.TaskRebootingHard, 1, reboot(true)), running, "reboot active/1 hard done=3"},
		{"reboot of a stopped server starts it", inst("a", run, statedb.VMStopped, statedb.TaskRebootingHard, 4, reboot(true)), shutoff, "start active/1 done=3"},
		{"paused counts as running", inst("a", run, statedb.VMActive, "", 1), VMStatus{State: VMPaused}, ""},
		{"delete a running VM", inst("a", del, statedb.VMActive, statedb.TaskDeleting, 1), running, "delete deleted/0 gone"},
		{"delete a stopped VM", inst("a", del, statedb.VMStopped, statedb.TaskDeleting, 4), shutoff, "delete deleted/0 gone"},
		{"deleted, nothing left: report gone", inst("a", del, statedb.VMError, statedb.TaskDeleting, 0), missing, "report deleted/0 gone"},
		{"placed elsewhere: ignored", inst("a", run, statedb.VMBuilding, statedb.TaskSpawning, 0, func(i *statedb.Instance) { i.Host = "other" }), missing, ""},
		{"fault cleared once running", inst("a", run, statedb.VMActive, "", 1, func(i *statedb.Instance) { i.Fault = &statedb.Fault{Message: "x"} }), running, "report active/1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.actual.ID = c.inst.ID
			actual := map[string]VMStatus{}
			if c.actual.State != VMMissing {
				actual[c.inst.ID] = c.actual
			}
			acts := diffInstances("me", []*statedb.Instance{c.inst}, actual)
			got := ""
			if len(acts) > 1 {
				t.Fatalf("diffInstances = %d actions; want at most 1", len(acts))
			}
			if len(acts) == 1 {
				a := acts[0]
				got = fmt.Sprintf("%s %s/%d", a.Op, a.Report.VMState, a.Report.PowerState)
				if a.Op == opReboot {
					got += map[bool]string{true: " hard", false: " soft"}[a.Hard]
				}
				if a.Report.RebootDone != c.inst.RebootDone {
					got += fmt.Sprintf(" done=%d", a.Report.RebootDone)
				}
				if a.Report.Gone {
					got += " gone"
				}
				if a.Report.InstanceID != c.inst.ID || a.Report.HostID != "me" || a.Report.TaskState != "" {
					t.Errorf("report = %+v; want instance %s from host me with no task state", a.Report, c.inst.ID)
				}
			}
			if got != c.want {
				t.Errorf("diffInstances(%s, %s) = %q; want %q", c.inst.VMState, c.actual.State, got, c.want)
			}
		})
	}
}

func TestAgentDiffInstancesOrderAndPurity(t *testing.T) {
	insts := []*statedb.Instance{
		inst("c", statedb.DesiredRunning, statedb.VMBuilding, statedb.TaskSpawning, 0),
		inst("a", statedb.DesiredDeleted, statedb.VMActive, statedb.TaskDeleting, 1),
		inst("b", statedb.DesiredStopped, statedb.VMActive, statedb.TaskPoweringOff, 1),
	}
	actual := map[string]VMStatus{"a": {ID: "a", State: VMRunning}, "b": {ID: "b", State: VMRunning}}
	first := diffInstances("me", insts, actual)
	second := diffInstances("me", insts, actual)
	var got []string
	for i, a := range first {
		got = append(got, a.Inst.ID+":"+string(a.Op))
		if second[i].Op != a.Op || second[i].Inst != a.Inst {
			t.Fatalf("diffInstances is not deterministic: %v vs %v", first, second)
		}
	}
	if want := "a:delete b:stop c:start"; strings.Join(got, " ") != want {
		t.Errorf("diffInstances order = %v; want %s", got, want)
	}
	if insts[0].ID != "c" {
		t.Errorf("diffInstances reordered its input")
	}
}

// twoHostNetwork is network n1 (VNI 1001) with a DHCP subnet: ports p1, p2
// on host a, p3 on host b, p4 unbound; network n2 (VNI 1002) with p5 on b
// only; and n3 (VNI 1003) with p6 on a only.
func twoHostNetwork(t *testing.T) *statedb.Snapshot {
	return snapshotOf(t, map[string][]any{
		"networks": {
			&statedb.Network{ID: "n1", VNI: 1001, MTU: 1450},
			&statedb.Network{ID: "n2", VNI: 1002, MTU: 1400},
			&statedb.Network{ID: "n3", VNI: 1003, MTU: 1450},
		},
		"subnets": {
			&statedb.Subnet{ID: "s1", NetworkID: "n1", IPVersion: 4, CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.1", EnableDHCP: true, DNSNameservers: []string{"10.0.0.2"}},
			&statedb.Subnet{ID: "s3", NetworkID: "n3", IPVersion: 4, CIDR: "192.168.7.0/26", EnableDHCP: false},
		},
		"ports": {
			&statedb.Port{ID: "p1", NetworkID: "n1", MAC: "fa:16:3e:00:00:01", HostID: "a", DeviceID: "i1", FixedIPs: []statedb.FixedIP{{SubnetID: "s1", IP: "10.0.0.5"}}},
			&statedb.Port{ID: "p2", NetworkID: "n1", MAC: "fa:16:3e:00:00:02", HostID: "a", FixedIPs: []statedb.FixedIP{{SubnetID: "s1", IP: "10.0.0.6"}}},
			&statedb.Port{ID: "p3", NetworkID: "n1", MAC: "fa:16:3e:00:00:03", HostID: "b", FixedIPs: []statedb.FixedIP{{SubnetID: "s1", IP: "10.0.0.7"}}},
			&statedb.Port{ID: "p4", NetworkID: "n1", MAC: "fa:16:3e:00:00:04"},
			&statedb.Port{ID: "p5", NetworkID: "n2", MAC: "fa:16:3e:00:00:05", HostID: "b"},
			&statedb.Port{ID: "p6", NetworkID: "n3", MAC: "fa:16:3e:00:00:06", HostID: "a", FixedIPs: []statedb.FixedIP{{SubnetID: "s3", IP: "192.168.7.9"}}},
		},
		"instances": {&statedb.Instance{ID: "i1", Name: "Web Server_1", Host: "a"}},
	})
}

// render is a compact, comparable form of a desired network state.
func render(d NetDesired) string {
	var parts []string
	for _, s := range d.Networks {
		var ports, rem, macs []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s(%s %s %s/%d gw=%s dns=%v host=%s dhcp=%v)", p.ID, p.Tap, p.MAC, p.IP, p.Prefix, p.Gateway, p.DNS, p.Hostname, p.DHCP))
		}
		for _, r := range s.Remotes {
			rem = append(rem, r.String())
		}
		for _, m := range s.MACs {
			macs = append(macs, m.MAC.String()+">"+m.VTEP.String())
		}
		parts = append(parts, fmt.Sprintf("%s/%d/%d ports=[%s] remotes=[%s] macs=[%s]", s.ID, s.VNI, s.MTU,
			strings.Join(ports, " "), strings.Join(rem, " "), strings.Join(macs, " ")))
	}
	return fmt.Sprintf("vtep=%s %s", d.LocalVTEP, strings.Join(parts, " | "))
}

func TestAgentDesiredNetworks(t *testing.T) {
	sn := twoHostNetwork(t)
	vteps := map[string]string{"a": "192.0.2.1", "b": "192.0.2.2"}
	vtep := func(h string) net.IP {
		if ip, ok := vteps[h]; ok {
			return net.ParseIP(ip).To4()
		}
		return nil
	}
	tap := func(id string) string { return "tap-" + id }
	cases := []struct {
		host     string
		want     string
		problems int
	}{
		{"a", "vtep=192.0.2.1 " +
			"n1/1001/1450 ports=[p1(tap-p1 fa:16:3e:00:00:01 10.0.0.5/24 gw=10.0.0.1 dns=[10.0.0.2] host=web-server-1 dhcp=true) " +
			"p2(tap-p2 fa:16:3e:00:00:02 10.0.0.6/24 gw=10.0.0.1 dns=[10.0.0.2] host= dhcp=true)] " +
			"remotes=[192.0.2.2] macs=[fa:16:3e:00:00:03>192.0.2.2] | " +
			"n3/1003/1450 ports=[p6(tap-p6 fa:16:3e:00:00:06 192.168.7.9/26 gw=<nil> dns=[] host= dhcp=false)] remotes=[] macs=[]", 0},
		{"b", "vtep=192.0.2.2 " +
			"n1/1001/1450 ports=[p3(tap-p3 fa:16:3e:00:00:03 10.0.0.7/24 gw=10.0.0.1 dns=[10.0.0.2] host= dhcp=true)] " +
			"remotes=[192.0.2.1] macs=[fa:16:3e:00:00:01>192.0.2.1 fa:16:3e:00:00:02>192.0.2.1] | " +
			"n2/1002/1400 ports=[p5(tap-p5 fa:16:3e:00:00:05 <nil>/0 gw=<nil> dns=[] host= dhcp=false)] remotes=[] macs=[]", 0},
		{"c", "vtep=<nil> ", 0}, // no ports: nothing, and no VTEP needed
	}
	for _, c := range cases {
		d, problems := desiredNetworks(sn, c.host, nil, vtep, tap)
		if got := render(d); got != c.want {
			t.Errorf("desiredNetworks(%s) =\n  %s\nwant\n  %s", c.host, got, c.want)
		}
		if len(problems) != c.problems {
			t.Errorf("desiredNetworks(%s) problems = %v; want %d", c.host, problems, c.problems)
		}
	}

	// Host b's VTEP unknown: a's view leaves its ports out and says so.
	delete(vteps, "b")
	d, problems := desiredNetworks(sn, "a", nil, vtep, tap)
	if len(d.Networks) != 2 || len(d.Networks[0].Remotes) != 0 || len(d.Networks[0].MACs) != 0 {
		t.Errorf("desiredNetworks(a) without b's VTEP = %s; want no remotes", render(d))
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "VTEP of host b") {
		t.Errorf("desiredNetworks(a) problems = %v; want one about b's VTEP", problems)
	}
	// Our own VTEP unknown: nothing can be plumbed.
	d, problems = desiredNetworks(sn, "c", nil, func(string) net.IP { return nil }, tap)
	if len(d.Networks) != 0 || len(problems) != 0 {
		t.Errorf("desiredNetworks(c, no VTEPs) = %s %v; want nothing", render(d), problems)
	}
	d, problems = desiredNetworks(sn, "a", nil, func(string) net.IP { return nil }, tap)
	if len(d.Networks) != 0 || len(problems) != 1 {
		t.Errorf("desiredNetworks(a, no own VTEP) = %s %v; want nothing and one problem", render(d), problems)
	}
}

func TestAgentDiffVolumes(t *testing.T) {
	att := func(id, server, host, state string) []statedb.VolumeAttachment {
		return []statedb.VolumeAttachment{{ID: id, ServerID: server, HostID: host, State: state, Device: "/dev/vdb"}}
	}
	sn := snapshotOf(t, map[string][]any{
		"instances": {
			&statedb.Instance{ID: "i-me", Host: "me"},
			&statedb.Instance{ID: "i-other", Host: "other"},
		},
		"volumes": {
			&statedb.Volume{ID: "v01", Host: "me", Status: statedb.VolumeCreating},
			&statedb.Volume{ID: "v02", Host: "other", Status: statedb.VolumeCreating},
			&statedb.Volume{ID: "v03", Host: "me", Status: statedb.VolumeDeleting},
			&statedb.Volume{ID: "v04", Host: "me", Status: statedb.VolumeExtending},
			&statedb.Volume{ID: "v05", Host: "other", Status: statedb.VolumeExtending, Attachments: att("a5", "i-me", "me", statedb.AttachAttached)},
			&statedb.Volume{ID: "v06", Host: "me", Status: statedb.VolumeExtending, Attachments: att("a6", "i-other", "other", statedb.AttachAttached)},
			&statedb.Volume{ID: "v07", Host: "me", Status: statedb.VolumeAttaching, Attachments: att("a7", "i-me", "me", statedb.AttachAttaching)},
			&statedb.Volume{ID: "v08", Host: "me", Status: statedb.VolumeAttaching, Attachments: att("a8", "i-other", "me", statedb.AttachAttaching)},
			&statedb.Volume{ID: "v09", Host: "me", Status: statedb.VolumeAttaching, Attachments: att("a9", "i-gone", "me", statedb.AttachAttaching)},
			&statedb.Volume{ID: "v10", Host: "me", Status: statedb.VolumeDetaching, Attachments: att("a10", "i-me", "me", statedb.AttachDetaching)},
			&statedb.Volume{ID: "v11", Host: "me", Status: statedb.VolumeDetaching, ErrorReason: "guest ignored it", Attachments: att("a11", "i-me", "me", statedb.AttachDetaching)},
			&statedb.Volume{ID: "v12", Host: "me", Status: statedb.VolumeInUse, Attachments: att("a12", "i-me", "me", statedb.AttachAttached)},
			&statedb.Volume{ID: "v13", Host: "other", Status: statedb.VolumeAttaching, Attachments: att("a13", "i-other", "other", statedb.AttachAttaching)},
			&statedb.Volume{ID: "v14", Host: "me", Status: statedb.VolumeAvailable},
		},
	})
	var got []string
	for _, a := range diffVolumes(sn, "me", sn.Volumes()) {
		s := a.Vol.ID + ":" + string(a.Op)
		if a.Server != nil {
			s += "@" + a.Server.ID
		}
		if a.Why != "" {
			s += "(" + a.Why + ")"
		}
		got = append(got, s)
	}
	want := []string{
		"v01:create", "v03:delete", "v04:extend", "v05:extend@i-me",
		"v07:attach@i-me",
		`v08:refuse(attachment names host me but server i-other is placed on host "other")`,
		"v09:refuse(server i-gone no longer exists)",
		"v10:detach@i-me",
		"v11:detach@i-me", // left with a fault by an older agent: tried again
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diffVolumes(me) =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestAgentHostname(t *testing.T) {
	cases := []struct{ name, want string }{
		{"web-1", "web-1"},
		{"Web Server_1", "web-server-1"},
		{"..--héllo!--..", "hllo"},
		{"", "server-abc"},
		{"!!!", "server-abc"},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
	}
	for _, c := range cases {
		if got := Hostname(c.name, "abc"); got != c.want {
			t.Errorf("Hostname(%q) = %q; want %q", c.name, got, c.want)
		}
	}
}

func TestAgentConfigDriveNetworkData(t *testing.T) {
	sn := twoHostNetwork(t)
	i := &statedb.Instance{ID: "i1", Name: "Web Server_1", ProjectID: "p", AZ: "nova", KeyName: "k", KeyData: "ssh-ed25519 AAAA x",
		UserData: "IyEvYmluL3NoCmVjaG8gaGk=", Metadata: map[string]string{"role": "web"}}
	p1, _ := sn.Port("p1")
	p6, _ := sn.Port("p6")
	cd, err := buildConfigDrive(sn, i, []*statedb.Port{p1, p6}, func(id string) string { return "tap-" + id })
	if err != nil {
		t.Fatal(err)
	}
	if cd.UUID != "i1" || cd.Hostname != "web-server-1" || cd.Name != "Web Server_1" || cd.AvailabilityZone != "nova" ||
		cd.PublicKeys["k"] != "ssh-ed25519 AAAA x" || string(cd.UserData) != "#!/bin/sh\necho hi" || cd.Meta["role"] != "web" {
		t.Errorf("buildConfigDrive = %+v", cd)
	}
	b, _ := json.Marshal(cd.NetworkData)
	want := `{"links":[{"id":"tap-p1","vif_id":"p1","type":"bridge","mtu":1450,"ethernet_mac_address":"fa:16:3e:00:00:01"},` +
		`{"id":"tap-p6","vif_id":"p6","type":"bridge","mtu":1450,"ethernet_mac_address":"fa:16:3e:00:00:06"}],` +
		`"networks":[{"id":"network0","type":"ipv4_dhcp","link":"tap-p1","network_id":"n1","services":[{"type":"dns","address":"10.0.0.2"}]},` +
		`{"id":"network1","type":"ipv4","link":"tap-p6","ip_address":"192.168.7.9","netmask":"255.255.255.192","network_id":"n3"}],` +
		`"services":[{"type":"dns","address":"10.0.0.2"}]}`
	if string(b) != want {
		t.Errorf("network_data.json =\n  %s\nwant\n  %s", b, want)
	}
	i.UserData = "%%% not base64"
	if _, err := buildConfigDrive(sn, i, nil, func(id string) string { return id }); err == nil || !strings.Contains(err.Error(), "user_data") {
		t.Errorf("buildConfigDrive(bad user data) error = %v; want a user_data error", err)
	}
}

// FuzzAgentConfigDriveInput: any server name gives a valid host name, and
// any user data decodes or fails without panicking.
func FuzzAgentConfigDriveInput(f *testing.F) {
	for _, s := range []string{"web-1", "Web Server_1", "", "..--", "IyEvYmluL3No", "%%%", strings.Repeat("é", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := Hostname(s, "id")
		if len(h) == 0 || len(h) > 63 || strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" ||
			strings.HasPrefix(h, "-") || strings.HasSuffix(h, "-") || strings.HasPrefix(h, ".") {
			t.Fatalf("Hostname(%q) = %q; want 1-63 of [a-z0-9.-], no leading or trailing dot or dash", s, h)
		}
		_, _ = decodeUserData(s)
	})
}
