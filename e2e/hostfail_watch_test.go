package e2e

// Figures and process facts of a host-failure case in the box: when the
// failed host's QEMU died, when a QEMU of the server started on another
// host (from /proc, to 10 ms), when the API showed the server ACTIVE
// there, when its guest was READY and when it wrote its log again.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// failoverTimes are one failover's milestones, measured from t0 (the
// power-off or the SIGSTOP).
type failoverTimes struct {
	t0      time.Time
	oldHost int // the failed host (1-based)
	oldPID  int // its QEMU of the server

	oldAlive time.Duration // last poll that saw the old QEMU alive
	oldDead  time.Duration // first poll that saw it dead (0 = not seen)

	newHost  int           // where the server runs now
	newPID   int           // its QEMU there
	newStart time.Duration // that QEMU's start (from /proc)
	active   time.Duration // the API shows it ACTIVE on newHost
	ready    time.Duration // PEERSTACK-READY on its new console
	writing  time.Duration // its first log record on the new console
	newBoot  string        // the guest boot id of the new writer
	uptime   string        // the new guest's own uptime at READY (seconds)
	down     time.Duration // a leader's "down" verdict (from its log)
	fenced   time.Duration // a leader's "fenced" verdict (from its log)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's start time (100
// on every Linux architecture peerstack runs on).
const clockTicks = 100

// procStarted returns when pid started, on this process's clock.
func procStarted(pid int) (time.Time, bool) {
	_, ticks, ok := procStat(pid)
	if !ok {
		return time.Time{}, false
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, false
	}
	now := time.Now()
	age := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/clockTicks
	return now.Add(-age), true
}

// apiServer asks host h's API for the server's status and host.
func apiServer(hc *http.Client, api, token, id string) (status, host string, err error) {
	req, _ := http.NewRequest("GET", "https://"+api+"/compute/v2.1/servers/"+id, nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var body struct {
		Server struct {
			Status string `json:"status"`
			Host   string `json:"OS-EXT-SRV-ATTR:host"`
		} `json:"server"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET server %s: status %d", id, resp.StatusCode)
	}
	return body.Server.Status, body.Server.Host, nil
}

// watchFailover follows server id after its host oldHost failed at t0
// until a guest on another host has written its log, or timeout. api is
// the host whose API is asked (a live one, with an admin token taken
// before t0); known are the boot ids of earlier writers. The old QEMU is
// polled every 20 ms, the rest every 100 ms; the API in a goroutine of
// its own, so a slow answer during an election delays nothing else.
func (hf *hostFail) watchFailover(ctx context.Context, ft *failoverTimes, api int, token string, known []string, timeout time.Duration) error {
	b := hf.s.b
	hc, err := hf.s.boxHTTP()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, ft.t0.Add(timeout))
	defer cancel()
	active := make(chan time.Duration, 1)
	go func() {
		for ctx.Err() == nil {
			st, host, err := apiServer(hc, b.Host(api).APIAddr, token, hf.id)
			if err == nil && st == "ACTIVE" && host != "" && host != b.Host(ft.oldHost).Name {
				active <- time.Since(ft.t0)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	var lastPoll time.Time
	for {
		now := time.Now()
		el := now.Sub(ft.t0)
		if ft.oldDead == 0 {
			if procRunning(ft.oldPID) {
				ft.oldAlive = el
			} else {
				ft.oldDead = el
			}
		}
		select {
		case d := <-active:
			ft.active = d
		default:
		}
		if now.Sub(lastPoll) >= 100*time.Millisecond {
			lastPoll = now
			hf.pollNew(ft, known, el)
			if ft.oldDead != 0 && ft.newPID != 0 && ft.active != 0 && ft.writing != 0 && ft.ready != 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w: %s", timeout, ctx.Err(), ft.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pollNew looks for the server's QEMU on another host than the failed
// one and, once found, at its console: the new writer's boot id, READY
// and its first record.
func (hf *hostFail) pollNew(ft *failoverTimes, known []string, el time.Duration) {
	b := hf.s.b
	if ft.newPID == 0 {
		for h, pids := range b.qemuProcs(hf.id) {
			if h == ft.oldHost || len(pids) == 0 {
				continue
			}
			ft.newHost, ft.newPID = h, pids[0]
			if at, ok := procStarted(pids[0]); ok {
				ft.newStart = at.Sub(ft.t0)
			}
		}
	}
	if ft.newHost == 0 || (ft.ready != 0 && ft.writing != 0) {
		return
	}
	c := b.consoleOf(ft.newHost, hf.id)
	if ft.newBoot == "" {
		for _, boot := range pslogBoots(c) {
			if !slices.Contains(known, boot) {
				ft.newBoot = boot
			}
		}
	}
	if ft.newBoot == "" {
		return
	}
	// READY comes before the writer's first line (the writer starts in the
	// background of the user data): look after the guest's last boot.
	if m := readyRE.FindStringSubmatch(c[max(strings.LastIndex(c, "PEERSTACK-BOOT"), 0):]); ft.ready == 0 && m != nil {
		ft.ready, ft.uptime = el, m[1]
	}
	if ft.writing == 0 && strings.Contains(c[strings.Index(c, "boot="+ft.newBoot):], "guestio log slot=") {
		ft.writing = el
	}
}

// readyRE is the guest's READY line, with its uptime.
var readyRE = regexp.MustCompile(`PEERSTACK-READY hostname=\S+ uptime=([0-9.]+)`)

// verdicts finds, in the daemons' logs written since offs (per host), when
// a leader declared host down and fenced, relative to t0.
func (b *Box) verdicts(offs map[int]int64, host string, t0 time.Time) (down, fenced time.Duration) {
	for h, off := range offs {
		for _, line := range strings.Split(readFrom(b.Host(h).LogFile, off), "\n") {
			if !strings.Contains(line, "host="+host) || !strings.HasPrefix(line, "time=") {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(strings.Fields(line)[0], "time="))
			if err != nil {
				continue
			}
			switch {
			case strings.Contains(line, `msg="host failure: host is down"`) && down == 0:
				down = at.Sub(t0)
			case strings.Contains(line, `msg="host failure: host is fenced`) && fenced == 0:
				fenced = at.Sub(t0)
			}
		}
	}
	return down, fenced
}

// logSizes returns the size of every host's daemon log.
func (b *Box) logSizes() map[int]int64 {
	out := map[int]int64{}
	for _, h := range b.Hosts {
		if st, err := os.Stat(h.LogFile); err == nil {
			out[h.Index] = st.Size()
		}
	}
	return out
}

// String is the figures as one line.
func (ft *failoverTimes) String() string {
	secs := func(d time.Duration) string {
		if d == 0 {
			return "not seen"
		}
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("old QEMU %d on h%d dead %s (alive at %s); down %s, fenced %s; QEMU %d started on h%d %s; API ACTIVE there %s; guest READY %s (its uptime %ss); writing again %s",
		ft.oldPID, ft.oldHost, secs(ft.oldDead), secs(ft.oldAlive), secs(ft.down), secs(ft.fenced), ft.newPID, ft.newHost, secs(ft.newStart),
		secs(ft.active), secs(ft.ready), cmpOr(ft.uptime, "?"), secs(ft.writing))
}

// freezeAndKill SIGSTOPs then SIGKILLs every process of host i: those in
// its network namespace (daemon, fence guard, QEMU) and any with its data
// dir on the command line, until none is left; it returns what it killed.
func (b *Box) freezeAndKill(i int) ([]string, error) {
	h := b.Host(i)
	nsLink := netnsLink(h.NS)
	if nsLink == "" {
		return nil, fmt.Errorf("%s: no namespace", h.NS)
	}
	var killed []string
	seen := map[int]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ps := procsMatching(func(cmdline, netns string) bool {
			return netns == nsLink || strings.Contains(cmdline, h.DataDir+"/") || strings.HasSuffix(cmdline, h.DataDir)
		})
		var live []proc
		for _, p := range ps {
			if procRunning(p.pid) {
				live = append(live, p)
			}
		}
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("%s: %d processes survive SIGKILL, e.g. %d %s", h.Name, len(live), live[0].pid, live[0].cmdline)
		}
		// Stop them all first, so none reacts to another's death (a power
		// cut is instant), then kill them.
		for _, p := range live {
			_ = syscall.Kill(p.pid, syscall.SIGSTOP)
		}
		for _, p := range live {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			if !seen[p.pid] {
				seen[p.pid] = true
				killed = append(killed, fmt.Sprintf("%d %s", p.pid, tail(p.cmdline, 60)))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.KillHost(i) // reaps the daemon (our child) and waits for it
	return killed, nil
}

// overlap checks the timing evidence of never two writers: the new QEMU
// must have started after the old one was last seen alive. The old one
// died between oldAlive and oldDead (the 20 ms poll can stall under
// load); a new start inside that window proves nothing either way, and is
// reported: the disk log's single-writer check decides then.
func (hf *hostFail) overlap(ft *failoverTimes, old int, what string) error {
	s := hf.s
	switch {
	case ft.newStart == 0:
		return fmt.Errorf("the new QEMU of %s on %s: no start time read from /proc", hf.id, s.b.Host(ft.newHost).Name)
	case ft.oldDead == 0 || ft.oldAlive >= ft.newStart:
		return fmt.Errorf("two QEMUs of %s: the old one on %s was last seen alive %.2fs after the %s "+
			"and dead at %.2fs, the new one on %s started at %.2fs",
			hf.id, s.b.Host(old).Name, ft.oldAlive.Seconds(), what, ft.oldDead.Seconds(), s.b.Host(ft.newHost).Name, ft.newStart.Seconds())
	case ft.oldDead >= ft.newStart:
		fmt.Fprintf(s.out, "the old QEMU died between %.2fs and %.2fs, the new one started at %.2fs: inconclusive by timing (a stalled poll); the disk log decides\n",
			ft.oldAlive.Seconds(), ft.oldDead.Seconds(), ft.newStart.Seconds())
	}
	return nil
}
