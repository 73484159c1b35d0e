package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBoxProviderFlat: a real guest with its port straight on the flat
// provider network (the hosts' lan0, mapped as physnet1) gets its address
// from its host's DHCP and answers ping from the LAN namespace, while the
// host's own address on that one interface keeps answering; deleting the
// server leaves no device of its port on the host.
func TestBoxProviderFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster in a box: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"qemu-system-x86_64", "openstack", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the provider box test needs %s: %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	out := testWriter{t}
	t0 := time.Now()
	b, err := StartBox(ctx, BoxOptions{Hosts: 1, LAN: true, Kind: "test", Bin: Binary(t), Log: out})
	if err != nil {
		t.Fatalf("start box: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Down(context.Background()); err != nil {
			t.Errorf("box teardown: %v", err)
		}
		if left := boxRemains(b); len(left) > 0 {
			t.Errorf("teardown left: %v", left)
		}
		t.Logf("logs of every daemon and console: %s", b.LogDir)
	})
	s, err := newScenario(ctx, b, out)
	if err != nil {
		t.Fatal(err)
	}
	r := &routingRun{t: t, s: s, lan: b.LAN}
	if _, err := stepImage(s, 1); err != nil {
		t.Fatal(err)
	}
	const vmIP = "203.0.113.200"
	r.osc("flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1", "pv.tiny")
	r.osc("network", "create", "--external", "--provider-network-type", "flat", "--provider-physical-network", BoxPhysnet, "lan")
	r.osc("subnet", "create", "--network", "lan", "--subnet-range", r.lan.CIDR, "--gateway", r.lan.Gateway,
		"--allocation-pool", "start=203.0.113.200,end=203.0.113.220", "lan-sub")
	r.osc("server", "create", "--flavor", "pv.tiny", "--image", "e2e-guest", "--nic", "net-id=lan,v4-fixed-ip="+vmIP, "pv-vm")
	if err := s.waitField(1, 4*time.Minute, "server", "pv-vm", "status", "ACTIVE"); err != nil {
		t.Fatal(err)
	}
	if err := s.consoleHas(1, 5*time.Minute, "pv-vm", "PEERSTACK-IP "+vmIP); err != nil {
		t.Fatalf("the guest got no lease from its host: %v", err)
	}
	fmt.Fprintf(out, "guest on the flat network has its lease: %.1fs after start\n", time.Since(t0).Seconds())
	tp := time.Now()
	if _, err := r.probe(2*time.Minute, "until ping -c1 -W1 "+vmIP+" >/dev/null; do sleep 0.2; done"); err != nil {
		t.Fatalf("the LAN namespace does not reach the guest on the flat network: %v", err)
	}
	fmt.Fprintf(out, "LAN → guest on the flat network: answered %.1fs after its lease\n", time.Since(tp).Seconds())
	if out, err := r.lanSh(ctx, "ping -c1 -W2 "+r.lan.HostAddr(1)); err != nil {
		t.Fatalf("the host's own address on lan0 stopped answering: %v %s", err, out)
	}
	if out, err := r.lanSh(ctx, "ip neigh show "+vmIP); err != nil || !strings.Contains(strings.ToLower(out), "fa:16:3e") {
		t.Errorf("the LAN sees the guest at %q (%v); want the port's own fa:16:3e MAC", out, err)
	}

	r.osc("server", "delete", "--wait", "pv-vm")
	err = s.eventually(time.Minute, func() error {
		links, err := sh(ctx, "ip", "-n", b.Hosts[0].NS, "-o", "link")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(links, "\n") {
			if strings.Contains(l, ": pspm") || strings.Contains(l, ": pstap") {
				return fmt.Errorf("left on the host: %s", l)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("after the server's delete: %v", err)
	}
	fmt.Fprintf(out, "provider box test: %.1fs in all\n", time.Since(t0).Seconds())
}
