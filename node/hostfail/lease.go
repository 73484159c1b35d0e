package hostfail

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/rest"
)

// RaftStatus is what the lease reads from Raft.
type RaftStatus interface {
	Leader() (id, addr string)
	IsLeader() bool
	Status() consensus.Status
}

// Lease renews this host's lease with the leader, and, on the leader,
// answers the other hosts' renewals.
type Lease struct {
	SelfID   string
	SelfName string
	Raft     RaftStatus
	// Heard records, on the leader, that a host renewed its lease.
	Heard func(host string)
	// AddrOf is a host's API address ("" when unknown).
	AddrOf func(id string) string
	// Client is the mTLS client for host-to-host calls.
	Client *http.Client
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
	if !l.Raft.IsLeader() {
		return nil, rest.Conflictf("host %s is not the leader", l.SelfName)
	}
	// The commit index is read before the contact is recorded: a host that
	// applied it has seen everything this leader had decided about it.
	commit := l.Raft.Status().CommitIndex
	l.Heard(host)
	return leaseAnswer{Leader: l.SelfID, Commit: commit}, nil
}

// Renew makes one lease round trip with the leader and returns the
// leader's commit index.
func (l *Lease) Renew(ctx context.Context) (uint64, error) {
	id, _ := l.Raft.Leader()
	if id == "" {
		return 0, fmt.Errorf("lease: no leader")
	}
	if id == l.SelfID {
		if !l.Raft.IsLeader() {
			return 0, fmt.Errorf("lease: no longer the leader")
		}
		commit := l.Raft.Status().CommitIndex
		l.Heard(id)
		return commit, nil
	}
	addr := l.AddrOf(id)
	if addr == "" {
		return 0, fmt.Errorf("lease: leader %s has no known address", id)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/internal/v1/lease", bytes.NewReader([]byte("{}")))
	if err != nil {
		return 0, fmt.Errorf("lease: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("lease from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
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
