package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBoxHostFailure is host failure for real (docs/ha.md): a 3-host box
// with the NAS, one HA server booted from a volume on the NFS share, whose
// guest appends a record (slot, its kernel boot id, a counter) to that
// shared disk every 100 ms (`guestio log`, scripts/guestio). Then:
//
//   - power-off: the server's host loses its link and every process in its
//     network namespace (daemon, fence guard, QEMU) is SIGKILLed at once.
//     The server must run and write again on another host;
//   - the host returns: it must not start the server again, and removes
//     its copy;
//   - the server's new host has its daemon SIGSTOPped (QEMU and the fence
//     guard keep running): the guard must kill the QEMU before the leader
//     restarts the server elsewhere (checked from /proc), and SIGCONT must
//     not bring a second writer back;
//   - the server's host has its daemon SIGKILLed and not restarted (QEMU
//     and guard keep running): the guard must kill the QEMU before the
//     restart elsewhere; the daemon started again runs nothing twice;
//   - the server's host is cut off from the other hosts but still reaches
//     the NAS: its own fence must kill the QEMU before the restart
//     elsewhere, and once reconnected it must not run it again;
//   - the server's host has its daemon SIGKILLed and started again within
//     T_fence: nothing moves (same QEMU, same guest boot, no fence
//     verdict), and if it led, the leadership moves off it;
//   - then the server's host, now a follower, is cut off from the leader
//     alone (the third host still vouches for it in gossip): the same as
//     for the partition must happen.
//
// After each case the log is read from the NAS's export and checked: the
// writers' records never interleave and every record a guest printed as
// written is still there. Figures (from the failure): QEMU
// started elsewhere, ACTIVE in the API, guest READY, writing again. T_fence
// is the production default (10 s; fenced after 12.5 s of silence).
func TestBoxHostFailure(t *testing.T) {
	if os.Getenv("PEERSTACK_E2E_FULL") != "1" {
		t.Log("PEERSTACK_E2E_FULL unset: the host-failure box runs with the full e2e set (make test, make e2e)")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	t0 := time.Now()
	s, up := startTestBox(t, ctx, "qemu-system-x86_64", "qemu-img", "openstack", "ganesha.nfsd", "rpcbind", "nfs-ls")
	hf := &hostFail{s: s}
	rows, err := s.runSteps(hf.steps(), true, false)
	rows = append([]stepResult{up}, rows...)
	table := formatTable(rows) + "\n" + hf.figures()
	fmt.Print(table)
	t.Logf("\n%s(total %.1fs; logs %s)", table, time.Since(t0).Seconds(), s.b.LogDir)
	if err != nil {
		t.Fatal(err)
	}
}

// hostFail is the state the host-failure steps share.
type hostFail struct {
	s        *scenario
	id       string // the HA server
	vol      string // its boot volume
	host     int    // the host it runs on now
	boots    []string
	consoles map[string]string // every console seen, by "<host>/<boot>"
	records  int               // records on the disk at the last check
	cases    []hfCase
	stopped  int      // host whose daemon is SIGSTOPped, 0 if none
	killed   int      // host whose daemon is SIGKILLed, 0 if none
	kept     []string // the cases where nothing moved, with their figures
	cut      int      // host cut off, 0 if none
	cutFrom  []int    // the hosts it is cut off from
}

// hfCase is one failover's figures.
type hfCase struct {
	name string
	ft   *failoverTimes
}

func (hf *hostFail) steps() []boxStep {
	return []boxStep{
		{name: "cluster formed (members via every host)", run: stepCluster},
		{name: "token issue", run: stepTokenIssue},
		{name: "image create (guest.qcow2)", run: stepImage},
		{name: "HA server booted from an NFS volume, writing", run: hf.stepServer},
		{name: "power-off of its host: restarted elsewhere", run: hf.stepPowerOff},
		{name: "log on the NAS: one writer at a time", run: hf.stepCheckLog},
		{name: "powered-off host returns, runs nothing twice", run: hf.stepReturn},
		{name: "daemon SIGSTOPped: guard kills, then restart", run: hf.stepStop},
		{name: "SIGCONT: the stopped host runs nothing twice", run: hf.stepCont},
		{name: "log on the NAS: one writer at a time (again)", run: hf.stepCheckLog},
		{name: "daemon SIGKILLed: guard kills, then restart", run: hf.stepKill},
		{name: "log on the NAS: one writer at a time (third)", run: hf.stepCheckLog},
		{name: "killed daemon started again: nothing twice", run: hf.stepRestartKilled},
		{name: "partition, NAS reachable: self-fence, restart", run: hf.stepPartition},
		{name: "partition healed: runs nothing twice", run: hf.stepHeal},
		{name: "log on the NAS: one writer at a time (fourth)", run: hf.stepCheckLog},
		{name: "daemon SIGKILLed, back within T_fence: stays", run: hf.stepKillBack},
		{name: "cut from the leader only (server's host follows)", run: hf.stepCutFromLeader},
		{name: "cut healed: runs nothing twice", run: hf.stepHeal},
		{name: "log on the NAS: one writer at a time (last)", run: hf.stepCheckLog},
		{name: "delete the server and its volume", run: hf.stepDelete},
	}
}

func (hf *hostFail) stepServer(s *scenario, h int) (string, error) {
	if out, err := s.b.Peerstack(s.ctx, h, "settings", "show"); err == nil {
		fmt.Fprintf(s.out, "cluster settings:\n%s", out)
	}
	if _, err := s.create(h, "flavor", []string{"flavor", "delete"},
		"flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1", "hf.tiny"); err != nil {
		return "", err
	}
	ud := filepath.Join(s.dir, "hf.userdata")
	if err := os.WriteFile(ud, []byte(hfUserData(logSlots)), 0o644); err != nil {
		return "", err
	}
	id, err := s.create(h, "hf-vm", []string{"server", "delete", "--wait"}, "server", "create", "--flavor", "hf.tiny",
		"--image", "e2e-guest", "--boot-from-volume", "1", "--user-data", ud, "hf-vm")
	if err != nil {
		return "", err
	}
	hf.id = id
	if err := s.waitField(h, 4*time.Minute, "server", id, "status", "ACTIVE"); err != nil {
		return "", err
	}
	var srv struct {
		Host    string `json:"OS-EXT-SRV-ATTR:host"`
		Volumes []struct {
			ID string `json:"id"`
		} `json:"volumes_attached"`
	}
	if err := s.oscJSON(h, &srv, "server", "show", id); err != nil {
		return "", err
	}
	if len(srv.Volumes) != 1 {
		return "", fmt.Errorf("server volumes_attached = %+v; want its boot volume", srv.Volumes)
	}
	hf.vol = srv.Volumes[0].ID
	s.undo = append(s.undo, undo{what: "boot volume", args: []string{"volume", "delete", hf.vol}})
	if hf.host = hf.hostNamed(srv.Host); hf.host == 0 {
		return "", fmt.Errorf("server on host %q: not a host of the box", srv.Host)
	}
	if _, err := hf.diskFile(); err != nil {
		return "", err
	}
	// Running: the writer has started and written a few records.
	err = s.eventually(4*time.Minute, func() error {
		c := s.b.consoleOf(hf.host, id)
		if strings.Contains(c, "PEERSTACK-HOSTFAIL") || strings.Contains(c, "guestio:") {
			return fmt.Errorf("the writer failed: %s", tail(c, 600))
		}
		if boots := pslogBoots(c); len(boots) == 1 && len(pslogClaims(c)) >= 20 {
			hf.boots = boots
			return nil
		}
		return fmt.Errorf("console of %s on %s: the writer has not written 20 records yet", id, s.b.Host(hf.host).Name)
	})
	if err != nil {
		return "", err
	}
	leader, _ := s.leader(h)
	fmt.Fprintf(s.out, "server %s on %s (leader %s), boot volume %s, writer boot %s\n",
		id, s.b.Host(hf.host).Name, s.b.Host(max(leader, 1)).Name, hf.vol, hf.boots[0])
	return "", nil
}

// hostNamed returns the index of the host called name, 0 if none.
func (hf *hostFail) hostNamed(name string) int {
	for _, h := range hf.s.b.Hosts {
		if h.Name == name {
			return h.Index
		}
	}
	return 0
}

// diskFile is the boot volume's file in the NAS's export.
func (hf *hostFail) diskFile() (string, error) { return hf.s.b.VolumeFile(hf.vol) }

// readLog reads the log region of the boot volume from the NAS's export.
func (hf *hostFail) readLog(ctx context.Context) ([]byte, error) {
	file, err := hf.diskFile()
	if err != nil {
		return nil, err
	}
	return ReadGuestLog(ctx, file, hf.s.dir, logSlots)
}

// keepConsole records host h's console of the server (before a host
// that returns removes it).
func (hf *hostFail) keepConsole(h int) {
	c := hf.s.b.consoleOf(h, hf.id)
	if c == "" {
		return
	}
	if hf.consoles == nil {
		hf.consoles = map[string]string{}
	}
	for _, boot := range pslogBoots(c) {
		key := hf.s.b.Host(h).Name + "/" + boot
		if len(c) > len(hf.consoles[key]) {
			hf.consoles[key] = c
		}
	}
}

// failover waits for the server to run and write on another host than
// ft.oldHost, records the figures and moves hf.host there. logs are the
// daemons' log sizes at ft.t0.
func (hf *hostFail) failover(name string, ft *failoverTimes, api int, token string, logs map[int]int64) error {
	err := hf.watchFailover(hf.s.ctx, ft, api, token, hf.boots, 4*time.Minute)
	ft.down, ft.fenced = hf.s.b.verdicts(logs, hf.s.b.Host(ft.oldHost).Name, ft.t0)
	fmt.Fprintf(hf.s.out, "%s: %s\n", name, ft)
	if err != nil {
		return err
	}
	hf.cases = append(hf.cases, hfCase{name: name, ft: ft})
	hf.boots = append(hf.boots, ft.newBoot)
	hf.host = ft.newHost
	if others := hf.s.b.qemuProcs(hf.id); len(others[ft.oldHost]) > 0 {
		return fmt.Errorf("the server's QEMU still runs on the failed host %s: %v", hf.s.b.Host(ft.oldHost).Name, others[ft.oldHost])
	}
	return nil
}

// serverQEMU returns the one QEMU of the server on host h.
func (hf *hostFail) serverQEMU(h int) (int, error) {
	all := hf.s.b.qemuProcs(hf.id)
	if len(all[h]) != 1 {
		return 0, fmt.Errorf("QEMU of %s per host = %v; want one on %s", hf.id, all, hf.s.b.Host(h).Name)
	}
	for k, pids := range all {
		if k != h && len(pids) > 0 {
			return 0, fmt.Errorf("QEMU of %s per host = %v; want one, on %s", hf.id, all, hf.s.b.Host(h).Name)
		}
	}
	return all[h][0], nil
}

// adminToken is an admin token from host h's API.
func (hf *hostFail) adminToken(h int) (string, error) {
	hc, err := hf.s.boxHTTP()
	if err != nil {
		return "", err
	}
	tok, err := adminToken(hc, hf.s.b.Host(h).APIAddr, hf.s.b.AdminPassword())
	if err != nil {
		return "", fmt.Errorf("admin token from %s: %w", hf.s.b.Host(h).Name, err)
	}
	return tok, nil
}

// liveOther returns a host other than the given ones whose daemon runs.
func (hf *hostFail) liveOther(not ...int) int {
	for _, h := range hf.s.b.Hosts {
		if !slices.Contains(not, h.Index) && hf.s.b.Alive(h.Index) {
			return h.Index
		}
	}
	return 0
}

func (hf *hostFail) stepPowerOff(s *scenario, _ int) (string, error) {
	old := hf.host
	pid, err := hf.serverQEMU(old)
	if err != nil {
		return "", err
	}
	api := hf.liveOther(old)
	token, err := hf.adminToken(api)
	if err != nil {
		return "", err
	}
	ft := &failoverTimes{oldHost: old, oldPID: pid}
	h := s.b.Host(old)
	logs := s.b.logSizes()
	ft.t0 = time.Now()
	if err := ip(s.ctx, "-n", h.NS, "link", "set", "eth0", "down"); err != nil {
		return "", err
	}
	killed, err := s.b.freezeAndKill(old)
	fmt.Fprintf(s.out, "powered off %s in %.0f ms: link down, SIGKILLed %s\n", h.Name,
		float64(time.Since(ft.t0).Microseconds())/1000, strings.Join(killed, "; "))
	if err != nil {
		return "", err
	}
	hf.keepConsole(old)
	if err := hf.failover("power-off", ft, api, token, logs); err != nil {
		return h.Name, err
	}
	return h.Name, nil
}

// stepCheckLog reads the log from the NAS and checks it against every
// console seen: one writer at a time, one run per boot in the order the
// boots started, nothing a guest wrote lost.
func (hf *hostFail) stepCheckLog(s *scenario, _ int) (string, error) {
	for _, h := range s.b.Hosts {
		hf.keepConsole(h.Index)
	}
	for key, c := range hf.consoles {
		_ = os.WriteFile(filepath.Join(s.b.LogDir, "hostfail-console-"+strings.ReplaceAll(key, "/", "-")+".log"), []byte(c), 0o644)
	}
	raw, err := hf.readLog(s.ctx)
	if err != nil {
		return "NAS", err
	}
	recs, runs, err := checkPSLog(raw)
	if err != nil {
		return "NAS", err
	}
	if err := checkPSClaims(recs, hf.consoles); err != nil {
		return "NAS", err
	}
	var got []string
	var desc []string
	for _, r := range runs {
		got = append(got, r.Boot)
		desc = append(desc, fmt.Sprintf("boot %.8s slots %d-%d", r.Boot, r.First, r.Last))
	}
	if !slices.Equal(got, hf.boots) {
		return "NAS", fmt.Errorf("writers on the disk, in order = %v; want the boots %v", got, hf.boots)
	}
	fmt.Fprintf(s.out, "log on the NAS: %d records, %s\n", len(recs), strings.Join(desc, ", "))
	if len(recs) <= hf.records {
		return "NAS", fmt.Errorf("the log did not grow since the last check (%d records)", len(recs))
	}
	hf.records = len(recs)
	return "NAS", nil
}

// waitCaughtUp waits until host h's daemon log, from offset off, says its
// fence is in contact and caught up, and then until the server's files on
// h are gone (the host removed its copy of a server that moved).
func (hf *hostFail) waitCaughtUp(h int, off int64) error {
	s := hf.s
	err := s.eventually(2*time.Minute, func() error {
		if !strings.Contains(readFrom(s.b.Host(h).LogFile, off), "fence: in contact with the cluster and caught up") {
			return fmt.Errorf("%s has not caught up yet", s.b.Host(h).Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.eventually(time.Minute, func() error {
		if _, err := os.Stat(filepath.Join(s.b.Host(h).DataDir, "instances", hf.id)); err == nil {
			return fmt.Errorf("%s still keeps the files of %s, which runs on %s", s.b.Host(h).Name, hf.id, s.b.Host(hf.host).Name)
		}
		return nil
	})
}

// noSecondWriter checks that the server runs on hf.host only and that its
// writer there keeps writing.
func (hf *hostFail) noSecondWriter() error {
	if _, err := hf.serverQEMU(hf.host); err != nil {
		return err
	}
	before := len(pslogClaims(hf.s.b.consoleOf(hf.host, hf.id)))
	return hf.s.eventually(30*time.Second, func() error {
		if n := len(pslogClaims(hf.s.b.consoleOf(hf.host, hf.id))); n < before+10 {
			return fmt.Errorf("the writer on %s wrote %d records; want 10 more than %d", hf.s.b.Host(hf.host).Name, n, before)
		}
		return nil
	})
}

func (hf *hostFail) stepReturn(s *scenario, _ int) (string, error) {
	old := hf.cases[len(hf.cases)-1].ft.oldHost
	h := s.b.Host(old)
	if err := ip(s.ctx, "-n", h.NS, "link", "set", "eth0", "up"); err != nil {
		return h.Name, err
	}
	st, _ := os.Stat(h.LogFile)
	t0 := time.Now()
	if err := s.b.StartHost(s.ctx, old, "agent"); err != nil {
		return h.Name, err
	}
	if err := hf.waitCaughtUp(old, st.Size()); err != nil {
		return h.Name, err
	}
	fmt.Fprintf(s.out, "%s back and caught up after %.1fs; its copy of the server is gone\n", h.Name, time.Since(t0).Seconds())
	if err := s.eventually(time.Minute, func() error { return s.membersHealthy(old) }); err != nil {
		return h.Name, err
	}
	return h.Name, hf.noSecondWriter()
}

func (hf *hostFail) stepStop(s *scenario, _ int) (string, error) {
	old := hf.host
	pid, err := hf.serverQEMU(old)
	if err != nil {
		return "", err
	}
	api := hf.liveOther(old)
	token, err := hf.adminToken(api)
	if err != nil {
		return "", err
	}
	ft := &failoverTimes{oldHost: old, oldPID: pid}
	logs := s.b.logSizes()
	ft.t0 = time.Now()
	if err := s.b.SignalHost(old, syscall.SIGSTOP); err != nil {
		return "", err
	}
	hf.stopped = old
	fmt.Fprintf(s.out, "SIGSTOPped the daemon of %s (process group %d); its QEMU %d and fence guard keep running\n",
		s.b.Host(old).Name, s.b.Pid(old), pid)
	if err := hf.failover("daemon SIGSTOP", ft, api, token, logs); err != nil {
		return s.b.Host(old).Name, err
	}
	hf.keepConsole(old)
	// Never two writers: the guard killed the old QEMU before the new one
	// started (the old one was seen dead at oldDead, at most 20 ms after
	// it died; the new one's start is from /proc, to 10 ms).
	if err := hf.overlap(ft, old, "SIGSTOP"); err != nil {
		return s.b.Host(old).Name, err
	}
	guard, _ := os.ReadFile(filepath.Join(s.b.Host(old).DataDir, "fence-guard.log"))
	if !strings.Contains(string(guard), "killed the VM of an HA server") {
		return s.b.Host(old).Name, fmt.Errorf("the old QEMU died, but the fence guard of %s does not say it killed it:\n%s",
			s.b.Host(old).Name, tail(string(guard), 1500))
	}
	fmt.Fprintf(s.out, "old QEMU killed by the guard %.2fs after the SIGSTOP, %.2fs before the new QEMU started on %s\n",
		ft.oldDead.Seconds(), (ft.newStart - ft.oldDead).Seconds(), s.b.Host(ft.newHost).Name)
	return s.b.Host(old).Name, nil
}

func (hf *hostFail) stepCont(s *scenario, _ int) (string, error) {
	h := hf.stopped
	if h == 0 {
		return "", errors.New("no daemon is stopped")
	}
	st, err := os.Stat(s.b.Host(h).LogFile)
	if err != nil {
		return "", err
	}
	t0, off := time.Now(), st.Size()
	if err := s.b.SignalHost(h, syscall.SIGCONT); err != nil {
		return s.b.Host(h).Name, err
	}
	hf.stopped = 0
	if err := hf.waitCaughtUp(h, off); err != nil {
		return s.b.Host(h).Name, err
	}
	fmt.Fprintf(s.out, "%s resumed and caught up after %.1fs; its copy of the server is gone\n",
		s.b.Host(h).Name, time.Since(t0).Seconds())
	if strings.Contains(readFrom(s.b.Host(h).LogFile, off), "fence: no quorum contact for T_fence") {
		fmt.Fprintf(s.out, "%s fenced itself on SIGCONT before it renewed its lease, as designed\n", s.b.Host(h).Name)
	}
	return s.b.Host(h).Name, hf.noSecondWriter()
}

// routes adds or deletes ("add", "del") blackhole routes that cut host i
// off from the hosts from, both ways (neither side can send the other
// anything, not even replies); the NAS stays reachable.
func (hf *hostFail) routes(i int, from []int, verb string) error {
	for _, j := range from {
		for _, r := range [][2]int{{i, j}, {j, i}} {
			if err := ip(hf.s.ctx, "-n", hf.s.b.Host(r[0]).NS, "route", verb, "blackhole", hf.s.b.Host(r[1]).Addr+"/32"); err != nil {
				return err
			}
		}
	}
	return nil
}

// cutOff cuts the server's host off from the hosts from and waits for the
// failover; how names the case.
func (hf *hostFail) cutOff(s *scenario, from []int, name string) (string, error) {
	old := hf.host
	pid, err := hf.serverQEMU(old)
	if err != nil {
		return "", err
	}
	api := hf.liveOther(old)
	token, err := hf.adminToken(api)
	if err != nil {
		return "", err
	}
	ft := &failoverTimes{oldHost: old, oldPID: pid}
	logs := s.b.logSizes()
	ft.t0 = time.Now()
	if err := hf.routes(old, from, "add"); err != nil {
		return "", err
	}
	hf.cut, hf.cutFrom = old, from
	var names []string
	for _, j := range from {
		names = append(names, s.b.Host(j).Name)
	}
	fmt.Fprintf(s.out, "cut %s off from %s (blackhole routes both ways); it still reaches the NAS %s\n",
		s.b.Host(old).Name, strings.Join(names, ", "), s.b.NASAddr)
	if err := hf.failover(name, ft, api, token, logs); err != nil {
		return s.b.Host(old).Name, err
	}
	if err := hf.overlap(ft, old, "cut"); err != nil {
		return s.b.Host(old).Name, err
	}
	if !strings.Contains(readFrom(s.b.Host(old).LogFile, logs[old]), "fence: no quorum contact for T_fence") {
		return s.b.Host(old).Name, fmt.Errorf("the old QEMU died, but %s's log does not say its fence killed it", s.b.Host(old).Name)
	}
	fmt.Fprintf(s.out, "old QEMU killed by the cut-off host's fence (daemon or guard) %.2fs after the cut, %.2fs before the new QEMU started on %s\n",
		ft.oldDead.Seconds(), (ft.newStart - ft.oldDead).Seconds(), s.b.Host(ft.newHost).Name)
	hf.keepConsole(old)
	return s.b.Host(old).Name, nil
}

// stepPartition cuts the server's host off from the other hosts while it
// still reaches the NAS: the dangerous case, where only its own fence
// stops its guest from writing alongside the restarted one.
func (hf *hostFail) stepPartition(s *scenario, _ int) (string, error) {
	var others []int
	for _, h := range s.b.Hosts {
		if h.Index != hf.host {
			others = append(others, h.Index)
		}
	}
	return hf.cutOff(s, others, "partition")
}

// stepCutFromLeader cuts the server's host off from the leader alone: the
// third host still reaches both and vouches for it in gossip, but the
// host cannot renew its lease, fences itself, and the leader must restart
// its server elsewhere. The step before (a quick daemon restart on the
// server's host) leaves that host a follower; should it lead again all
// the same, the case run is the leader cut off from one follower: it
// keeps its quorum, so nothing may move (the writer keeps writing
// there). The output and the figures say which variant ran.
func (hf *hostFail) stepCutFromLeader(s *scenario, _ int) (string, error) {
	l, err := s.leader(hf.liveOther(hf.host))
	if err != nil {
		return "", err
	}
	if l != hf.host {
		fmt.Fprintf(s.out, "variant: the server's host %s follows; cutting it off from the leader %s\n",
			s.b.Host(hf.host).Name, s.b.Host(l).Name)
		return hf.cutOff(s, []int{l}, "cut from leader")
	}
	f := hf.liveOther(l)
	if err := hf.routes(l, []int{f}, "add"); err != nil {
		return "", err
	}
	hf.cut, hf.cutFrom = l, []int{f}
	hf.kept = append(hf.kept, fmt.Sprintf("cut from the leader: the other variant ran (the server's host %s led): the leader cut off from %s, nothing moved",
		s.b.Host(l).Name, s.b.Host(f).Name))
	fmt.Fprintf(s.out, "variant: the server's host %s leads: cut it off from %s only; nothing may move\n", s.b.Host(l).Name, s.b.Host(f).Name)
	pid, err := hf.serverQEMU(l)
	if err != nil {
		return "", err
	}
	// A negative check: it waits past T_fence + margin and a few ticks.
	time.Sleep(18 * time.Second)
	if got, err := hf.serverQEMU(l); err != nil || got != pid {
		return s.b.Host(l).Name, fmt.Errorf("the leader's server moved or restarted while only a follower was cut off: QEMU %d, now %d (%v)", pid, got, err)
	}
	return s.b.Host(l).Name, hf.noSecondWriter()
}

func (hf *hostFail) stepHeal(s *scenario, _ int) (string, error) {
	h := hf.cut
	if h == 0 {
		return "", errors.New("no host is cut off")
	}
	st, err := os.Stat(s.b.Host(h).LogFile)
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	if err := hf.routes(h, hf.cutFrom, "del"); err != nil {
		return s.b.Host(h).Name, err
	}
	hf.cut, hf.cutFrom = 0, nil
	if h == hf.host {
		// The leader cut off from one follower kept its server.
		return s.b.Host(h).Name, hf.noSecondWriter()
	}
	if err := hf.waitCaughtUp(h, st.Size()); err != nil {
		return s.b.Host(h).Name, err
	}
	fmt.Fprintf(s.out, "%s reconnected and caught up after %.1fs; its copy of the server is gone\n", s.b.Host(h).Name, time.Since(t0).Seconds())
	return s.b.Host(h).Name, hf.noSecondWriter()
}

func (hf *hostFail) stepDelete(s *scenario, h int) (string, error) {
	if _, err := s.osc(h, "server", "delete", "--wait", hf.id); err != nil {
		return "", err
	}
	if err := s.waitField(h, time.Minute, "volume", hf.vol, "status", "available"); err != nil {
		return "", err
	}
	if _, err := s.osc(h, "volume", "delete", hf.vol); err != nil {
		return "", err
	}
	s.forget("hf-vm", "boot volume")
	if _, err := stepDeleteAll(s, h); err != nil {
		return "", err
	}
	return "", s.eventually(time.Minute, func() error {
		if q := s.b.qemuProcs(hf.id); len(q) > 0 {
			return fmt.Errorf("QEMU of the deleted server still runs: %v", q)
		}
		if _, err := hf.diskFile(); err == nil {
			return fmt.Errorf("the deleted boot volume %s is still on the NAS", hf.vol)
		}
		return nil
	})
}

// figures formats the failover figures.
func (hf *hostFail) figures() string {
	var b strings.Builder
	secs := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", d.Seconds())
	}
	fmt.Fprintf(&b, "%-15s %-7s %9s %6s %7s %9s %8s %8s %8s %13s\n", "FAILURE", "FROM→TO", "OLD DEAD", "DOWN", "FENCED", "NEW QEMU", "ACTIVE", "READY", "WRITING", "GUEST UPTIME")
	for _, c := range hf.cases {
		ft := c.ft
		fmt.Fprintf(&b, "%-15s %-7s %9s %6s %7s %9s %8s %8s %8s %13s\n", c.name,
			fmt.Sprintf("h%d→h%d", ft.oldHost, ft.newHost), secs(ft.oldDead), secs(ft.down), secs(ft.fenced),
			secs(ft.newStart), secs(ft.active), secs(ft.ready), secs(ft.writing), cmpOr(ft.uptime, "-"))
	}
	for _, k := range hf.kept {
		b.WriteString(k + "\n")
	}
	b.WriteString("(seconds from the power-off, SIGSTOP, SIGKILL or cut; T_fence 10 s, fenced after 12.5 s of silence;\n" +
		" GUEST UPTIME is the new guest's own uptime at READY: the rest of NEW QEMU→READY is firmware and GRUB under TCG)\n")
	return b.String()
}
