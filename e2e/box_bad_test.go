package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBoxBadInput runs the "bad input" scenarios on a 3-host cluster
// in a box with NFS storage: a host started with a garbage token and with
// a real token whose secret was altered (the join is refused with a clear
// message, nothing is left in its data dir, the cluster keeps 3 members),
// the NAS down for ~30 s (a volume created meanwhile goes to error
// naming the NFS server; once the NAS is back volumes work again, the
// errored one can be deleted, and membership stays healthy throughout),
// and a host whose clock is an hour ahead (its join is refused with a
// clear message and logged by the member, the cluster keeps serving; with
// the clock fixed the same token joins it; as a running member its skew
// shows in `members` and the others' logs, and goes away once fixed).
//
// The clock is shifted with the daemon's hidden --clock-offset flag:
// libfaketime's LD_PRELOAD does not reach a Go binary's clock (time.Now
// reads the vDSO), and time namespaces do not offset CLOCK_REALTIME.
func TestBoxBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	t0 := time.Now()
	s, up := startTestBox(t, ctx, "openstack", "ganesha.nfsd", "rpcbind", "nfs-ls", "nsenter")
	bad := &badInput{}
	rows, err := s.runSteps(bad.steps(), true, false)
	rows = append([]stepResult{up}, rows...)
	table := formatTable(rows)
	fmt.Print(table)
	t.Logf("\n%s(total %.1fs; NAS outage %.1fs; logs %s)", table, time.Since(t0).Seconds(), bad.outage.Seconds(), s.b.LogDir)
	if err != nil {
		t.Fatal(err)
	}
}

// badInput is the state of the bad-input steps beyond the scenario's.
type badInput struct {
	joinNS    string        // the 4th host's namespace, once created
	clockTok  string        // the join token the skewed h4 was refused with
	clockDir  string        // h4's data dir in the clock steps
	h4        *h4Daemon     // h4 running as a member, in the clock steps
	nasDown   time.Time     // when ganesha was killed
	outage    time.Duration // how long the NAS was down
	rpcbind   int           // pid of the NAS's rpcbind (ganesha joins its namespaces)
	volHost   string        // the daemon log that reported the vdown error
	imageNote string
}

// badOutage is how long the NAS stays down.
const badOutage = 30 * time.Second

func (bi *badInput) steps() []boxStep {
	return []boxStep{
		{name: "cluster formed (members via every host)", run: stepCluster},
		{name: "h4 joins with a garbage token: refused", run: bi.stepGarbageToken},
		{name: "h4 joins with a wrong secret: refused", run: bi.stepWrongSecret},
		{name: "NAS down (ganesha killed, rpcbind kept)", run: bi.stepNASDown},
		{name: "volume create vdown: 202, then error (NFS)", run: bi.stepVolumeDown},
		{name: "image create during the outage", run: bi.stepImageDown},
		{name: "membership healthy during the outage", run: stepMembersAll},
		{name: "NAS back (ganesha restarted)", run: bi.stepNASUp},
		{name: "volume create vup: available", run: stepVolumeUp},
		{name: "delete vdown (errored), vup, the image", run: stepBadDelete},
		{name: "membership healthy on every host after", run: stepMembersAll},
		{name: "h4 joins with its clock 1 h ahead: refused", run: bi.stepClockAhead},
		{name: "h4 clock fixed, same token: member everywhere", run: bi.stepClockFixed},
		{name: "h4 restarted 1 h ahead: skew shown, logged", run: bi.stepClockDrift},
		{name: "h4 restarted fixed: skew ~0, logged", run: bi.stepClockBack},
		{name: "h4 leaves: 3 members on every host", run: bi.stepClockLeave},
	}
}

func stepMembersAll(s *scenario, _ int) (string, error) {
	for i := range s.b.Hosts {
		if err := s.eventually(60*time.Second, func() error { return s.membersHealthy(i + 1) }); err != nil {
			return "all", err
		}
	}
	return "all", nil
}

// joinHost creates the 4th host's namespace once (10.x.0.4, recorded in
// the box state so teardown removes it); it is not added to b.Hosts, so
// membership checks still expect 3 hosts.
func (bi *badInput) joinHost(s *scenario) error {
	if bi.joinNS != "" {
		return nil
	}
	ns := s.b.Prefix + "h4"
	if err := s.b.nsWithVeth(s.ctx, ns, "4", s.b.Addr(4)); err != nil {
		return err
	}
	bi.joinNS = ns
	return nil
}

// h4Args is the command line of host h4: `ip netns exec … peerstack
// <cmd…> --data-dir dir …flags`.
func (bi *badInput) h4Args(s *scenario, dir string, cmd ...string) []string {
	addr := s.b.Addr(4)
	args := append([]string{"netns", "exec", bi.joinNS, s.b.Bin}, cmd...)
	return append(args, "--data-dir", dir, "--name", "h4",
		"--advertise-addr", addr, "--api-addr", addr+":8470", "--raft-addr", addr+":8471",
		"--gossip-addr", addr+":7946", "--bcrypt-cost", "4", "--log-level", s.b.logLevel)
}

// runJoin runs `peerstack join TOKEN … extra…` as host h4 in its
// namespace with the data dir h4-<tag> and waits for it to exit (60 s at
// most). It returns the process output (also appended to logs/h4.log),
// the exit code and the data dir.
func (bi *badInput) runJoin(s *scenario, tag, token string, extra ...string) (string, int, string, error) {
	if err := bi.joinHost(s); err != nil {
		return "", 0, "", err
	}
	dir := filepath.Join(s.b.RunDir, "h4-"+tag)
	args := append(bi.h4Args(s, dir, "join", token), extra...)
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return "", 0, dir, fmt.Errorf("start h4: %w", err)
	}
	if err := s.b.addPGID(cmd.Process.Pid); err != nil {
		return "", 0, dir, err
	}
	err := cmd.Wait()
	text := buf.String()
	if logf, lerr := os.OpenFile(filepath.Join(s.b.LogDir, "h4.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); lerr == nil {
		fmt.Fprintf(logf, "=== %s ip %s\n%s", time.Now().UTC().Format(time.RFC3339), strings.Join(args, " "), text)
		logf.Close()
	}
	if ctx.Err() != nil {
		return text, 0, dir, fmt.Errorf("h4 join still running after 60s: %s", tail(text, 1000))
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return text, 0, dir, nil
	case errors.As(err, &exit):
		return text, exit.ExitCode(), dir, nil
	default:
		return text, 0, dir, err
	}
}

// checkRefused checks a refused join: non-zero exit, want in the output,
// an empty (or absent) data dir, and still 3 members.
func (bi *badInput) checkRefused(s *scenario, h int, out string, code int, dir, want string) error {
	if code == 0 {
		return fmt.Errorf("h4 join exited 0; want a failure: %s", tail(out, 1000))
	}
	if !strings.Contains(out, want) {
		return fmt.Errorf("h4 join output lacks %q: %s", want, tail(out, 1000))
	}
	fmt.Fprintf(s.out, "  h4 exit %d: %s\n", code, LastLine(out))
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return fmt.Errorf("refused join left %v in %s", names, dir)
	}
	return s.membersHealthy(h)
}

func (bi *badInput) stepGarbageToken(s *scenario, h int) (string, error) {
	for _, tok := range []string{"not-a-token", "PSJ1-!!!garbage!!!"} {
		out, code, dir, err := bi.runJoin(s, "garbage", tok)
		if err != nil {
			return "", err
		}
		if err := bi.checkRefused(s, h, out, code, dir, "malformed join token"); err != nil {
			return "", fmt.Errorf("token %q: %w", tok, err)
		}
	}
	return "", nil
}

// stepWrongSecret takes a real token from host h and changes its secret:
// the cluster id, CA fingerprint, addresses and token id are right.
func (bi *badInput) stepWrongSecret(s *scenario, h int) (string, error) {
	raw, err := s.b.Peerstack(s.ctx, h, "token", "create")
	if err != nil {
		return "", err
	}
	tok := LastLine(raw)
	if !strings.HasPrefix(tok, "PSJ1-") {
		return "", fmt.Errorf("token create printed no token: %q", raw)
	}
	body, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "PSJ1-"))
	if err != nil {
		return "", fmt.Errorf("decode token: %w", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		return "", fmt.Errorf("decode token: %w", err)
	}
	secret, _ := fields["s"].(string)
	if secret == "" {
		return "", fmt.Errorf("token has no secret: %s", body)
	}
	fields["s"] = base64.RawURLEncoding.EncodeToString([]byte("wrong secret, right everything else"))
	body, err = json.Marshal(fields)
	if err != nil {
		return "", err
	}
	out, code, dir, err := bi.runJoin(s, "badsecret", "PSJ1-"+base64.RawURLEncoding.EncodeToString(body))
	if err != nil {
		return "", err
	}
	if err := bi.checkRefused(s, h, out, code, dir, "join token is not valid for this cluster"); err != nil {
		return "", err
	}
	// Every host still lists exactly the 3 members.
	for i := range s.b.Hosts {
		if err := s.membersHealthy(i + 1); err != nil {
			return "", err
		}
	}
	return s.b.Host(h).Name + "+h4", nil
}

// nasProcs returns the pids of the NAS's rpcbind and ganesha.
func (bi *badInput) nasProcs(b *Box) (rpcbind int, ganesha []int) {
	nasNet := netnsLink(b.Prefix + "nas")
	for _, p := range procsMatching(func(cmdline, netns string) bool { return netns == nasNet && nasNet != "" }) {
		switch {
		case strings.HasPrefix(p.cmdline, "rpcbind"):
			rpcbind = p.pid
		case strings.Contains(p.cmdline, "ganesha.nfsd"):
			ganesha = append(ganesha, p.pid)
		}
	}
	return rpcbind, ganesha
}

// stepNASDown SIGKILLs ganesha (rpcbind keeps running, so the port
// mapper still answers and NFS connections are refused).
func (bi *badInput) stepNASDown(s *scenario, _ int) (string, error) {
	rpc, gan := bi.nasProcs(s.b)
	if rpc == 0 || len(gan) == 0 {
		return "NAS", fmt.Errorf("NAS processes: rpcbind %d, ganesha %v", rpc, gan)
	}
	bi.rpcbind = rpc
	for _, pid := range gan {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	bi.nasDown = time.Now()
	url := "nfs://" + s.b.NASAddr + "/export"
	err := s.eventually(15*time.Second, func() error {
		if _, g := bi.nasProcs(s.b); len(g) > 0 {
			return fmt.Errorf("ganesha %v still runs", g)
		}
		if _, err := sh(s.ctx, "nfs-ls", url); err == nil {
			return fmt.Errorf("%s still served", url)
		}
		return nil
	})
	return "NAS", err
}

func (bi *badInput) stepVolumeDown(s *scenario, h int) (string, error) {
	id, err := s.create(h, "vdown", []string{"volume", "delete"}, "volume", "create", "--size", "1", "vdown")
	if err != nil {
		return "", err
	}
	if err := s.waitField(h, 60*time.Second, "volume", id, "status", "error"); err != nil {
		return "", err
	}
	var vol map[string]any
	if err := s.oscJSON(h, &vol, "volume", "show", id); err != nil {
		return "", err
	}
	reason := fmt.Sprint(vol["error_reason"])
	if !mentionsNFS(reason, s.b.NASAddr) {
		return "", fmt.Errorf("volume vdown error_reason %q names neither NFS nor %s", reason, s.b.NASAddr)
	}
	fmt.Fprintf(s.out, "  vdown error_reason: %s\n", reason)
	// The daemon log of the host that tried to create it says so too.
	for _, hh := range s.b.Hosts {
		data, _ := os.ReadFile(hh.LogFile)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, id) && mentionsNFS(line, s.b.NASAddr) {
				bi.volHost = hh.Name
				fmt.Fprintf(s.out, "  %s log: %s\n", hh.Name, tail(line, 300))
				break
			}
		}
	}
	if bi.volHost == "" {
		return "", fmt.Errorf("no daemon log has an ERROR line about volume %s naming NFS", id)
	}
	// os-vol-host-attr:host is Cinder's "host@backend#pool".
	if want, _ := vol["os-vol-host-attr:host"].(string); want != "" && strings.SplitN(want, "@", 2)[0] != bi.volHost {
		return "", fmt.Errorf("volume host %s, but the error is logged by %s", want, bi.volHost)
	}
	return "", nil
}

func mentionsNFS(s, nasAddr string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "nfs") || (nasAddr != "" && strings.Contains(s, nasAddr))
}

// stepImageDown uploads a small image while the NAS is down: with NFS
// storage the image bytes are committed to the share, so the upload
// fails (the client then deletes the image) and the daemon log names the
// NFS server. The CLI itself only shows "500 … Internal Server Error" (the
// API hides the cause of a 500), which this step records.
func (bi *badInput) stepImageDown(s *scenario, h int) (string, error) {
	f := filepath.Join(s.dir, "small.raw")
	if err := os.WriteFile(f, bytes.Repeat([]byte("peerstack-bad-input\n"), 1<<15), 0o644); err != nil {
		return "", err
	}
	out, err := s.osc(h, "image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", f, "vimg-down", "-f", "json")
	if err == nil {
		s.undo = append(s.undo, undo{what: "vimg", args: []string{"image", "delete", "vimg-down"}})
		return "", fmt.Errorf("image create with the NAS down succeeded: %s", tail(out, 500))
	}
	bi.imageNote = LastLine(out)
	fmt.Fprintf(s.out, "  image create CLI: %s\n", tail(bi.imageNote, 300))
	m := regexp.MustCompile(`/images/([0-9a-f-]{36})/file`).FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("image create error names no image: %s", tail(out, 500))
	}
	id := m[1]
	// The client deletes the image after a failed upload; if it is still
	// there, it must not be active.
	var img map[string]any
	if jerr := s.oscJSON(h, &img, "image", "show", id); jerr == nil {
		s.undo = append(s.undo, undo{what: "vimg", args: []string{"image", "delete", id}})
		if st := fmt.Sprint(img["status"]); st == "active" {
			return "", fmt.Errorf("image %s is %s after a failed upload", id, st)
		}
	}
	data, _ := os.ReadFile(s.b.Host(h).LogFile)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, id) && mentionsNFS(line, s.b.NASAddr) {
			fmt.Fprintf(s.out, "  %s log: %s\n", s.b.Host(h).Name, tail(line, 300))
			return "", nil
		}
	}
	return "", fmt.Errorf("%s log has no ERROR line about image %s naming NFS", s.b.Host(h).Name, id)
}

// stepNASUp waits out the rest of the outage, then restarts ganesha in
// rpcbind's namespaces (as startNAS does) and waits until it serves.
func (bi *badInput) stepNASUp(s *scenario, _ int) (string, error) {
	if bi.rpcbind == 0 {
		return "NAS", errors.New("the NAS was not taken down")
	}
	if rest := badOutage - time.Since(bi.nasDown); rest > 0 {
		fmt.Fprintf(s.out, "  NAS stays down %.0fs more\n", rest.Seconds())
		select {
		case <-s.ctx.Done():
			return "NAS", s.ctx.Err()
		case <-time.After(rest):
		}
	}
	dir := filepath.Join(s.b.RunDir, "nas")
	logf, err := os.OpenFile(filepath.Join(s.b.LogDir, "nas.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "NAS", err
	}
	defer logf.Close()
	if _, _, err := s.b.spawn(logf, "nsenter", "-t", strconv.Itoa(bi.rpcbind), "-m", "-n",
		"ganesha.nfsd", "-F", "-f", filepath.Join(dir, "ganesha.conf"), "-L", filepath.Join(s.b.LogDir, "ganesha.log"),
		"-p", filepath.Join(dir, "ganesha.pid"), "-N", "NIV_EVENT"); err != nil {
		return "NAS", err
	}
	url := "nfs://" + s.b.NASAddr + "/export"
	err = s.eventually(60*time.Second, func() error {
		_, err := sh(s.ctx, "nfs-ls", url)
		return err
	})
	bi.outage = time.Since(bi.nasDown)
	fmt.Fprintf(s.out, "  NAS was down %.1fs\n", bi.outage.Seconds())
	return "NAS", err
}

// stepVolumeUp creates a volume after the NAS came back, with no repair
// on any host.
func stepVolumeUp(s *scenario, h int) (string, error) {
	id, err := s.create(h, "vup", []string{"volume", "delete"}, "volume", "create", "--size", "1", "vup")
	if err != nil {
		return "", err
	}
	return "", s.waitField(h, 90*time.Second, "volume", id, "status", "available")
}

// stepBadDelete deletes what the scenario created and waits until the
// volumes are gone from the API and their files from the NAS.
func stepBadDelete(s *scenario, h int) (string, error) {
	ids := []string{s.ids["vdown"], s.ids["vup"]}
	if _, err := stepDeleteAll(s, h); err != nil {
		return "", err
	}
	return "", s.eventually(60*time.Second, func() error {
		out, err := s.osc(h, "volume", "list", "-f", "value", "-c", "ID")
		if err != nil {
			return err
		}
		files, err := s.b.NASFiles()
		if err != nil {
			return err
		}
		for _, id := range ids {
			if id != "" && strings.Contains(out, id) {
				return fmt.Errorf("volume %s still listed", id)
			}
			for _, f := range files {
				if id != "" && strings.Contains(f, id) {
					return fmt.Errorf("NAS still has %s", f)
				}
			}
		}
		return nil
	})
}
