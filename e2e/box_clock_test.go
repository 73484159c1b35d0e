package e2e

// The clock-skew steps of TestBoxBadInput: host h4 runs with its clock
// shifted by the daemon's hidden --clock-offset flag.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// h4Daemon is host h4 running as a daemon.
type h4Daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// clockMember is what the clock steps read from `members -f json`.
type clockMember struct {
	Name        string `json:"name"`
	RaftRole    string `json:"raft_role"`
	GossipState string `json:"gossip_state"`
	ClockSkewMS *int64 `json:"clock_skew_ms"`
}

// startH4 runs `peerstack <cmd…>` as h4 on the clock steps' data dir in
// the background, output appended to logs/h4.log, and waits until it
// serves (90 s at most). Teardown kills it if the test stops first.
func (bi *badInput) startH4(s *scenario, cmd ...string) error {
	if bi.h4 != nil {
		return errors.New("h4 already runs")
	}
	args := bi.h4Args(s, bi.clockDir, cmd...)
	_, err := s.b.spawnDaemon(s.ctx, "h4", filepath.Join(s.b.LogDir, "h4.log"), args, "https://"+s.b.Addr(4)+":8470",
		func(c *exec.Cmd, done chan struct{}) { bi.h4 = &h4Daemon{cmd: c, done: done} },
		func() { bi.h4 = nil })
	return err
}

// stopH4 stops h4's daemon as its operator would (SIGTERM; VMs and data
// stay) and waits for it, SIGKILLing it after 20 s.
func (bi *badInput) stopH4() error {
	d := bi.h4
	if d == nil {
		return nil
	}
	bi.h4 = nil
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(20 * time.Second):
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	return errors.New("h4 ignored SIGTERM for 20s")
}

// h4Skew asks host h for the members: it must list the 3 hosts and h4,
// all alive with a Raft role. It returns h4's clock skew in ms as seen by
// h, an error if not measured yet.
func (bi *badInput) h4Skew(s *scenario, h int) (int64, error) {
	out, err := s.b.Peerstack(s.ctx, h, "members", "-f", "json")
	if err != nil {
		return 0, err
	}
	var ms []clockMember
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return 0, fmt.Errorf("members: %w: %s", err, out)
	}
	via := s.b.Host(h).Name
	if len(ms) != len(s.b.Hosts)+1 {
		return 0, fmt.Errorf("members via %s: %d hosts; want %d", via, len(ms), len(s.b.Hosts)+1)
	}
	var skew *int64
	found := false
	for _, m := range ms {
		if m.GossipState != "alive" || m.RaftRole == "none" || m.RaftRole == "" {
			return 0, fmt.Errorf("members via %s: %s is %s/%s", via, m.Name, m.GossipState, m.RaftRole)
		}
		if m.Name == via && (m.ClockSkewMS == nil || *m.ClockSkewMS != 0) {
			return 0, fmt.Errorf("members via %s: its own clock_skew_ms = %v; want 0", via, m.ClockSkewMS)
		}
		if m.Name == "h4" {
			skew, found = m.ClockSkewMS, true
		}
	}
	switch {
	case !found:
		return 0, fmt.Errorf("members via %s do not list h4", via)
	case skew == nil:
		return 0, fmt.Errorf("members via %s: h4's clock not measured yet", via)
	}
	return *skew, nil
}

// waitH4Skew waits until every host sees h4's skew within tol of want.
func (bi *badInput) waitH4Skew(s *scenario, want, tol time.Duration) ([]string, error) {
	var seen []string
	for i := range s.b.Hosts {
		var got int64
		err := s.eventually(60*time.Second, func() error {
			var err error
			if got, err = bi.h4Skew(s, i+1); err != nil {
				return err
			}
			if d := time.Duration(got)*time.Millisecond - want; d.Abs() > tol {
				return fmt.Errorf("via %s h4's clock_skew_ms = %d; want %d ± %d", s.b.Host(i+1).Name, got, want.Milliseconds(), tol.Milliseconds())
			}
			return nil
		})
		if err != nil {
			return seen, err
		}
		seen = append(seen, fmt.Sprintf("%s:%d", s.b.Host(i+1).Name, got))
	}
	fmt.Fprintf(s.out, "  h4 clock_skew_ms via %s\n", strings.Join(seen, " "))
	return seen, nil
}

// logsWith waits up to d until at least n hosts' daemon logs have a line
// with every one of parts, prints one such line per host and returns
// those hosts' names.
func logsWith(s *scenario, d time.Duration, n int, parts ...string) ([]string, error) {
	var hosts, lines []string
	err := s.eventually(d, func() error {
		hosts, lines = nil, nil
		for _, hh := range s.b.Hosts {
			data, _ := os.ReadFile(hh.LogFile)
			for _, line := range strings.Split(string(data), "\n") {
				all := true
				for _, p := range parts {
					all = all && strings.Contains(line, p)
				}
				if all {
					hosts = append(hosts, hh.Name)
					lines = append(lines, fmt.Sprintf("  %s log: %s\n", hh.Name, tail(line, 300)))
					break
				}
			}
		}
		if len(hosts) < n {
			return fmt.Errorf("%d daemon logs (%v) have a line with %q; want %d", len(hosts), hosts, parts, n)
		}
		return nil
	})
	fmt.Fprint(s.out, strings.Join(lines, ""))
	return hosts, err
}

// stepClockAhead: h4 joins with a valid token and its clock an hour
// ahead. The join is refused with a message that names the skew and the
// fix, nothing is left in its data dir, the member that refused it logs
// it, and the cluster keeps its 3 members and serves writes via every
// host.
func (bi *badInput) stepClockAhead(s *scenario, h int) (string, error) {
	raw, err := s.b.Peerstack(s.ctx, h, "token", "create")
	if err != nil {
		return "", err
	}
	bi.clockTok = LastLine(raw)
	if !strings.HasPrefix(bi.clockTok, "PSJ1-") {
		return "", fmt.Errorf("token create printed no token: %q", raw)
	}
	out, code, dir, err := bi.runJoin(s, "clock", bi.clockTok, "--clock-offset", "1h")
	if err != nil {
		return "", err
	}
	bi.clockDir = dir
	if err := bi.checkRefused(s, h, out, code, dir, "clock of joining host h4 is 3600."); err != nil {
		return "", err
	}
	for _, want := range []string{"s ahead of host h", "(limit 30 s)", "fix time sync (NTP/chrony) on h4 and retry", "the same token still works"} {
		if !strings.Contains(out, want) {
			return "", fmt.Errorf("h4 join output lacks %q: %s", want, tail(out, 1000))
		}
	}
	if _, err := logsWith(s, 10*time.Second, 1, "level=WARN", "join refused: clock of joining host h4 is 3600."); err != nil {
		return "", err
	}
	for i := range s.b.Hosts {
		if err := s.membersHealthy(i + 1); err != nil {
			return "", err
		}
		name := fmt.Sprintf("%s-clock-%d", s.b.Prefix, i+1)
		if _, err := s.osc(i+1, "project", "create", name); err != nil {
			return "", fmt.Errorf("write via %s after the refused join: %w", s.b.Host(i+1).Name, err)
		}
		if _, err := s.osc(i+1, "project", "delete", name); err != nil {
			return "", err
		}
	}
	return s.b.Host(h).Name + "+h4", nil
}

// stepClockFixed: with its clock right, h4 joins with the same token
// into the same (empty) data dir, and every host lists it alive, its
// skew about zero.
func (bi *badInput) stepClockFixed(s *scenario, _ int) (string, error) {
	if bi.clockTok == "" {
		return "h4", errors.New("h4 was not refused first")
	}
	if err := bi.startH4(s, "join", bi.clockTok); err != nil {
		return "h4", err
	}
	_, err := bi.waitH4Skew(s, 0, time.Second)
	return "all", err
}

// stepClockDrift: the member h4 restarts with its clock an hour ahead.
// Every host's `members` shows clock_skew_ms ≈ 3600000 for it, and the
// others log a warning that names it.
func (bi *badInput) stepClockDrift(s *scenario, _ int) (string, error) {
	if err := bi.stopH4(); err != nil {
		return "h4", err
	}
	if err := bi.startH4(s, "agent", "--clock-offset", "1h"); err != nil {
		return "h4", err
	}
	if _, err := bi.waitH4Skew(s, time.Hour, 2*time.Second); err != nil {
		return "all", err
	}
	_, err := logsWith(s, 30*time.Second, len(s.b.Hosts), "level=WARN", "clock skew: host h4's clock is 3600.")
	return "all", err
}

// stepClockBack: h4 restarts with its clock fixed; its skew is about
// zero again everywhere and the others log that it is resolved.
func (bi *badInput) stepClockBack(s *scenario, _ int) (string, error) {
	if err := bi.stopH4(); err != nil {
		return "h4", err
	}
	if err := bi.startH4(s, "agent"); err != nil {
		return "h4", err
	}
	if _, err := bi.waitH4Skew(s, 0, time.Second); err != nil {
		return "all", err
	}
	_, err := logsWith(s, 30*time.Second, len(s.b.Hosts), "level=INFO", "clock skew resolved: host h4's clock")
	return "all", err
}

// stepClockLeave: h4 leaves gracefully, its daemon stops, and every host
// lists the 3 hosts again.
func (bi *badInput) stepClockLeave(s *scenario, h int) (string, error) {
	d := bi.h4
	if d == nil {
		return "h4", errors.New("h4 does not run")
	}
	if _, err := s.b.Peerstack(s.ctx, h, "leave", "--data-dir", bi.clockDir); err != nil {
		return "h4", err
	}
	select {
	case <-d.done:
		bi.h4 = nil
	case <-time.After(60 * time.Second):
		return "h4", errors.New("h4's daemon still runs 60s after leave")
	}
	_, err := stepMembersAll(s, h)
	return "all", err
}
