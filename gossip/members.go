package gossip

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's liveness as this host sees it.
type State string

// Member states. memberlist v0.6.0 keeps its suspect state private (the
// exported Node.State is never set, hashicorp/memberlist#293), so a member
// stays StateAlive while suspected and StateSuspect is not reported yet.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one host in the gossip pool.
type Member struct {
	Name  string // memberlist node name = NodeID
	Addr  string // ip:port gossip
	Meta  Meta
	State State
	// ClockSkew is how far the member's wall clock is ahead of this
	// host's (negative: behind), from the last probe it answered; its
	// error is at most ClockRTT/2. Valid only if ClockMeasuredAt is set.
	ClockSkew time.Duration
	ClockRTT  time.Duration
	// ClockMeasuredAt is this host's clock at that probe; zero until the
	// member answers a probe after it (re)joined.
	ClockMeasuredAt time.Time
}

// EventKind says what happened to a member.
type EventKind int

// Event kinds.
const (
	EventJoin   EventKind = iota // a member appeared or came back
	EventLeave                   // a member died or left; see Member.State
	EventUpdate                  // a member's Meta changed
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	}
	return "unknown(" + strconv.Itoa(int(k)) + ")"
}

// Event is a hint that a member changed. Events can be dropped; consumers
// reconcile from Members.
type Event struct {
	Kind   EventKind
	Member Member
}

// record is the tracked view of one member.
type record struct {
	member   Member
	departed time.Time // when it became dead or left; zero while alive
}

// hooks receives memberlist's callbacks. memberlist calls the event and
// conflict methods with its node lock held, so they must not call back into
// memberlist; they only touch Gossip.mu-guarded fields and never block.
type hooks struct{ g *Gossip }

var (
	_ memberlist.Delegate         = hooks{}
	_ memberlist.EventDelegate    = hooks{}
	_ memberlist.ConflictDelegate = hooks{}
)

// NodeMeta returns the local node's encoded Meta.
func (h hooks) NodeMeta(limit int) []byte {
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	if len(h.g.metaBuf) > limit {
		// Unreachable: Encode enforces MaxMetaSize. memberlist would panic.
		return nil
	}
	return slices.Clone(h.g.metaBuf)
}

func (hooks) NotifyMsg([]byte)                  {}
func (hooks) GetBroadcasts(_, _ int) [][]byte   { return nil }
func (hooks) LocalState(bool) []byte            { return nil }
func (hooks) MergeRemoteState(_ []byte, _ bool) {}
func (h hooks) NotifyJoin(n *memberlist.Node)   { h.g.observe(n, EventJoin) }
func (h hooks) NotifyUpdate(n *memberlist.Node) { h.g.observe(n, EventUpdate) }
func (h hooks) NotifyLeave(n *memberlist.Node)  { h.g.observe(n, EventLeave) }
func (h hooks) NotifyConflict(old, n *memberlist.Node) {
	h.g.log.Warn("gossip name conflict", "member", n.Name,
		"addr", nodeAddr(old), "other_addr", nodeAddr(n))
}

// observe records a memberlist event and emits it without blocking.
func (g *Gossip) observe(n *memberlist.Node, kind EventKind) {
	// Copy what we need now: memberlist owns *n and mutates it later.
	name, addr := n.Name, nodeAddr(n)
	meta, metaErr := DecodeMeta(n.Meta)
	now := time.Now()

	g.mu.Lock()
	defer g.mu.Unlock()
	g.reapLocked(now)
	rec, ok := g.members[name]
	if !ok {
		rec = &record{member: Member{Name: name}}
		g.members[name] = rec
	}
	rec.member.Addr = addr
	if metaErr != nil {
		// Keep the last good Meta; a peer on a newer encoding stays visible.
		g.log.Warn("gossip member meta undecodable", "member", name, "err", metaErr)
	} else {
		rec.member.Meta = meta
	}
	switch kind {
	case EventJoin:
		// A member that comes back may come back with another clock.
		rec.member.State, rec.departed = StateAlive, time.Time{}
		rec.member.ClockSkew, rec.member.ClockRTT, rec.member.ClockMeasuredAt = 0, 0, time.Time{}
	case EventUpdate:
		rec.member.State, rec.departed = StateAlive, time.Time{}
	case EventLeave:
		rec.member.State, rec.departed = departedState(n, rec.member.Meta, name == g.nodeID && g.left), now
	}
	g.log.Debug("gossip member event", "event", kind, "member", name, "state", rec.member.State)
	if g.closed {
		return
	}
	select {
	case g.events <- Event{Kind: kind, Member: rec.member}:
	default:
		g.dropped.Add(1)
	}
}

// departedState tells a graceful leave from a failure. memberlist v0.6.0
// never fills Node.State, so the Leaving flag the host gossips before it
// leaves decides; a later memberlist that fills it wins.
func departedState(n *memberlist.Node, m Meta, selfLeft bool) State {
	switch {
	case n.State == memberlist.StateLeft, m.Leaving, selfLeft:
		return StateLeft
	default:
		return StateDead
	}
}

// reapLocked drops departed members older than the reap interval.
func (g *Gossip) reapLocked(now time.Time) {
	for name, rec := range g.members {
		if !rec.departed.IsZero() && now.Sub(rec.departed) > g.reapAfter {
			delete(g.members, name)
		}
	}
}

// Members returns every known member, including dead and left ones until
// they are forgotten or reaped, sorted by Name.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reapLocked(time.Now())
	out := make([]Member, 0, len(g.members))
	for _, rec := range g.members {
		out = append(out, rec.member)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LocalMember returns this host as the pool sees it.
func (g *Gossip) LocalMember() Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rec, ok := g.members[g.nodeID]; ok {
		return rec.member
	}
	return Member{Name: g.nodeID, Meta: g.meta, State: StateAlive}
}

// NumAlive returns how many members, this host included, are alive.
func (g *Gossip) NumAlive() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, rec := range g.members {
		if rec.member.State == StateAlive {
			n++
		}
	}
	return n
}

// Forget drops a dead or left member from Members now instead of at the
// reap interval. It reports whether it dropped one; alive members stay.
func (g *Gossip) Forget(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	rec, ok := g.members[name]
	if !ok || rec.departed.IsZero() {
		return false
	}
	delete(g.members, name)
	return true
}

// DroppedEvents returns how many events were dropped on a full buffer.
func (g *Gossip) DroppedEvents() uint64 { return g.dropped.Load() }

// Events returns the event stream. It is closed by Shutdown.
func (g *Gossip) Events() <-chan Event { return g.events }

func nodeAddr(n *memberlist.Node) string {
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}
