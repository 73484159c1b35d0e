package faults

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

// The delay must hold every packet of the interface both ways for its
// time (no echo answered sooner than twice the delay), in order, be read
// back as set, let the held packets go at the heal and leave nothing
// behind.
func TestDelayHoldsPackets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	a, b := linkedNetns(t, "pfda", "pfdb", "10.78.0")
	// Conntrack in use in the delayed namespace, as on a host whose
	// daemon has firewall rules: held packets must not be lost to it.
	useConntrack(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base, err := measureDelay(ctx, a, "10.78.0.2", 0, 0)
	if err != nil {
		t.Fatalf("before: %v", err)
	}
	const d = 80 * time.Millisecond
	dl, stop := startHeld(t, b, d, 0, 1)
	// The proof itself wants no reply overtaken without jitter.
	held, err := measureDelay(ctx, a, "10.78.0.2", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pingTrace(ctx, a, "10.78.0.2", 10, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.minRTT > 2*d+150*time.Millisecond {
		t.Errorf("round trips of at least %v with %v each way: packets are held far longer than asked", p.minRTT, d)
	}
	if dl.Held() < 2*(delayProbes+10) { // every echo and reply
		t.Errorf("the queue saw %d packets; want every echo and reply", dl.Held())
	}
	t.Logf("before: %s; %v each way: %s; %d packets held", base, d, held, dl.Held())

	// A datagram burst one way, 1 ms apart, about 80 held at a time:
	// all arrive, in the order sent, none sooner than the delay.
	u := udpBurst(t, a, b, "10.78.0.2", 300, time.Millisecond, d+2*time.Second)
	t.Logf("%v each way, datagrams: %s", d, u)
	if u.got != u.sent || u.overtaken != 0 || u.minLat < d {
		t.Errorf("datagrams through a delay of %v without jitter: %s; want all, in order, none under %v", d, u, d)
	}

	// A burst passes whole: 200 echoes 10 ms apart, eight of them held
	// at any time.
	if sent, got, err := pingLoss(ctx, a, "10.78.0.2", 200); err != nil || got != sent {
		t.Fatalf("a burst through the delay: %d of %d answered (%v); want all", got, sent, err)
	}

	// The heal releases what is held: echoes sent just before it are
	// answered, none lost.
	healAndCheck(ctx, t, a, b, "10.78.0.2", dl, stop)
	if _, err := startDelay(b, "eth0", 0, 0, 1); err == nil {
		t.Error("a delay of 0 was accepted")
	}
	if _, err := startDelay(b, "eth0", d, d+time.Millisecond, 1); err == nil {
		t.Error("a jitter over the delay was accepted")
	}
}

// With jitter every packet is held delay ± jitter: later packets
// overtake earlier ones, none is passed sooner than delay − jitter, none
// is lost, and the heal still releases what is held.
func TestDelayJitterReorders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	a, b := linkedNetns(t, "pfja", "pfjb", "10.79.0")
	// Conntrack in use in the delayed namespace, as on a host whose
	// daemon has firewall rules: held packets must not be lost to it.
	useConntrack(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := measureDelay(ctx, a, "10.79.0.2", 0, 0); err != nil {
		t.Fatalf("before: %v", err)
	}
	const d, j = 80 * time.Millisecond, 40 * time.Millisecond
	dl, stop := startHeld(t, b, d, j, 7)
	// The fault's own proof: no round trip under 2(d − j), some replies
	// overtaken.
	held, err := measureDelay(ctx, a, "10.79.0.2", d, j)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v ± %v each way: %s", d, j, held)

	u := udpBurst(t, a, b, "10.79.0.2", 300, time.Millisecond, d+j+2*time.Second)
	t.Logf("%v ± %v each way, datagrams: %s", d, j, u)
	if u.got != u.sent {
		t.Errorf("datagrams through a delay of %v ± %v: %s; want all", d, j, u)
	}
	if u.minLat < d-j {
		t.Errorf("datagrams through a delay of %v ± %v: %s; want none under %v", d, j, u, d-j)
	}
	if u.maxLat > d+j+150*time.Millisecond {
		t.Errorf("datagrams through a delay of %v ± %v: %s; held far longer than asked", d, j, u)
	}
	// Held 40–120 ms, sent 1 ms apart: most datagrams arrive after a
	// later one (a tenth is far from chance).
	if u.overtaken < u.sent/10 {
		t.Errorf("datagrams through a delay of %v ± %v: %s; want at least %d overtaken", d, j, u, u.sent/10)
	}

	if sent, got, err := pingLoss(ctx, a, "10.79.0.2", 200); err != nil || got != sent {
		t.Fatalf("a burst through the delay: %d of %d answered (%v); want all", got, sent, err)
	}
	healAndCheck(ctx, t, a, b, "10.79.0.2", dl, stop)
}

// startHeld starts a delay of d ± j on namespace b's eth0, stopped at
// the end of the test unless stop ran, and checks its two rules are in
// place.
func startHeld(t *testing.T, b string, d, j time.Duration, seed uint64) (*delayer, func() error) {
	t.Helper()
	dl, err := startDelay(b, "eth0", d, j, seed)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = dl.Stop()
		}
	})
	if k, err := delayRules(b); err != nil || k != 2 {
		t.Fatalf("queue rules read back = %d (%v); want 2", k, err)
	}
	return dl, func() error { stopped = true; return dl.Stop() }
}

// healAndCheck heals with echoes in flight (all answered), then checks
// no rule is left and the path is quick again.
func healAndCheck(ctx context.Context, t *testing.T, a, b, addr string, dl *delayer, stop func() error) {
	t.Helper()
	healInFlight(ctx, t, a, addr, dl.Held, stop)
	if k, err := delayRules(b); err != nil || k != 0 {
		t.Fatalf("queue rules after the heal = %d (%v); want none", k, err)
	}
	if note, err := measureDelay(ctx, a, addr, 0, 0); err != nil {
		t.Fatalf("after the heal: %v", err)
	} else {
		t.Logf("after: %s", note)
	}
}

// takeDue batches only a leading run of due packets: a batch verdict up
// to a later id would pass the packets still held before it.
func TestDelayTakeDue(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	dl := &delayer{jitter: time.Millisecond, due: []delayedPacket{
		{id: 3, due: at(1)}, {id: 4, due: at(2)}, {id: 5, due: at(9)},
		{id: 6, due: at(1)}, {id: 7, due: at(5)}, {id: 8, due: at(2)},
	}}
	upTo, single := dl.takeDue(at(2))
	if upTo == nil || *upTo != 4 || !slices.Equal(single, []uint32{6, 8}) {
		t.Fatalf("at 2 ms: batch up to %v, single %v; want up to 4, single [6 8]", upTo, single)
	}
	upTo, single = dl.takeDue(at(5))
	if upTo != nil || !slices.Equal(single, []uint32{7}) {
		t.Fatalf("at 5 ms: batch up to %v, single %v; want no batch, single [7]", upTo, single)
	}
	upTo, single = dl.takeDue(at(9))
	if upTo == nil || *upTo != 5 || len(single) != 0 || len(dl.due) != 0 {
		t.Fatalf("at 9 ms: batch up to %v, single %v, %d held; want up to 5, nothing else", upTo, single, len(dl.due))
	}
}

// useConntrack makes namespace ns track connections (as any ruleset
// that matches on conntrack state does) with a table of its own.
func useConntrack(t *testing.T, ns string) {
	t.Helper()
	const table = "pftest_conntrack"
	if err := inNS(ns, func(c *nftables.Conn) error {
		tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table})
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: "input", Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Counter{},
		}})
		return c.Flush()
	}); err != nil {
		t.Fatalf("conntrack table in %s: %v", ns, err)
	}
	t.Cleanup(func() { _ = deleteTable(ns, table) })
}

// healInFlight starts five echoes 10 ms apart from namespace ns to addr,
// heals (stop) once the queue has taken at least three of them (held
// counts the packets it has seen) and wants all five answered.
func healInFlight(ctx context.Context, t *testing.T, ns, addr string, held func() int, stop func() error) {
	t.Helper()
	ping := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "5", "-i", "0.01", "-W", "3", addr)
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	before := held()
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for held() < before+3 {
		if time.Now().After(deadline) {
			t.Fatalf("the queue took %d packets in 5 s of echoes; want the echoes held at the heal", held()-before)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_ = ping.Wait()
	if m := pingSummary.FindStringSubmatch(out.String()); m == nil || m[1] != "5" || m[2] != "5" {
		t.Fatalf("echoes in flight at the heal: %s; want all 5 answered", out.String())
	}
}

// burstStats is what a datagram burst saw.
type burstStats struct {
	sent, got      int
	overtaken      int // datagrams that arrived after a later one
	minLat, maxLat time.Duration
}

func (s burstStats) String() string {
	return fmt.Sprintf("%d/%d arrived, %d overtaken, one-way latency %v–%v",
		s.got, s.sent, s.overtaken, s.minLat.Round(100*time.Microsecond), s.maxLat.Round(100*time.Microsecond))
}

// udpBurst sends count numbered datagrams every gap from namespace from
// to addr in namespace to, and reads them there until all arrived or
// wait passed after the last was sent.
func udpBurst(t *testing.T, from, to, addr string, count int, gap, wait time.Duration) burstStats {
	t.Helper()
	var rx *net.UDPConn
	if err := inNetns(to, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(addr)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	_ = rx.SetReadBuffer(4 << 20)
	var tx *net.UDPConn
	if err := inNetns(from, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()

	sentAt := make([]time.Time, count)
	type arrival struct {
		seq int
		at  time.Time
	}
	arrived := make(chan []arrival, 1)
	lastSent := make(chan time.Time, 1)
	go func() {
		var got []arrival
		buf := make([]byte, 64)
		deadline := time.Now().Add(time.Hour)
		for len(got) < count {
			select {
			case ls := <-lastSent:
				deadline = ls.Add(wait)
			default:
			}
			rd := time.Now().Add(50 * time.Millisecond)
			if deadline.Before(rd) {
				rd = deadline
			}
			_ = rx.SetReadDeadline(rd)
			n, err := rx.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) || time.Now().After(deadline) {
					break
				}
				continue
			}
			if n == 4 {
				got = append(got, arrival{int(binary.BigEndian.Uint32(buf)), time.Now()})
			}
		}
		arrived <- got
	}()
	for seq := range count {
		sentAt[seq] = time.Now()
		if _, err := tx.Write(binary.BigEndian.AppendUint32(nil, uint32(seq))); err != nil {
			t.Fatalf("send datagram %d: %v", seq, err)
		}
		time.Sleep(gap)
	}
	lastSent <- time.Now()
	got := <-arrived

	s := burstStats{sent: count, got: len(got), minLat: time.Hour}
	last := -1
	for _, a := range got {
		if a.seq < 0 || a.seq >= count {
			t.Fatalf("datagram numbered %d of %d", a.seq, count)
		}
		if a.seq < last {
			s.overtaken++
		}
		last = max(last, a.seq)
		lat := a.at.Sub(sentAt[a.seq])
		s.minLat, s.maxLat = min(s.minLat, lat), max(s.maxLat, lat)
	}
	return s
}

// inNetns runs fn on a thread switched into namespace ns (sockets opened
// there stay in ns). A thread that cannot switch back stays locked, so
// the runtime discards it.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
