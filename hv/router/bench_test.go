package router

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// BenchmarkFloatingIPApply: one Apply that adds (or removes) a floating IP
// on a host running one router, i.e. state change → NAT, route and proxy
// ARP in place. Prints the time and the writes per apply.
func BenchmarkFloatingIPApply(b *testing.B) {
	needRoot(b)
	w := newWorld(b, 1, 100, 200)
	a := w.hosts[0]
	gw := &Gateway{Iface: "eth0", SNAT: true}
	fip := FloatingIP{netip.MustParseAddr("203.0.113.120"), netip.MustParseAddr("10.0.1.5")}
	without := Desired{Routers: []Router{r1(gw)}, HostMAC: a.mac, Externals: []string{"eth0"}}
	with := Desired{Routers: []Router{r1(gw, fip)}, HostMAC: a.mac, Externals: []string{"eth0"}}
	if _, err := a.mgr.Apply(b.Context(), without); err != nil {
		b.Fatal(err)
	}
	writes := 0
	b.ResetTimer()
	for i := range b.N {
		d := with
		if i%2 == 1 {
			d = without
		}
		st, err := a.mgr.Apply(b.Context(), d)
		if err != nil {
			b.Fatal(err)
		}
		writes += st.Writes
	}
	b.ReportMetric(float64(writes)/float64(b.N), "writes/apply")
}

// BenchmarkFloatingIPScale: a host already running 1,000 floating IPs
// (50 routers × 20, or one router × 1,000) applies a state in which one
// floating IP was added or removed. Reports the time per change, the
// netlink and nftables writes per change and the nftables transactions
// per change (the target: ≤ 10 ms and one transaction).
func BenchmarkFloatingIPScale(b *testing.B) {
	needRoot(b)
	for _, c := range []struct {
		name            string
		routers, perRtr int
	}{{"50x20", 50, 20}, {"1x1000", 1, 1000}} {
		b.Run(c.name, func(b *testing.B) {
			vnis := make([]int, c.routers)
			for k := range vnis {
				vnis[k] = 1000 + k
			}
			w := newWorld(b, 1, vnis...)
			a := w.hosts[0]
			d := Desired{HostMAC: a.mac, Externals: []string{"eth0"}}
			n := 0
			for k := range c.routers {
				r := Router{ID: fmt.Sprintf("bench-%04d-router", k), Gateway: &Gateway{Iface: "eth0", SNAT: true},
					Interfaces: []Interface{{ID: fmt.Sprintf("ri%d", k), Bridge: fmt.Sprintf("psbr%d", vnis[k]), Overlay: fmt.Sprintf("psvx%d", vnis[k]),
						Address: netip.MustParsePrefix("10.0.0.1/16"), MAC: mustMAC(fmt.Sprintf("fa:16:3e:10:%02x:%02x", k/256, k%256)), MTU: 1450}}}
				for j := range c.perRtr {
					r.FloatingIPs = append(r.FloatingIPs, FloatingIP{
						Addr:  netip.AddrFrom4([4]byte{198, 18, byte(n / 250), byte(n%250 + 1)}),
						Fixed: netip.AddrFrom4([4]byte{10, 0, byte(j/200 + 1), byte(j%200 + 10)})})
					n++
				}
				d.Routers = append(d.Routers, r)
			}
			start := time.Now()
			st, err := a.mgr.Apply(b.Context(), d)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%d floating IPs on %d routers in place: %d writes in %v", n, c.routers, st.Writes, time.Since(start).Round(time.Millisecond))
			if st, err := a.mgr.Apply(b.Context(), d); err != nil || st.Writes != 0 {
				b.Fatalf("second apply: %d writes %v, err %v", st.Writes, st.Changes, err)
			}
			extra := FloatingIP{netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("10.0.0.200")}
			writes, txs, maxTx := 0, 0, 0
			var took [2]time.Duration // adds, removals
			b.ResetTimer()
			for i := range b.N {
				k := (i / 2) % c.routers
				r := &d.Routers[k]
				if i%2 == 0 {
					r.FloatingIPs = append(r.FloatingIPs, extra)
				} else {
					r.FloatingIPs = r.FloatingIPs[:len(r.FloatingIPs)-1]
				}
				t0 := time.Now()
				st, err := a.mgr.Apply(b.Context(), d)
				took[i%2] += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				if st.Writes == 0 {
					b.Fatalf("change %d wrote nothing", i)
				}
				writes += st.Writes
				txs += st.NFTTx
				maxTx = max(maxTx, st.NFTTx)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/change")
			adds, removals := (b.N+1)/2, b.N/2
			b.ReportMetric(float64(took[0].Microseconds())/1000/float64(max(adds, 1)), "ms/add")
			b.ReportMetric(float64(took[1].Microseconds())/1000/float64(max(removals, 1)), "ms/remove")
			b.ReportMetric(float64(writes)/float64(b.N), "writes/change")
			b.ReportMetric(float64(txs)/float64(b.N), "nft-tx/change")
			b.ReportMetric(float64(maxTx), "max-nft-tx")
			if b.N < 2 {
				return // the runner's probe round
			}
			fmt.Printf("BENCHROW\tone floating IP added/removed, 1,000 in place (%d routers × %d)\t%.1f ms\t<= 10 ms, 1 nftables tx\tadd %.1f ms, remove %.1f ms; %.1f writes, %d nftables tx at most\t-\n",
				c.routers, c.perRtr, float64(b.Elapsed().Microseconds())/1000/float64(b.N),
				float64(took[0].Microseconds())/1000/float64(max(adds, 1)), float64(took[1].Microseconds())/1000/float64(max(removals, 1)),
				float64(writes)/float64(b.N), maxTx)
		})
	}
}

// BenchmarkThroughput: TCP throughput (iperf3, 3 s) between namespaces on
// one host through each NAT path, against the same two namespaces routed
// with no NAT, alternating in the same run: "fip-in" from the LAN to a
// VM's floating IP (baseline: to its fixed address), "fip-out" from that
// VM to the LAN through its floating IP, "snat" from a VM without one
// (baselines: the same VMs leaving unNATed, the LAN routing the tenant
// subnet back). The baseline router has no NAT at all: its nat table is
// deleted after each apply of the plain state (so neither NAT hooks nor
// conntrack run in its namespace; the host's guard runs in both). Reports
// both rates and the ratio (target ≥ 0.9); "routed" is east-west between
// two subnets of the router, for reference.
func BenchmarkThroughput(b *testing.B) {
	needRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Fatalf("iperf3 is required (apt-get install iperf3): %v", err)
	}
	w := newWorld(b, 1, 100, 200)
	a := w.hosts[0]
	vm1 := w.vm(b, a, "psbr100", vm1MAC, "10.0.1.5/24", "10.0.1.1")
	vm2 := w.vm(b, a, "psbr100", vm2MAC, "10.0.1.6/24", "10.0.1.1")
	vm3 := w.vm(b, a, "psbr200", vm3MAC, "10.0.2.5/24", "10.0.2.1")
	fip := FloatingIP{netip.MustParseAddr("203.0.113.120"), netip.MustParseAddr("10.0.1.5")}
	natted := Desired{Routers: []Router{r1(&Gateway{Iface: "eth0", SNAT: true}, fip)}, HostMAC: a.mac, Externals: []string{"eth0"}}
	plain := Desired{Routers: []Router{r1(&Gateway{Iface: "eth0", SNAT: false})}, HostMAC: a.mac, Externals: []string{"eth0"}}
	apply := func(d Desired) {
		b.Helper()
		if _, err := a.mgr.Apply(b.Context(), d); err != nil {
			b.Fatal(err)
		}
	}
	applyPlain := func() {
		b.Helper()
		apply(plain)
		dropRouterNAT(b, a, plain.Routers[0].ID)
	}
	applyPlain()
	// Plain routing of the tenant subnet: the LAN routes it to the host,
	// the host to the router's transit address (routes of the test, not of
	// the Manager, which leaves them alone).
	ext := a.ns.link(b, extRootName(r1(nil).ID))
	transit := transitAddrs([]string{r1(nil).ID})[r1(nil).ID]
	for _, sub := range []string{"10.0.1.0/24", "10.0.2.0/24"} {
		_, dst, _ := net.ParseCIDR(sub)
		if err := w.lan.nl.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP(a.ip)}); err != nil {
			b.Fatal(err)
		}
		if err := a.ns.nl.RouteAdd(&netlink.Route{Dst: dst, LinkIndex: ext.Attrs().Index, Gw: net.IP(transit.AsSlice())}); err != nil {
			b.Fatal(err)
		}
	}
	cases := []struct {
		name            string
		server, client  *tns
		addr, plainAddr string
	}{
		{"fip-in", vm1, w.lan, "203.0.113.120", "10.0.1.5"},
		{"fip-out", w.lan, vm1, "203.0.113.1", "203.0.113.1"},
		{"snat", w.lan, vm2, "203.0.113.1", "203.0.113.1"},
		{"routed", vm3, vm1, "10.0.2.5", ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var nat, base float64
			var ratios []float64 // per round: the machine is shared, rounds vary
			for range b.N {
				var plainRate float64
				if c.plainAddr != "" {
					applyPlain()
					gbps, err := iperf(b, c.server, c.client, c.plainAddr)
					if err != nil {
						b.Fatalf("routed, no NAT: %v", err)
					}
					base += gbps
					plainRate = gbps
				}
				apply(natted)
				gbps, err := iperf(b, c.server, c.client, c.addr)
				if err != nil {
					b.Fatal(err)
				}
				nat += gbps
				if plainRate > 0 {
					ratios = append(ratios, gbps/plainRate)
				}
			}
			n := float64(b.N)
			b.ReportMetric(nat/n, "Gbit/s")
			if c.plainAddr == "" {
				return
			}
			slices.Sort(ratios)
			med := ratios[len(ratios)/2]
			b.ReportMetric(base/n, "routed-Gbit/s")
			b.ReportMetric(med, "ratio")
			if b.N < 2 {
				return // the runner's probe round
			}
			fmt.Printf("BENCHROW\tTCP %s (iperf3, one host, NAT vs the same namespaces routed; median of %d alternating rounds)\t%.2f×\t>= 0.9×\t%.1f vs %.1f Gbit/s (rounds %.2f–%.2f×)\t-\n",
				c.name, b.N, med, nat/n, base/n, ratios[0], ratios[len(ratios)-1])
		})
	}
}

// dropRouterNAT deletes the nat table of router id on h (the next Apply
// of a state with NAT rebuilds it).
func dropRouterNAT(b *testing.B, h *host, id string) {
	b.Helper()
	ns, err := netns.GetFromName(h.mgr.NSName(id))
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		b.Fatal(err)
	}
	conn.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: tblRouter})
	if err := conn.Flush(); err != nil {
		b.Fatalf("delete the nat table of %s: %v", id, err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		b.Fatal(err)
	}
	if len(tables) != 0 {
		b.Fatalf("tables left in the router namespace of the baseline: %d", len(tables))
	}
}

// iperf runs an iperf3 server in server and a 3 s client in client.
func iperf(b *testing.B, server, client *tns, addr string) (float64, error) {
	srv := exec.Command("ip", "netns", "exec", server.name, "iperf3", "-s", "-1", "-B", "0.0.0.0")
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	type result struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, err := client.run(b, "iperf3", "-c", addr, "-t", "3", "-J")
		var res result
		if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || err != nil || res.Error != "" {
			last = fmt.Sprintf("%v %v %s", err, jerr, res.Error) // the server may not listen yet
			continue
		}
		return res.End.SumReceived.BitsPerSecond / 1e9, nil
	}
	return 0, fmt.Errorf("iperf3 client: %s", last)
}
