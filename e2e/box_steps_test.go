package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// boxStep is one step of a cluster-in-a-box scenario. run gets the host to
// ask (1-based, chosen in turn among the live hosts) and returns what it
// reports for the table's "host" column when it asked others too.
type boxStep struct {
	name  string
	full  bool     // needs features gated behind PEERSTACK_E2E_FULL=1
	needs []string // steps that must have passed (soft runs skip it otherwise)
	run   func(s *scenario, host int) (asked string, err error)
}

// stepResult is one row of the summary table.
type stepResult struct {
	name, host, status string
	secs               float64
	api                float64 // seconds the daemons spent answering its API requests; -1 unknown
}

// scenario is the state the steps share.
type scenario struct {
	ctx       context.Context
	b         *Box
	out       io.Writer
	dir       string // scratch files: user data, keys, clouds for users
	turn      int
	killed    int      // host whose daemon was killed, 0 if none
	restarted int      // host restarted after the kill
	undo      []undo   // deletions for what the scenario created, in order
	baseline  []string // leftovers before the scenario created anything
	ids       map[string]string
	watch     *serverWatch // per-server figures

	httpOnce sync.Once // boxHTTP
	http     *http.Client
	httpErr  error
}

type undo struct {
	what string
	args []string                       // openstack arguments
	then func(s *scenario, h int) error // waits after the command, if set
}

func newScenario(ctx context.Context, b *Box, out io.Writer) (*scenario, error) {
	dir := filepath.Join(b.RunDir, "scenario")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &scenario{ctx: ctx, b: b, out: out, dir: dir, ids: map[string]string{}}
	s.watch = &serverWatch{s: s}
	return s, nil
}

// next returns the next live host in turn.
func (s *scenario) next() int {
	for k := 0; k < len(s.b.Hosts); k++ {
		s.turn++
		h := (s.turn-1)%len(s.b.Hosts) + 1
		if s.b.Alive(h) {
			return h
		}
	}
	return 1
}

// runSteps runs steps in order and returns the table rows. Full steps are
// skipped unless full; with soft, a failing step prints "not available
// yet" and the run continues, else the run stops at the first failure.
func (s *scenario) runSteps(steps []boxStep, full, soft bool) ([]stepResult, error) {
	var rows []stepResult
	var firstErr error
	failed := map[string]bool{}
	for _, st := range steps {
		if st.full && !full {
			rows = append(rows, stepResult{name: st.name, host: "-", status: "gated (PEERSTACK_E2E_FULL=1)"})
			continue
		}
		if dep := firstFailed(failed, st.needs); dep != "" {
			failed[st.name] = true
			rows = append(rows, stepResult{name: st.name, host: "-", status: "not available yet (needs " + dep + ")"})
			fmt.Fprintf(s.out, "not available yet: %s: needs %q\n", st.name, dep)
			continue
		}
		h := s.next()
		api0 := s.apiSeconds()
		t0 := time.Now()
		asked, err := st.run(s, h)
		secs := time.Since(t0).Seconds()
		if asked == "" {
			asked = s.b.Host(h).Name
		}
		r := stepResult{name: st.name, host: asked, secs: secs, status: "ok", api: -1}
		if len(api0) > 0 {
			r.api = apiDelta(api0, s.apiSeconds())
		}
		if err != nil {
			failed[st.name] = true
			r.status = "FAIL"
			if soft {
				r.status = "not available yet"
				fmt.Fprintf(s.out, "not available yet: %s: %v\n", st.name, err)
			}
		}
		rows = append(rows, r)
		fmt.Fprintf(s.out, "step %-45s via %-8s %6.1fs  %s\n", st.name, asked, r.secs, r.status)
		if err != nil && !soft {
			firstErr = fmt.Errorf("step %q via %s: %w", st.name, asked, err)
			break
		}
	}
	return rows, firstErr
}

func firstFailed(failed map[string]bool, names []string) string {
	for _, n := range names {
		if failed[n] {
			return n
		}
	}
	return ""
}

// formatTable prints the steps: name, host asked, seconds, control plane.
// CONTROL PLANE is the time the daemons spent answering the step's API
// requests (all hosts, forwarded writes counted once) and its share of the
// step: the rest is the client (the openstack CLI starts a Python process
// per command), polling, and the guests themselves. It includes streaming
// image bytes (image create) and the timing watch's own status polls, ten
// a second per server until it is ACTIVE (about 1 ms each).
func formatTable(rows []stepResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-48s %-10s %8s %18s  %s\n", "STEP", "HOST", "SECONDS", "CONTROL PLANE", "RESULT")
	var total, api float64
	for _, r := range rows {
		secs, cp := "-", "-"
		if r.status != "" && !strings.HasPrefix(r.status, "gated") {
			secs = fmt.Sprintf("%.1f", r.secs)
			total += r.secs
		}
		if r.api >= 0 && r.secs > 0 && secs != "-" {
			cp = fmt.Sprintf("%.3fs %5.1f%%", r.api, 100*r.api/r.secs)
			api += r.api
		}
		fmt.Fprintf(&b, "%-48s %-10s %8s %18s  %s\n", r.name, r.host, secs, cp, r.status)
	}
	if total > 0 {
		fmt.Fprintf(&b, "%-48s %-10s %8.1f %18s\n", "total", "", total, fmt.Sprintf("%.3fs %5.1f%%", api, 100*api/total))
	}
	return b.String()
}

// osc runs the openstack CLI against host h.
func (s *scenario) osc(h int, args ...string) (string, error) { return s.b.OSC(s.ctx, h, args...) }

// oscJSON runs `openstack … -f json` against host h and decodes it.
func (s *scenario) oscJSON(h int, v any, args ...string) error {
	out, err := s.osc(h, append(args, "-f", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("openstack %s: %w: %s", strings.Join(args, " "), err, tail(out, 500))
	}
	return nil
}

// create runs a create command, records how to delete the object and
// returns its id.
func (s *scenario) create(h int, what string, del []string, args ...string) (string, error) {
	var obj map[string]any
	if err := s.oscJSON(h, &obj, args...); err != nil {
		return "", err
	}
	id, _ := obj["id"].(string)
	if id == "" {
		id, _ = obj["name"].(string)
	}
	if id == "" {
		return "", fmt.Errorf("%s: no id in %v", what, obj)
	}
	s.ids[what] = id
	s.undo = append(s.undo, undo{what: what, args: append(del, id)})
	return id, nil
}

// eventually retries f every interval until it succeeds or d passes.
func (s *scenario) eventually(d time.Duration, f func() error) error {
	t0 := time.Now()
	deadline := t0.Add(d)
	lastSaid := t0
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Since(lastSaid) >= 10*time.Second {
			lastSaid = time.Now()
			fmt.Fprintf(s.out, "  still waiting after %.0fs: %v\n", time.Since(t0).Seconds(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", d, err)
		}
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// field waits until `openstack <kind> show id -f json` has key == want.
func (s *scenario) waitField(h int, d time.Duration, kind, id, key, want string) error {
	return s.eventually(d, func() error {
		var obj map[string]any
		if err := s.oscJSON(h, &obj, kind, "show", id); err != nil {
			return err
		}
		if got := fmt.Sprint(obj[key]); got != want {
			return fmt.Errorf("%s %s %s = %q; want %q", kind, id, key, got, want)
		}
		return nil
	})
}

// consoleHas waits until the server's console log contains every marker.
func (s *scenario) consoleHas(h int, d time.Duration, server string, markers ...string) error {
	var last string
	err := s.eventually(d, func() error {
		out, err := s.osc(h, "console", "log", "show", server)
		if err != nil {
			return err
		}
		last = out
		for _, m := range markers {
			if !strings.Contains(out, m) {
				return fmt.Errorf("console of %s lacks %q", server, m)
			}
		}
		return nil
	})
	if err != nil {
		_ = os.WriteFile(filepath.Join(s.b.LogDir, "console-"+server+".txt"), []byte(last), 0o644)
	}
	return err
}

// userClouds writes a clouds.yaml for a password user aimed at host h.
func (s *scenario) userClouds(h int, user, password, project string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "clouds:\n  peerstack:\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n    cacert: %s\n", s.b.CACert())
	fmt.Fprintf(&b, "    auth:\n      auth_url: https://%s/identity\n      username: %q\n      password: %q\n      project_name: %q\n      user_domain_name: Default\n      project_domain_name: Default\n",
		s.b.Host(h).APIAddr, user, password, project)
	p := filepath.Join(s.dir, fmt.Sprintf("%s-%s-clouds.yaml", user, s.b.Host(h).Name))
	return p, os.WriteFile(p, []byte(b.String()), 0o600)
}

// leader returns the index of the Raft leader as host h sees it.
func (s *scenario) leader(h int) (int, error) {
	out, err := s.b.Peerstack(s.ctx, h, "status", "-f", "json")
	if err != nil {
		return 0, err
	}
	var st struct {
		Leader struct{ Name string } `json:"leader"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, fmt.Errorf("status: %w: %s", err, out)
	}
	for i, hh := range s.b.Hosts {
		if hh.Name == st.Leader.Name {
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("no leader known (status %s)", strings.TrimSpace(out))
}

// membersHealthy checks `peerstack members` via host h: every host alive
// with a Raft role.
func (s *scenario) membersHealthy(h int) error {
	out, err := s.b.Peerstack(s.ctx, h, "members", "-f", "json")
	if err != nil {
		return err
	}
	var ms []member
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return fmt.Errorf("members: %w: %s", err, out)
	}
	if len(ms) != len(s.b.Hosts) {
		return fmt.Errorf("members via %s: %d hosts; want %d", s.b.Host(h).Name, len(ms), len(s.b.Hosts))
	}
	for _, m := range ms {
		if m.GossipState != "alive" || m.RaftRole == "none" || m.RaftRole == "" {
			return fmt.Errorf("members via %s: %s is %s/%s", s.b.Host(h).Name, m.Name, m.GossipState, m.RaftRole)
		}
	}
	return nil
}

// --- steps ---------------------------------------------------------------

func stepCluster(s *scenario, _ int) (string, error) {
	for i := range s.b.Hosts {
		if err := s.eventually(60*time.Second, func() error { return s.membersHealthy(i + 1) }); err != nil {
			return "all", err
		}
	}
	s.baseline = s.b.Leftovers(s.ctx)
	return "all", nil
}

func stepTokenIssue(s *scenario, h int) (string, error) {
	var tok map[string]string
	if err := s.oscJSON(h, &tok, "token", "issue"); err != nil {
		return "", err
	}
	if tok["id"] == "" || tok["project_id"] == "" {
		return "", fmt.Errorf("token issue = %v", tok)
	}
	s.watch.setToken(tok["id"]) // admin: follows the servers' status
	return "", nil
}

func stepIdentity(s *scenario, h int) (string, error) {
	if _, err := s.create(h, "project", []string{"project", "delete"}, "project", "create", "e2e"); err != nil {
		return "", err
	}
	if _, err := s.create(h, "user", []string{"user", "delete"}, "user", "create", "--project", "e2e", "--password", "e2e-pw", "e2e-user"); err != nil {
		return "", err
	}
	if _, err := s.osc(h, "role", "add", "--project", "e2e", "--user", "e2e-user", "member"); err != nil {
		return "", err
	}
	// The new user authenticates through another host.
	other := h%len(s.b.Hosts) + 1
	clouds, err := s.userClouds(other, "e2e-user", "e2e-pw", "e2e")
	if err != nil {
		return "", err
	}
	out, err := RunErr(clouds, "openstack", "token", "issue", "-f", "json")
	if err != nil {
		return "", fmt.Errorf("e2e-user token issue via %s: %w: %s", s.b.Host(other).Name, err, out)
	}
	return fmt.Sprintf("%s+%s", s.b.Host(h).Name, s.b.Host(other).Name), nil
}

func guestImage() string { return filepath.Join(RepoRoot(), "build", "guest.qcow2") }

func stepImage(s *scenario, h int) (string, error) {
	if _, err := os.Stat(guestImage()); err != nil {
		return "", fmt.Errorf("guest image missing (run `make guest-image`): %w", err)
	}
	id, err := s.create(h, "image", []string{"image", "delete"}, "image", "create", "--disk-format", "qcow2",
		"--container-format", "bare", "--public", "--file", guestImage(), "e2e-guest")
	if err != nil {
		return "", err
	}
	return "", s.waitField(h, 2*time.Minute, "image", id, "status", "active")
}

func stepNetwork(s *scenario, h int) (string, error) {
	if _, err := s.create(h, "network", []string{"network", "delete"}, "network", "create", "e2e-net"); err != nil {
		return "", err
	}
	if _, err := s.create(h, "subnet", []string{"subnet", "delete"}, "subnet", "create", "--network", "e2e-net",
		"--subnet-range", "192.168.77.0/24", "e2e-sub"); err != nil {
		return "", err
	}
	for i, ipaddr := range []string{"192.168.77.11", "192.168.77.12"} {
		name := fmt.Sprintf("e2e-p%d", i+1)
		if _, err := s.create(h, name, []string{"port", "delete"}, "port", "create", "--network", "e2e-net",
			"--fixed-ip", "subnet=e2e-sub,ip-address="+ipaddr, name); err != nil {
			return "", err
		}
	}
	return "", nil
}

func stepKeypair(s *scenario, h int) (string, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.dir, "e2e-key.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
		return "", err
	}
	if _, err := s.create(h, "flavor", []string{"flavor", "delete"}, "flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1", "e2e.tiny"); err != nil {
		return "", err
	}
	_, err = s.create(h, "keypair", []string{"keypair", "delete"}, "keypair", "create", "--public-key", path, "e2e-key")
	return "", err
}

// userData is the guest script: ping the peer until it answers, then watch
// for disks carrying a marker written by another guest.
func userData(peer string) string {
	return `#!/bin/sh
i=0
while [ $i -lt 150 ]; do
  if ping -c1 -W1 ` + peer + ` >/dev/null 2>&1; then echo "PEERSTACK-PING-OK ` + peer + `"; break; fi
  i=$((i+1)); sleep 1
done
[ $i -lt 150 ] || echo "PEERSTACK-PING-FAIL ` + peer + `"
( seen=""; while true; do
    for d in /sys/block/vd*; do n=${d##*/}
      case " $seen " in *" $n "*) continue;; esac; seen="$seen $n"
      m=$(dd if=/dev/$n bs=512 skip=2048 count=1 2>/dev/null | tr -d '\0' | grep -o 'PEERSTACK-WROTE-BY-[A-Za-z0-9._-]*')
      [ -n "$m" ] && echo "PEERSTACK-SAW $n $m" > /dev/console
    done; sleep 1
  done ) >/dev/null 2>&1 &
exit 0
`
}

var vmIPs = []string{"192.168.77.11", "192.168.77.12"}

// stepServers creates the two servers in an anti-affinity server group, so
// the scheduler puts them on different hosts.
func stepServers(s *scenario, h int) (string, error) {
	grp, err := s.create(h, "server group", []string{"server", "group", "delete"},
		"server", "group", "create", "--policy", "anti-affinity", "e2e-grp")
	if err != nil {
		return "", err
	}
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("e2e-vm%d", i+1)
		ud := filepath.Join(s.dir, name+".userdata")
		if err := os.WriteFile(ud, []byte(userData(vmIPs[1-i])), 0o644); err != nil {
			return "", err
		}
		args := []string{"server", "create", "--flavor", "e2e.tiny", "--image", "e2e-guest",
			"--nic", "port-id=" + s.ids[fmt.Sprintf("e2e-p%d", i+1)], "--key-name", "e2e-key",
			"--user-data", ud, "--hint", "group=" + grp}
		if i == 0 {
			args = append(args, "--property", "disktest=write")
		}
		t0 := time.Now()
		id, err := s.create(h, name, []string{"server", "delete", "--wait"}, append(args, name)...)
		if err != nil {
			return "", err
		}
		s.watch.watchServer(s.ctx, name, id, t0)
	}
	return "", nil
}

func stepActive(s *scenario, h int) (string, error) {
	hosts := map[string]bool{}
	for _, name := range []string{"e2e-vm1", "e2e-vm2"} {
		if err := s.waitField(h, 3*time.Minute, "server", name, "status", "ACTIVE"); err != nil {
			return "", err
		}
		var obj map[string]any
		if err := s.oscJSON(h, &obj, "server", "show", name); err != nil {
			return "", err
		}
		hosts[fmt.Sprint(obj["OS-EXT-SRV-ATTR:host"])] = true
	}
	if len(hosts) != 2 {
		return "", fmt.Errorf("servers on hosts %v; want two different hosts", hosts)
	}
	return "", nil
}

func stepPing(s *scenario, h int) (string, error) {
	for i, name := range []string{"e2e-vm1", "e2e-vm2"} {
		if err := s.consoleHas(h, 4*time.Minute, name, "PEERSTACK-IP "+vmIPs[i], "PEERSTACK-PING-OK "+vmIPs[1-i]); err != nil {
			return "", err
		}
	}
	return "", nil
}

func stepVolumeCreate(s *scenario, h int) (string, error) {
	id, err := s.create(h, "volume", []string{"volume", "delete"}, "volume", "create", "--size", "1", "e2e-vol")
	if err != nil {
		return "", err
	}
	return "", s.waitField(h, time.Minute, "volume", id, "status", "available")
}

func stepAttachWrite(s *scenario, h int) (string, error) {
	if _, err := s.osc(h, "server", "add", "volume", "e2e-vm1", "e2e-vol"); err != nil {
		return "", err
	}
	if err := s.waitField(h, time.Minute, "volume", s.ids["volume"], "status", "in-use"); err != nil {
		return "", err
	}
	return "", s.consoleHas(h, 2*time.Minute, "e2e-vm1", "PEERSTACK-DISK-READBACK", "PEERSTACK-WROTE-BY-e2e-vm1")
}

func stepMoveVolume(s *scenario, h int) (string, error) {
	if _, err := s.osc(h, "server", "remove", "volume", "e2e-vm1", "e2e-vol"); err != nil {
		return "", err
	}
	if err := s.waitField(h, time.Minute, "volume", s.ids["volume"], "status", "available"); err != nil {
		return "", err
	}
	if _, err := s.osc(h, "server", "add", "volume", "e2e-vm2", "e2e-vol"); err != nil {
		return "", err
	}
	if err := s.waitField(h, time.Minute, "volume", s.ids["volume"], "status", "in-use"); err != nil {
		return "", err
	}
	s.undo = append(s.undo, undo{what: "attachment to e2e-vm2", args: []string{"server", "remove", "volume", "e2e-vm2", "e2e-vol"},
		then: func(s *scenario, h int) error {
			return s.waitField(h, time.Minute, "volume", s.ids["volume"], "status", "available")
		}})
	return "", s.consoleHas(h, 2*time.Minute, "e2e-vm2", "PEERSTACK-SAW", "PEERSTACK-WROTE-BY-e2e-vm1")
}

func stepStopStart(s *scenario, h int) (string, error) {
	before, err := s.osc(h, "console", "log", "show", "e2e-vm1")
	if err != nil {
		return "", err
	}
	boots := strings.Count(before, "PEERSTACK-BOOT")
	if _, err := s.osc(h, "server", "stop", "e2e-vm1"); err != nil {
		return "", err
	}
	if err := s.waitField(h, 2*time.Minute, "server", "e2e-vm1", "status", "SHUTOFF"); err != nil {
		return "", err
	}
	if _, err := s.osc(h, "server", "start", "e2e-vm1"); err != nil {
		return "", err
	}
	if err := s.waitField(h, 2*time.Minute, "server", "e2e-vm1", "status", "ACTIVE"); err != nil {
		return "", err
	}
	return "", s.eventually(2*time.Minute, func() error {
		out, err := s.osc(h, "console", "log", "show", "e2e-vm1")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "PEERSTACK-BOOT"); n <= boots {
			return fmt.Errorf("console shows %d boots; want more than %d", n, boots)
		}
		return nil
	})
}

// stepBootFromVolume boots a server from a new 1 GB volume made from the
// image (openstack server create --boot-from-volume): its root disk is a
// file on the NAS. The server is deleted again and the volume, kept
// (delete_on_termination false), is available, then deleted.
func stepBootFromVolume(s *scenario, h int) (string, error) {
	id, err := s.create(h, "e2e-bfv", []string{"server", "delete", "--wait"},
		"server", "create", "--flavor", "e2e.tiny", "--image", "e2e-guest", "--boot-from-volume", "1", "e2e-bfv")
	if err != nil {
		return "", err
	}
	if err := s.waitField(h, 3*time.Minute, "server", id, "status", "ACTIVE"); err != nil {
		return "", err
	}
	var srv struct {
		Volumes []struct {
			ID string `json:"id"`
		} `json:"volumes_attached"`
	}
	if err := s.oscJSON(h, &srv, "server", "show", id); err != nil {
		return "", err
	}
	if len(srv.Volumes) != 1 {
		return "", fmt.Errorf("server e2e-bfv volumes_attached = %+v; want its root volume", srv.Volumes)
	}
	vol := srv.Volumes[0].ID
	s.undo = append(s.undo, undo{what: "boot volume", args: []string{"volume", "delete", vol}})
	files, err := s.b.NASFiles()
	if err != nil {
		return "", err
	}
	if !slices.ContainsFunc(files, func(f string) bool { return strings.Contains(f, vol) }) {
		return "", fmt.Errorf("boot volume %s is not on the NAS: %v", vol, files)
	}
	if err := s.consoleHas(h, 3*time.Minute, id, "PEERSTACK-BOOT hostname=e2e-bfv"); err != nil {
		return "", err
	}
	if _, err := s.osc(h, "server", "delete", "--wait", id); err != nil {
		return "", err
	}
	if err := s.waitField(h, time.Minute, "volume", vol, "status", "available"); err != nil {
		return "", err
	}
	if _, err := s.osc(h, "volume", "delete", vol); err != nil {
		return "", err
	}
	s.forget("e2e-bfv", "boot volume") // both gone: nothing to undo
	return "", s.eventually(time.Minute, func() error {
		files, err := s.b.NASFiles()
		if err != nil {
			return err
		}
		if slices.ContainsFunc(files, func(f string) bool { return strings.Contains(f, vol) }) {
			return fmt.Errorf("deleted boot volume %s still on the NAS", vol)
		}
		return nil
	})
}

func stepKillLeader(s *scenario, h int) (string, error) {
	l, err := s.leader(h)
	if err != nil {
		return "", err
	}
	s.b.KillHost(l)
	s.killed = l
	fmt.Fprintf(s.out, "killed the leader %s (SIGKILL to its process group)\n", s.b.Host(l).Name)
	return "", nil
}

// stepAfterKill asks the surviving hosts, retrying while they elect a new
// leader.
func stepAfterKill(s *scenario, h int) (string, error) {
	err := s.eventually(60*time.Second, func() error {
		if _, err := s.osc(h, "project", "show", "e2e-after"); err == nil {
			return nil
		}
		_, err := s.osc(h, "project", "create", "e2e-after")
		return err
	})
	if err != nil {
		return "", err
	}
	s.undo = append(s.undo, undo{what: "project e2e-after", args: []string{"project", "delete", "e2e-after"}})
	if _, err := s.leader(h); err != nil {
		return "", err
	}
	if s.ids["e2e-vm1"] != "" {
		if _, err := s.osc(h, "server", "list"); err != nil {
			return "", err
		}
	}
	return "", nil
}

func stepCatchUp(s *scenario, _ int) (string, error) {
	k := s.killed
	if k == 0 {
		return "", errors.New("no host was killed")
	}
	if err := s.b.StartHost(s.ctx, k, "agent"); err != nil {
		return "", err
	}
	s.killed = 0
	s.restarted = k
	err := s.eventually(60*time.Second, func() error {
		// The project was created while k was down: k's state has caught up
		// when its own API shows it, and it knows the current leader.
		if _, err := s.osc(k, "project", "show", "e2e-after"); err != nil {
			return err
		}
		_, err := s.leader(k)
		return err
	})
	return s.b.Host(k).Name, err
}

// stepGossipConverges waits until every host, the restarted one included,
// sees every host alive with a Raft role.
func stepGossipConverges(s *scenario, _ int) (string, error) {
	t0 := time.Now()
	for i := range s.b.Hosts {
		if err := s.eventually(120*time.Second, func() error { return s.membersHealthy(i + 1) }); err != nil {
			return "all", err
		}
	}
	fmt.Fprintf(s.out, "membership healthy everywhere %.1fs after the restarted host caught up\n", time.Since(t0).Seconds())
	return "all", nil
}

// forget drops the undo entries of objects a step already deleted.
func (s *scenario) forget(what ...string) {
	s.undo = slices.DeleteFunc(s.undo, func(u undo) bool { return slices.Contains(what, u.what) })
}

func stepDeleteAll(s *scenario, h int) (string, error) {
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		u := s.undo[i]
		if _, err := s.osc(h, u.args...); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", u.what, err))
			continue
		}
		if u.then != nil {
			if err := u.then(s, h); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", u.what, err))
			}
		}
	}
	s.undo = nil
	return "", errors.Join(errs...)
}

func stepNothingLeft(s *scenario, h int) (string, error) {
	base := map[string]bool{}
	for _, l := range s.baseline {
		base[l] = true
	}
	err := s.eventually(90*time.Second, func() error {
		var left []string
		for _, l := range s.b.Leftovers(s.ctx) {
			if !base[l] {
				left = append(left, l)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
		}
		out, err := s.osc(h, "project", "list", "-f", "value", "-c", "Name")
		if err != nil {
			return err
		}
		for _, p := range strings.Fields(out) {
			if strings.HasPrefix(p, "e2e") {
				return fmt.Errorf("project %s still listed", p)
			}
		}
		return nil
	})
	return "all", err
}

// e2eSteps is the whole cluster-in-a-box scenario, in order.
func e2eSteps() []boxStep {
	return []boxStep{
		{name: "cluster formed (members via every host)", run: stepCluster},
		{name: "token issue", run: stepTokenIssue},
		{name: "project + user + role, user token", run: stepIdentity},
		{name: "image create (guest.qcow2)", full: true, run: stepImage},
		{name: "network + subnet + 2 ports", full: true, run: stepNetwork},
		{name: "flavor + keypair", full: true, run: stepKeypair},
		{name: "two servers (anti-affinity group)", full: true, run: stepServers},
		{name: "both ACTIVE on different hosts", full: true, run: stepActive},
		{name: "consoles: DHCP address + ping of the other", full: true, run: stepPing},
		{name: "volume create", full: true, run: stepVolumeCreate},
		{name: "attach to vm1, marker written", full: true, run: stepAttachWrite},
		{name: "detach, attach to vm2, marker read", full: true, run: stepMoveVolume},
		{name: "stop/start vm1", full: true, run: stepStopStart},
		{name: "boot from a new volume on the NAS", full: true, run: stepBootFromVolume},
		{name: "kill the leader's daemon", run: stepKillLeader},
		{name: "next commands via another host", run: stepAfterKill},
		{name: "killed host restarts and catches up", run: stepCatchUp},
		{name: "delete everything", run: stepDeleteAll},
		{name: "nothing left on any host or the NAS", run: stepNothingLeft},
		{name: "membership healthy on every host again", run: stepGossipConverges},
	}
}

// demoSteps is what `make demo` shows; failures are reported, not fatal.
func demoSteps() []boxStep {
	return []boxStep{
		{name: "image create (guest.qcow2)", run: stepImage},
		{name: "network + subnet + 2 ports", run: stepNetwork},
		{name: "flavor + keypair", run: stepKeypair},
		{name: "two servers (anti-affinity group)", run: stepServers,
			needs: []string{"image create (guest.qcow2)", "network + subnet + 2 ports", "flavor + keypair"}},
		{name: "both ACTIVE on different hosts", run: stepActive, needs: []string{"two servers (anti-affinity group)"}},
		{name: "consoles: DHCP address + ping of the other", run: stepPing, needs: []string{"both ACTIVE on different hosts"}},
	}
}
