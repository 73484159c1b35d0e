package scheduler

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// benchHosts returns n alive hosts in one zone, half empty, half partly used.
func benchHosts(n int) []Host {
	rng := rand.New(rand.NewSource(1))
	hosts := make([]Host, n)
	for i := range hosts {
		h := hostOf(fmt.Sprintf("host-%05d", i), 32<<rng.Intn(3), 131072<<rng.Intn(3), 2000<<rng.Intn(2))
		if i%2 == 1 {
			h.UsedVCPUs, h.UsedRAMMB, h.UsedDiskGB = rng.Intn(h.VCPUs*4), rng.Intn(h.RAMMB), rng.Intn(h.DiskGB)
		}
		hosts[i] = h
	}
	return hosts
}

func benchRequests(n int) []Request {
	rng := rand.New(rand.NewSource(2))
	reqs := make([]Request, n)
	for i := range reqs {
		f := flavors[rng.Intn(len(flavors)-1)]
		reqs[i] = Request{InstanceID: fmt.Sprintf("i%d", i), VCPUs: f[0], RAMMB: f[1], DiskGB: f[2]}
	}
	return reqs
}

// BenchmarkPlace10kHosts places 1,000 requests over 10,000 hosts per op.
func BenchmarkPlace10kHosts(b *testing.B) {
	hosts := benchHosts(10000)
	reqs := benchRequests(1000)
	cpuBound := append([]Host(nil), hosts...)
	for i := range cpuBound { // the RAM-richest third has no vCPU left
		if i%3 == 0 {
			cpuBound[i].RAMMB, cpuBound[i].UsedVCPUs = 1<<21, cpuBound[i].VCPUs*4
		}
	}
	zoned := append([]Request(nil), reqs...)
	for i := range zoned {
		zoned[i].AZ, zoned[i].Arch = DefaultAZ, "x86_64"
	}
	shuffled := append([]Host(nil), hosts...)
	rand.New(rand.NewSource(3)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	grouped := append([]Request(nil), reqs...)
	groups := map[string]Group{}
	for i := range grouped {
		g := fmt.Sprintf("g%d", i%10)
		grouped[i].Group = g
		groups[g] = Group{ID: g, Policy: statedb.PolicyAntiAffinity, Hosts: map[string]int{hosts[i].ID: 1}}
	}
	for _, bc := range []struct {
		name   string
		hosts  []Host
		reqs   []Request
		groups map[string]Group
		opt    Options
	}{
		{"spread", hosts, reqs, nil, Options{}},
		{"pack", hosts, reqs, nil, Options{Weigher: Pack}},
		{"spread-cpu-bound", cpuBound, reqs, nil, Options{}},
		{"pack-cpu-bound", cpuBound, reqs, nil, Options{Weigher: Pack}},
		{"spread-az-arch", hosts, zoned, nil, Options{}},
		{"spread-unsorted-ids", shuffled, reqs, nil, Options{}},
		{"spread-anti-affinity", hosts, grouped, groups, Options{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				p, _ := Place(bc.hosts, bc.groups, bc.reqs, bc.opt)
				n += len(p)
			}
			if n != b.N*len(bc.reqs) {
				b.Fatalf("placed %d of %d", n, b.N*len(bc.reqs))
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}

// BenchmarkPlaceOneAt10k places one request per call over 10,000 hosts, as
// a leader scheduling instances one at a time would.
func BenchmarkPlaceOneAt10k(b *testing.B) {
	hosts := benchHosts(10000)
	reqs := benchRequests(1000)
	b.ReportAllocs()
	i, n := 0, 0
	for b.Loop() {
		p, _ := Place(hosts, nil, reqs[i%len(reqs):i%len(reqs)+1], Options{})
		n += len(p)
		i++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkPlacePhysnet10k places 1,000 requests over 10,000 hosts of which
// 1 % map physical network physnet1, each request needing it (and a batch
// where one request in ten does), next to the same requests with no
// physical network in the same run: the baseline. "ms/1k" is the cost of
// placing 1,000 requests, "×base" its ratio to the unconstrained batch.
// Requests the mapping hosts cannot hold fail, as they would.
func BenchmarkPlacePhysnet10k(b *testing.B) {
	hosts := benchHosts(10000)
	for i := range hosts {
		if i%100 == 37 {
			hosts[i].Physnets = map[string]string{"physnet1": "eth1"}
		} else if i%100 == 38 {
			hosts[i].Physnets = map[string]string{"physnet2": "eth2"}
		}
	}
	base := benchRequests(1000)
	all := append([]Request(nil), base...)
	tenth := append([]Request(nil), base...)
	for i := range all {
		all[i].Physnets = []string{"physnet1"}
		if i%10 == 0 {
			tenth[i].Physnets = []string{"physnet1"}
		}
	}
	byID := map[string]Host{}
	for _, h := range hosts {
		byID[h.ID] = h
	}
	timeOf := func(reqs []Request, opt Options, linear bool, n int) time.Duration {
		start := time.Now()
		for range n {
			place(hosts, nil, reqs, opt, linear)
		}
		return time.Since(start)
	}
	for _, bc := range []struct {
		name   string
		reqs   []Request
		opt    Options
		linear bool
	}{
		{"spread-all-need", all, Options{}, false},
		{"pack-all-need", all, Options{Weigher: Pack}, false},
		{"spread-tenth-need", tenth, Options{}, false},
		{"spread-16-all-need", all[:linearMax], Options{}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			baseReqs := base[:len(bc.reqs)]
			need := map[string]bool{}
			for _, r := range bc.reqs {
				need[r.InstanceID] = len(r.Physnets) > 0
			}
			timeOf(baseReqs, bc.opt, bc.linear, 1) // warm
			var spent time.Duration
			n := 0
			for b.Loop() {
				start := time.Now()
				p, f := place(hosts, nil, bc.reqs, bc.opt, bc.linear)
				spent += time.Since(start)
				if len(p)+len(f) != len(bc.reqs) || len(p) == 0 {
					b.Fatalf("placed %d, failed %d of %d", len(p), len(f), len(bc.reqs))
				}
				for _, pl := range p {
					if need[pl.InstanceID] && byID[pl.HostID].Physnets["physnet1"] == "" {
						b.Fatalf("%s needs physnet1, placed on %s", pl.InstanceID, pl.HostID)
					}
				}
				n++
			}
			baseSpent := timeOf(baseReqs, bc.opt, bc.linear, n)
			per := func(d time.Duration) float64 {
				return float64(d.Nanoseconds()) / 1e6 / float64(n) * 1000 / float64(len(bc.reqs))
			}
			b.ReportMetric(per(spent), "ms/1k")
			b.ReportMetric(per(baseSpent), "base-ms/1k")
			b.ReportMetric(float64(spent)/float64(baseSpent), "×base")
		})
	}
}

// BenchmarkPlanPhysnet10k runs Plan, the leader's whole scheduling round
// (reading the state, placing, building the command), over a state of
// 10,000 members of which 1 % map physnet1, for batches of servers each
// with a port on a flat network on physnet1, next to batches of the same
// size without (the baseline) in the same run. "ms/plan" is one round,
// "×base" its ratio to the unconstrained round.
func BenchmarkPlanPhysnet10k(b *testing.B) {
	e := &agreeEnv{s: statedb.NewStore()}
	must := func(typ statedb.CmdType, payload any) {
		e.idx++
		c, err := statedb.NewCommand(typ, fmt.Sprint("r", e.idx), time.Unix(int64(e.idx), 0).UTC(), payload)
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := c.Encode()
		if err := e.s.Apply(e.idx, raw).Err; err != nil {
			b.Fatalf("apply %d: %v", typ, err)
		}
	}
	const hosts = 10000
	must(statedb.CmdBootstrap, statedb.BootstrapCmd{
		Config:     statedb.ClusterConfig{ClusterID: "c"},
		Member:     statedb.Member{ID: "host-00000", Name: "host-00000"},
		Project:    statedb.Project{ID: "p", Name: "admin"},
		Admin:      statedb.User{ID: "u", Name: "admin"},
		Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"},
		SigningKey: statedb.SigningKey{ID: "k"},
	})
	must(statedb.CmdCreateImage, statedb.Image{ID: "img", Name: "img", ProjectID: "p", Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"})
	must(statedb.CmdCreateNetwork, statedb.Network{ID: "ext", ProjectID: "p", External: true, NetworkType: statedb.NetTypeFlat, PhysicalNetwork: "physnet1"})
	live := make([]Live, hosts)
	for i := range hosts {
		id := fmt.Sprintf("host-%05d", i)
		if i > 0 {
			must(statedb.CmdRegisterMember, statedb.Member{ID: id, Name: id})
		}
		if i%100 == 37 {
			must(statedb.CmdSetHostNetworks, statedb.HostNetworks{ID: id, Physnets: map[string]string{"physnet1": "eth1"}})
		}
		live[i] = Live{ID: id, Alive: true, Arch: "x86_64", VCPUs: 64, RAMMB: 262144, DiskGB: 4000}
	}
	batch := func(prefix string, n int, onExt bool) []*statedb.Instance {
		var cmd statedb.CreateInstancesCmd
		for j := range n {
			id := fmt.Sprintf("%s-%d", prefix, j)
			ic := statedb.InstanceCreate{Instance: statedb.Instance{ID: id, Name: id, ProjectID: "p", ImageID: "img",
				Flavor: statedb.Flavor{ID: "1", VCPUs: 1, RAMMB: 1024, DiskGB: 10}}}
			if onExt {
				ic.NICs = []statedb.NICRequest{{Create: &statedb.PortRequest{ID: "port-" + id, NetworkID: "ext"}}}
			}
			cmd.Instances = append(cmd.Instances, ic)
		}
		must(statedb.CmdCreateInstances, cmd)
		sn := e.s.Snapshot()
		out := make([]*statedb.Instance, n)
		for j := range out {
			out[j], _ = sn.Instance(fmt.Sprintf("%s-%d", prefix, j))
		}
		return out
	}
	for _, n := range []int{linearMax, 1000} {
		ext, plain := batch(fmt.Sprint("ext", n), n, true), batch(fmt.Sprint("plain", n), n, false)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			sn := e.s.Snapshot()
			round := func(batch []*statedb.Instance) time.Duration {
				start := time.Now()
				cmd := Plan(sn, live, batch, nil)
				d := time.Since(start)
				if len(cmd.Placements) != len(batch) {
					b.Fatalf("placed %d of %d: %+v", len(cmd.Placements), len(batch), cmd.Failures)
				}
				return d
			}
			round(plain) // warm
			var spent, base time.Duration
			rounds := 0
			for b.Loop() {
				spent += round(ext)
				base += round(plain)
				rounds++
			}
			ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 / float64(rounds) }
			b.ReportMetric(ms(spent), "ms/plan")
			b.ReportMetric(ms(base), "base-ms/plan")
			b.ReportMetric(float64(spent)/float64(base), "×base")
		})
	}
}
