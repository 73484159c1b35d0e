package e2e

// The daemon-death cases of the host-failure box: the server's host has
// its daemon SIGKILLed while its QEMU and fence guard keep running, and
// the daemon either stays dead (the guard must fence, the server moves)
// or comes back within T_fence (nothing may move).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// guardOf returns the pid of host h's fence guard (from its pidfile, if
// that pid is still a fence guard of h's data dir) and its heartbeat file.
func (hf *hostFail) guardOf(h int) (int, string, error) {
	dd := hf.s.b.Host(h).DataDir
	if pid, f := guardPID(dd); pid > 0 && procRunning(pid) {
		return pid, strings.TrimSuffix(f, ".pid"), nil
	}
	return 0, "", fmt.Errorf("no fence guard runs for %s (pidfiles %v)", hf.s.b.Host(h).Name, guardPIDFiles(dd))
}

// fileSize is the size of path, 0 if it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// stepKill SIGKILLs the daemon of the server's host and leaves it dead:
// its QEMU and fence guard keep running, and the guard must kill the
// QEMU at the deadline of the last renewal, before the leader restarts
// the server elsewhere.
func (hf *hostFail) stepKill(s *scenario, _ int) (string, error) {
	old := hf.host
	name := s.b.Host(old).Name
	pid, err := hf.serverQEMU(old)
	if err != nil {
		return "", err
	}
	gpid, _, err := hf.guardOf(old)
	if err != nil {
		return name, err
	}
	api := hf.liveOther(old)
	token, err := hf.adminToken(api)
	if err != nil {
		return "", err
	}
	guardLog := filepath.Join(s.b.Host(old).DataDir, "fence-guard.log")
	goff := fileSize(guardLog)
	ft := &failoverTimes{oldHost: old, oldPID: pid}
	logs := s.b.logSizes()
	ft.t0 = time.Now()
	dpid := s.b.Pid(old)
	s.b.KillHost(old)
	if s.b.Alive(old) {
		return name, fmt.Errorf("the daemon of %s (pid %d) survived SIGKILL", name, dpid)
	}
	hf.killed = old
	fmt.Fprintf(s.out, "SIGKILLed the daemon of %s (pid %d), not restarted; its QEMU %d and fence guard %d keep running\n",
		name, dpid, pid, gpid)
	if err := hf.failover("daemon SIGKILL", ft, api, token, logs); err != nil {
		return name, err
	}
	hf.keepConsole(old)
	if err := hf.overlap(ft, old, "SIGKILL"); err != nil {
		return name, err
	}
	if g := readFrom(guardLog, goff); !strings.Contains(g, "killed the VM of an HA server") {
		return name, fmt.Errorf("the old QEMU died, but the fence guard of %s does not say it killed it:\n%s", name, tail(g, 1500))
	}
	fmt.Fprintf(s.out, "old QEMU killed by the guard %.2fs after the SIGKILL, %.2fs before the new QEMU started on %s\n",
		ft.oldDead.Seconds(), (ft.newStart - ft.oldDead).Seconds(), s.b.Host(ft.newHost).Name)
	return name, nil
}

// stepRestartKilled starts the killed daemon again: it must catch up,
// remove its copy of the server that moved and run nothing twice.
func (hf *hostFail) stepRestartKilled(s *scenario, _ int) (string, error) {
	h := hf.killed
	if h == 0 {
		return "", fmt.Errorf("no daemon is killed")
	}
	name := s.b.Host(h).Name
	off := fileSize(s.b.Host(h).LogFile)
	t0 := time.Now()
	if err := s.b.StartHost(s.ctx, h, "agent"); err != nil {
		return name, err
	}
	hf.killed = 0
	if err := hf.waitCaughtUp(h, off); err != nil {
		return name, err
	}
	fmt.Fprintf(s.out, "%s's daemon restarted and caught up after %.1fs; its copy of the server is gone\n", name, time.Since(t0).Seconds())
	if err := s.eventually(time.Minute, func() error { return s.membersHealthy(h) }); err != nil {
		return name, err
	}
	return name, hf.noSecondWriter()
}

// killBackDelay is how long the daemon stays dead in the quick-restart
// case (then its start takes a few seconds more): well within T_fence.
const killBackDelay = 3 * time.Second

// killBackWatch is how long after the SIGKILL the quick-restart case
// watches that nothing moves: past the leader's fenced threshold (12.5 s
// of silence) and its next ticks, and past the guard's deadline.
const killBackWatch = 20 * time.Second

// stepKillBack SIGKILLs the daemon of the server's host and starts it
// again after killBackDelay: the restarted daemon renews its lease before
// the guard's deadline and takes the guard over, the leader reaches no
// fence verdict, and the server keeps its QEMU and its guest's boot on
// the same host. When that host led, this also moves the leadership away
// from it (the next step wants the server's host to be a follower).
func (hf *hostFail) stepKillBack(s *scenario, _ int) (string, error) {
	h := hf.host
	name := s.b.Host(h).Name
	pid, err := hf.serverQEMU(h)
	if err != nil {
		return name, err
	}
	gpid, heartbeat, err := hf.guardOf(h)
	if err != nil {
		return name, err
	}
	api := hf.liveOther(h)
	leader, err := s.leader(api)
	if err != nil {
		return name, err
	}
	token, err := hf.adminToken(api)
	if err != nil {
		return name, err
	}
	boot := hf.boots[len(hf.boots)-1]
	guardLog := filepath.Join(s.b.Host(h).DataDir, "fence-guard.log")
	goff := fileSize(guardLog)
	logs := s.b.logSizes()
	t0 := time.Now()
	s.b.KillHost(h)
	if s.b.Alive(h) {
		return name, fmt.Errorf("the daemon of %s survived SIGKILL", name)
	}
	time.Sleep(killBackDelay - time.Since(t0)) // the daemon's time away: an action, not a wait for state
	back := time.Since(t0)
	if err := s.b.StartHost(s.ctx, h, "agent"); err != nil {
		return name, err
	}
	serving := time.Since(t0)
	// Renewed: the restarted daemon writes the guard's heartbeat only
	// after a fresh renewal.
	var renewed time.Duration
	err = s.eventually(time.Minute, func() error {
		st, err := os.Stat(heartbeat)
		if err != nil || !st.ModTime().After(t0.Add(back)) {
			return fmt.Errorf("%s's daemon has not renewed its lease since its restart (heartbeat %s)", name, heartbeat)
		}
		renewed = st.ModTime().Sub(t0)
		return nil
	})
	if err != nil {
		return name, err
	}
	// Nothing moves: the same QEMU, on the same host, alone, until past
	// the fenced threshold.
	for time.Since(t0) < killBackWatch {
		all := s.b.qemuProcs(hf.id)
		for k, pids := range all {
			if (k == h && (len(pids) != 1 || pids[0] != pid)) || (k != h && len(pids) > 0) {
				return name, fmt.Errorf("%.1fs after the SIGKILL of %s's daemon (back after %.1fs): QEMU of %s per host = %v; want only %d on %s",
					time.Since(t0).Seconds(), name, back.Seconds(), hf.id, all, pid, name)
			}
		}
		if len(all[h]) == 0 {
			return name, fmt.Errorf("%.1fs after the SIGKILL of %s's daemon: its QEMU %d is gone", time.Since(t0).Seconds(), name, pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	down, fenced := s.b.verdicts(logs, name, t0)
	if fenced != 0 {
		return name, fmt.Errorf("a leader fenced %s %.1fs after its daemon's SIGKILL, though it was back after %.1fs and renewed at %.1fs",
			name, fenced.Seconds(), back.Seconds(), renewed.Seconds())
	}
	if g := readFrom(guardLog, goff); strings.Contains(g, "killed the VM") {
		return name, fmt.Errorf("the fence guard of %s killed a VM though its daemon came back within T_fence:\n%s", name, tail(g, 1500))
	}
	if got, _, err := hf.guardOf(h); err != nil || got != gpid {
		return name, fmt.Errorf("fence guard of %s: %d before the restart, now %d (%v); want the same one taken over", name, gpid, got, err)
	}
	hc, err := s.boxHTTP()
	if err != nil {
		return name, err
	}
	st, host, err := apiServer(hc, s.b.Host(api).APIAddr, token, hf.id)
	if err != nil {
		return name, err
	}
	if st != "ACTIVE" || host != name {
		return name, fmt.Errorf("server %s is %s on %q; want ACTIVE on %s", hf.id, st, host, name)
	}
	c := s.b.consoleOf(h, hf.id)
	if boots := pslogBoots(c); len(boots) == 0 || boots[len(boots)-1] != boot {
		return name, fmt.Errorf("the guest on %s booted again: boots on its console %v; want the last to be %s", name, boots, boot)
	}
	if err := hf.noSecondWriter(); err != nil {
		return name, err
	}
	if b := pslogBoots(s.b.consoleOf(h, hf.id)); b[len(b)-1] != boot {
		return name, fmt.Errorf("the guest on %s booted again while writing: boots %v; want %s", name, b, boot)
	}
	downs := "no down verdict"
	if down != 0 {
		downs = fmt.Sprintf("down verdict at %.1fs", down.Seconds())
	}
	now, _ := s.leader(api)
	lead := fmt.Sprintf("leader %s, was %s", s.b.Host(max(now, 1)).Name, s.b.Host(leader).Name)
	hf.kept = append(hf.kept, fmt.Sprintf("daemon SIGKILL, back within T_fence, on %s: dead for %.1fs, serving at %.1fs, lease renewed at %.1fs; "+
		"watched to %.0fs: same QEMU %d, same guard %d, same boot %.8s, no fence verdict (%s); %s",
		name, back.Seconds(), serving.Seconds(), renewed.Seconds(), killBackWatch.Seconds(), pid, gpid, boot, downs, lead))
	fmt.Fprintln(s.out, hf.kept[len(hf.kept)-1])
	return name, nil
}
