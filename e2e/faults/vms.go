package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/peerstack/peerstack/e2e"
)

// The guests' side (FAULTS_VMS=N, 1 by default, 0 for none): N HA servers
// booted from volumes on the NAS, each guest appending the single-writer
// log to its boot disk (`guestio log`, as in the host-failure box test).
// While the faults run, a sampler lists every server's QEMU processes in
// all the hosts' namespaces every 200 ms: never more than one per server.
// After the heal each server must be ACTIVE with one QEMU and write new
// records, no writer may have failed, and its log, read from the NAS,
// must show one writer at a time, on the boot disk, with every record a
// console claimed still on the disk.

// vmSampleEvery is the sampler's period.
const vmSampleEvery = 200 * time.Millisecond

// vmServer is one HA server of the run.
type vmServer struct {
	name, id, vol string
}

// vmSet is the run's servers and what the sampler saw.
type vmSet struct {
	b     *e2e.Box
	dir   string // scratch (user data, the log read back)
	logf  func(format string, a ...any)
	slots int // each log's region
	srv   []vmServer

	mu      sync.Mutex
	samples int
	none    map[string]int               // samples without a QEMU, per server
	twice   []string                     // samples with two or more, described
	seen    map[string]*e2e.GuestLogSeen // server → what its consoles showed
	healed  map[string]int               // server → its last slot claimed at the heal
}

// errNoWait is a condition that will not come true by waiting longer.
var errNoWait = errors.New("no use waiting")

// startVMs uploads the guest image and boots n servers from 1 GB NFS
// volumes (HA by default), and waits until each guest writes its log,
// its region sized for a run of about d.
func startVMs(ctx context.Context, b *e2e.Box, n int, d time.Duration, logf func(string, ...any)) (_ *vmSet, err error) {
	img := filepath.Join(e2e.RepoRoot(), "build", "guest.qcow2")
	if _, err := os.Stat(img); err != nil {
		return nil, fmt.Errorf("guest image missing (run `make guest-image`): %w", err)
	}
	dir, err := os.MkdirTemp("", "peerstack-faults-vms-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	// The writers run through the setup, the faults, the heal and the
	// checks (up to 15 minutes more when all goes slowly).
	vs := &vmSet{b: b, dir: dir, logf: logf, slots: e2e.GuestLogSlots(d + 15*time.Minute),
		none: map[string]int{}, seen: map[string]*e2e.GuestLogSeen{}, healed: map[string]int{}}
	t0 := time.Now()
	osc := func(args ...string) (string, error) {
		out, err := b.OSC(ctx, 1, args...)
		return strings.TrimSpace(out), err
	}
	imgID, err := osc("image", "create", "--disk-format", "qcow2", "--container-format", "bare", "--public",
		"--file", img, "-f", "value", "-c", "id", "faults-guest")
	if err != nil {
		return nil, err
	}
	if err := vs.wait(ctx, 2*time.Minute, "image "+imgID+" active", func() (bool, error) {
		st, err := osc("image", "show", "-f", "value", "-c", "status", imgID)
		return st == "active", err
	}); err != nil {
		return nil, err
	}
	if _, err := osc("flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1", "faults.tiny"); err != nil {
		return nil, err
	}
	ud := filepath.Join(dir, "userdata")
	if err := os.WriteFile(ud, []byte(e2e.GuestLogUserData(vs.slots)), 0o644); err != nil {
		return nil, err
	}
	for k := range n {
		name := fmt.Sprintf("faults-vm%d", k)
		id, err := osc("server", "create", "--flavor", "faults.tiny", "--image", "faults-guest", "--boot-from-volume", "1",
			"--user-data", ud, "-f", "value", "-c", "id", name)
		if err != nil {
			return nil, err
		}
		vs.srv = append(vs.srv, vmServer{name: name, id: id})
		vs.seen[id] = e2e.NewGuestLogSeen()
	}
	for i, s := range vs.srv {
		if err := vs.wait(ctx, 5*time.Minute, s.name+" ACTIVE", func() (bool, error) {
			st, err := osc("server", "show", "-f", "value", "-c", "status", s.id)
			if st == "ERROR" {
				return false, fmt.Errorf("%w: %s is in ERROR", errNoWait, s.name)
			}
			return st == "ACTIVE", err
		}); err != nil {
			return nil, err
		}
		var show struct {
			Volumes []struct {
				ID string `json:"id"`
			} `json:"volumes_attached"`
		}
		out, err := osc("server", "show", "-f", "json", s.id)
		if err == nil {
			err = json.Unmarshal([]byte(out), &show)
		}
		if err != nil || len(show.Volumes) != 1 {
			return nil, fmt.Errorf("%s: boot volume: %v (%s)", s.name, err, out)
		}
		vs.srv[i].vol = show.Volumes[0].ID
		if _, err := b.VolumeFile(vs.srv[i].vol); err != nil {
			return nil, err
		}
	}
	// Writing: each guest's console shows its writer and a few records.
	for _, s := range vs.srv {
		if err := vs.wait(ctx, 5*time.Minute, s.name+"'s guest writing its log", func() (bool, error) {
			for _, h := range b.Hosts {
				c := b.Console(h.Index, s.id)
				if strings.Contains(c, "PEERSTACK-HOSTFAIL") || strings.Contains(c, "guestio:") {
					return false, fmt.Errorf("%w: %s's log writer failed: %s", errNoWait, s.name, trim(c[max(0, len(c)-600):], 600))
				}
				if len(e2e.GuestLogBoots(c)) == 1 && e2e.GuestLogClaims(c) >= 10 {
					return true, nil
				}
			}
			return false, nil
		}); err != nil {
			return nil, err
		}
	}
	logf("%d HA servers booted from NFS volumes, their guests writing, after %.1fs", n, time.Since(t0).Seconds())
	return vs, nil
}

// wait polls ok every 2 s until it is true, d passes, or it fails with
// errNoWait.
func (vs *vmSet) wait(ctx context.Context, d time.Duration, what string, ok func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		done, err := ok()
		if done {
			return nil
		}
		if errors.Is(err, errNoWait) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: not within %s: %v", what, d, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// sample lists every server's QEMUs across the hosts' namespaces once;
// every 25th sample also keeps the consoles (a host that returns removes
// the files of a server that moved).
func (vs *vmSet) sample(t0 time.Time) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.samples++
	for _, s := range vs.srv {
		procs := vs.b.QEMUProcs(s.id)
		total := 0
		for _, p := range procs {
			total += len(p)
		}
		switch {
		case total == 0:
			vs.none[s.name]++
		case total > 1:
			var per []string
			for h, p := range procs {
				per = append(per, fmt.Sprintf("%s %v", vs.b.Host(h).Name, p))
			}
			sort.Strings(per)
			vs.twice = append(vs.twice, fmt.Sprintf("%s at %.1fs: %d QEMUs (%s)", s.name, time.Since(t0).Seconds(), total, strings.Join(per, "; ")))
		}
	}
	if vs.samples%25 == 1 {
		vs.keepConsoles()
	}
}

// keepConsoles takes in every host's console of every server (vs.mu held).
func (vs *vmSet) keepConsoles() {
	for _, s := range vs.srv {
		for _, h := range vs.b.Hosts {
			if c := vs.b.Console(h.Index, s.id); c != "" {
				vs.seen[s.id].Add(h.Name, c)
			}
		}
	}
}

// markHeal notes how far each log was claimed written when the faults
// were healed: the check wants records after that.
func (vs *vmSet) markHeal() {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.keepConsoles()
	for _, s := range vs.srv {
		vs.healed[s.id] = vs.seen[s.id].LastSlot()
	}
}

// sampler samples until ctx ends.
func (vs *vmSet) sampler(ctx context.Context, t0 time.Time) {
	tick := time.NewTicker(vmSampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			vs.sample(t0)
		}
	}
}

// check waits (3 minutes at most) until every server is ACTIVE with one
// QEMU and (2 minutes more at most) until its guest claims a record
// written after the heal, then reads each log from the NAS and checks it
// against everything its consoles showed; stop ends the sampler once the
// servers are settled. It returns the violations and a summary line.
func (vs *vmSet) check(ctx context.Context, stop func()) ([]string, string) {
	var bad []string
	t0 := time.Now()
	for _, s := range vs.srv {
		err := vs.wait(ctx, 3*time.Minute, s.name+" ACTIVE with one QEMU after the heal", func() (bool, error) {
			st, err := vs.b.OSC(ctx, 1, "server", "show", "-f", "value", "-c", "status", s.id)
			if err != nil {
				return false, err
			}
			n := 0
			for _, p := range vs.b.QEMUProcs(s.id) {
				n += len(p)
			}
			if st = strings.TrimSpace(st); st != "ACTIVE" || n != 1 {
				return false, fmt.Errorf("status %s, %d QEMUs", st, n)
			}
			return true, nil
		})
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		err = vs.wait(ctx, 2*time.Minute, s.name+"'s guest writing after the heal", func() (bool, error) {
			vs.mu.Lock()
			defer vs.mu.Unlock()
			vs.keepConsoles()
			g := vs.seen[s.id]
			if p := g.Problems(); len(p) > 0 {
				return false, fmt.Errorf("%w: a writer failed: %s", errNoWait, strings.Join(p, "; "))
			}
			if last := g.LastSlot(); last <= vs.healed[s.id] {
				return false, fmt.Errorf("last record claimed at slot %d, at the heal %d", last, vs.healed[s.id])
			}
			return true, nil
		})
		if err != nil {
			bad = append(bad, err.Error())
		}
	}
	stop()
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.keepConsoles()
	var desc []string
	for _, s := range vs.srv {
		file, err := vs.b.VolumeFile(s.vol)
		var raw []byte
		if err == nil {
			raw, err = e2e.ReadGuestLog(ctx, file, vs.dir, vs.slots)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: read its log from the NAS: %v", s.name, err))
			continue
		}
		g := vs.seen[s.id]
		recs, boots, err := e2e.CheckGuestLogSeen(raw, g)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: log on the NAS: %v", s.name, err))
		case recs <= vs.healed[s.id]+1:
			bad = append(bad, fmt.Sprintf("%s: %d records on the NAS, %d claimed by the heal: none written after it", s.name, recs, vs.healed[s.id]+1))
		}
		desc = append(desc, fmt.Sprintf("%s %d records (%d by the heal) by %d boot(s) in %d slots, %d samples without QEMU",
			s.name, recs, vs.healed[s.id]+1, len(boots), vs.slots, vs.none[s.name]))
	}
	for _, t := range vs.twice {
		bad = append(bad, "two QEMUs of one server: "+t)
	}
	sum := fmt.Sprintf("guests (at most one QEMU per server at each of %d samples every %s; one writer per log, on its boot disk, writing after the heal): %d violations; %s; checked %.1fs after heal\n",
		vs.samples, vmSampleEvery, len(bad), strings.Join(desc, "; "), time.Since(t0).Seconds())
	_ = os.RemoveAll(vs.dir)
	return bad, sum
}
