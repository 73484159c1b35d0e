package statedb

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkQuotaApply measures the state machine's apply of one create
// with quotas on (finite limits: the create is checked) against off
// (unlimited: nothing is read), in the same run, creates of the two
// projects alternating: ports and servers in a project already holding
// 0, 1,200 or 4,800 of them, and servers in projects of 10 on the default
// quotas. It is the part of BenchmarkQuotaCreates (node/nodetest) that
// quotas change, without Raft, HTTP and the machine's load around it.
//
//	go test -run '^$' -bench QuotaApply ./consensus/statedb/
func BenchmarkQuotaApply(b *testing.B) {
	for _, kind := range []string{"ports", "servers"} {
		for _, size := range []int{0, 1200, 4800} {
			b.Run(fmt.Sprintf("%s-%d", kind, size), func(b *testing.B) { benchQuotaApply(b, kind, size) })
		}
	}
	b.Run("small-projects", func(b *testing.B) { benchQuotaApply(b, "small-projects", 0) })
}

func benchQuotaApply(b *testing.B, kind string, size int) {
	s := NewStore()
	var idx uint64
	apply := func(typ CmdType, payload any) error {
		idx++
		c, err := NewCommand(typ, fmt.Sprint("req-", idx), time.Unix(1, 0).Add(time.Duration(idx)), payload)
		if err != nil {
			b.Fatal(err)
		}
		data, err := c.Encode()
		if err != nil {
			b.Fatal(err)
		}
		return s.Apply(idx, data).Err
	}
	must := func(typ CmdType, payload any) {
		if err := apply(typ, payload); err != nil {
			b.Fatalf("apply %d: %v", typ, err)
		}
	}
	must(CmdBootstrap, BootstrapCmd{Config: ClusterConfig{ClusterID: "c"}, Member: Member{ID: "h1", Name: "h1"},
		Project: Project{ID: "admin", Name: "admin"}, Admin: User{ID: "u1", Name: "admin"}, Roles: []Role{{ID: "r1", Name: "admin"}},
		Assignment: Assignment{ProjectID: "admin", UserID: "u1", RoleID: "r1"}, SigningKey: SigningKey{ID: "k1", Secret: []byte("k")}})
	must(CmdEnableQuotas, struct{}{})
	modes := []string{"on", "off"}
	for _, mode := range modes {
		limit := int64(1 << 40)
		if mode == "off" {
			limit = Unlimited
		}
		if kind == "small-projects" {
			if mode == "off" {
				for k := range (b.N + 9) / 10 {
					must(CmdSetQuotas, SetQuotasCmd{ProjectID: fmt.Sprint(mode, "-", k), Limits: map[string]int64{
						QuotaInstances: Unlimited, QuotaCores: Unlimited, QuotaRAM: Unlimited}})
				}
			}
			continue
		}
		must(CmdSetQuotas, SetQuotasCmd{ProjectID: mode, Limits: map[string]int64{QuotaInstances: limit, QuotaCores: limit, QuotaRAM: limit, QuotaPorts: limit,
			QuotaSecurityGroups: limit, QuotaSecurityGroupRules: limit}})
		must(CmdCreateNetwork, Network{ID: mode + "-net", Name: mode, ProjectID: mode})
		must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: mode + "-sub", NetworkID: mode + "-net", ProjectID: mode,
			CIDR: "10.0.0.0/8", IPVersion: 4}, GatewayAuto: true, PoolsAuto: true})
	}
	tiny := Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 512, DiskGB: 1, Public: true}
	create := func(mode string, i int) (CmdType, any) {
		id := fmt.Sprintf("%s-%d", mode, i)
		switch kind {
		case "ports":
			return CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: id, NetworkID: mode + "-net", ProjectID: mode}, AdminStateUp: true}
		case "small-projects":
			return CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{{Instance: Instance{ID: id, Name: id,
				ProjectID: fmt.Sprint(mode, "-", i/10), UserID: "u1", Flavor: tiny}}}}
		}
		return CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{{Instance: Instance{ID: id, Name: id,
			ProjectID: mode, UserID: "u1", Flavor: tiny}}}}
	}
	for i := range size {
		for _, mode := range modes {
			must(create(mode, -1-i))
		}
	}
	spent := map[string]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		for k := range modes {
			mode := modes[(i+k)%2] // each goes first every other time
			typ, payload := create(mode, i)
			t0 := time.Now()
			err := apply(typ, payload)
			spent[mode] += time.Since(t0)
			if err != nil {
				b.Fatalf("create %s %d: %v", mode, i, err)
			}
		}
	}
	b.StopTimer()
	for _, mode := range modes {
		b.ReportMetric(float64(spent[mode].Microseconds())/float64(b.N), "quotas-"+mode+"-µs/create")
	}
	b.ReportMetric(spent["off"].Seconds()/spent["on"].Seconds(), "on/off")
}
