package gossip

import (
	"encoding/binary"
	"time"

	"github.com/hashicorp/memberlist"
)

// Clock skew is measured on memberlist's probes, at no extra traffic: the
// probed host puts its wall clock in the ack (AckPayload), and the prober
// compares it with its own clock at the probe's midpoint, as NTP does with
// one sample: skew = theirs − (sent + rtt/2). The error is at most rtt/2,
// well under a millisecond on a LAN.

// clockPayloadV1 starts an ack payload carrying the sender's wall clock as
// 8 big-endian bytes of Unix nanoseconds.
const (
	clockPayloadV1  = 1
	clockPayloadLen = 9
)

var _ memberlist.PingDelegate = hooks{}

func encodeClock(t time.Time) []byte {
	b := make([]byte, clockPayloadLen)
	b[0] = clockPayloadV1
	binary.BigEndian.PutUint64(b[1:], uint64(t.UnixNano()))
	return b
}

// decodeClock reads a payload from encodeClock; ok is false for anything
// else (an older peer sends none, a newer one may append fields).
func decodeClock(b []byte) (t time.Time, ok bool) {
	if len(b) < clockPayloadLen || b[0] != clockPayloadV1 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[1:clockPayloadLen]))), true
}

// AckPayload is this host's wall clock, sent in every probe ack.
func (h hooks) AckPayload() []byte { return encodeClock(h.g.now()) }

// NotifyPingComplete records the skew of a member that answered a direct
// probe. memberlist calls it as soon as the ack arrived, so our clock now
// is the ack's arrival time, and the probe's midpoint is rtt/2 before it.
func (h hooks) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	theirs, ok := decodeClock(payload)
	if !ok || other == nil {
		return
	}
	now := h.g.now()
	skew := theirs.Sub(now.Add(-rtt / 2))
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	// A member not listed yet gets measured on the next probe.
	if rec, ok := h.g.members[other.Name]; ok && rec.member.State == StateAlive {
		rec.member.ClockSkew, rec.member.ClockRTT, rec.member.ClockMeasuredAt = skew, rtt, now
	}
}
