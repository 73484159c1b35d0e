package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// The internet part of the routing box test: guests without a floating IP
// ping the internet namespace behind the LAN, which records where each
// echo request came from (a raw ICMP socket in that namespace; the kernel
// answers the pings itself).

// echoSources records the sources of ICMP echo requests arriving in a
// namespace.
type echoSources struct {
	mu   sync.Mutex
	seen map[string]int
	conn net.PacketConn
}

// listenEchoes opens the recorder in namespace ns. The socket is made on
// a thread switched into ns that is never switched back (it ends with its
// goroutine); the socket stays in ns.
func listenEchoes(ns string) (*echoSources, error) {
	e := &echoSources{seen: map[string]int{}}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies in ns
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		e.conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		errc <- err
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := e.conn.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			if n > 0 && buf[0] == 8 { // echo request
				e.mu.Lock()
				e.seen[from.String()]++
				e.mu.Unlock()
			}
		}
	}()
	return e, nil
}

// sources lists the addresses seen so far.
func (e *echoSources) sources() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.seen))
	for a := range e.seen {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (e *echoSources) close() { e.conn.Close() }

// pingInternet is guest shell: ping addr until it answers once (then stop,
// so later floating IPs do not change what the internet sees), printing
// PEERSTACK-INET-OK, or PEERSTACK-INET-FAIL after 5 minutes.
func pingInternet(addr string) string {
	return `( i=0
while [ $i -lt 300 ]; do
  if ping -c1 -W1 ` + addr + ` >/dev/null 2>&1; then echo "PEERSTACK-INET-OK" > /dev/console; break; fi
  i=$((i+1)); sleep 1
done
[ $i -lt 300 ] || echo "PEERSTACK-INET-FAIL" > /dev/console ) >/dev/null 2>&1 &
`
}

// internet: both guests (on two hosts, no floating IP yet) reached the
// internet namespace, which saw exactly the two hosts' own addresses on
// the LAN as sources: SNAT on each VM's own host, no tenant address
// leaking out.
func (r *routingRun) internet() {
	r.t.Helper()
	t0 := time.Now()
	for _, vm := range []string{"rt-vm1", "rt-vm2"} {
		if err := r.s.consoleHas(1, 5*time.Minute, vm, "PEERSTACK-INET-OK"); err != nil {
			r.t.Fatalf("%s → the internet namespace: %v", vm, err)
		}
	}
	var want []string
	for _, h := range r.s.b.Hosts {
		want = append(want, r.lan.HostAddr(h.Index))
	}
	slices.Sort(want)
	if err := r.s.eventually(10*time.Second, func() error {
		if got := r.echoes.sources(); !slices.Equal(got, want) {
			return fmt.Errorf("the internet namespace saw echo requests from %v; want each host's own LAN address %v", got, want)
		}
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
	fmt.Fprintf(r.s.out, "vm1 and vm2 → internet namespace %s: sources %v, one per host (%.1fs)\n",
		r.lan.InternetAddr, r.echoes.sources(), time.Since(t0).Seconds())
}

// secondProject: another project, with its own user, builds the same
// tenant CIDR behind its own router with the real client and boots a guest
// at vm1's very address; it reaches the internet namespace too (from a
// host's own address), while the first project's routing keeps working
// (the floating IP steps that follow).
func (r *routingRun) secondProject() {
	r.t.Helper()
	s, t := r.s, r.t
	t0 := time.Now()
	r.osc("project", "create", "rt-p2")
	r.osc("user", "create", "--project", "rt-p2", "--password", "rt-p2-pw", "rt-p2-user")
	r.osc("role", "add", "--project", "rt-p2", "--user", "rt-p2-user", "member")
	clouds, err := s.userClouds(2, "rt-p2-user", "rt-p2-pw", "rt-p2")
	if err != nil {
		t.Fatal(err)
	}
	r.p2 = clouds
	p2 := func(args ...string) string {
		t.Helper()
		out, err := RunErr(clouds, "openstack", args...)
		if err != nil {
			t.Fatalf("openstack %s (project rt-p2): %v: %s", strings.Join(args, " "), err, out)
		}
		return out
	}
	netID := strings.TrimSpace(p2("network", "create", "-f", "value", "-c", "id", "rt-net2"))
	p2("subnet", "create", "--network", "rt-net2", "--subnet-range", "192.168.90.0/24", "rt-sub2")
	p2("router", "create", "rt-r2")
	p2("router", "set", "--external-gateway", "ext", "rt-r2")
	p2("router", "add", "subnet", "rt-r2", "rt-sub2")
	ud := filepath.Join(s.dir, "rt-p2-vm.userdata")
	if err := os.WriteFile(ud, []byte("#!/bin/sh\n"+pingInternet(r.lan.InternetAddr)+"exit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.p2VM = strings.TrimSpace(p2("server", "create", "-f", "value", "-c", "id", "--flavor", "rt.tiny", "--image", "e2e-guest",
		"--nic", "net-id="+netID+",v4-fixed-ip="+rtVM1, "--user-data", ud, "rt-p2-vm"))
	if err := s.eventually(4*time.Minute, func() error {
		out, err := RunErr(clouds, "openstack", "server", "show", "-f", "value", "-c", "status", r.p2VM)
		if err != nil || strings.TrimSpace(out) != "ACTIVE" {
			return fmt.Errorf("rt-p2-vm status %q (%v); want ACTIVE", strings.TrimSpace(out), err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.eventually(5*time.Minute, func() error {
		out, err := RunErr(clouds, "openstack", "console", "log", "show", r.p2VM)
		if err != nil {
			return err
		}
		if strings.Contains(out, "PEERSTACK-INET-FAIL") {
			t.Fatalf("rt-p2-vm (192.168.90.0/24 behind rt-r2) gave up on the internet namespace:\n%s", tail(out, 2000))
		}
		if !strings.Contains(out, "PEERSTACK-INET-OK") {
			return fmt.Errorf("console of rt-p2-vm lacks PEERSTACK-INET-OK")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, h := range s.b.Hosts {
		hosts = append(hosts, r.lan.HostAddr(h.Index))
	}
	for _, src := range r.echoes.sources() {
		if !slices.Contains(hosts, src) {
			t.Errorf("the internet namespace saw an echo request from %s; want only the hosts' addresses %v", src, hosts)
		}
	}
	fmt.Fprintf(s.out, "second project, same CIDR behind rt-r2, guest at %s → internet namespace: answered (%.1fs)\n",
		rtVM1, time.Since(t0).Seconds())
}

// teardownSecondProject removes the second project's guest and router.
func (r *routingRun) teardownSecondProject() {
	r.t.Helper()
	if r.p2 == "" {
		return
	}
	for _, args := range [][]string{
		{"server", "delete", "--wait", r.p2VM},
		{"router", "remove", "subnet", "rt-r2", "rt-sub2"},
		{"router", "unset", "--external-gateway", "rt-r2"},
		{"router", "delete", "rt-r2"},
	} {
		if out, err := RunErr(r.p2, "openstack", args...); err != nil {
			r.t.Fatalf("openstack %s (project rt-p2): %v: %s", strings.Join(args, " "), err, out)
		}
	}
}
