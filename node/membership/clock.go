package membership

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/gossip"
)

// DefaultMaxClockSkew is how far apart two hosts' wall clocks may be.
// Everything that compares clocks across hosts tolerates far more:
// certificates are backdated by an hour (CertBackdate), join tokens live
// minutes to days and identity tokens hours, so 30 s costs a token at
// most 30 s of its life. Any working NTP or chrony keeps hosts within
// milliseconds, while a host that booted with a drifted RTC and has not
// synced yet is usually seconds off: 30 s refuses the broken, not the
// merely unsynced.
const DefaultMaxClockSkew = 30 * time.Second

// JoinTransit bounds how long a join request may take from the joiner's
// clock reading to its arrival (connect, TLS handshake, body): a joiner
// behind us looks up to that much further behind than it is.
const JoinTransit = 2 * time.Second

// DescribeSkew says "3600.2 s ahead of" or "12.0 s behind".
func DescribeSkew(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("%.1f s behind", -d.Seconds())
	}
	return fmt.Sprintf("%.1f s ahead of", d.Seconds())
}

// seconds prints a limit: "30 s", "1.5 s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%g s", d.Seconds())
}

// JoinClockOK says whether a joiner's clock is close enough to ours.
// measured is its clock reading minus ours when the request arrived. The
// joiner read its clock just before sending, so the request arrived up to
// JoinTransit later and its true skew lies in [measured, measured +
// JoinTransit]: refuse only when that whole range is beyond the limit.
func JoinClockOK(measured, limit time.Duration) bool {
	return measured <= limit && measured+JoinTransit >= -limit
}

// MostOff says whether this host's own clock is likely the wrong one: off
// of the of measured members are beyond the limit, and they are most of at
// least two (with one other host, either clock may be wrong).
func MostOff(off, of int) bool { return of >= 2 && off*2 > of }

// Outliers counts the alive members other than self whose clocks gossip
// measured, and how many of them are beyond limit from this host's.
func Outliers(members []gossip.Member, self string, limit time.Duration) (off, of int) {
	for _, m := range members {
		if m.Name == self || m.State != gossip.StateAlive || m.ClockMeasuredAt.IsZero() {
			continue
		}
		of++
		if m.ClockSkew.Abs() > limit {
			off++
		}
	}
	return off, of
}

// CheckMemberClock compares the answering member's clock (member) with
// ours on a successful join: sent and got are our clock around the
// request, so the member's reading lies between them if the clocks agree.
// The member already admitted us, so a skew is only logged: undoing the
// join here would leave a registered member with no host.
func CheckMemberClock(log *slog.Logger, limit time.Duration, member, sent, got time.Time) {
	if member.IsZero() {
		return
	}
	switch {
	case member.After(got.Add(limit)):
		log.Warn(fmt.Sprintf("clock of the member that admitted this host is at least %s this host's (limit %s): fix time sync (NTP/chrony)",
			DescribeSkew(member.Sub(got)), seconds(limit)))
	case member.Before(sent.Add(-limit)):
		log.Warn(fmt.Sprintf("clock of the member that admitted this host is at least %s this host's (limit %s): fix time sync (NTP/chrony)",
			DescribeSkew(member.Sub(sent)), seconds(limit)))
	}
}

// Skews returns, per member id, how far that member's clock is ahead of
// this host's (self) as gossip last measured it. Self maps to 0; members
// that are not alive or not measured since they (re)joined are absent.
func Skews(members []gossip.Member, self string) map[string]time.Duration {
	out := map[string]time.Duration{self: 0}
	for _, m := range members {
		if m.Name != self && m.State == gossip.StateAlive && !m.ClockMeasuredAt.IsZero() {
			out[m.Name] = m.ClockSkew
		}
	}
	return out
}

// ClockWatch logs each crossing of the skew limit once: a warning when a
// member's clock goes beyond it, an info when it comes back under 90% of
// it (the margin keeps a skew hovering at the limit from flapping), and
// the same for this host when most measured members are beyond it, which
// means this host's clock is the wrong one. It is owned by one goroutine.
type ClockWatch struct {
	log     *slog.Logger
	self    string
	limit   time.Duration
	skewed  map[string]bool // member id → beyond the limit
	selfOff bool
}

// NewClockWatch watches the clocks of self's peers against limit.
func NewClockWatch(log *slog.Logger, self string, limit time.Duration) *ClockWatch {
	return &ClockWatch{log: log, self: self, limit: limit, skewed: map[string]bool{}}
}

// Observe looks at the latest gossip view.
func (w *ClockWatch) Observe(members []gossip.Member) {
	back := w.limit - w.limit/10
	off, of := 0, 0
	listed := map[string]bool{}
	for _, m := range members {
		listed[m.Name] = true
		if m.Name == w.self || m.State != gossip.StateAlive || m.ClockMeasuredAt.IsZero() {
			continue
		}
		name, abs := m.Meta.Name, m.ClockSkew.Abs()
		of++
		switch {
		case abs > w.limit:
			off++
			if !w.skewed[m.Name] {
				w.skewed[m.Name] = true
				w.log.Warn(fmt.Sprintf("clock skew: host %s's clock is %s this host's (limit %s): fix time sync (NTP/chrony) on whichever is wrong",
					name, DescribeSkew(m.ClockSkew), seconds(w.limit)), "member", m.Name, "skew_ms", m.ClockSkew.Milliseconds())
			}
		case abs <= back && w.skewed[m.Name]:
			delete(w.skewed, m.Name)
			w.log.Info(fmt.Sprintf("clock skew resolved: host %s's clock is %s this host's (limit %s)",
				name, DescribeSkew(m.ClockSkew), seconds(w.limit)), "member", m.Name, "skew_ms", m.ClockSkew.Milliseconds())
		case abs > back && w.skewed[m.Name]:
			off++ // still counts as off until it is clearly back
		}
	}
	for id := range w.skewed {
		if !listed[id] {
			delete(w.skewed, id) // forgotten or reaped
		}
	}
	switch selfOff := MostOff(off, of); {
	case selfOff && !w.selfOff:
		w.selfOff = true
		w.log.Warn(fmt.Sprintf("clock skew: this host's clock is more than %s off from %d of the %d other members: fix time sync (NTP/chrony) on this host",
			seconds(w.limit), off, of))
	case !selfOff && w.selfOff:
		w.selfOff = false
		w.log.Info("clock skew resolved: this host's clock agrees with most members again")
	}
}
