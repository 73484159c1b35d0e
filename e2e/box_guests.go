package e2e

// Facts about a box's guests read from the machine: the QEMU processes of
// a server in every host's namespace, a server's console log on a host.
// The host-failure box test and the fault suite share them.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// qemuProcs returns, per host index, the QEMU processes of server id that
// run in that host's network namespace (zombies excluded).
func (b *Box) qemuProcs(id string) map[int][]int {
	nets := map[string]int{}
	for _, h := range b.Hosts {
		if l := netnsLink(h.NS); l != "" {
			nets[l] = h.Index
		}
	}
	out := map[int][]int{}
	for _, p := range procsMatching(func(cmdline, netns string) bool {
		return nets[netns] != 0 && strings.Contains(cmdline, id) &&
			strings.HasPrefix(filepath.Base(strings.Fields(cmdline)[0]), "qemu-system")
	}) {
		if procRunning(p.pid) {
			out[nets[p.netns]] = append(out[nets[p.netns]], p.pid)
		}
	}
	return out
}

// procStat returns the state letter and the start time (clock ticks since
// boot) of pid from /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64) // field 22: starttime
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], st, true
}

// procRunning reports whether pid exists and is not a zombie (a SIGKILLed
// process whose parent is stopped stays a zombie: it writes nothing).
func procRunning(pid int) bool {
	st, _, ok := procStat(pid)
	return ok && st != 'Z' && st != 'X'
}

// consoleOf reads server id's console log on host h ("" if none).
func (b *Box) consoleOf(h int, id string) string {
	data, _ := os.ReadFile(filepath.Join(b.Host(h).DataDir, "instances", id, "console.log"))
	return string(data)
}

// QEMUProcs returns, per host index, the pids of server id's QEMU
// processes running in that host's network namespace.
func (b *Box) QEMUProcs(id string) map[int][]int { return b.qemuProcs(id) }

// Console returns server id's console log on host h ("" if none).
func (b *Box) Console(h int, id string) string { return b.consoleOf(h, id) }
