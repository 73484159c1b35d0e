package membership

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/cluster"
)

// RaftServer is one server of the Raft configuration.
type RaftServer struct {
	ID    string
	Voter bool
}

// MemberList is the cluster's hosts as the members API shows them: each
// member record of the state with its Raft role (from the configuration
// servers and the leader's id) and its gossip state and metadata (live).
func MemberList(members []*statedb.Member, servers []RaftServer, leaderID string, live []gossip.Member) []cluster.Member {
	roles := map[string]string{}
	for _, s := range servers {
		switch {
		case s.ID == leaderID:
			roles[s.ID] = "leader"
		case s.Voter:
			roles[s.ID] = "voter"
		default:
			roles[s.ID] = "nonvoter"
		}
	}
	gm := map[string]gossip.Member{}
	for _, m := range live {
		gm[m.Name] = m
	}
	var out []cluster.Member
	for _, m := range members {
		cm := cluster.Member{ID: m.ID, Name: m.Name, APIAddr: m.APIAddr, RaftAddr: m.RaftAddr, GossipAddr: m.GossipAddr,
			RaftRole: "none", GossipState: "dead", Disabled: m.Disabled}
		if r, ok := roles[m.ID]; ok {
			cm.RaftRole = r
		}
		if g, ok := gm[m.ID]; ok {
			cm.GossipState = string(g.State)
			cm.VTEPAddr, cm.Accel, cm.Arch, cm.Version = g.Meta.VTEPAddr, g.Meta.Accel, g.Meta.Arch, g.Meta.SWVersion
			cm.Capacity = cluster.Capacity{VCPUs: g.Meta.VCPUs, RAMMB: g.Meta.RAMMB, DiskGB: g.Meta.DiskGB,
				UsedVCPUs: g.Meta.UsedVCPUs, UsedRAMMB: g.Meta.UsedRAMMB, UsedDiskGB: g.Meta.UsedDiskGB}
		}
		out = append(out, cm)
	}
	return out
}

// Raft is what leaving and registering need from Raft.
type Raft interface {
	State() *statedb.Snapshot
	IsLeader() bool
	TransferLeadership() error
	Propose(ctx context.Context, t statedb.CmdType, payload any) (uint64, error)
}

// Leaver takes this host out of the cluster gracefully.
type Leaver struct {
	HostID string
	Raft   Raft
	// CheckEmpty refuses the leave while servers are placed here.
	CheckEmpty func() error
	// MarkLeft records on disk that this host left (it must not start
	// as a member again).
	MarkLeft func() error
	// InRaft reports whether this host is still in Raft's configuration.
	InRaft func() (bool, error)
	// Goodbye tells gossip this host leaves and stops the daemon.
	Goodbye func()
	// Remove takes this host's member record out (and, where the cluster
	// allows, revokes its certificate in the same entry). nil: propose
	// RemoveMember.
	Remove func(ctx context.Context) (revoked bool, err error)
}

// Leave removes this host from the cluster: leadership moves away, the
// member record goes, the leader drops it from Raft, gossip says goodbye
// (Goodbye runs in the background once Raft dropped it, or after 10 s).
func (l *Leaver) Leave(ctx context.Context) error {
	if len(l.Raft.State().Members()) <= 1 {
		return rest.BadRequest("the last host of a cluster cannot leave it")
	}
	if err := l.CheckEmpty(); err != nil {
		return err
	}
	if l.Raft.IsLeader() {
		if err := l.Raft.TransferLeadership(); err != nil {
			return fmt.Errorf("leave: hand over leadership: %w", err)
		}
	}
	if l.Remove != nil {
		if _, err := l.Remove(ctx); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
	} else if _, err := l.Raft.Propose(ctx, statedb.CmdRemoveMember, statedb.RemoveMemberCmd{ID: l.HostID}); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if err := l.MarkLeft(); err != nil {
		return err
	}
	go func() {
		// Let the leader drop us from Raft before gossip says goodbye and
		// the daemon stops — revoked too: the members keep this host's Raft
		// connections until the leader has taken it out of the
		// configuration, and stopping before that could leave a two-host
		// cluster without a quorum.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if in, err := l.InRaft(); err == nil && !in {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		l.Goodbye()
	}()
	return nil
}

// Register keeps this host's member record in step with its addresses
// and version: it proposes self (JoinedAt kept from the existing record,
// else now) until the state holds it, this host has left, or ctx ends.
func Register(ctx context.Context, r Raft, self statedb.Member, left func() bool, now func() time.Time, log *slog.Logger) {
	for {
		m, ok := r.State().Member(self.ID)
		if ok && m.APIAddr == self.APIAddr && m.RaftAddr == self.RaftAddr && m.GossipAddr == self.GossipAddr && m.Name == self.Name && m.Version == self.Version {
			return
		}
		if left() {
			return
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rec := self
		if ok {
			rec.JoinedAt = m.JoinedAt
		} else {
			rec.JoinedAt = now()
		}
		_, err := r.Propose(actx, statedb.CmdRegisterMember, rec)
		cancel()
		if err == nil {
			return
		}
		log.Debug("register member: retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
