package hostfail

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/rest"
)

// RaftStatus is what the lease reads from Raft.
type RaftStatus interface {
	Leader() (id, addr string)
	IsLeader() bool
	// ConfirmLeader returns once an entry appended after the call is
	// committed in this node's term: a quorum of voters still followed it
	// then (consensus.Node.ConfirmLeader).
	ConfirmLeader(ctx context.Context) error
	// StepAside cuts a leader off from the others until it no longer
	// leads (consensus.Node.StepAside).
	StepAside()
	Status() consensus.Status
}

// defaultStallLimit is how long a confirmation may go unanswered before
// the leader steps aside (Lease.StallLimit).
const defaultStallLimit = 3 * time.Second

// Lease renews this host's lease with the leader, and, on the leader,
// answers the other hosts' renewals. Use it by pointer.
type Lease struct {
	SelfID   string
	SelfName string
	Raft     RaftStatus
	// Heard records, on the leader, that a host renewed its lease and the
	// fence timeout it reported with its send time (0: none, a host of an
	// older release).
	Heard func(host string, fenceTimeout, sent time.Duration)
	// Cover makes, on the leader, the replicated fence wait cover a
	// reported fence timeout (CmdCoverFenceTimeout when it is longer than
	// the setting), returning once that is committed: a renewal is
	// acknowledged only then, so a later leader, which knows nothing of
	// this report, still waits at least that long for the host. Nil: no
	// cover (tests of the lease alone).
	Cover func(ctx context.Context, fenceTimeout time.Duration) error
	// AddrOf is a host's API address ("" when unknown).
	AddrOf func(id string) string
	// Client is the mTLS client for host-to-host calls.
	Client *http.Client

	// StallLimit is how long a leadership confirmation may go unanswered
	// while this node still leads before it steps aside (0: 3 s). Such a
	// leader cannot commit (a stalled disk) while its heartbeats keep the
	// others from electing one that can: every renewal would fail and
	// every host fence its HA servers after T_fence. Stepping aside has
	// the others elect a leader within a few heartbeat timeouts.
	StallLimit time.Duration

	check leaderCheck // coalesces the leadership confirmations (verify.go)
}

// confirmRound is one leadership confirmation: a committed barrier, with
// this node stepping aside if it has not come within StallLimit while it
// still leads.
func (l *Lease) confirmRound(ctx context.Context) error {
	limit := l.StallLimit
	if limit <= 0 {
		limit = defaultStallLimit
	}
	t := time.AfterFunc(limit, func() {
		if l.Raft.IsLeader() {
			l.Raft.StepAside()
		}
	})
	defer t.Stop()
	return l.Raft.ConfirmLeader(ctx)
}

// FenceReport is what a lease renewal carries: the fence timeout this
// host fences on from this renewal on (FenceTimeouts), and when it sent
// the renewal on its CLOCK_BOOTTIME, which orders the renewals of one
// host (a late one must not replace a newer report). Older releases sent
// CLOCK_MONOTONIC under the same name; it is never less, so the order
// holds across an upgrade.
type FenceReport struct {
	Timeout time.Duration `json:"fence_timeout_ns,omitempty"`
	Sent    time.Duration `json:"sent_mono_ns,omitempty"`
}

// leaseAnswer is the leader's answer to a lease renewal.
type leaseAnswer struct {
	Leader string `json:"leader"`
	Commit uint64 `json:"commit_index"`
}

// Service is POST /internal/v1/lease: a host renews its lease with the
// leader, which records when it heard from it.
func (l *Lease) Service() rest.Service {
	return rest.Service{Prefix: "", Errors: rest.KeystoneErrors, Routes: []rest.Route{
		{Method: "POST", Path: "/internal/v1/lease", Auth: rest.Internal, Handler: l.serve},
	}}
}

func (l *Lease) serve(c *rest.Ctx) (any, error) {
	if len(c.R.TLS.PeerCertificates) == 0 {
		return nil, rest.Forbiddenf("a cluster client certificate is required")
	}
	host := c.R.TLS.PeerCertificates[0].Subject.CommonName
	var req FenceReport
	if err := c.Decode(&req); err != nil {
		return nil, err
	}
	if req.Timeout < 0 || req.Sent < 0 {
		return nil, rest.BadRequest("Invalid fence report %+v.", req)
	}
	if !l.Raft.IsLeader() {
		return nil, rest.Conflictf("host %s is not the leader", l.SelfName)
	}
	if err := l.cover(c.Context(), req.Timeout); err != nil {
		return nil, &rest.HTTPError{Status: http.StatusServiceUnavailable, Quiet: true,
			Msg: fmt.Sprintf("the fence timeout %s host %s reported is not covered yet: %v", req.Timeout, host, err)}
	}
	if err := l.check.confirm(c.Context(), l.confirmRound); err != nil {
		return nil, &rest.HTTPError{Status: http.StatusServiceUnavailable, Quiet: true,
			Msg: fmt.Sprintf("host %s could not confirm with a quorum that it still leads: %v", l.SelfName, err)}
	}
	// The commit index is read before the contact is recorded: a host that
	// applied it has seen everything this leader had decided about it.
	commit := l.Raft.Status().CommitIndex
	l.Heard(host, req.Timeout, req.Sent)
	return leaseAnswer{Leader: l.SelfID, Commit: commit}, nil
}

func (l *Lease) cover(ctx context.Context, d time.Duration) error {
	if l.Cover == nil || d <= 0 {
		return nil
	}
	return l.Cover(ctx, d)
}

// Renew makes one lease round trip with the leader, reporting the fence
// timeout this host fences on from then, and returns the leader's commit
// index.
func (l *Lease) Renew(ctx context.Context, r FenceReport) (uint64, error) {
	id, _ := l.Raft.Leader()
	if id == "" {
		return 0, fmt.Errorf("lease: no leader")
	}
	if id == l.SelfID {
		if !l.Raft.IsLeader() {
			return 0, fmt.Errorf("lease: no longer the leader")
		}
		if err := l.cover(ctx, r.Timeout); err != nil {
			return 0, fmt.Errorf("lease: cover this host's fence timeout %s: %w", r.Timeout, err)
		}
		// The leader's own renewal was "sent" before this check: the same
		// confirmation as any other host's (verify.go).
		if err := l.check.confirm(ctx, l.confirmRound); err != nil {
			return 0, fmt.Errorf("lease: confirm leadership with a quorum: %w", err)
		}
		commit := l.Raft.Status().CommitIndex
		l.Heard(id, r.Timeout, r.Sent)
		return commit, nil
	}
	addr := l.AddrOf(id)
	if addr == "" {
		return 0, fmt.Errorf("lease: leader %s has no known address", id)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("lease: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/internal/v1/lease", bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("lease: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		// A leader of an older release (0.1.0, during a rolling upgrade)
		// has no lease route; it answered, so this host is in contact
		// with it, and it never restarts a server on another host (nor
		// can a newer leader while it is a member: failover is a command
		// gated on every host's version), so there is nothing to fence
		// against. The commit index it sent is the best there is.
		return l.Raft.Status().CommitIndex, nil
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("lease from %s: status %d", addr, resp.StatusCode)
	}
	var a leaseAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	if a.Leader != id {
		return 0, fmt.Errorf("lease: %s answered for %s, not the leader %s", addr, a.Leader, id)
	}
	return a.Commit, nil
}
