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
