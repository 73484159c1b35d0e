package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"

	"github.com/peerstack/peerstack/e2e"
)

// The nemeses. Each is applied, held for a while, and healed before the
// next one starts.
const (
	nemPartitionOne    = "partition-one"    // one host cut from the others
	nemPartitionLeader = "partition-leader" // the leader cut from the others
	nemPartitionSplit  = "partition-split"  // two hosts against three
	nemPartitionRing   = "partition-ring"   // each host sees only its two ring neighbours
	nemCrash           = "crash"            // SIGKILL a host's daemon, restart it
	nemPause           = "pause"            // SIGSTOP a host's daemon, SIGCONT it
	nemLeaderKill      = "leader-kill"      // SIGKILL the leader, restart it
	nemClock           = "clock"            // restart a host with its wall clock shifted, then without
	nemLoss            = "loss"             // a host drops a random share of its underlay packets
	nemNFS             = "nfs"              // the NAS's NFS server stopped, then resumed
	nemDelay           = "delay"            // a host holds its underlay packets for a while each way
)

// allNemeses is the default set, in a fixed order (the seed picks from it).
var allNemeses = []string{nemPartitionOne, nemPartitionLeader, nemPartitionSplit, nemPartitionRing, nemCrash, nemPause, nemLeaderKill, nemClock, nemLoss, nemNFS, nemDelay}

// nftTable is the table the partitions add in a host's namespace; the
// daemon's own tables are left alone.
const nftTable = "peerstack_faults"

// NemesisEvent is one fault as it happened.
type NemesisEvent struct {
	Kind  string   `json:"kind"`
	Hosts []string `json:"hosts"` // the hosts cut, killed or paused
	// Voters are the Raft voters when the fault began; Cut the hosts
	// that could not reach a majority of them (or were paused) while it
	// held: none of them may acknowledge a write.
	Voters []string      `json:"voters"`
	Cut    []string      `json:"cut"`
	Start  time.Duration `json:"start_ns"`
	Heal   time.Duration `json:"heal_ns"`
	Err    string        `json:"err,omitempty"`
	// Note says what a restarted host reported as it began to serve.
	Note string `json:"note,omitempty"`
}

// nemesis injects faults into a box. It is used by one goroutine.
type nemesis struct {
	b     *e2e.Box
	cl    []*hostClient
	rnd   *rand.Rand
	kinds []string
	t0    time.Time
	logf  func(format string, a ...any)
	// onFault is told the fault in effect ("" once healed).
	onFault func(kind string)
	// nfs is the NAS's NFS server (pid 0: no NAS).
	nfs nfsServer
}

// leader asks the hosts, in random order, which host leads; 0 if none
// knows.
func (n *nemesis) leader(ctx context.Context) int {
	for _, i := range n.rnd.Perm(len(n.cl)) {
		st, err := n.cl[i].status(ctx)
		if err != nil || st.Leader.Name == "" {
			continue
		}
		for _, c := range n.cl {
			if c.name == st.Leader.Name {
				return c.idx
			}
		}
	}
	return 0
}

// voters asks the hosts, in random order, for the Raft voters.
func (n *nemesis) voters(ctx context.Context) []string {
	for _, i := range n.rnd.Perm(len(n.cl)) {
		ms, err := n.cl[i].members(ctx)
		if err != nil {
			continue
		}
		var out []string
		for _, m := range ms {
			if m.RaftRole == "leader" || m.RaftRole == "voter" {
				out = append(out, m.Name)
			}
		}
		sort.Strings(out)
		return out
	}
	return nil
}

// cutOff returns the hosts of side a and side b that do not hold a
// majority of the voters.
func cutOff(a, b, voters []string) []string {
	count := func(side []string) int {
		k := 0
		for _, h := range side {
			if slices.Contains(voters, h) {
				k++
			}
		}
		return k
	}
	var cut []string
	if 2*count(a) <= len(voters) {
		cut = append(cut, a...)
	}
	if 2*count(b) <= len(voters) {
		cut = append(cut, b...)
	}
	sort.Strings(cut)
	return cut
}

// run injects one fault after another until ctx ends, each held for
// hold and followed by a quiet period; it returns what it did. A fault
// that cannot be healed (a host that does not restart) ends the run
// with an error.
func (n *nemesis) run(ctx context.Context, hold, quiet func() time.Duration, record func(NemesisEvent)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(quiet()):
		}
		if ctx.Err() != nil {
			return nil
		}
		kind := n.kinds[n.rnd.IntN(len(n.kinds))]
		ev, err := n.inject(ctx, kind, hold())
		record(ev)
		if err != nil {
			return err
		}
	}
}

// inject applies one fault, holds it and heals it.
func (n *nemesis) inject(ctx context.Context, kind string, hold time.Duration) (NemesisEvent, error) {
	hosts := len(n.b.Hosts)
	ev := NemesisEvent{Kind: kind, Voters: n.voters(ctx)}
	names := func(idx []int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, n.b.Host(i).Name)
		}
		return out
	}
	var heal func(context.Context) error
	watch := func() {} // called while the fault holds
	var err error
	// The fault's own proof (a ping burst, a restart measured by another
	// host) runs to its end even when the faulty phase ends meanwhile: cut
	// short, it would fail although nothing is wrong. The heal follows.
	ictx, icancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
	defer icancel()
	switch kind {
	case nemPartitionOne, nemPartitionLeader:
		victim := 1 + n.rnd.IntN(hosts)
		if kind == nemPartitionLeader {
			if victim = n.leader(ctx); victim == 0 {
				ev.Err = "no leader known"
				return ev, nil
			}
		}
		var rest []int
		for i := 1; i <= hosts; i++ {
			if i != victim {
				rest = append(rest, i)
			}
		}
		ev.Hosts = []string{n.b.Host(victim).Name}
		ev.Cut = cutOff(ev.Hosts, names(rest), ev.Voters)
		err = n.partition([][]int{{victim}, rest})
		heal = func(context.Context) error { return n.healNet() }
	case nemPartitionSplit:
		perm := n.rnd.Perm(hosts)
		var minority, majority []int
		for k, p := range perm {
			if k < hosts/2 {
				minority = append(minority, p+1)
			} else {
				majority = append(majority, p+1)
			}
		}
		sort.Ints(minority)
		ev.Hosts = names(minority)
		ev.Cut = cutOff(ev.Hosts, names(majority), ev.Voters)
		err = n.partition([][]int{minority, majority})
		heal = func(context.Context) error { return n.healNet() }
	case nemPartitionRing:
		perm := n.rnd.Perm(hosts)
		for _, p := range perm {
			ev.Hosts = append(ev.Hosts, n.b.Host(p+1).Name)
		}
		err = n.ring(perm)
		heal = func(context.Context) error { return n.healNet() }
	case nemCrash, nemLeaderKill:
		victim := 1 + n.rnd.IntN(hosts)
		if kind == nemLeaderKill {
			if victim = n.leader(ctx); victim == 0 {
				ev.Err = "no leader known"
				return ev, nil
			}
		}
		ev.Hosts = []string{n.b.Host(victim).Name}
		n.b.KillHost(victim)
		err = n.unreachable(ictx, victim)
		heal = func(ctx context.Context) error {
			if err := n.b.StartHost(ctx, victim, "agent"); err != nil {
				return err
			}
			ev.Note = n.caughtUp(ctx, victim)
			return nil
		}
	case nemPause:
		victim := 1 + n.rnd.IntN(hosts)
		ev.Hosts = []string{n.b.Host(victim).Name}
		ev.Cut = ev.Hosts
		// The daemon's process group, not the whole namespace: the
		// fence guard runs in its own session on purpose (it is the
		// watchdog that must keep running while the daemon is stuck).
		ns, pgrp := n.b.Host(victim).NS, n.b.Pid(victim)
		if err = n.b.SignalHost(victim, syscall.SIGSTOP); err == nil {
			resent := 0
			err = waitStopped(ictx, ns, pgrp, func() { resent++; _ = n.b.SignalHost(victim, syscall.SIGSTOP) })
			if resent > 0 {
				ev.Note = fmt.Sprintf("%s stopped only after %d more SIGSTOPs", ev.Hosts[0], resent)
			}
		}
		// Something else on the machine may resume it (seen in runs on
		// a shared machine): stop it again, and do not count the window
		// as cut.
		resumed := 0
		watch = func() {
			if ok, _ := stopped(ns, pgrp); !ok {
				resumed++
				_ = n.b.SignalHost(victim, syscall.SIGSTOP)
			}
		}
		heal = func(context.Context) error {
			if resumed > 0 && ev.Err == "" {
				ev.Err = fmt.Sprintf("resumed from outside %d times during the pause; stopped again", resumed)
			}
			return n.b.SignalHost(victim, syscall.SIGCONT)
		}
	case nemClock:
		// A wall clock off by up to 25 s either way, under the cluster's
		// 30 s skew limit: nothing replicated may depend on it (leases
		// run on the monotonic clock, Raft on none).
		victim := 1 + n.rnd.IntN(hosts)
		off := time.Duration(2+n.rnd.IntN(24)) * time.Second
		if n.rnd.IntN(2) == 0 {
			off = -off
		}
		ev.Hosts = []string{n.b.Host(victim).Name}
		n.b.KillHost(victim)
		if err = n.b.StartHost(ictx, victim, "agent", "--clock-offset", off.String()); err == nil {
			ev.Note, err = n.skewed(ictx, victim, off)
		}
		heal = func(ctx context.Context) error {
			n.b.KillHost(victim)
			if err := n.b.StartHost(ctx, victim, "agent"); err != nil {
				return err
			}
			note, err := n.skewed(ctx, victim, 0)
			if err != nil {
				return err
			}
			ev.Note += "; healed: " + note + "; " + n.caughtUp(ctx, victim)
			return nil
		}
	case nemLoss:
		victim := 1 + n.rnd.IntN(hosts)
		pct := 20 + n.rnd.IntN(31) // each way; 36–76 % of round trips
		ev.Hosts = []string{n.b.Host(victim).Name}
		ev.Note, err = n.loss(ictx, victim, pct)
		heal = func(ctx context.Context) error {
			note, err := n.unloss(ctx, victim)
			ev.Note += "; " + note
			return err
		}
	case nemDelay:
		victim := 1 + n.rnd.IntN(hosts)
		dms := 50 + n.rnd.IntN(151) // each way
		d := time.Duration(dms) * time.Millisecond
		// A jitter of a quarter to half the delay: each packet held
		// between half and one and a half times it, so packets a few
		// milliseconds apart overtake each other (as under netem's
		// "delay D J"). The per-packet draws come from a generator
		// seeded here: the seed fixes the draws, the order packets
		// arrive in decides which packet gets which.
		j := time.Duration(dms/4+n.rnd.IntN(dms/2-dms/4+1)) * time.Millisecond
		seed := n.rnd.Uint64()
		ev.Hosts = []string{n.b.Host(victim).Name}
		var dl *delayer
		dl, ev.Note, err = n.delay(ictx, victim, d, j, seed)
		heal = func(ctx context.Context) error {
			note, err := n.undelay(ctx, victim, dl)
			ev.Note += "; " + note
			return err
		}
	case nemNFS:
		if n.nfs.pid == 0 {
			return ev, errors.New("nfs nemesis without a NAS")
		}
		from := 1 + n.rnd.IntN(hosts) // the host whose client proves it
		ev.Hosts = []string{"nas"}
		ev.Note, err = n.stopNFS(ictx, from)
		resumed := 0
		watch = func() {
			if !n.nfsStopped() {
				resumed++
				_ = syscall.Kill(n.nfs.pid, syscall.SIGSTOP)
			}
		}
		heal = func(ctx context.Context) error {
			if resumed > 0 && ev.Err == "" {
				ev.Err = fmt.Sprintf("NFS server resumed from outside %d times during the stop; stopped again", resumed)
			}
			note, err := n.contNFS(ctx, from)
			ev.Note += "; " + note
			return err
		}
	default:
		return ev, fmt.Errorf("unknown nemesis %q", kind)
	}
	ev.Start = time.Since(n.t0)
	n.onFault(kind)
	defer n.onFault("")
	n.logf("nemesis %s %s for %.1fs", kind, strings.Join(ev.Hosts, ","), hold.Seconds())
	defer func() {
		if ev.Note != "" {
			n.logf("  %s", ev.Note)
		}
		if ev.Err != "" {
			n.logf("  fault error: %s", ev.Err)
		}
	}()
	if err != nil {
		ev.Err = err.Error()
	}
	end := time.After(hold)
	tick := time.NewTicker(100 * time.Millisecond)
hold:
	for {
		select {
		case <-ctx.Done():
			break hold
		case <-end:
			break hold
		case <-tick.C:
			watch()
		}
	}
	tick.Stop()
	// Healing must happen even when the run is over.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	herr := heal(hctx)
	ev.Heal = time.Since(n.t0)
	if herr != nil {
		ev.Err = strings.TrimPrefix(ev.Err+"; heal: "+herr.Error(), "; ")
		return ev, fmt.Errorf("heal %s of %v: %w", kind, ev.Hosts, herr)
	}
	if err != nil {
		return ev, fmt.Errorf("inject %s: %w", kind, err)
	}
	return ev, nil
}

// partition cuts every pair of hosts in different groups: each drops
// the other's packets on input, in its own namespace. The root
// namespace (the clients) still reaches every host.
func (n *nemesis) partition(groups [][]int) error {
	drops := map[int][]string{}
	for gi, g := range groups {
		for gj, other := range groups {
			if gi == gj {
				continue
			}
			for _, i := range g {
				for _, j := range other {
					drops[i] = append(drops[i], n.b.Host(j).Addr)
				}
			}
		}
	}
	return n.applyDrops(drops)
}

// ring lets host perm[k] talk only to perm[k±1] (mod len): with five
// hosts every host sees two others, no majority is fully connected,
// yet every host has a majority in view (itself and two neighbours).
func (n *nemesis) ring(perm []int) error {
	drops := map[int][]string{}
	m := len(perm)
	for k, p := range perm {
		for l, q := range perm {
			if l == k || l == (k+1)%m || l == (k+m-1)%m {
				continue
			}
			drops[p+1] = append(drops[p+1], n.b.Host(q+1).Addr)
		}
	}
	return n.applyDrops(drops)
}

// applyDrops installs the drops and reads them back: a partition that
// is not in the kernel's ruleset is an error, not a silent no-op.
func (n *nemesis) applyDrops(drops map[int][]string) error {
	var errs []error
	for i, addrs := range drops {
		h := n.b.Host(i)
		if err := dropFrom(h.NS, addrs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
			continue
		}
		got, err := dropsIn(h.NS)
		want := slices.Compact(slices.Sorted(slices.Values(addrs)))
		slices.Sort(got)
		if err != nil || !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s drops %v, want %v (%v)", h.Name, got, want, err))
		}
	}
	return errors.Join(errs...)
}

// unreachable checks that host i's API no longer answers (it was killed
// or paused): the proof that the fault took.
func (n *nemesis) unreachable(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := n.cl[i-1].status(ctx); err == nil {
		return fmt.Errorf("%s still answers after the fault (processes: %s)", n.b.Host(i).Name, procStates(n.b.Host(i).NS))
	}
	return nil
}

// skewed waits until another host measures host i's clock off by about
// off (gossip measures it within a second or so): the proof that the
// skew took (or, off 0, that it is gone). The tolerance is under half the
// shift, so a reading from before the restart cannot pass for it.
func (n *nemesis) skewed(ctx context.Context, i int, off time.Duration) (string, error) {
	tol := 500 * time.Millisecond
	name := n.b.Host(i).Name
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, c := range n.cl {
			if c.idx == i {
				continue
			}
			ms, err := c.members(ctx)
			if err != nil {
				continue
			}
			for _, m := range ms {
				if m.Name == name && m.ClockSkewMS != nil {
					got := time.Duration(*m.ClockSkewMS) * time.Millisecond
					if d := got - off; d > -tol && d < tol {
						return fmt.Sprintf("%s's clock shifted by %s; %s measures %s", name, off, c.name, got), nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no host measured %s's clock shifted by %s within 20 s", name, off)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// caughtUp reports how a just restarted host serves: for how long it
// refuses a valid token, and how far its state is behind the others'
// when it first answers.
func (n *nemesis) caughtUp(ctx context.Context, i int) string {
	t0 := time.Now()
	name := n.b.Host(i).Name
	var st status
	var err error
	for {
		if st, err = n.cl[i-1].status(ctx); err == nil || time.Since(t0) > 10*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Sprintf("%s restarted; no status for 10 s: %v", name, err)
	}
	var others uint64
	for _, c := range n.cl {
		if c.idx == i {
			continue
		}
		if o, err := c.status(ctx); err == nil {
			others = max(others, o.AppliedIndex)
		}
	}
	return fmt.Sprintf("%s restarted: its status answered after %.2fs, at applied index %d (commit %d); the others at %d",
		name, time.Since(t0).Seconds(), st.AppliedIndex, st.CommitIndex, others)
}

// healNet removes the partition table from every host namespace.
func (n *nemesis) healNet() error {
	var errs []error
	for _, h := range n.b.Hosts {
		if err := clearDrops(h.NS); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

// healAll undoes whatever may still be in effect: partitions, paused
// and dead daemons.
func (n *nemesis) healAll(ctx context.Context) error {
	errs := []error{n.healNet()}
	for _, h := range n.b.Hosts {
		errs = append(errs, clearLoss(h.NS), clearDelay(h.NS))
	}
	if n.nfs.pid != 0 {
		errs = append(errs, syscall.Kill(n.nfs.pid, syscall.SIGCONT))
	}
	for i := range n.b.Hosts {
		if n.b.Alive(i + 1) {
			_ = n.b.SignalHost(i+1, syscall.SIGCONT)
			continue
		}
		errs = append(errs, n.b.StartHost(ctx, i+1, "agent"))
	}
	return errors.Join(errs...)
}

// inNS opens a netlink connection to nftables in namespace ns.
func inNS(ns string, f func(c *nftables.Conn) error) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		return err
	}
	return f(c)
}

// dropFrom makes namespace ns drop every IPv4 packet from addrs.
func dropFrom(ns string, addrs []string) error {
	return inNS(ns, func(c *nftables.Conn) error {
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftTable})
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		slices.Sort(addrs)
		for _, a := range slices.Compact(addrs) {
			ip := net.ParseIP(a).To4()
			if ip == nil {
				return fmt.Errorf("not an IPv4 address: %q", a)
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
		return c.Flush()
	})
}

// clearDrops deletes the partition table of namespace ns, if any.
func clearDrops(ns string) error { return deleteTable(ns, nftTable) }

// withTable runs fn on the IPv4 table called name in namespace ns, if
// there is one.
func withTable(ns, name string, fn func(c *nftables.Conn, t *nftables.Table) error) error {
	return inNS(ns, func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return err
		}
		for _, t := range tables {
			if t.Name == name {
				return fn(c, t)
			}
		}
		return nil
	})
}

// ruleExprs calls fn with every expression of every rule of the chains
// of the IPv4 table called table in namespace ns (none: no table).
func ruleExprs(ns, table string, chains []string, fn func(chain string, e expr.Any)) error {
	return withTable(ns, table, func(c *nftables.Conn, t *nftables.Table) error {
		for _, chain := range chains {
			rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
			if err != nil {
				return err
			}
			for _, r := range rules {
				for _, e := range r.Exprs {
					fn(chain, e)
				}
			}
		}
		return nil
	})
}

// deleteTable deletes the IPv4 table called name in namespace ns, if any.
func deleteTable(ns, name string) error {
	return withTable(ns, name, func(c *nftables.Conn, t *nftables.Table) error {
		c.DelTable(t)
		return c.Flush()
	})
}

// dropsIn lists the addresses namespace ns drops (for the nemesis test).
func dropsIn(ns string) ([]string, error) {
	var out []string
	err := ruleExprs(ns, nftTable, []string{"input"}, func(_ string, e expr.Any) {
		if cmp, ok := e.(*expr.Cmp); ok {
			out = append(out, net.IP(cmp.Data).String())
		}
	})
	return out, err
}

// stopped reports whether every process of namespace ns in process
// group pgrp is stopped (state T), and the states of all of them.
func stopped(ns string, pgrp int) (bool, string) {
	states := procStates(ns)
	in := 0
	for _, p := range strings.Split(states, "; ") {
		if !strings.HasSuffix(p, fmt.Sprintf(" pgrp %d", pgrp)) {
			continue
		}
		in++
		if !strings.Contains(p, " state T ") && !strings.Contains(p, " state t ") {
			return false, states
		}
	}
	if in == 0 {
		return false, "no process in group " + strconv.Itoa(pgrp) + ": " + states
	}
	return true, states
}

// waitStopped waits (a second at most, calling again every 100 ms)
// until the processes of group pgrp in namespace ns are all stopped: the
// proof that a pause took.
func waitStopped(ctx context.Context, ns string, pgrp int, again func()) error {
	deadline := time.Now().Add(time.Second)
	for {
		ok, states := stopped(ns, pgrp)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not stopped a second after SIGSTOP: %s", states)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		again()
	}
}

// procStates lists the processes of namespace ns with their state
// letter (T: stopped), for a fault that did not take.
func procStates(ns string) string {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return err.Error()
	}
	var list []string
	for _, pid := range strings.Fields(string(out)) {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		comm := string(stat[strings.IndexByte(string(stat), '(')+1 : strings.LastIndexByte(string(stat), ')')])
		if len(f) >= 3 {
			list = append(list, fmt.Sprintf("%s %s state %s pgrp %s", pid, comm, f[0], f[2]))
		}
	}
	return strings.Join(list, "; ")
}
