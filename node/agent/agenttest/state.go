// Package agenttest holds fakes for the agent's interfaces: a recording
// hypervisor, network, volume store and image source, and a state with a
// proposer that applies commands straight into a statedb.Store (the real
// apply functions, no Raft). Tests and node/nodetest use them; production
// code must not.
package agenttest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// State is a statedb.Store driven directly: Apply plays the role of the
// Raft leader. It satisfies agent.State.
type State struct {
	*statedb.Store
	mu    sync.Mutex
	index uint64
	Now   func() time.Time // proposer clock; default time.Now
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Store: statedb.NewStore(), Now: time.Now}
}

// Apply applies one command and returns its business error, if any.
func (s *State) Apply(t statedb.CmdType, payload any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index++
	cmd, err := statedb.NewCommand(t, fmt.Sprintf("req-%d", s.index), s.Now(), payload)
	if err != nil {
		return err
	}
	data, err := cmd.Encode()
	if err != nil {
		return err
	}
	return s.Store.Apply(s.index, data).Err
}

// Proposal is one command a Proposer received.
type Proposal struct {
	Type    statedb.CmdType
	Payload any
	Err     error
	At      time.Time
}

// Proposer records proposals and applies them to State.
type Proposer struct {
	State *State
	// Delay is waited before each proposal is applied (a slow leader).
	Delay time.Duration

	mu    sync.Mutex
	props []Proposal
	fail  error
}

// Propose implements agent.Proposer.
func (p *Proposer) Propose(ctx context.Context, t statedb.CmdType, payload any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	fail := p.fail
	p.mu.Unlock()
	if p.Delay > 0 {
		select {
		case <-time.After(p.Delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := fail
	if err == nil {
		err = p.State.Apply(t, payload)
	}
	p.mu.Lock()
	p.props = append(p.props, Proposal{Type: t, Payload: payload, Err: err, At: time.Now()})
	p.mu.Unlock()
	return err
}

// FailWith makes every later proposal fail with err (nil: succeed again).
func (p *Proposer) FailWith(err error) {
	p.mu.Lock()
	p.fail = err
	p.mu.Unlock()
}

// Proposals returns what was proposed so far.
func (p *Proposer) Proposals() []Proposal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Proposal(nil), p.props...)
}

// InstanceReports returns the instance reports proposed for id, in order.
func (p *Proposer) InstanceReports(id string) []statedb.ReportInstanceCmd {
	var out []statedb.ReportInstanceCmd
	for _, pr := range p.Proposals() {
		if r, ok := pr.Payload.(statedb.ReportInstanceCmd); ok && r.InstanceID == id {
			out = append(out, r)
		}
	}
	return out
}

// VolumeReports returns the volume reports proposed for a volume, in order.
func (p *Proposer) VolumeReports(id string) []statedb.ReportVolumeCmd {
	var out []statedb.ReportVolumeCmd
	for _, pr := range p.Proposals() {
		if r, ok := pr.Payload.(statedb.ReportVolumeCmd); ok && r.VolumeID == id {
			out = append(out, r)
		}
	}
	return out
}
