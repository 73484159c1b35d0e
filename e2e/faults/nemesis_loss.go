package faults

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// lossTable is the table the loss nemesis adds in a host's namespace:
// its rules drop a random share of the packets crossing the host's
// underlay interface, both ways. Packet loss without netem (the test
// kernel has no sch_netem); nftables can drop packets but not delay them.
const lossTable = "peerstack_faults_loss"

// underlayDev is a box host's interface on the underlay bridge.
const underlayDev = "eth0"

// dropShare makes namespace ns drop pct % of the IPv4 packets it
// receives on, and sends out of, dev: numgen random mod 100 < pct.
func dropShare(ns, dev string, pct int) error {
	if pct <= 0 || pct >= 100 {
		return fmt.Errorf("loss share %d %%: want 1–99", pct)
	}
	// numgen leaves a host-order number; cmp compares bytes, so it is
	// turned to network order first (as nft does).
	return devChains(ns, lossTable, dev, false,
		&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint32(uint32(pct))},
		&expr.Verdict{Kind: expr.VerdictDrop})
}

// devChains adds the IPv4 table called table in namespace ns with an
// input and an output chain, each one rule: the packets received on (or
// sent out of) dev go through then. With early the chains are
// "prerouting" and "output" at the raw priority, ahead of conntrack (see
// queueRules); otherwise "input" and "output" at the filter priority.
func devChains(ns, table, dev string, early bool, then ...expr.Any) error {
	in, inHook, prio := "input", nftables.ChainHookInput, nftables.ChainPriorityFilter
	if early {
		in, inHook, prio = "prerouting", nftables.ChainHookPrerouting, nftables.ChainPriorityRaw
	}
	return inNS(ns, func(c *nftables.Conn) error {
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table})
		accept := nftables.ChainPolicyAccept
		for _, dir := range []struct {
			chain string
			hook  *nftables.ChainHook
			meta  expr.MetaKey
		}{{in, inHook, expr.MetaKeyIIFNAME}, {"output", nftables.ChainHookOutput, expr.MetaKeyOIFNAME}} {
			ch := c.AddChain(&nftables.Chain{Name: dir.chain, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: dir.hook, Priority: prio, Policy: &accept})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append([]expr.Any{
				&expr.Meta{Key: dir.meta, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(dev)},
			}, then...)})
		}
		return c.Flush()
	})
}

// ifname is an interface name as nftables compares it (NUL-padded to
// IFNAMSIZ).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// lossRules reads back the shares namespace ns drops per chain of the
// loss table (empty: no loss table).
func lossRules(ns string) (map[string]int, error) {
	out := map[string]int{}
	err := ruleExprs(ns, lossTable, []string{"input", "output"}, func(chain string, e expr.Any) {
		if cmp, ok := e.(*expr.Cmp); ok && cmp.Op == expr.CmpOpLt && len(cmp.Data) == 4 {
			out[chain] = int(binaryutil.BigEndian.Uint32(cmp.Data))
		}
	})
	return out, err
}

// clearLoss deletes the loss table of namespace ns, if any.
func clearLoss(ns string) error { return deleteTable(ns, lossTable) }

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// pingLoss sends count echo requests 10 ms apart from namespace ns to
// addr and returns how many were sent and how many answered: the
// measured loss of the path, both ways.
func pingLoss(ctx context.Context, ns, addr string, count int) (sent, got int, err error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", "-q",
		"-c", strconv.Itoa(count), "-i", "0.01", "-W", "1", addr).CombinedOutput()
	m := pingSummary.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("ping from %s to %s: %v: %s", ns, addr, err, out)
	}
	sent, _ = strconv.Atoi(string(m[1]))
	got, _ = strconv.Atoi(string(m[2]))
	return sent, got, nil
}

// lossProof is how much of a ping burst was lost while the loss held and
// after the heal.
type lossProof struct {
	pct        int // the share dropped each way
	sent, lost int
}

// expectedRoundTrip is the share of echo requests that go unanswered when
// pct % of packets are dropped each way: the request or the reply.
func expectedRoundTrip(pct int) float64 {
	p := float64(pct) / 100
	return 1 - (1-p)*(1-p)
}

// measureLoss pings victim's address from another host's namespace and
// checks the loss against the share: while the fault holds at least half
// the expected round-trip loss, after the heal (want 0) at most 2 %.
func measureLoss(ctx context.Context, fromNS, addr string, pct int) (lossProof, error) {
	const count = 100
	sent, got, err := pingLoss(ctx, fromNS, addr, count)
	if err != nil {
		return lossProof{}, err
	}
	pr := lossProof{pct: pct, sent: sent, lost: sent - got}
	share := float64(pr.lost) / float64(max(sent, 1))
	switch {
	case sent < count/2:
		return pr, fmt.Errorf("only %d of %d echo requests sent", sent, count)
	case pct == 0 && share > 0.02:
		return pr, fmt.Errorf("%d of %d echo requests lost after the heal", pr.lost, sent)
	case pct > 0 && share < expectedRoundTrip(pct)/2:
		return pr, fmt.Errorf("%d of %d echo requests lost with %d %% dropped each way (expected about %.0f %%)",
			pr.lost, sent, pct, 100*expectedRoundTrip(pct))
	}
	return pr, nil
}

func (p lossProof) String() string {
	return fmt.Sprintf("%d/%d pings lost (%.0f %%)", p.lost, p.sent, 100*float64(p.lost)/float64(max(p.sent, 1)))
}

// prober is a host other than i whose namespace sends the ping bursts.
func (n *nemesis) prober(i int) int { return 1 + i%len(n.b.Hosts) }

// loss makes host i drop pct % of its underlay packets each way, reads
// the rules back and proves the loss with a ping burst from another
// host's namespace.
func (n *nemesis) loss(ctx context.Context, i, pct int) (string, error) {
	h := n.b.Host(i)
	if err := dropShare(h.NS, underlayDev, pct); err != nil {
		return "", fmt.Errorf("%s: %w", h.Name, err)
	}
	got, err := lossRules(h.NS)
	if err != nil || got["input"] != pct || got["output"] != pct {
		return "", fmt.Errorf("%s drops %v %%, want %d %% both ways (%v)", h.Name, got, pct, err)
	}
	from := n.b.Host(n.prober(i))
	pr, err := measureLoss(ctx, from.NS, h.Addr, pct)
	note := fmt.Sprintf("%s drops %d %% each way on %s; %s → %s: %s (expected about %.0f %%)",
		h.Name, pct, underlayDev, from.Name, h.Name, pr, 100*expectedRoundTrip(pct))
	return note, err
}

// unloss deletes host i's loss table and proves the path whole again.
func (n *nemesis) unloss(ctx context.Context, i int) (string, error) {
	h := n.b.Host(i)
	if err := clearLoss(h.NS); err != nil {
		return "", fmt.Errorf("%s: %w", h.Name, err)
	}
	if got, err := lossRules(h.NS); err != nil || len(got) > 0 {
		return "", fmt.Errorf("%s still drops %v (%v)", h.Name, got, err)
	}
	pr, err := measureLoss(ctx, n.b.Host(n.prober(i)).NS, h.Addr, 0)
	return "healed: " + pr.String(), err
}
