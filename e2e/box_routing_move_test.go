package e2e

// Steps of TestBoxRoutingSecurityGroups after the security-group checks:
// the cluster guard seen from the guests, and the floating IP moving from
// vm1 to vm2 (on the other host) and back.

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// guestWeb is a user-data snippet: httpd on 8080 serving marker as its
// page and the CGI /cgi-bin/guard. guard?A:P&B:Q… opens a TCP connection
// to every target at once, sends an HTTP request and prints one line per
// target, "GUARD A:P OPEN|CLOSED rc=N http|-" (CLOSED: nc said the
// connect failed or timed out; a reset after connecting, as a TLS server
// gives on plain text, is OPEN; http: the answer was HTTP).
// guard?via=IP&A:P… asks the guest at IP to probe instead and relays its
// answer (with nc: busybox wget crashes on the static build).
func guestWeb(marker string) string {
	return `mkdir -p /www/cgi-bin && echo ` + marker + ` > /www/index.html
cat > /www/cgi-bin/guard <<'GUARD'
#!/bin/sh
echo "Content-Type: text/plain"
echo
q=$QUERY_STRING
case "$q" in
via=*) v=${q#via=}; printf 'GET /cgi-bin/guard?%s HTTP/1.0\r\n\r\n' "${v#*&}" | timeout 60 nc -w 4 ${v%%&*} 8080; exit 0;;
esac
d=$(mktemp -d); n=0
for t in $(echo "$q" | tr '&' ' '); do
  n=$((n+1))
  ( out=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 8 nc -w 4 ${t%:*} ${t##*:} 2>&1); rc=$?
    case "$out" in *"can't connect"*|*"timed out"*) s=CLOSED;; *) s=OPEN;; esac
    [ $rc = 142 ] && s=CLOSED
    case "$out" in *HTTP/*) h=http;; *) h=-;; esac
    echo "GUARD $t $s rc=$rc $h" > $d/$n ) &
done
wait
cat $d/*; rm -rf $d
GUARD
chmod +x /www/cgi-bin/guard
httpd -p 8080 -h /www
`
}

// guardTarget is one address:port a guest probes.
type guardTarget struct {
	addr, what string // what: "raft", "gossip", "api", "nfs", "rpcbind"
	host       string // the peerstack host's name, "" for the NAS
}

func (g guardTarget) String() string { return g.addr }

// guardTargets: every host's Raft, gossip and API address, and the NAS's
// NFS and rpcbind ports.
func (r *routingRun) guardTargets() []guardTarget {
	var ts []guardTarget
	for _, h := range r.s.b.Hosts {
		ts = append(ts,
			guardTarget{h.Addr + ":8471", "raft", h.Name},
			guardTarget{h.Addr + ":7946", "gossip", h.Name},
			guardTarget{h.APIAddr, "api", h.Name})
	}
	if nas := r.s.b.NASAddr; nas != "" {
		ts = append(ts, guardTarget{nas + ":2049", "nfs", ""}, guardTarget{nas + ":111", "rpcbind", ""})
	}
	return ts
}

var guardLineRE = regexp.MustCompile(`(?m)^GUARD (\S+) (OPEN|CLOSED) rc=(\d+) (http|-)$`)

// parseGuard maps each target of a guard answer to "OPEN", "OPEN http"
// or "CLOSED".
func parseGuard(out string) map[string]string {
	m := map[string]string{}
	for _, g := range guardLineRE.FindAllStringSubmatch(out, -1) {
		v := g[2]
		if v == "OPEN" && g[4] == "http" {
			v += " http"
		}
		m[g[1]] = v
	}
	return m
}

// serverHost is the peerstack host a server runs on.
func (r *routingRun) serverHost(name string) string {
	r.t.Helper()
	var sv map[string]any
	if err := r.s.oscJSON(1, &sv, "server", "show", name); err != nil {
		r.t.Fatal(err)
	}
	return fmt.Sprint(sv["OS-EXT-SRV-ATTR:host"])
}

// openGroupB lets the LAN (and vm1) reach vm2 by ICMP and on TCP 8080,
// after the remote-group check that needed it closed.
func (r *routingRun) openGroupB() {
	r.t.Helper()
	r.osc("security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "rt-b")
	r.osc("security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "8080", "rt-b")
}

// guard: the guests cannot open connections to any host's Raft or gossip
// port nor to the NAS's NFS and rpcbind ports, while the same probes from
// the underlay (the root namespace) connect; every host's API answers
// them (its own host's and the other's, which is on the underlay, apart
// from the LAN). vm1 probes with its floating IP, vm2 (no floating IP,
// SNAT) through vm1's relay.
func (r *routingRun) guard() {
	r.t.Helper()
	t, s := r.t, r.s
	targets := r.guardTargets()
	var q []string
	for _, g := range targets {
		q = append(q, g.addr)
	}
	// Control: from the underlay every target listens.
	for _, g := range targets {
		h, p, _ := strings.Cut(g.addr, ":")
		out, err := sh(s.ctx, "sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | busybox timeout 8 busybox nc -w 4 %s %s 2>&1`, h, p))
		if strings.Contains(out, "can't connect") || strings.Contains(out, "timed out") || strings.Contains(fmt.Sprint(err), "exit status 142") {
			t.Fatalf("control: %s (%s) does not accept connections from the underlay: %v %q", g.addr, g.what, err, out)
		}
	}
	hosts := map[string]string{"rt-vm1": r.serverHost("rt-vm1"), "rt-vm2": r.serverHost("rt-vm2")}
	for _, probe := range []struct{ vm, query, how string }{
		{"rt-vm1", strings.Join(q, "&"), "floating IP"},
		{"rt-vm2", "via=" + rtVM2 + "&" + strings.Join(q, "&"), "SNAT"},
	} {
		var got map[string]string
		var raw string
		if err := s.eventually(time.Minute, func() error {
			out, err := r.lanSh(s.ctx, "curl -s -m 60 'http://"+r.fip+":8080/cgi-bin/guard?"+probe.query+"'")
			raw, got = out, parseGuard(out)
			if err != nil || len(got) != len(targets) {
				return fmt.Errorf("guard probe of %s: %d of %d answers: %v %q", probe.vm, len(got), len(targets), err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var line []string
		for _, g := range targets {
			v := got[g.addr]
			line = append(line, fmt.Sprintf("%s %s→%s", g.what, cmpOr(g.host, "nas"), v))
			switch {
			case g.what != "api" && v != "CLOSED":
				t.Errorf("%s (%s) reached %s %s (%s): %q; want it blocked\n%s", probe.vm, probe.how, g.what, g.addr, g.host, v, raw)
			case g.what == "api" && !strings.HasPrefix(v, "OPEN"):
				t.Errorf("%s on %s (%s) cannot reach %s's API %s: %q\n%s", probe.vm, hosts[probe.vm], probe.how, g.host, g.addr, v, raw)
			}
		}
		fmt.Fprintf(s.out, "guard from %s on %s (%s): %s\n", probe.vm, hosts[probe.vm], probe.how, strings.Join(line, ", "))
	}
	if t.Failed() {
		t.FailNow()
	}
}

// lanMAC is the MAC of host name's interface on the LAN.
func (r *routingRun) lanMAC(name string) string {
	r.t.Helper()
	for _, h := range r.s.b.Hosts {
		if h.Name != name {
			continue
		}
		out, err := sh(r.s.ctx, "ip", "-n", h.NS, "-br", "link", "show", boxLANIface)
		if f := strings.Fields(out); err == nil && len(f) >= 3 {
			return strings.ToLower(f[2])
		}
		r.t.Fatalf("MAC of %s's %s: %v %q", name, boxLANIface, err, out)
	}
	r.t.Fatalf("no host %q in the box", name)
	return ""
}

var macRE = regexp.MustCompile(`(?i)\[([0-9a-f]{2}(?::[0-9a-f]{2}){5})\]`)

// arpOwner checks that the LAN's neighbour entry for the floating IP and
// every ARP answer to it (three broadcast requests) name only want.
func (r *routingRun) arpOwner(want string) error {
	out, err := r.lanSh(r.s.ctx, "ip neigh show "+r.fip+" dev eth0")
	if err != nil || !strings.Contains(strings.ToLower(out), "lladdr "+want) {
		return fmt.Errorf("the LAN's neighbour entry for %s is %q (%v); want lladdr %s", r.fip, strings.TrimSpace(out), err, want)
	}
	out, err = r.lanSh(r.s.ctx, "busybox arping -b -c 3 -w 4 -I eth0 "+r.fip)
	macs := map[string]bool{}
	for _, m := range macRE.FindAllStringSubmatch(out, -1) {
		macs[strings.ToLower(m[1])] = true
	}
	if len(macs) != 1 || !macs[want] {
		return fmt.Errorf("ARP answers for %s came from %v (%v, %q); want only %s", r.fip, macs, err, out, want)
	}
	return nil
}

// moveFIP moves the floating IP from vm1 to vm2 and back: with the CLI
// once, then timed through the API. vm1's group lets no ICMP in from the
// LAN and vm2's does, so the first ping answer after a move to vm2 is
// vm2's; the timed figure is `floating ip set` (PUT) accepted → that
// answer. After each move the page served on the address is the new VM's
// and only the new VM's host answers ARP for it.
func (r *routingRun) moveFIP() {
	r.t.Helper()
	t, s := r.t, r.s
	port := map[string]string{}
	for _, vm := range []string{"rt-vm1", "rt-vm2"} {
		var ports []map[string]any
		if err := s.oscJSON(1, &ports, "port", "list", "--server", vm); err != nil || len(ports) != 1 {
			t.Fatalf("%s's ports = %v (%v)", vm, ports, err)
		}
		port[vm] = fmt.Sprint(ports[0]["ID"])
	}
	mac := map[string]string{}
	for _, vm := range []string{"rt-vm1", "rt-vm2"} {
		mac[vm] = r.lanMAC(r.serverHost(vm))
	}
	if mac["rt-vm1"] == mac["rt-vm2"] {
		t.Fatalf("vm1 and vm2 share a host (anti-affinity): %v", mac)
	}
	// settled waits until the address serves vm's page (never the other's)
	// and only vm's host answers ARP for it.
	settled := func(vm, marker, other string) {
		t.Helper()
		if err := s.eventually(30*time.Second, func() error {
			for range 3 {
				out, err := r.lanSh(s.ctx, "curl -s -m 2 http://"+r.fip+":8080/")
				if err != nil || !strings.Contains(out, marker) {
					return fmt.Errorf("%s serves %q (%v); want %s", r.fip, strings.TrimSpace(out), err, marker)
				}
				if strings.Contains(out, other) {
					return fmt.Errorf("%s still serves %s", r.fip, other)
				}
			}
			return r.arpOwner(mac[vm])
		}); err != nil {
			t.Fatalf("floating IP on %s: %v", vm, err)
		}
	}
	const m1, m2 = "PEERSTACK-HTTP-VM1", "PEERSTACK-HTTP-VM2"
	settled("rt-vm1", m1, m2)
	if err := r.blocked("ping -c1 -W1 " + r.fip); err != nil {
		t.Fatalf("vm1's group lets ICMP in from the LAN, the move cannot be timed by ping: %v", err)
	}

	// The real client, once each way.
	r.osc("floating", "ip", "set", "--port", port["rt-vm2"], r.fipID)
	if _, err := r.probe(30*time.Second, pingUntil(r.fip)); err != nil {
		t.Fatalf("no ping answer from vm2 after `floating ip set --port`: %v", err)
	}
	settled("rt-vm2", m2, m1)
	if f := r.obj("floating", "ip", "show", r.fipID); fmt.Sprint(f["port_id"]) != port["rt-vm2"] {
		t.Fatalf("floating ip show after the move: port_id %v; want %s", f["port_id"], port["rt-vm2"])
	}
	r.osc("floating", "ip", "unset", "--port", r.fipID)
	if err := s.eventually(30*time.Second, func() error { return r.blocked("ping -c1 -W1 " + r.fip) }); err != nil {
		t.Fatalf("floating IP unset, vm2 still answers: %v", err)
	}
	r.osc("floating", "ip", "set", "--port", port["rt-vm1"], r.fipID)
	settled("rt-vm1", m1, m2)

	// Timed trials through the API.
	set := func(p string) chan error {
		done := make(chan error, 1)
		go func() {
			done <- r.api("PUT", "/floatingips/"+r.fipID, fmt.Sprintf(`{"floatingip": {"port_id": %q}}`, p), http.StatusOK, nil)
		}()
		return done
	}
	var toVM2, toVM1 []time.Duration
	for range 5 {
		done := set(port["rt-vm2"])
		d, err := r.probe(30*time.Second, pingUntil(r.fip))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("no ping answer from vm2 30 s after the move: %v", err)
		}
		toVM2 = append(toVM2, d)
		settled("rt-vm2", m2, m1)

		done = set(port["rt-vm1"])
		d, err = r.probe(30*time.Second, webUntilMarker(r.fip, m1))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("vm1's page not served 30 s after the move back: %v", err)
		}
		toVM1 = append(toVM1, d)
		settled("rt-vm1", m1, m2)
	}
	fmt.Fprintf(s.out, "FIGURE floating ip set (PUT) → first ping answer from the new VM on the other host: %s (probe resolution 40 ms)\n", figure(toVM2))
	fmt.Fprintf(s.out, "FIGURE floating ip set (PUT) → first TCP 8080 answer from the new VM on the other host: %s (probe resolution 300 ms)\n", figure(toVM1))
}

// figure is "p50 X ms, max Y ms over N trials (ms: …)".
func figure(took []time.Duration) string {
	took = slices.Clone(took)
	slices.Sort(took)
	ms := make([]string, len(took))
	for i, d := range took {
		ms[i] = fmt.Sprintf("%.0f", d.Seconds()*1000)
	}
	return fmt.Sprintf("p50 %.0f ms, max %.0f ms over %d trials (ms: %s)",
		took[len(took)/2].Seconds()*1000, took[len(took)-1].Seconds()*1000, len(took), strings.Join(ms, " "))
}

// webUntilMarker is a probe script: HTTP GETs of addr:8080, each given
// 300 ms, until one answers with marker.
func webUntilMarker(addr, marker string) string {
	return "until curl -s --connect-timeout 0.3 -m 5 http://" + addr + ":8080/ | grep -q " + marker + "; do sleep 0.05; done"
}
