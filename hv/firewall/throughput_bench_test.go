package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkThroughput1kRules: TCP throughput (iperf3, one stream)
// between two VM namespaces through the host's bridge, with port security
// off (no tables) and with both ports filtered by 1,000 rules, measured
// alternately in the same run; it reports both rates and their ratio.
// The allowing rule is the last of each chain, so a new connection walks
// all of them; established traffic is accepted by the conntrack state
// first. Needs root and iperf3 (Debian: apt-get install iperf3); the
// namespaces, the iperf3 server and the tables go in cleanup.
func BenchmarkThroughput1kRules(b *testing.B) {
	iperf, err := exec.LookPath("iperf3")
	if err != nil {
		b.Fatal("iperf3 not found: apt-get install iperf3")
	}
	h := newHost(b)
	client, server := h.addVM(b, 1), h.addVM(b, 2)
	const port = 5201
	srv := exec.Command("ip", "netns", "exec", server.ns.name, iperf, "-s", "-B", server.ip.String(), "-p", fmt.Sprint(port))
	if err := srv.Start(); err != nil {
		b.Fatalf("start iperf3 server: %v", err)
	}
	b.Cleanup(func() { // before the namespaces go (cleanups run last-in first-out)
		_ = srv.Process.Kill()
		_ = srv.Wait()
	})
	waitListening(b, client, server.ip, port)

	rules := make([]Rule, 0, 1000)
	for i := range 999 {
		rules = append(rules, Rule{Ingress: true, Proto: ProtoTCP, PortMin: 10000 + i, PortMax: 10000 + i,
			RemoteIP: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)})
	}
	rules = append(rules, tcp(true, port, port))
	filtered := []Port{h.port(client, true, append(rules[:999:999], anyV4)...), h.port(server, true, append(rules, anyV4)...)}
	ctx := context.Background()

	var off, on float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.m.Cleanup(ctx); err != nil {
			b.Fatal(err)
		}
		off += iperfRate(b, iperf, client, server.ip, port)
		h.apply(b, nil, filtered...)
		on += iperfRate(b, iperf, client, server.ip, port)
	}
	b.StopTimer()
	off, on = off/float64(b.N), on/float64(b.N)
	b.ReportMetric(off/1e9, "Gbit/s-off")
	b.ReportMetric(on/1e9, "Gbit/s-1k-rules")
	b.ReportMetric(on/off, "ratio")
	b.Logf("port security off %.2f Gbit/s, 1,000 rules %.2f Gbit/s: ratio %.3f", off/1e9, on/1e9, on/off)
}

// waitListening polls until a TCP connection from v to dst:port opens.
func waitListening(tb testing.TB, v *vm, dst netip.Addr, port int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tcpDial(tb, v, dst, port)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("iperf3 server on %s:%d not reachable: %v", dst, port, err)
		}
	}
}

// iperfRate runs a 2-second iperf3 test from v and returns the received
// bits per second.
func iperfRate(tb testing.TB, iperf string, v *vm, dst netip.Addr, port int) float64 {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "exec", v.ns.name, iperf, "-c", dst.String(), "-p", fmt.Sprint(port), "-t", "2", "-J").Output()
	if err != nil {
		tb.Fatalf("iperf3 client: %v: %s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond <= 0 {
		tb.Fatalf("iperf3 result %v %q: %s", err, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond
}
