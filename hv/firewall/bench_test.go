package firewall

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkRuleApplied: one rule added to a port's group until its
// transaction is applied (build, diff, one batch).
func BenchmarkRuleApplied(b *testing.B) {
	h := newHost(b)
	v := h.addVM(b, 1)
	rules := []Rule{anyV4}
	h.apply(b, nil, h.port(v, true, rules...))
	var writes int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rules = append(rules, tcp(true, 1000+i%60000, 1000+i%60000))
		st := h.apply(b, nil, h.port(v, true, rules...))
		writes += st.Writes()
	}
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
}

// BenchmarkGroupMember10k: a remote group of 10,000 members; one member
// joining or leaving is one set element in one transaction.
func BenchmarkGroupMember10k(b *testing.B) {
	h := newHost(b)
	v := h.addVM(b, 1)
	members := make([]netip.Addr, 0, 10001)
	for i := 0; i < 10000; i++ {
		members = append(members, netip.AddrFrom4([4]byte{10, 1 + byte(i>>16), byte(i >> 8), byte(i)}))
	}
	port := h.port(v, true, anyV4, Rule{Ingress: true, Proto: ProtoTCP, PortMin: 22, PortMax: 22, RemoteGroup: "g"})
	start := time.Now()
	st := h.apply(b, map[string][]netip.Addr{"g": members}, port)
	b.Logf("initial apply of 10000 members: %v, %d elements, %d transaction(s)", time.Since(start), st.Elements, st.Tx)
	extra := netip.MustParseAddr("10.200.0.1")
	var elems, tx int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := members
		if i%2 == 0 {
			g = append(members[:10000:10000], extra)
		}
		st, err := h.m.Apply(context.Background(), Desired{Networks: []Network{{Bridge: h.bridge, Zone: 7}}, Ports: []Port{port}, Groups: map[string][]netip.Addr{"g": g}})
		if err != nil {
			b.Fatal(err)
		}
		elems += st.Elements
		tx += st.Tx
	}
	b.ReportMetric(float64(elems)/float64(b.N), "elements/op")
	b.ReportMetric(float64(tx)/float64(b.N), "tx/op")
}

// BenchmarkRuleRemoved: one rule of a port's 200 removed until its
// transaction is applied and the connections it allowed are cut.
func BenchmarkRuleRemoved(b *testing.B) {
	h := newHost(b)
	v := h.addVM(b, 1)
	rules := []Rule{anyV4}
	for i := range 200 {
		rules = append(rules, tcp(true, 1000+i, 1000+i))
	}
	h.apply(b, nil, h.port(v, true, rules...))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Remove rule 1+i%200, then put it back (untimed).
		k := 1 + i%200
		less := append(append([]Rule{}, rules[:k]...), rules[k+1:]...)
		h.apply(b, nil, h.port(v, true, less...))
		b.StopTimer()
		h.apply(b, nil, h.port(v, true, rules...))
		b.StartTimer()
	}
}

// BenchmarkVerify1000Rules: a full resync's Apply of an unchanged port
// with 1,000 rules: every chain read back and matched by tag, no writes.
func BenchmarkVerify1000Rules(b *testing.B) {
	h := newHost(b)
	v := h.addVM(b, 1)
	rules := []Rule{anyV4}
	for i := range 1000 {
		rules = append(rules, tcp(true, 10000+i, 10000+i))
	}
	d := Desired{Networks: []Network{{Bridge: h.bridge, Zone: 7}, {Bridge: "br1", Zone: 8}}, Ports: []Port{h.port(v, true, rules...)}}
	h.apply(b, nil, d.Ports...)
	d.Verify = true
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := h.m.Apply(context.Background(), d)
		if err != nil || st.Writes() != 0 {
			b.Fatalf("verify: %+v, %v; want no writes", st, err)
		}
	}
}
