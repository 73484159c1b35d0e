package faults

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput is a register operation for porcupine.
type regInput struct {
	Key   string
	Write bool
	Value string
}

// registerModel is one register per network: a write sets the
// description, a read (an empty update, answered after it applied)
// returns it.
func registerModel(init string) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range h {
				k := op.Input.(regInput).Key
				if _, ok := by[k]; !ok {
					keys = append(keys, k)
				}
				by[k] = append(by[k], op)
			}
			sort.Strings(keys)
			var out [][]porcupine.Operation
			for _, k := range keys {
				out = append(out, by[k])
			}
			return out
		},
		Init: func() any { return init },
		Step: func(state, input, output any) (bool, any) {
			in := input.(regInput)
			if in.Write {
				return true, in.Value
			}
			return output.(string) == state.(string), state
		},
		Equal: func(a, b any) bool { return a.(string) == b.(string) },
		DescribeOperation: func(input, output any) string {
			in := input.(regInput)
			if in.Write {
				if output == nil {
					return fmt.Sprintf("write(%s, %q) ?", in.Key, in.Value)
				}
				return fmt.Sprintf("write(%s, %q)", in.Key, in.Value)
			}
			return fmt.Sprintf("read(%s) → %q", in.Key, output)
		},
		DescribeState: func(s any) string { return fmt.Sprintf("%q", s) },
	}
}

// porcupineHistory turns the register operations into porcupine's form:
// an indeterminate write may take effect at any time up to the end, a
// read without an answer says nothing, a refused write did nothing.
func porcupineHistory(ops []Op) []porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Return)
	}
	var out []porcupine.Operation
	for _, op := range ops {
		switch {
		case op.Kind == opWrite && op.Outcome == outOK:
			out = append(out, porcupine.Operation{ClientId: op.Proc, Input: regInput{Key: op.Key, Write: true, Value: op.Value},
				Call: op.Call, Output: "", Return: op.Return})
		case op.Kind == opWrite && op.Outcome == outInfo:
			out = append(out, porcupine.Operation{ClientId: op.Proc, Input: regInput{Key: op.Key, Write: true, Value: op.Value},
				Call: op.Call, Output: nil, Return: end + 1})
		case (op.Kind == opRead || op.Kind == opLRead) && op.Outcome == outOK:
			out = append(out, porcupine.Operation{ClientId: op.Proc, Input: regInput{Key: op.Key},
				Call: op.Call, Output: op.Got, Return: op.Return})
		}
	}
	return out
}

// checkLinearizable runs porcupine on the register operations; on a
// violation (or a check that ran out of time) it writes the
// visualization to dir and says where.
func checkLinearizable(ops []Op, init, dir string, timeout time.Duration) (string, []string) {
	model := registerModel(init)
	h := porcupineHistory(ops)
	res, info := porcupine.CheckOperationsVerbose(model, h, timeout)
	summary := fmt.Sprintf("%d register operations: %s", len(h), res)
	if res == porcupine.Ok {
		return summary, nil
	}
	path := filepath.Join(dir, "linearizability.html")
	msg := fmt.Sprintf("register history is %s (porcupine); visualization: %s", res, path)
	if err := porcupine.VisualizePath(model, info, path); err != nil {
		msg += fmt.Sprintf(" (could not write it: %v)", err)
	}
	return summary, []string{msg}
}

// checkVersions checks what every answer said about a register: one
// revision of a network has one description wherever it was read (the
// hosts apply one log), and a host never answers with an older revision
// than it answered before (its state only moves forward). Older answers
// after a restart of that host (the times it was killed are in restarts)
// are returned as a count, which the report fails on: a restarted daemon
// must serve only once it has caught up with the log.
func checkVersions(ops []Op, restarts map[int][]int64) (bad []string, afterRestart int) {
	type kr struct {
		key string
		rev int
	}
	seen := map[kr]Op{}
	for _, op := range ops {
		if op.Outcome != outOK || (op.Kind != opWrite && op.Kind != opRead && op.Kind != opGet && op.Kind != opLRead) {
			continue
		}
		k := kr{op.Key, op.Rev}
		if prev, ok := seen[k]; ok && prev.Got != op.Got {
			bad = append(bad, fmt.Sprintf("divergent state: %s revision %d is %q via h%d (op %d) but %q via h%d (op %d)",
				op.Key, op.Rev, prev.Got, prev.Host, prev.Seq, op.Got, op.Host, op.Seq))
			continue
		}
		seen[k] = op
	}
	// Monotonic answers per host and register.
	type hk struct {
		host int
		key  string
	}
	by := map[hk][]Op{}
	for _, op := range ops {
		if op.Outcome == outOK && (op.Kind == opWrite || op.Kind == opRead || op.Kind == opGet || op.Kind == opLRead) {
			by[hk{op.Host, op.Key}] = append(by[hk{op.Host, op.Key}], op)
		}
	}
	for k, list := range by {
		byCall := slices.Clone(list)
		slices.SortFunc(byCall, func(a, b Op) int { return cmp.Compare(a.Call, b.Call) })
		byRet := slices.Clone(list)
		slices.SortFunc(byRet, func(a, b Op) int { return cmp.Compare(a.Return, b.Return) })
		j := 0
		var best Op
		for _, b := range byCall {
			for j < len(byRet) && byRet[j].Return < b.Call {
				if byRet[j].Rev >= best.Rev {
					best = byRet[j]
				}
				j++
			}
			if best.Seq == 0 || b.Rev >= best.Rev {
				continue
			}
			if restartedBetween(restarts[k.host], best.Return, b.Call) {
				afterRestart++
				best = Op{}
				continue
			}
			bad = append(bad, fmt.Sprintf("stale answer on h%d: %s at revision %d (op %d) after the same host answered revision %d (op %d)",
				k.host, k.key, b.Rev, b.Seq, best.Rev, best.Seq))
			best = Op{} // one report per regression
		}
	}
	sort.Strings(bad)
	return bad, afterRestart
}

func restartedBetween(at []int64, from, to int64) bool {
	for _, t := range at {
		if t >= from && t <= to {
			return true
		}
	}
	return false
}

// netInfo is a network as the final state shows it.
type netInfo struct {
	ID   string   `json:"id"`
	Name string   `json:"name"`
	Rev  int      `json:"revision_number"`
	Desc string   `json:"description"`
	VNI  *int     `json:"provider:segmentation_id"`
	Tags []string `json:"tags"`
}

// portInfo is a port as the final state shows it.
type portInfo struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	MAC       string `json:"mac_address"`
	Rev       int    `json:"revision_number"`
	FixedIPs  []struct {
		SubnetID  string `json:"subnet_id"`
		IPAddress string `json:"ip_address"`
	} `json:"fixed_ips"`
}

// finalState is one host's view after the heal.
type finalState struct {
	Host     string
	Applied  uint64
	Networks map[string]netInfo
	Ports    map[string]portInfo
	Members  []member
}

// checkResources checks the created, deleted and allocated resources
// against the final state: acknowledged creates exist, acknowledged
// deletes do not, no name twice, no network nobody asked for, no VNI,
// IP or MAC twice, no host over its capacity.
func checkResources(ops []Op, prefix string, st finalState) []string {
	var bad []string
	deleted := map[string]string{} // id → outcome of a delete
	for _, op := range ops {
		if (op.Kind == opDelete || op.Kind == opUnport) && op.Outcome != outFail {
			if deleted[op.ID] != outOK {
				deleted[op.ID] = op.Outcome
			}
		}
	}
	asked := map[string]bool{}
	for _, op := range ops {
		switch {
		case op.Kind == opCreate && op.Outcome != outFail:
			asked[op.Key] = true
			if op.Outcome == outOK && deleted[op.ID] == "" {
				if _, ok := st.Networks[op.ID]; !ok {
					bad = append(bad, fmt.Sprintf("lost create: network %s (%s) acknowledged by h%d (op %d) is gone", op.Key, op.ID, op.Host, op.Seq))
				}
			}
		case op.Kind == opDelete && op.Outcome == outOK:
			if _, ok := st.Networks[op.ID]; ok {
				bad = append(bad, fmt.Sprintf("lost delete: network %s deleted by h%d (op %d) still exists", op.ID, op.Host, op.Seq))
			}
		case op.Kind == opUnport && op.Outcome == outOK:
			if _, ok := st.Ports[op.ID]; ok {
				bad = append(bad, fmt.Sprintf("lost delete: port %s deleted by h%d (op %d) still exists", op.ID, op.Host, op.Seq))
			}
		case op.Kind == opPort && op.Outcome == outOK && deleted[op.ID] == "":
			if _, ok := st.Ports[op.ID]; !ok {
				bad = append(bad, fmt.Sprintf("lost create: port %s acknowledged by h%d (op %d) is gone", op.ID, op.Host, op.Seq))
			}
		}
	}
	names := map[string][]string{}
	vnis := map[int]string{}
	for _, n := range st.Networks {
		if n.VNI != nil {
			if other, ok := vnis[*n.VNI]; ok {
				bad = append(bad, fmt.Sprintf("double allocation: VNI %d on networks %s and %s", *n.VNI, other, n.ID))
			}
			vnis[*n.VNI] = n.ID
		}
		if !strings.HasPrefix(n.Name, prefix+"-") {
			continue
		}
		names[n.Name] = append(names[n.Name], n.ID)
		if !asked[n.Name] {
			bad = append(bad, fmt.Sprintf("phantom network %s (%s): no client created it", n.Name, n.ID))
		}
	}
	for name, ids := range names {
		if len(ids) > 1 {
			sort.Strings(ids)
			bad = append(bad, fmt.Sprintf("duplicate: network %s exists %d times: %v", name, len(ids), ids))
		}
	}
	ips := map[string]string{}
	macs := map[string]string{}
	for _, p := range st.Ports {
		if other, ok := macs[p.MAC]; ok {
			bad = append(bad, fmt.Sprintf("double allocation: MAC %s on ports %s and %s", p.MAC, other, p.ID))
		}
		macs[p.MAC] = p.ID
		for _, ip := range p.FixedIPs {
			k := p.NetworkID + "/" + ip.IPAddress
			if other, ok := ips[k]; ok {
				bad = append(bad, fmt.Sprintf("double allocation: IP %s on ports %s and %s", ip.IPAddress, other, p.ID))
			}
			ips[k] = p.ID
		}
	}
	for _, m := range st.Members {
		c := m.Capacity
		if c.UsedVCPUs > c.VCPUs || c.UsedRAMMB > c.RAMMB || c.UsedDiskGB > c.DiskGB {
			bad = append(bad, fmt.Sprintf("over capacity: %s uses %d/%d vCPUs, %d/%d MB, %d/%d GB",
				m.Name, c.UsedVCPUs, c.VCPUs, c.UsedRAMMB, c.RAMMB, c.UsedDiskGB, c.DiskGB))
		}
	}
	sort.Strings(bad)
	return bad
}

// compareHosts reports how each host's final state differs from the
// first's.
func compareHosts(states []finalState) []string {
	var bad []string
	ref := states[0]
	for _, s := range states[1:] {
		// Applied indexes move on leadership-confirmation barriers that
		// change no state, so hosts read a moment apart differ; the lists
		// below are what must agree.
		for id, n := range ref.Networks {
			if m, ok := s.Networks[id]; !ok || !sameNet(n, m) {
				bad = append(bad, fmt.Sprintf("network %s: %s has %+v, %s has %+v", id, ref.Host, brief(n), s.Host, briefOK(m, ok)))
			}
		}
		for id := range s.Networks {
			if _, ok := ref.Networks[id]; !ok {
				bad = append(bad, fmt.Sprintf("network %s: on %s, not on %s", id, s.Host, ref.Host))
			}
		}
		for id, p := range ref.Ports {
			if q, ok := s.Ports[id]; !ok || q.Rev != p.Rev || q.MAC != p.MAC {
				bad = append(bad, fmt.Sprintf("port %s: differs between %s and %s", id, ref.Host, s.Host))
			}
		}
		for id := range s.Ports {
			if _, ok := ref.Ports[id]; !ok {
				bad = append(bad, fmt.Sprintf("port %s: on %s, not on %s", id, s.Host, ref.Host))
			}
		}
	}
	if len(bad) > 20 {
		bad = append(bad[:20], fmt.Sprintf("… and %d more differences", len(bad)-20))
	}
	return bad
}

// sameNet reports whether two hosts agree on a network.
func sameNet(n, m netInfo) bool {
	return n.ID == m.ID && n.Name == m.Name && n.Rev == m.Rev && n.Desc == m.Desc && slices.Equal(n.Tags, m.Tags) &&
		(n.VNI == nil) == (m.VNI == nil) && (n.VNI == nil || *n.VNI == *m.VNI)
}

func brief(n netInfo) string { return fmt.Sprintf("%s rev %d %q", n.Name, n.Rev, n.Desc) }

func briefOK(n netInfo, ok bool) string {
	if !ok {
		return "nothing"
	}
	return brief(n)
}

// checkMinority checks that no host cut from a majority of the voters
// (or paused) acknowledged a write (an update, create, delete or port)
// or a linearizable read while it was cut: one invoked a second after
// the cut (time for a cut leader's lease to lapse) and answered before
// the heal must have failed. It is also the proof that the partitions and pauses really cut.
func checkMinority(ops []Op, events []NemesisEvent) []string {
	var bad []string
	for _, ev := range events {
		if ev.Err != "" || len(ev.Cut) == 0 {
			continue
		}
		from, to := int64(ev.Start+time.Second), int64(ev.Heal)
		for _, op := range ops {
			if op.Outcome != outOK || op.Kind == opGet || op.Call < from || op.Return > to ||
				!slices.Contains(ev.Cut, fmt.Sprintf("h%d", op.Host)) {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s of %v (voters %v): h%d acknowledged %s (op %d) while cut off", ev.Kind, ev.Hosts, ev.Voters, op.Host, op.Kind, op.Seq))
		}
	}
	return bad
}

// checkTags checks the sets: every acknowledged tag add is in its set
// network's tags after the heal, and no tag nobody added is.
func checkTags(ops []Op, tagNets []string, st finalState) []string {
	var bad []string
	asked := map[string]map[string]bool{}
	for _, id := range tagNets {
		if _, ok := st.Networks[id]; !ok {
			bad = append(bad, fmt.Sprintf("the set network %s is gone", id))
		}
		asked[id] = map[string]bool{}
	}
	lost := 0
	for _, op := range ops {
		if op.Kind != opTag || op.Outcome == outFail {
			continue
		}
		n, ok := st.Networks[op.Key]
		if !ok || asked[op.Key] == nil {
			continue
		}
		asked[op.Key][op.Value] = true
		if op.Outcome == outOK && !slices.Contains(n.Tags, op.Value) {
			lost++
			if lost <= 5 {
				bad = append(bad, fmt.Sprintf("lost tag add: %q acknowledged by h%d (op %d) is not in the set", op.Value, op.Host, op.Seq))
			}
		}
	}
	if lost > 5 {
		bad = append(bad, fmt.Sprintf("… %d acknowledged tag adds lost in all", lost))
	}
	for _, id := range tagNets {
		for _, t := range st.Networks[id].Tags {
			if !asked[id][t] {
				bad = append(bad, fmt.Sprintf("phantom tag %q in set network %s", t, id))
			}
		}
	}
	return bad
}

// agreeOnState asks every host at once for the digest of its whole
// replicated state, every half second for up to wait, until all agree.
// Two hosts that answer the same index with different digests have
// diverged: that is a failure at once. Different indexes with different
// digests are not (writes still land between the answers); no round of
// agreement within wait is.
func agreeOnState(ctx context.Context, w *workload, wait time.Duration) (bad []string, summary string) {
	deadline := time.Now().Add(wait)
	rounds := 0
	var last []status
	var lastErr error
	for {
		rounds++
		got := make([]status, len(w.cl))
		errs := make([]error, len(w.cl))
		var wg sync.WaitGroup
		for i, c := range w.cl {
			wg.Add(1)
			go func() { defer wg.Done(); got[i], errs[i] = c.digest(ctx) }()
		}
		wg.Wait()
		lastErr = errors.Join(errs...)
		if lastErr == nil {
			last = got
			byIndex := map[uint64]int{}
			for i, st := range got {
				if j, ok := byIndex[st.StateIndex]; ok && got[j].StateDigest != st.StateDigest {
					return []string{fmt.Sprintf("state diverged: %s and %s both at index %d with digests %.12s and %.12s",
						w.cl[j].name, w.cl[i].name, st.StateIndex, got[j].StateDigest, st.StateDigest)}, ""
				}
				byIndex[st.StateIndex] = i
			}
			same := true
			for _, st := range got[1:] {
				same = same && st.StateDigest == got[0].StateDigest
			}
			if same {
				return nil, fmt.Sprintf("state digest after heal: all %d hosts %.12s (round %d)\n", len(got), got[0].StateDigest, rounds)
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var parts []string
			for i, st := range last {
				parts = append(parts, fmt.Sprintf("%s %.12s@%d", w.cl[i].name, st.StateDigest, st.StateIndex))
			}
			return []string{fmt.Sprintf("hosts never agreed on the state digest in %v (%d rounds; last: %s; %v)",
				wait, rounds, strings.Join(parts, ", "), lastErr)}, ""
		}
		time.Sleep(500 * time.Millisecond)
	}
}
