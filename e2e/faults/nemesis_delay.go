package faults

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Packet delay without netem (the test kernel has no sch_netem and no
// nft queue expression, but it has nfnetlink_queue and the xtables
// NFQUEUE target through nft_compat): an nftables table in the victim's
// namespace hands every IPv4 packet crossing its underlay interface, both
// ways, to a netlink queue; the suite, listening on that queue from the
// same namespace, lets each packet go once it has been held for its
// time: the delay plus a jitter drawn per packet, uniform in ±jitter
// (netem's "delay D J" without a distribution table). Packets whose
// times differ by more than the gap between them overtake each other, as
// under netem. Packet ids grow in queue order and a batch verdict
// releases every queued packet up to an id, so a batch covers only a
// leading run of held packets that are all due; a packet due while an
// earlier one is still held gets a verdict of its own. A packet is held
// or, when the queue is full or its notice cannot be delivered, dropped
// (as netem drops past its limit): never passed early. Without jitter
// every packet is held the same time, so order is kept.

// delayTable is the table the delay nemesis adds in a host's namespace.
const delayTable = "peerstack_faults_delay"

// delayQueue is the queue number the delay table sends to (queues are
// per network namespace).
const delayQueue = 4242

// nfnetlink_queue's wire constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue     = 3
	nfqnlMsgPacket      = 0
	nfqnlMsgVerdict     = 1
	nfqnlMsgConfig      = 2
	nfqnlMsgVerdictBat  = 3
	nfqaPacketHdr       = 1
	nfqaVerdictHdr      = 2
	nfqaCfgCmd          = 1
	nfqaCfgParams       = 2
	nfqaCfgQueueMaxlen  = 3
	nfqnlCfgCmdBind     = 1
	nfqnlCopyMeta       = 1
	nfAccept            = 1
	nfqFlagBypass       = 1 // xt_NFQ_info_v3: accept when nobody listens
	delayQueueMaxLength = 1 << 14
)

// delayer holds the packets of one namespace's queue for delay ±
// jitter each.
type delayer struct {
	ns     string
	delay  time.Duration
	jitter time.Duration
	conn   *netlink.Conn

	mu     sync.Mutex
	rnd    *rand.Rand      // the per-packet jitter; used under mu
	due    []delayedPacket // in id order
	maxID  uint32
	seen   int
	closed bool

	stop chan struct{}
	done sync.WaitGroup
}

type delayedPacket struct {
	id  uint32
	due time.Time
}

// startDelay makes namespace ns hold every IPv4 packet it receives on,
// and sends out of, dev for d ± jitter (jitter 0: exactly d, in order)
// before letting it go; seed seeds the per-packet draws. Stop undoes it.
func startDelay(ns, dev string, d, jitter time.Duration, seed uint64) (*delayer, error) {
	if d <= 0 || d > 5*time.Second {
		return nil, fmt.Errorf("delay %v: want (0, 5s]", d)
	}
	if jitter < 0 || jitter > d {
		return nil, fmt.Errorf("jitter %v with a delay of %v: want [0, %v]", jitter, d, d)
	}
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(h)})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink in %s: %w", ns, err)
	}
	dl := &delayer{ns: ns, delay: d, jitter: jitter, conn: conn, stop: make(chan struct{}),
		rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if err := dl.bind(); err != nil {
		conn.Close()
		return nil, err
	}
	// The listener first, then the rules: no packet waits for nobody.
	dl.done.Add(2)
	go dl.read()
	go dl.release()
	if err := queueRules(ns, dev); err != nil {
		_ = dl.Stop()
		return nil, err
	}
	return dl, nil
}

func nfgen(queue uint16) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], queue)
	return b
}

// bind takes the queue and asks for packet metadata only.
func (dl *delayer) bind() error {
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	for _, attrs := range [][]netlink.Attribute{
		{{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdBind, 0, 0, 0}}},
		{{Type: nfqaCfgParams, Data: append(be32(0), nfqnlCopyMeta)},
			{Type: nfqaCfgQueueMaxlen, Data: be32(delayQueueMaxLength)}},
	} {
		data, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return err
		}
		if _, err := dl.conn.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysQueue<<8 | nfqnlMsgConfig),
				Flags: netlink.Request | netlink.Acknowledge},
			Data: append(nfgen(delayQueue), data...),
		}); err != nil {
			return fmt.Errorf("bind queue %d in %s: %w", delayQueue, dl.ns, err)
		}
	}
	// Room for every notice of a full queue (past rmem_max: root may).
	rc, err := dl.conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("queue receive buffer in %s: %w", dl.ns, serr)
	}
	return nil
}

// read records each queued packet's id and when it is due.
func (dl *delayer) read() {
	defer dl.done.Done()
	for {
		msgs, err := dl.conn.Receive()
		if err != nil {
			dl.mu.Lock()
			closed := dl.closed
			dl.mu.Unlock()
			if closed {
				return
			}
			time.Sleep(time.Millisecond)
			continue
		}
		now := time.Now()
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysQueue<<8|nfqnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				continue
			}
			for ad.Next() {
				if ad.Type() != nfqaPacketHdr {
					continue
				}
				if b := ad.Bytes(); len(b) >= 4 {
					id := binary.BigEndian.Uint32(b)
					dl.mu.Lock()
					hold := dl.delay
					if dl.jitter > 0 {
						hold += time.Duration(dl.rnd.Int64N(2*int64(dl.jitter)+1)) - dl.jitter
					}
					dl.due = append(dl.due, delayedPacket{id: id, due: now.Add(hold)})
					dl.maxID = max(dl.maxID, id)
					dl.seen++
					dl.mu.Unlock()
				}
			}
		}
	}
}

// release lets every packet that has been held long enough go, every
// 2 ms: the leading run of due packets in one batch verdict, any later
// due packet (one overtaking a packet still held) by its own verdict.
func (dl *delayer) release() {
	defer dl.done.Done()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-dl.stop:
			return
		case now := <-t.C:
			upTo, single := dl.takeDue(now)
			var msgs []netlink.Message
			if upTo != nil {
				msgs = append(msgs, verdictMsg(nfqnlMsgVerdictBat, *upTo))
			}
			for _, id := range single {
				msgs = append(msgs, verdictMsg(nfqnlMsgVerdict, id))
			}
			// Several verdicts to one send (the kernel handles each
			// message of it in turn), a bounded number at a time.
			for len(msgs) > 0 {
				k := min(len(msgs), 512)
				_, _ = dl.conn.SendMessages(msgs[:k])
				msgs = msgs[k:]
			}
		}
	}
}

// takeDue removes the packets due at now from the held ones: upTo is the
// last id of the leading run of due packets (nil: the first held one is
// not due), single the ids of the due packets after that run, in id
// order. A batch verdict up to any of those would also pass a packet
// still held.
func (dl *delayer) takeDue(now time.Time) (upTo *uint32, single []uint32) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	k := 0
	for k < len(dl.due) && !dl.due[k].due.After(now) {
		k++
	}
	if k > 0 {
		id := dl.due[k-1].id
		upTo = &id
	}
	if dl.jitter == 0 {
		// Due in id order: nothing after a held packet is due.
		dl.due = dl.due[k:]
		return upTo, nil
	}
	rest := dl.due[:0]
	for _, p := range dl.due[k:] {
		if p.due.After(now) {
			rest = append(rest, p)
		} else {
			single = append(single, p.id)
		}
	}
	clear(dl.due[len(rest):])
	dl.due = rest
	return upTo, single
}

// verdictMsg accepts the queued packet id (typ nfqnlMsgVerdict) or every
// queued packet with an id up to id (nfqnlMsgVerdictBat).
func verdictMsg(typ int, id uint32) netlink.Message {
	hdr := binary.BigEndian.AppendUint32(nil, nfAccept)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	// One attribute of a fixed size: marshalling it cannot fail.
	data, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfqaVerdictHdr, Data: hdr}})
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysQueue<<8 | typ), Flags: netlink.Request},
		Data:   append(nfgen(delayQueue), data...),
	}
}

// verdictUpTo accepts every queued packet with an id up to id.
func (dl *delayer) verdictUpTo(id uint32) error {
	_, err := dl.conn.Send(verdictMsg(nfqnlMsgVerdictBat, id))
	return err
}

// Held is how many packets the delayer has held so far.
func (dl *delayer) Held() int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.seen
}

// Stop lets every held packet go and removes the delay. The chains are
// emptied first, not deleted: removing a hook makes the kernel drop what
// its queues hold. Then one verdict releases everything queued (ids
// compare with wrap-around, so an id far past the last seen covers
// packets whose notices were never read), the queue is closed and the
// table deleted.
func (dl *delayer) Stop() error {
	close(dl.stop)
	err := flushChains(dl.ns, delayTable)
	dl.mu.Lock()
	last := dl.maxID
	dl.due = nil
	dl.mu.Unlock()
	err = errors.Join(err, dl.verdictUpTo(last+1<<30))
	// A packet already past the emptied rule when the chains were
	// flushed may be queued after that verdict: a second one, just before
	// the queue goes, lets it go too (closing the queue would drop it).
	time.Sleep(5 * time.Millisecond)
	err = errors.Join(err, dl.verdictUpTo(last+1<<31))
	dl.mu.Lock()
	dl.closed = true
	dl.mu.Unlock()
	err = errors.Join(err, dl.conn.Close())
	dl.done.Wait()
	return errors.Join(err, deleteTable(dl.ns, delayTable))
}

// flushChains empties the chains of the IPv4 table called name in
// namespace ns, if any, keeping the chains (and their hooks).
func flushChains(ns, name string) error {
	return withTable(ns, name, func(c *nftables.Conn, t *nftables.Table) error {
		c.FlushTable(t)
		return c.Flush()
	})
}

// queueRules adds the delay table: prerouting and output chains, each
// one rule sending the packets of dev to the queue (xt NFQUEUE, revision
// 3, bypass when nobody listens). Both hook ahead of conntrack (raw
// priority): a packet held between conntrack's lookup and its
// confirmation leaves a new flow unconfirmed, so every later packet of
// that flow arriving meanwhile makes a second entry of the same tuple,
// and the kernel drops such packets at confirmation (with a namespace's
// conntrack in use, 7 of 50 echoes 5 ms apart under an 80 ms delay were
// lost). Held before conntrack, a packet meets it only once released,
// as one delayed on the wire would.
func queueRules(ns, dev string) error {
	// struct xt_NFQ_info_v3 { __u16 queuenum, queues_total, flags; },
	// host byte order, padded to 8 bytes as xtables aligns it.
	info := make([]byte, 8)
	binary.NativeEndian.PutUint16(info[0:], delayQueue)
	binary.NativeEndian.PutUint16(info[2:], 1)
	binary.NativeEndian.PutUint16(info[4:], nfqFlagBypass)
	return devChains(ns, delayTable, dev, true, &expr.Target{Name: "NFQUEUE", Rev: 3, Info: (*xt.Unknown)(&info)})
}

// delayRules reports whether namespace ns has the delay table, and how
// many queue rules it holds.
func delayRules(ns string) (int, error) {
	n := 0
	err := ruleExprs(ns, delayTable, []string{"prerouting", "output"}, func(_ string, e expr.Any) {
		if tg, ok := e.(*expr.Target); ok && tg.Name == "NFQUEUE" {
			n++
		}
	})
	return n, err
}

// clearDelay deletes the delay table of namespace ns, if any (the
// delayer itself is stopped by its owner).
func clearDelay(ns string) error { return deleteTable(ns, delayTable) }

var (
	pingReply = regexp.MustCompile(`(?m)icmp_seq=(\d+) ttl=\d+ time=([0-9.]+) ms$`)
	pingRTT   = regexp.MustCompile(`rtt min/avg/max/mdev = ([0-9.]+)/([0-9.]+)/([0-9.]+)/`)
)

// pingStats is what a ping burst saw.
type pingStats struct {
	sent, got   int
	minRTT, avg time.Duration
	// overtaken counts the replies that arrived after a reply to a
	// later echo: the burst's reordering (each way, either way).
	overtaken int
}

func (p pingStats) String() string {
	return fmt.Sprintf("ping rtt min %v avg %v, %d/%d answered, %d overtaken",
		p.minRTT.Round(10*time.Microsecond), p.avg.Round(10*time.Microsecond), p.got, p.sent, p.overtaken)
}

// pingTrace sends count echo requests every interval from namespace ns
// to addr and reads the replies in the order they arrived.
func pingTrace(ctx context.Context, ns, addr string, count int, interval time.Duration) (pingStats, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n",
		"-c", strconv.Itoa(count), "-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-W", "3", addr).CombinedOutput()
	sum, rtt := pingSummary.FindSubmatch(out), pingRTT.FindSubmatch(out)
	if sum == nil || rtt == nil {
		return pingStats{}, fmt.Errorf("ping from %s to %s: %v: %s", ns, addr, err, out)
	}
	ms := func(b []byte) time.Duration {
		f, _ := strconv.ParseFloat(string(b), 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	var p pingStats
	p.sent, _ = strconv.Atoi(string(sum[1]))
	p.got, _ = strconv.Atoi(string(sum[2]))
	p.minRTT, p.avg = ms(rtt[1]), ms(rtt[2])
	last := -1
	for _, m := range pingReply.FindAllSubmatch(out, -1) {
		seq, _ := strconv.Atoi(string(m[1]))
		if seq < last {
			p.overtaken++
		}
		last = max(last, seq)
	}
	return p, nil
}

// Each delay proof is a burst of delayProbes echoes delayProbeGap apart:
// close enough for a jitter of a few milliseconds to reorder them.
const (
	delayProbes   = 50
	delayProbeGap = 5 * time.Millisecond
)

// measureDelay pings addr from namespace fromNS and checks the round
// trips against a delay of d ± j each way at addr. While it holds: none
// shorter than 2(d − j) (the echo and its reply are each held), at most
// 2 % lost, and the replies in order without jitter, out of order with
// a jitter of two gaps or more (then two echoes' round trips differ by a
// gap or more about a third of the time: a burst in order would be a
// jitter that is not applied). Once healed (d == 0): a mean under 50 ms.
func measureDelay(ctx context.Context, fromNS, addr string, d, j time.Duration) (string, error) {
	p, err := pingTrace(ctx, fromNS, addr, delayProbes, delayProbeGap)
	if err != nil {
		return "", err
	}
	note := p.String()
	switch {
	case d > 0 && p.minRTT < 2*(d-j):
		return note, fmt.Errorf("%s with %v ± %v held each way: want no round trip under %v", note, d, j, 2*(d-j))
	case d > 0 && 50*(p.sent-p.got) > p.sent:
		return note, fmt.Errorf("%s with %v ± %v held each way: want at most 2 %% lost", note, d, j)
	case d > 0 && j == 0 && p.overtaken > 0:
		return note, fmt.Errorf("%s with %v held each way: want the replies in order", note, d)
	case d > 0 && j >= 2*delayProbeGap && p.overtaken == 0:
		return note, fmt.Errorf("%s with %v ± %v held each way: want some replies overtaken", note, d, j)
	case d == 0 && p.avg > 50*time.Millisecond:
		return note, fmt.Errorf("%s after the heal: want a mean under 50ms", note)
	}
	return note, nil
}

// delay makes host i hold its underlay packets for d ± j each way (the
// per-packet draws seeded with seed), reads the rules back and proves
// the delay with pings from another host.
func (n *nemesis) delay(ctx context.Context, i int, d, j time.Duration, seed uint64) (*delayer, string, error) {
	h := n.b.Host(i)
	dl, err := startDelay(h.NS, underlayDev, d, j, seed)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", h.Name, err)
	}
	if k, err := delayRules(h.NS); err != nil || k != 2 {
		return dl, "", fmt.Errorf("%s has %d queue rules, want 2 (%v)", h.Name, k, err)
	}
	from := n.b.Host(n.prober(i))
	proof, err := measureDelay(ctx, from.NS, h.Addr, d, j)
	if err != nil {
		// Removing any netfilter hook in the namespace (the host's own
		// firewall or router rebuilding a table) makes the kernel drop
		// every packet its queues hold: a proof that met one is tried
		// again; a delay that does not hold fails both.
		first := proof
		proof, err = measureDelay(ctx, from.NS, h.Addr, d, j)
		proof = fmt.Sprintf("%s (first try: %s)", proof, first)
	}
	return dl, fmt.Sprintf("%s holds its %s packets %v ± %v each way; %s → %s: %s", h.Name, underlayDev, d, j, from.Name, h.Name, proof), err
}

// undelay stops host i's delayer and proves the path quick again.
func (n *nemesis) undelay(ctx context.Context, i int, dl *delayer) (string, error) {
	h := n.b.Host(i)
	held := 0
	if dl != nil {
		held = dl.Held()
		if err := dl.Stop(); err != nil {
			return "", fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	if k, err := delayRules(h.NS); err != nil || k != 0 {
		return "", fmt.Errorf("%s still has %d queue rules (%v)", h.Name, k, err)
	}
	proof, err := measureDelay(ctx, n.b.Host(n.prober(i)).NS, h.Addr, 0, 0)
	return fmt.Sprintf("healed after holding %d packets: %s", held, proof), err
}
