package statedb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func newQuotaStore(t *testing.T) *netStore {
	t.Helper()
	ns := newNetStore(t, 0)
	ns.must(CmdCreateNetwork, Network{ID: "net", Name: "net", ProjectID: "p1"})
	ns.must(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: "sub", NetworkID: "net", ProjectID: "p1", CIDR: "10.0.0.0/16", IPVersion: 4}, GatewayAuto: true, PoolsAuto: true})
	return ns
}

func TestQuotaLimitsResolve(t *testing.T) {
	ns := newQuotaStore(t)
	sn := ns.s.Snapshot()
	if got := sn.QuotaLimit("p1", QuotaInstances); got != 10 {
		t.Fatalf("built-in instances limit = %d, want 10", got)
	}
	ns.must(CmdSetDefaultQuotas, SetQuotasCmd{Limits: map[string]int64{QuotaInstances: 4, QuotaPorts: Unlimited}})
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaInstances: 2}})
	sn = ns.s.Snapshot()
	if a, b, c := sn.QuotaLimit("p1", QuotaInstances), sn.QuotaLimit("p2", QuotaInstances), sn.QuotaLimit("p1", QuotaPorts); a != 2 || b != 4 || c != Unlimited {
		t.Fatalf("limits p1=%d p2=%d ports=%d, want 2 4 -1", a, b, c)
	}
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaCores: 3}})
	if got := ns.s.Snapshot().QuotaLimit("p1", QuotaInstances); got != 2 {
		t.Fatalf("a second set dropped instances: %d", got)
	}
	ns.must(CmdDeleteQuotas, DeleteCmd{ID: "p1"})
	ns.must(CmdDeleteQuotas, DeleteCmd{ID: "p1"}) // idempotent
	if got := ns.s.Snapshot().QuotaLimit("p1", QuotaInstances); got != 4 {
		t.Fatalf("after delete instances = %d, want the cluster default 4", got)
	}
	for _, bad := range []map[string]int64{{"bogus": 1}, {QuotaCores: -2}, {QuotaMetadataItems: MaxServerMetadataItems + 1}, {QuotaMetadataItems: -1}} {
		if err := ns.do(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("set %v: %v, want invalid", bad, err)
		}
		if err := ns.do(CmdSetDefaultQuotas, SetQuotasCmd{Limits: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("set default %v: %v, want invalid", bad, err)
		}
	}
}

func TestQuotaRefusesEachCreate(t *testing.T) {
	ns := newQuotaStore(t)
	zero := map[string]int64{}
	for _, r := range append(append(ComputeQuotas(), NetworkQuotas()...), VolumeQuotas()...) {
		zero[r] = 0
	}
	zero[QuotaNetworks], zero[QuotaSubnets] = 1, 1 // the fixture's
	zero[QuotaPerVolumeGigabytes] = Unlimited
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: zero})
	over := func(what string, err error, resource string) {
		t.Helper()
		if !errors.Is(err, ErrOverQuota) || OverQuotaResource(err) != resource {
			t.Fatalf("%s: %v, want over quota for %s", what, err, resource)
		}
	}
	over("instance", ns.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{newInst("i1", "p1", tiny)}}), QuotaInstances)
	over("network", ns.do(CmdCreateNetwork, Network{ID: "n2", ProjectID: "p1"}), QuotaNetworks)
	over("subnet", ns.do(CmdCreateSubnet, CreateSubnetCmd{Subnet: Subnet{ID: "s2", NetworkID: "net", ProjectID: "p1", CIDR: "10.9.0.0/24", IPVersion: 4}}), QuotaSubnets)
	over("port", ns.do(CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: "po", NetworkID: "net", ProjectID: "p1"}}), QuotaPorts)
	over("volume", ns.do(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v", ProjectID: "p1", Host: "h1", SizeGB: 1, Format: "qcow2"}}), QuotaVolumes)
	over("server group", ns.do(CmdCreateServerGroup, ServerGroup{ID: "g", ProjectID: "p1", Policy: "affinity"}), QuotaServerGroups)
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaKeyPairs: 0}})
	ns.must(CmdSetDefaultQuotas, SetQuotasCmd{Limits: map[string]int64{QuotaKeyPairs: 0}})
	over("keypair", ns.do(CmdCreateKeypair, Keypair{UserID: "u1", Name: "k", PublicKey: "ssh-ed25519 AAAA"}), QuotaKeyPairs)

	// Nova's message, word for word.
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaInstances: 1, QuotaCores: -1, QuotaRAM: -1, QuotaMetadataItems: 1}})
	ns.must(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{newInst("i1", "p1", tiny)}})
	err := ns.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{newInst("i2", "p1", tiny)}})
	if want := "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"; err == nil || err.Error() != want {
		t.Fatalf("message %v, want %q", err, want)
	}
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaInstances: 5}})
	md := newInst("i3", "p1", tiny)
	md.Instance.Metadata = map[string]string{"a": "1", "b": "2"}
	over("metadata", ns.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{md}}), QuotaMetadataItems)

	// Volumes: gigabytes on create and extend, per-volume size.
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaVolumes: 5, QuotaGigabytes: 10, QuotaPerVolumeGigabytes: 8}})
	over("per volume", ns.do(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v1", ProjectID: "p1", Host: "h1", SizeGB: 9, Format: "qcow2"}}), QuotaPerVolumeGigabytes)
	ns.must(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v1", ProjectID: "p1", Host: "h1", Path: "/srv/v1.qcow2", SizeGB: 6, Format: "qcow2"}})
	over("gigabytes", ns.do(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v2", ProjectID: "p1", Host: "h1", SizeGB: 5, Format: "qcow2"}}), QuotaGigabytes)
	ns.must(CmdReportVolume, ReportVolumeCmd{VolumeID: "v1", HostID: "h1", Status: VolumeAvailable})
	over("extend", ns.do(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 9}), QuotaPerVolumeGigabytes)
	ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: map[string]int64{QuotaPerVolumeGigabytes: Unlimited}})
	over("extend", ns.do(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 11}), QuotaGigabytes)
	ns.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 8})
	if u := ns.s.Snapshot().QuotaUsages("p1", "", VolumeQuotas()); u[QuotaVolumes] != 1 || u[QuotaGigabytes] != 8 || u[QuotaSnapshots] != 0 {
		t.Fatalf("volume usage %v", u)
	}
}

func TestImagePropertyLimits(t *testing.T) {
	ns := newQuotaStore(t)
	ns.must(CmdEnableQuotas, struct{}{})
	big := map[string]string{}
	for i := range 3 {
		big[fmt.Sprint("k", i)] = strings.Repeat("x", MaxImagePropertyBytes/3)
	}
	if err := ns.do(CmdCreateImage, Image{ID: "img", ProjectID: "p1", Properties: big}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("create with %d bytes of properties: %v", 3*(MaxImagePropertyBytes/3), err)
	}
	ns.must(CmdCreateImage, Image{ID: "img", ProjectID: "p1", Properties: map[string]string{"a": "b"}})
	if err := ns.do(CmdUpdateImage, UpdateImageCmd{ID: "img", SetProps: big}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update with too many bytes: %v", err)
	}
	many := map[string]string{}
	for i := range MaxImageProperties + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	if err := CheckImageProperties(many); err == nil {
		t.Fatal("129 properties accepted")
	}
}

// TestQuotaInterleavings is the property that matters: three hosts each
// propose creates judged against their own (stale) view, the log
// interleaves them at random, and whatever the order the state never
// holds more than a limit — and a create is refused only when it would
// really go over.
func TestQuotaInterleavings(t *testing.T) {
	limits := map[string]int64{QuotaInstances: 7, QuotaCores: 12, QuotaRAM: 6000, QuotaPorts: 9, QuotaNetworks: 4, QuotaVolumes: 5, QuotaGigabytes: 20}
	flavors := []Flavor{
		{ID: "s", Name: "s", VCPUs: 1, RAMMB: 512, DiskGB: 1},
		{ID: "m", Name: "m", VCPUs: 2, RAMMB: 2048, DiskGB: 1},
	}
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			ns := newQuotaStore(t)
			ns.must(CmdSetQuotas, SetQuotasCmd{ProjectID: "p1", Limits: limits})
			type op struct {
				typ     CmdType
				payload any
				charges []charge // what the create asks for
			}
			var queues [3][]op
			n := 0
			for h := range queues {
				for range 40 {
					n++
					id := fmt.Sprintf("h%d-%d", h, n)
					var o op
					switch rng.IntN(6) {
					case 0, 1:
						var cmd CreateInstancesCmd
						var ch [4]int64
						for j := range 1 + rng.IntN(3) {
							f := flavors[rng.IntN(len(flavors))]
							ic := newInst(fmt.Sprintf("%s-%d", id, j), "p1", f)
							if rng.IntN(2) == 0 {
								ic.NICs = []NICRequest{{Create: &PortRequest{ID: ic.Instance.ID + "-port", NetworkID: "net"}}}
								ch[3]++
							}
							cmd.Instances = append(cmd.Instances, ic)
							ch[0]++
							ch[1] += int64(f.VCPUs)
							ch[2] += int64(f.RAMMB)
						}
						o = op{CmdCreateInstances, cmd, []charge{{QuotaInstances, ch[0]}, {QuotaCores, ch[1]}, {QuotaRAM, ch[2]}, {QuotaPorts, ch[3]}}}
					case 2:
						o = op{CmdCreatePort, CreatePortCmd{PortRequest: PortRequest{ID: id, NetworkID: "net", ProjectID: "p1"}}, []charge{{QuotaPorts, 1}}}
					case 3:
						o = op{CmdCreateNetwork, Network{ID: id, Name: id, ProjectID: "p1"}, []charge{{QuotaNetworks, 1}}}
					case 4:
						gb := int64(1 + rng.IntN(6))
						o = op{CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: id, ProjectID: "p1", Host: "h1", SizeGB: int(gb), Format: "raw"}}, []charge{{QuotaVolumes, 1}, {QuotaGigabytes, gb}}}
					default: // free something so limits are reached again and again
						o = op{typ: 0}
					}
					queues[h] = append(queues[h], o)
				}
			}
			accepted, refused := 0, 0
			for len(queues[0])+len(queues[1])+len(queues[2]) > 0 {
				h := rng.IntN(3)
				if len(queues[h]) == 0 {
					continue
				}
				o := queues[h][0]
				queues[h] = queues[h][1:]
				sn := ns.s.Snapshot()
				if o.typ == 0 {
					ns.deleteSomething(rng, sn)
					continue
				}
				fits := true
				for _, ch := range o.charges {
					if ch.n > 0 && sn.QuotaUsage("p1", "", ch.resource)+ch.n > limits[ch.resource] {
						fits = false
					}
				}
				err := ns.do(o.typ, o.payload)
				switch {
				case fits && err != nil:
					t.Fatalf("create %d within quota refused: %v", o.typ, err)
				case !fits && !errors.Is(err, ErrOverQuota):
					t.Fatalf("create %d over quota: %v, want over quota", o.typ, err)
				case fits:
					accepted++
				default:
					refused++
				}
				after := ns.s.Snapshot()
				for r, l := range limits {
					if u := after.QuotaUsage("p1", "", r); u > l {
						t.Fatalf("%s usage %d over its limit %d", r, u, l)
					}
				}
			}
			if accepted == 0 || refused == 0 {
				t.Fatalf("accepted %d, refused %d: the run never reached a limit or never created", accepted, refused)
			}
		})
	}
}

// deleteSomething removes one of p1's instances, ports, networks or
// volumes (the ones the fixture did not make), if any.
func (ns *netStore) deleteSomething(rng *rand.Rand, sn *Snapshot) {
	ns.t.Helper()
	switch rng.IntN(3) {
	case 0:
		if is := sn.InstancesOfProject("p1"); len(is) > 0 {
			i := is[rng.IntN(len(is))]
			ns.must(CmdDeleteInstance, DeleteCmd{ID: i.ID}) // never placed: removed at once
		}
	case 1:
		for _, p := range sn.PortsOfProject("p1") {
			if p.DeviceID == "" {
				ns.must(CmdDeletePort, DeleteCmd{ID: p.ID})
				return
			}
		}
	default:
		if vs := sn.VolumesOfProject("p1"); len(vs) > 0 {
			v := vs[rng.IntN(len(vs))]
			_ = ns.do(CmdDeleteVolume, DeleteVolumeCmd{ID: v.ID})
			_ = ns.do(CmdReportVolume, ReportVolumeCmd{VolumeID: v.ID, HostID: "h1", Status: VolumeDeleted})
		}
	}
}

// TestQuotasOffUntilEnabled: entries written before quotas existed must
// replay as they applied, so nothing is checked until enforcement is on.
func TestQuotasOffUntilEnabled(t *testing.T) {
	ns := newQuotaStore(t)
	var cmd CreateInstancesCmd
	for i := range 12 {
		cmd.Instances = append(cmd.Instances, newInst(fmt.Sprint("old", i), "p1", tiny))
	}
	ns.must(CmdCreateInstances, cmd) // 12 > the default 10: an old log entry
	if ns.s.Snapshot().QuotasEnforced() {
		t.Fatal("enforced before any quota command")
	}
	ns.must(CmdEnableQuotas, struct{}{})
	err := ns.do(CmdCreateInstances, CreateInstancesCmd{Instances: []InstanceCreate{newInst("new", "p1", tiny)}})
	if want := "Quota exceeded for instances: Requested 1, but already used 12 of 10 instances"; err == nil || err.Error() != want {
		t.Fatalf("after enable: %v, want %q", err, want)
	}
}
