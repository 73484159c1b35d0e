package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process seen in /proc.
type proc struct {
	pid     int
	pgid    int
	cmdline string
	netns   string // "net:[inode]"
}

// procsMatching scans /proc; match gets the command line (NULs as spaces)
// and the net namespace link.
func procsMatching(match func(cmdline, netns string) bool) []proc {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a kernel thread / zombie
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
		netns, _ := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net"))
		if !match(cmdline, netns) {
			continue
		}
		p := proc{pid: pid, cmdline: cmdline, netns: netns}
		if pg, err := syscall.Getpgid(pid); err == nil {
			p.pgid = pg
		}
		out = append(out, p)
	}
	return out
}

// netnsLink returns "net:[inode]" of a named namespace, or "".
func netnsLink(name string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		return ""
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// runProcs lists the processes of a run: in one of its namespaces, in one
// of its process groups, or with its run directory on the command line
// (QEMU runs in its own session and outlives its daemon).
func runProcs(st boxState) []proc {
	nets := map[string]bool{}
	for _, ns := range st.Netns {
		if l := netnsLink(ns); l != "" {
			nets[l] = true
		}
	}
	pgids := map[int]bool{}
	for _, p := range st.PGIDs {
		pgids[p] = true
	}
	all := procsMatching(func(cmdline, netns string) bool {
		return nets[netns] || (st.RunDir != "" && strings.Contains(cmdline, st.RunDir+"/"))
	})
	for _, p := range procsMatching(func(string, string) bool { return true }) {
		if pgids[p.pgid] && p.pgid != 0 {
			all = append(all, p)
		}
	}
	return all
}

// teardown kills every process of the run, deletes its namespaces and
// links, copies console logs into logs/ and removes the run directory but
// logs/. It is idempotent.
func teardown(ctx context.Context, st boxState, log io.Writer) error {
	say := func(format string, a ...any) {
		if log != nil {
			fmt.Fprintf(log, "box %s: "+format+"\n", append([]any{st.Prefix}, a...)...)
		}
	}
	saveConsoles(st.RunDir)
	var errs []error
	deadline := time.Now().Add(15 * time.Second)
	for {
		ps := runProcs(st)
		if len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("%d processes survive SIGKILL, e.g. %d %s", len(ps), ps[0].pid, ps[0].cmdline))
			break
		}
		for _, p := range ps {
			if p.pgid > 1 && p.pgid != syscall.Getpgrp() {
				_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
			}
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, ns := range st.Netns {
		if netnsLink(ns) == "" {
			continue
		}
		if err := ip(ctx, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range st.Links {
		if _, err := sh(ctx, "ip", "link", "show", l); err != nil {
			continue // already gone (a veth goes with its peer's namespace)
		}
		if err := ip(ctx, "link", "del", l); err != nil {
			// A namespace's veth peer is destroyed asynchronously after
			// `netns del`: it may vanish between the check and the delete.
			if _, gone := sh(ctx, "ip", "link", "show", l); gone == nil {
				errs = append(errs, err)
			}
		}
	}
	if st.RunDir != "" && strings.HasPrefix(st.RunDir, BoxBaseDir+"/") {
		ents, _ := os.ReadDir(st.RunDir)
		for _, e := range ents {
			if e.Name() == "logs" || e.Name() == "state.json" {
				continue
			}
			if err := os.RemoveAll(filepath.Join(st.RunDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			_ = os.Remove(filepath.Join(st.RunDir, "state.json"))
		}
	}
	if len(errs) == 0 {
		say("removed (logs kept in %s)", filepath.Join(st.RunDir, "logs"))
	}
	return errors.Join(errs...)
}

// saveConsoles copies every console.log and qemu.log under the run's host
// data dirs into logs/, named <host>-<instance dir>-<file>.
func saveConsoles(runDir string) {
	if runDir == "" {
		return
	}
	logs := filepath.Join(runDir, "logs")
	_ = filepath.Walk(runDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if info.IsDir() && (p == logs || filepath.Base(p) == "export") {
			return filepath.SkipDir
		}
		base := filepath.Base(p)
		if info.IsDir() || (base != "console.log" && base != "qemu.log") {
			return nil
		}
		rel, _ := filepath.Rel(runDir, p)
		parts := strings.Split(rel, string(filepath.Separator))
		name := parts[0] + "-" + filepath.Base(filepath.Dir(p)) + "-" + base
		if data, err := os.ReadFile(p); err == nil {
			_ = os.WriteFile(filepath.Join(logs, name), data, 0o644)
		}
		return nil
	})
}

// Down removes the box: processes, namespaces, devices and files (logs
// stay in LogDir).
func (b *Box) Down(ctx context.Context) error {
	b.mu.Lock()
	st := b.state
	b.mu.Unlock()
	for i := range b.Hosts {
		b.KillHost(i + 1)
	}
	for _, h := range b.Hosts {
		removeGuardFiles(h.DataDir)
	}
	return teardown(ctx, st, b.log)
}

// ownerAlive reports whether the process that started a run still runs.
func ownerAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	// A reused PID is some other program; the owner is a test binary.
	arg0 := strings.SplitN(string(raw), "\x00", 2)[0]
	return strings.HasSuffix(arg0, ".test")
}

// CleanStaleBoxes removes the runs whose owner died (crashed tests); with
// demos it also removes demo runs (`make demo-down`). It then deletes
// namespaces and links named like a box's that no live run claims, and the
// logs of finished runs older than two days.
func CleanStaleBoxes(ctx context.Context, log io.Writer, demos bool) error {
	var errs []error
	live := map[string]bool{}
	for _, st := range boxStates() {
		stale := (st.Kind == "demo" && demos) || (st.Kind != "demo" && !ownerAlive(st.Owner))
		if !stale {
			live[st.Prefix] = true
			continue
		}
		if err := teardown(ctx, st, log); err != nil {
			errs = append(errs, err)
		}
	}
	orphan := boxState{}
	if out, err := sh(ctx, "ip", "netns", "list"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && boxNameRE.MatchString(f[0]) && !live[f[0][:6]] {
				orphan.Netns = append(orphan.Netns, f[0])
			}
		}
	}
	if out, err := sh(ctx, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
			if boxNameRE.MatchString(name) && !live[name[:6]] {
				orphan.Links = append(orphan.Links, name)
			}
		}
	}
	if len(orphan.Netns)+len(orphan.Links) > 0 {
		orphan.Prefix = "orphans"
		if err := teardown(ctx, orphan, log); err != nil {
			errs = append(errs, err)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(BoxBaseDir, BoxBasePrefix+"*"))
	for _, d := range dirs {
		if live[filepath.Base(d)] {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "state.json")); err == nil {
			continue
		}
		if info, err := os.Stat(d); err == nil && time.Since(info.ModTime()) > 48*time.Hour {
			_ = os.RemoveAll(d)
		}
	}
	return errors.Join(errs...)
}
