package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/quotas"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/peerstack/peerstack/e2e"
)

// Config is one run.
type Config struct {
	Bin      string        // bin/peerstack
	Hosts    int           // default 5
	Clients  int           // concurrent clients, default 6
	Duration time.Duration // of the faulty phase
	Seed     uint64        // picks operations, hosts, faults and their timing
	Nemeses  []string      // default all
	// Tags adds the set workload (concurrent tag adds on a few
	// networks, checked as sets).
	Tags bool
	// NFS starts the NAS and puts the volumes on it, adds volume
	// creates and deletes to the workload and checks them after the
	// heal; on whenever the nfs nemesis is in Nemeses.
	NFS bool
	// VMs boots that many HA servers from NFS volumes (NFS on), their
	// guests writing the single-writer log, and samples their QEMUs.
	VMs int
	Log io.Writer // progress; nil discards
}

// Result is what a run found.
type Result struct {
	Seed     uint64
	Ops      []Op
	Nemeses  []NemesisEvent
	Failures []string // every violated property, one line each
	Summary  string   // the report table
	LogDir   string   // the daemons' logs
}

const initDesc = "init"

// Run starts a box, runs the workload under faults for cfg.Duration,
// heals, and checks the history and the final state. An error means the
// run itself could not be carried out; violations are in Result.Failures.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Hosts == 0 {
		cfg.Hosts = 5
	}
	if cfg.Clients == 0 {
		cfg.Clients = 6
	}
	if len(cfg.Nemeses) == 0 {
		cfg.Nemeses = allNemeses
	}
	cfg.NFS = cfg.NFS || cfg.VMs > 0 || slices.Contains(cfg.Nemeses, nemNFS)
	logf := func(format string, a ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "faults: "+format+"\n", a...)
		}
	}
	res := &Result{Seed: cfg.Seed}
	logf("seed %d: %d hosts, %d clients, %s of faults (%v), tags %v, volumes on NFS %v, HA servers %d", cfg.Seed, cfg.Hosts, cfg.Clients, cfg.Duration, cfg.Nemeses, cfg.Tags, cfg.NFS, cfg.VMs)
	b, err := e2e.StartBox(ctx, e2e.BoxOptions{Hosts: cfg.Hosts, Kind: "test", Bin: cfg.Bin, Log: cfg.Log, NFS: cfg.NFS})
	if err != nil {
		return nil, fmt.Errorf("start box: %w", err)
	}
	res.LogDir = b.LogDir
	defer func() {
		if derr := b.Down(context.WithoutCancel(ctx)); derr != nil {
			logf("teardown: %v", derr)
		}
	}()
	hc, err := httpClient(b)
	if err != nil {
		return nil, err
	}
	cl := make([]*hostClient, cfg.Hosts)
	for i := range cl {
		if cl[i], err = connect(ctx, b, hc, i+1); err != nil {
			return nil, err
		}
	}
	w := &workload{cl: cl, regs: map[string]string{}, prefix: fmt.Sprintf("fz%d", cfg.Seed%100000),
		timeout: 3 * time.Second, maxLive: 5, volumes: cfg.NFS}
	if err := setup(ctx, w, cfg.Tags, cfg.Duration); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	var vms *vmSet
	if cfg.VMs > 0 {
		if vms, err = startVMs(ctx, b, cfg.VMs, cfg.Duration, logf); err != nil {
			return nil, fmt.Errorf("servers: %w", err)
		}
	}
	if vms != nil {
		for _, s := range vms.srv {
			w.servers = append(w.servers, s.id)
		}
	}
	hist := &history{t0: time.Now()}
	w.hist = hist
	nem := &nemesis{b: b, cl: cl, rnd: rand.New(rand.NewPCG(cfg.Seed, 0)), kinds: cfg.Nemeses, t0: hist.t0, logf: logf, onFault: hist.setFault}
	if cfg.NFS {
		if nem.nfs.pid, err = b.NASServerPid(); err != nil {
			return nil, err
		}
		nem.nfs.addr = net.JoinHostPort(b.NASAddr, "2049")
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	// The sampler runs through the faults, the heal and the checks.
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampling sync.WaitGroup
	if vms != nil {
		sampling.Add(1)
		go func() { defer sampling.Done(); vms.sampler(sampleCtx, hist.t0) }()
	}
	var wg sync.WaitGroup
	var procMu sync.Mutex
	nextProc := cfg.Clients
	procs := func() int {
		procMu.Lock()
		defer procMu.Unlock()
		nextProc++
		return nextProc - 1
	}
	for k := range cfg.Clients {
		c := &client{w: w, id: k, proc: k, rnd: rand.New(rand.NewPCG(cfg.Seed, uint64(k)+1)), procs: procs}
		wg.Add(1)
		go func() { defer wg.Done(); c.run(runCtx, 100*time.Millisecond) }()
	}
	var nemErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		hold := func() time.Duration { return time.Duration(2000+nem.rnd.IntN(4000)) * time.Millisecond }
		quiet := func() time.Duration { return time.Duration(1000+nem.rnd.IntN(3000)) * time.Millisecond }
		nemErr = nem.run(runCtx, hold, quiet, hist.addNemesis)
	}()
	wg.Wait()
	cancel()
	logf("faulty phase over: %d operations, %d faults; healing", len(hist.ops), len(hist.nem))
	if err := nem.healAll(ctx); err != nil {
		res.Failures = append(res.Failures, fmt.Sprintf("heal: %v", err))
	}
	if vms != nil {
		vms.markHeal()
	}
	if nemErr != nil {
		res.Failures = append(res.Failures, fmt.Sprintf("nemesis: %v", nemErr))
	}
	// A last linearizable read of every register, once the cluster
	// serves writes again.
	final := &client{w: w, id: cfg.Clients, proc: procs(), rnd: rand.New(rand.NewPCG(cfg.Seed, 1000)), procs: procs}
	for _, k := range w.regNames {
		if err := finalRead(ctx, final, k); err != nil {
			res.Failures = append(res.Failures, err.Error())
		}
	}
	states, err := converge(ctx, w)
	if err != nil {
		res.Failures = append(res.Failures, err.Error())
	}
	w.stateCheck, w.stateSummary = agreeOnState(ctx, w, time.Minute)
	if cfg.NFS {
		w.nasCheck, w.nasSummary = volumeCheck(ctx, w, hist.ops)
	}
	if vms != nil {
		bad, sum := vms.check(ctx, func() { stopSampling(); sampling.Wait() })
		w.nasCheck, w.nasSummary = append(w.nasCheck, bad...), w.nasSummary+sum
	}
	w.hostCheck, w.hostSummary = reconcileCheck(ctx, w, 2*time.Minute)
	res.Ops, res.Nemeses = hist.ops, hist.nem
	var dataDirs []string
	for _, h := range b.Hosts {
		dataDirs = append(dataDirs, h.DataDir)
	}
	res.check(w, states, dataDirs, logf)
	return res, nil
}

// setup creates the register networks and the shared network for ports
// through h1, and waits until every host has them.
func setup(ctx context.Context, w *workload, tags bool, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	nc := w.cl[0].net
	for k := range 3 {
		name := fmt.Sprintf("%sreg%d", w.prefix, k) // not "<prefix>-…": those are the created ones
		d := initDesc
		n, err := networks.Create(ctx, nc, networks.CreateOpts{Name: name, Description: d}).Extract()
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		w.regs[name] = n.ID
		w.regNames = append(w.regNames, name)
	}
	pn, err := networks.Create(ctx, nc, networks.CreateOpts{Name: "faults-ports"}).Extract()
	if err != nil {
		return fmt.Errorf("create port network: %w", err)
	}
	w.portNet = pn.ID
	// Networks leaked by indeterminate creates and ports would hit the
	// default quotas in a long run: the admin project gets none.
	unlimited := -1
	if _, err := quotas.Update(ctx, nc, pn.ProjectID, quotas.UpdateOpts{Network: &unlimited, Port: &unlimited}).Extract(); err != nil {
		return fmt.Errorf("lift the admin project's quotas: %w", err)
	}
	if w.volumes {
		if _, err := quotasets.Update(ctx, w.cl[0].vol, pn.ProjectID, quotasets.UpdateOpts{Volumes: &unlimited, Gigabytes: &unlimited}).Extract(); err != nil {
			return fmt.Errorf("lift the admin project's volume quotas: %w", err)
		}
	}
	if tags {
		// A network holds at most 50 tags, and the clients add about ten
		// a second: enough sets that none fills up.
		for i := range 4 + int(d/(3*time.Second)) {
			tn, err := networks.Create(ctx, nc, networks.CreateOpts{Name: fmt.Sprintf("%sset%d", w.prefix, i)}).Extract()
			if err != nil {
				return fmt.Errorf("create set network %d: %w", i, err)
			}
			w.tagNets = append(w.tagNets, tn.ID)
		}
	}
	if _, err := subnets.Create(ctx, nc, subnets.CreateOpts{NetworkID: pn.ID, CIDR: "10.250.0.0/21", IPVersion: gophercloud.IPv4}).Extract(); err != nil {
		return fmt.Errorf("create port subnet: %w", err)
	}
	for _, c := range w.cl {
		for {
			_, err := networks.Get(ctx, c.net, pn.ID).Extract()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s never saw the setup networks: %w", c.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// finalRead reads register key linearizably (an empty update) through
// random hosts until one answers, for up to a minute.
func finalRead(ctx context.Context, c *client, key string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		c.n++
		hc := c.w.cl[c.rnd.IntN(len(c.w.cl))]
		op := Op{Client: c.id, Proc: c.proc, Host: hc.idx, Kind: opRead, Key: key, Nemesis: "healed"}
		octx, cancel := context.WithTimeout(ctx, c.w.timeout)
		op.Call = c.w.hist.now()
		err := c.do(octx, hc, &op)
		op.Return = c.w.hist.now()
		cancel()
		op.Outcome, op.Status = classify(err)
		if err == nil {
			c.w.hist.add(op)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unavailable after heal: no host answered a read of %s for a minute: %v", key, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// converge waits until every host, read while its state holds still,
// lists the same networks and ports (up to two minutes), and returns
// the hosts' final states; on time-out, the last ones seen.
func converge(ctx context.Context, w *workload) ([]finalState, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var states []finalState
	var lastErr error
	for {
		states, lastErr = snapshotAll(ctx, w)
		if lastErr == nil {
			if diff := compareHosts(states); len(diff) == 0 {
				return states, nil
			} else {
				lastErr = fmt.Errorf("hosts differ: %s", diff[0])
			}
		}
		if time.Now().After(deadline) {
			if states == nil {
				return nil, fmt.Errorf("no convergence after heal: %w", lastErr)
			}
			return states, nil // compareHosts reports the differences
		}
		time.Sleep(time.Second)
	}
}

// snapshotAll reads every host's networks, ports and members, between
// two readings of the digest of its whole state: when the digest moved,
// the lists may mix two states and the host is still applying. (Its
// applied index is no guide: leadership confirmations move it without
// changing anything.)
func snapshotAll(ctx context.Context, w *workload) ([]finalState, error) {
	var out []finalState
	for _, c := range w.cl {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := c.digest(ctx)
		if err != nil {
			cancel()
			return nil, err
		}
		fs := finalState{Host: c.name, Applied: st.AppliedIndex, Networks: map[string]netInfo{}, Ports: map[string]portInfo{}}
		err = errors.Join(listNetworks(ctx, c, fs.Networks), listPorts(ctx, c, fs.Ports))
		if err == nil {
			fs.Members, err = c.members(ctx)
		}
		var st2 status
		if err == nil {
			st2, err = c.digest(ctx)
		}
		cancel()
		if err != nil {
			return nil, err
		}
		if st2.StateDigest != st.StateDigest {
			return nil, fmt.Errorf("%s still applying (state at index %d, then another at %d)", c.name, st.StateIndex, st2.StateIndex)
		}
		out = append(out, fs)
	}
	return out, nil
}

func listNetworks(ctx context.Context, c *hostClient, into map[string]netInfo) error {
	pages, err := networks.List(c.net, nil).AllPages(ctx)
	if err != nil {
		return fmt.Errorf("list networks at %s: %w", c.name, err)
	}
	var list []netInfo
	if err := networks.ExtractNetworksInto(pages, &list); err != nil {
		return err
	}
	for _, n := range list {
		into[n.ID] = n
	}
	return nil
}

func listPorts(ctx context.Context, c *hostClient, into map[string]portInfo) error {
	pages, err := ports.List(c.net, nil).AllPages(ctx)
	if err != nil {
		return fmt.Errorf("list ports at %s: %w", c.name, err)
	}
	var list []portInfo
	if err := ports.ExtractPortsInto(pages, &list); err != nil {
		return err
	}
	for _, p := range list {
		into[p.ID] = p
	}
	return nil
}
