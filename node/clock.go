package node

import (
	"time"

	"github.com/peerstack/peerstack/node/membership"
)

// DefaultMaxClockSkew is how far apart two hosts' wall clocks may be
// (--max-clock-skew); node/membership explains the figure.
const DefaultMaxClockSkew = membership.DefaultMaxClockSkew

// certBackdate bounds --max-clock-skew: certificates are valid that long
// before their signer's clock.
const certBackdate = membership.CertBackdate

// clock is this host's wall clock: the system clock shifted by
// --clock-offset, which exists to inject clock skew in tests (faketime
// does not reach Go binaries, and time namespaces cannot offset
// CLOCK_REALTIME).
func (n *Node) clock() time.Time { return time.Now().Add(n.cfg.ClockOffset) }

// ClockSkews returns, per member id, how far that member's clock is ahead
// of this host's as gossip last measured it (cluster.Backend). This host
// maps to 0; members that are not alive or not measured since they
// (re)joined are absent.
func (n *Node) ClockSkews() map[string]time.Duration {
	return membership.Skews(n.gossip.Members(), n.id.NodeID)
}
