package scheduler

import (
	"fmt"
	"math/rand"
	"testing"

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
