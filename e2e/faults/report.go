package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// check runs every checker on the history and the final states, fills
// Failures and Summary, and on a failure writes the history, the faults,
// the final states, the visualization, the daemons' data dirs and logs
// into a new directory named in the first failure line.
func (r *Result) check(w *workload, states []finalState, dataDirs []string, logf func(string, ...any)) {
	dir, err := os.MkdirTemp("", "peerstack-faults-")
	if err != nil {
		r.Failures = append(r.Failures, fmt.Sprintf("history directory: %v", err))
		dir = os.TempDir()
	}
	restarts := map[int][]int64{}
	for _, ev := range r.Nemeses {
		if ev.Kind == nemCrash || ev.Kind == nemLeaderKill {
			for _, h := range ev.Hosts {
				var i int
				fmt.Sscanf(h, "h%d", &i)
				restarts[i] = append(restarts[i], int64(ev.Start)) // killed just before
			}
		}
	}
	linSummary, lin := checkLinearizable(r.Ops, initDesc, dir, 2*time.Minute)
	vers, staleAfterRestart := checkVersions(r.Ops, restarts)
	vers = append(vers, checkMinority(r.Ops, r.Nemeses)...)
	var res, hosts []string
	if len(states) > 0 {
		res = checkResources(r.Ops, w.prefix, states[0])
		res = append(res, checkTags(r.Ops, w.tagNets, states[0])...)
		hosts = compareHosts(states)
	} else {
		hosts = []string{"no final state could be read"}
	}
	r.Failures = append(r.Failures, lin...)
	r.Failures = append(r.Failures, vers...)
	r.Failures = append(r.Failures, res...)
	r.Failures = append(r.Failures, hosts...)
	r.Failures = append(r.Failures, w.stateCheck...)
	r.Failures = append(r.Failures, w.nasCheck...)
	r.Failures = append(r.Failures, w.hostCheck...)
	// A restarted host serves only once it has caught up: an answer older
	// than it gave before, or a valid token refused, is a failure.
	if staleAfterRestart > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d answers older than the same host gave before it restarted", staleAfterRestart))
	}
	if n := r.count401(); n > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d valid tokens refused (401)", n))
	}
	r.Summary = r.table(linSummary, len(lin), len(vers), len(res), len(hosts), states)
	r.Summary += fmt.Sprintf("after restarts: %d answers older than the same host gave before it restarted; %d valid tokens refused (401)\n",
		staleAfterRestart, r.count401())
	r.Summary += w.stateSummary
	r.Summary += w.nasSummary
	r.Summary += w.hostSummary
	if len(r.Failures) == 0 {
		_ = os.RemoveAll(dir)
		return
	}
	write := func(name string, v any) {
		data, err := json.MarshalIndent(v, "", "  ")
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), data, 0o644)
		}
		if err != nil {
			logf("write %s: %v", name, err)
		}
	}
	write("history.json", r.Ops)
	write("nemeses.json", r.Nemeses)
	write("final.json", states)
	_ = os.WriteFile(filepath.Join(dir, "failures.txt"), []byte(strings.Join(r.Failures, "\n")+"\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(r.Summary), 0o644)
	// The daemons' data dirs and logs join the history, so the folder is
	// the whole evidence (the box removes its data dirs at teardown).
	for _, d := range append(dataDirs, r.LogDir) {
		if out, err := exec.Command("cp", "-a", d, dir).CombinedOutput(); err != nil {
			logf("copy %s: %v: %s", d, err, out)
		}
	}
	r.Failures = append([]string{fmt.Sprintf("seed %d failed; history, faults, final states, visualization, data dirs and logs in %s",
		r.Seed, dir)}, r.Failures...)
}

// table summarises the run per fault kind: operations attempted and
// acknowledged while it was in effect, and how long writes took to come
// back after it healed.
func (r *Result) table(lin string, nLin, nVers, nRes, nHosts int, states []finalState) string {
	type row struct {
		ops, ok, fail, info int
		faults              int
		recovery            time.Duration // longest heal → first acknowledged write
	}
	rows := map[string]*row{}
	get := func(k string) *row {
		if rows[k] == nil {
			rows[k] = &row{}
		}
		return rows[k]
	}
	for _, op := range r.Ops {
		k := op.Nemesis
		if k == "" {
			k = "none"
		}
		x := get(k)
		x.ops++
		switch op.Outcome {
		case outOK:
			x.ok++
		case outFail:
			x.fail++
		default:
			x.info++
		}
	}
	writes := slices.DeleteFunc(slices.Clone(r.Ops), func(op Op) bool {
		return op.Outcome != outOK || op.Kind == opGet || op.Kind == opRead || op.Kind == opLRead
	})
	slices.SortFunc(writes, func(a, b Op) int { return int(a.Return - b.Return) })
	for _, ev := range r.Nemeses {
		x := get(ev.Kind)
		x.faults++
		for _, op := range writes {
			if op.Call >= int64(ev.Heal) {
				x.recovery = max(x.recovery, time.Duration(op.Return)-ev.Heal)
				break
			}
		}
	}
	var keys []string
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	fmt.Fprintf(&sb, "seed %d: %d operations, %d faults\n", r.Seed, len(r.Ops), len(r.Nemeses))
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault in effect\tfaults\tops\tok\trefused\tindeterminate\twrites back after heal")
	for _, k := range keys {
		x := rows[k]
		rec := "-"
		if x.faults > 0 {
			rec = fmt.Sprintf("%.1fs", x.recovery.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", k, x.faults, x.ops, x.ok, x.fail, x.info, rec)
	}
	_ = tw.Flush()
	kinds := map[string][2]int{}
	for _, op := range r.Ops {
		c := kinds[op.Kind]
		c[0]++
		if op.Outcome == outOK {
			c[1]++
		}
		kinds[op.Kind] = c
	}
	var ks []string
	for k, c := range kinds {
		ks = append(ks, fmt.Sprintf("%s %d/%d", k, c[1], c[0]))
	}
	sort.Strings(ks)
	fmt.Fprintf(&sb, "operations acknowledged/attempted: %s\n", strings.Join(ks, ", "))
	refused := map[string]int{}
	for _, op := range r.Ops {
		if op.Outcome != outOK {
			refused[fmt.Sprintf("%s %s", op.Kind, outcomeCode(op))]++
		}
	}
	var rs []string
	for k, n := range refused {
		rs = append(rs, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(rs)
	fmt.Fprintf(&sb, "not acknowledged: %s\n", strings.Join(rs, ", "))
	var faultErrs []string
	for _, ev := range r.Nemeses {
		if ev.Err != "" {
			faultErrs = append(faultErrs, fmt.Sprintf("%s %v: %s", ev.Kind, ev.Hosts, ev.Err))
		}
	}
	fmt.Fprintf(&sb, "faults that did not fully hold (not checked as cuts): %d %v\n", len(faultErrs), faultErrs)
	fmt.Fprintf(&sb, "linearizability: %s (%d violations)\n", lin, nLin)
	fmt.Fprintf(&sb, "register answers (one value per revision, monotonic per host) and cut-off hosts acknowledging nothing: %d violations\n", nVers)
	fmt.Fprintf(&sb, "resources (lost creates/deletes/tag adds, duplicates, phantoms, double VNI/IP/MAC, capacity): %d violations\n", nRes)
	applied := "-"
	if len(states) > 0 {
		applied = fmt.Sprint(states[0].Applied)
	}
	fmt.Fprintf(&sb, "hosts after heal (networks, ports; the first at applied index %s): %d differences\n", applied, nHosts)
	return sb.String()
}

// outcomeCode names why an operation was not acknowledged: its status,
// or "timeout"/"no answer".
func outcomeCode(op Op) string {
	switch {
	case op.Status != 0:
		return fmt.Sprint(op.Status)
	case strings.Contains(op.Err, "deadline") || strings.Contains(op.Err, "canceled"):
		return "timeout"
	default:
		return "no-answer"
	}
}

// count401 counts operations refused as unauthenticated: every client
// holds a valid admin token for the whole run, so each is a host that
// answered before it knew its own keys and users (just restarted).
func (r *Result) count401() int {
	n := 0
	for _, op := range r.Ops {
		if op.Status == 401 {
			n++
		}
	}
	return n
}
