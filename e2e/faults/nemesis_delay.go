package faults

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
// same namespace, lets each packet go once it has been held for the
// delay. Packet ids grow in queue order, so one batch verdict releases
// every packet up to the last one due. A packet is held or, when the
// queue is full or its notice cannot be delivered, dropped (as netem
// drops past its limit): never passed early, so order is kept.

// delayTable is the table the delay nemesis adds in a host's namespace.
const delayTable = "peerstack_faults_delay"

// delayQueue is the queue number the delay table sends to (queues are
// per network namespace).
const delayQueue = 4242

// nfnetlink_queue's wire constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue     = 3
	nfqnlMsgPacket      = 0
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

// delayer holds the packets of one namespace's queue for a fixed time.
type delayer struct {
	ns    string
	delay time.Duration
	conn  *netlink.Conn

	mu     sync.Mutex
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
// and sends out of, dev for d before letting it go. Stop undoes it.
func startDelay(ns, dev string, d time.Duration) (*delayer, error) {
	if d <= 0 || d > 5*time.Second {
		return nil, fmt.Errorf("delay %v: want (0, 5s]", d)
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
	dl := &delayer{ns: ns, delay: d, conn: conn, stop: make(chan struct{})}
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
					dl.due = append(dl.due, delayedPacket{id: id, due: now.Add(dl.delay)})
					dl.maxID = max(dl.maxID, id)
					dl.seen++
					dl.mu.Unlock()
				}
			}
		}
	}
}

// release lets every packet that has been held long enough go, in one
// batch verdict per tick.
func (dl *delayer) release() {
	defer dl.done.Done()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-dl.stop:
			return
		case now := <-t.C:
			dl.mu.Lock()
			k := 0
			for k < len(dl.due) && !dl.due[k].due.After(now) {
				k++
			}
			var upTo uint32
			if k > 0 {
				upTo = dl.due[k-1].id
				dl.due = dl.due[k:]
			}
			dl.mu.Unlock()
			if k > 0 {
				_ = dl.verdictUpTo(upTo)
			}
		}
	}
}

// verdictUpTo accepts every queued packet with an id up to id.
func (dl *delayer) verdictUpTo(id uint32) error {
	hdr := binary.BigEndian.AppendUint32(nil, nfAccept)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	data, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfqaVerdictHdr, Data: hdr}})
	if err != nil {
		return err
	}
	_, err = dl.conn.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysQueue<<8 | nfqnlMsgVerdictBat), Flags: netlink.Request},
		Data:   append(nfgen(delayQueue), data...),
	})
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

// queueRules adds the delay table: input and output chains, each one
// rule sending the packets of dev to the queue (xt NFQUEUE, revision 3,
// bypass when nobody listens).
func queueRules(ns, dev string) error {
	// struct xt_NFQ_info_v3 { __u16 queuenum, queues_total, flags; },
	// host byte order, padded to 8 bytes as xtables aligns it.
	info := make([]byte, 8)
	binary.NativeEndian.PutUint16(info[0:], delayQueue)
	binary.NativeEndian.PutUint16(info[2:], 1)
	binary.NativeEndian.PutUint16(info[4:], nfqFlagBypass)
	return devChains(ns, delayTable, dev, &expr.Target{Name: "NFQUEUE", Rev: 3, Info: (*xt.Unknown)(&info)})
}

// delayRules reports whether namespace ns has the delay table, and how
// many queue rules it holds.
func delayRules(ns string) (int, error) {
	n := 0
	err := ruleExprs(ns, delayTable, []string{"input", "output"}, func(_ string, e expr.Any) {
		if tg, ok := e.(*expr.Target); ok && tg.Name == "NFQUEUE" {
			n++
		}
	})
	return n, err
}

// clearDelay deletes the delay table of namespace ns, if any (the
// delayer itself is stopped by its owner).
func clearDelay(ns string) error { return deleteTable(ns, delayTable) }

var pingRTT = regexp.MustCompile(`rtt min/avg/max/mdev = ([0-9.]+)/([0-9.]+)/([0-9.]+)/`)

// pingRTTs sends count echo requests 20 ms apart from namespace ns to
// addr and returns the smallest and the mean round trip of the answered.
func pingRTTs(ctx context.Context, ns, addr string, count int) (minRTT, avg time.Duration, err error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", "-q",
		"-c", strconv.Itoa(count), "-i", "0.02", "-W", "3", addr).CombinedOutput()
	m := pingRTT.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("ping from %s to %s: %v: %s", ns, addr, err, out)
	}
	ms := func(b []byte) time.Duration {
		f, _ := strconv.ParseFloat(string(b), 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	return ms(m[1]), ms(m[2]), nil
}

// measureDelay pings addr from namespace fromNS and checks the round
// trips against a delay of d each way at addr: while it holds, none
// shorter than 2d (the echo and its reply are each held); once healed
// (d == 0), a mean under 50 ms.
func measureDelay(ctx context.Context, fromNS, addr string, d time.Duration) (string, error) {
	minRTT, avg, err := pingRTTs(ctx, fromNS, addr, 20)
	if err != nil {
		return "", err
	}
	note := fmt.Sprintf("ping rtt min %v avg %v", minRTT.Round(100*time.Microsecond), avg.Round(100*time.Microsecond))
	switch {
	case d > 0 && minRTT < 2*d:
		return note, fmt.Errorf("%s with %v held each way: want no round trip under %v", note, d, 2*d)
	case d == 0 && avg > 50*time.Millisecond:
		return note, fmt.Errorf("%s after the heal: want a mean under 50ms", note)
	}
	return note, nil
}

// delay makes host i hold its underlay packets for d each way, reads the
// rules back and proves the delay with pings from another host.
func (n *nemesis) delay(ctx context.Context, i int, d time.Duration) (*delayer, string, error) {
	h := n.b.Host(i)
	dl, err := startDelay(h.NS, underlayDev, d)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", h.Name, err)
	}
	if k, err := delayRules(h.NS); err != nil || k != 2 {
		return dl, "", fmt.Errorf("%s has %d queue rules, want 2 (%v)", h.Name, k, err)
	}
	from := n.b.Host(n.prober(i))
	proof, err := measureDelay(ctx, from.NS, h.Addr, d)
	return dl, fmt.Sprintf("%s holds its %s packets %v each way; %s → %s: %s", h.Name, underlayDev, d, from.Name, h.Name, proof), err
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
	proof, err := measureDelay(ctx, n.b.Host(n.prober(i)).NS, h.Addr, 0)
	return fmt.Sprintf("healed after holding %d packets: %s", held, proof), err
}
