package identity

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

// ErrPoolFull is returned when a Pool's queue is full; the caller answers
// 503 and the client retries.
var ErrPoolFull = errors.New("identity: too many password checks queued")

// Pool runs bcrypt with bounded concurrency so a storm of logins cannot
// take the CPU Raft and gossip need for their timers: at most Workers
// hashes run at once and at most Queue more wait; the rest are refused.
type Pool struct {
	slots chan struct{} // Workers running
	admit chan struct{} // Workers running + Queue waiting
	// Counted is told of each bcrypt run (checks and hashes), for metrics
	// and tests; nil means nobody is told.
	Counted func()
}

// DefaultPoolWorkers leaves one CPU to Raft: max(1, NumCPU-1).
func DefaultPoolWorkers() int { return max(1, runtime.NumCPU()-1) }

// NewPool returns a pool of workers (≥1) with a queue of queue waiting.
func NewPool(workers, queue int) *Pool {
	workers = max(1, workers)
	return &Pool{slots: make(chan struct{}, workers), admit: make(chan struct{}, workers+max(0, queue))}
}

// run runs f in a slot, waiting in the queue while ctx allows.
func (p *Pool) run(ctx context.Context, f func()) error {
	select {
	case p.admit <- struct{}{}:
	default:
		return ErrPoolFull
	}
	defer func() { <-p.admit }()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("identity: wait for a password slot: %w", ctx.Err())
	}
	defer func() { <-p.slots }()
	if p.Counted != nil {
		p.Counted()
	}
	f()
	return nil
}

// Check is CheckPassword in the pool.
func (p *Pool) Check(ctx context.Context, hash, pw string) (bool, error) {
	var ok bool
	err := p.run(ctx, func() { ok = CheckPassword(hash, pw) })
	return ok, err
}

// Hash is HashPassword in the pool.
func (p *Pool) Hash(ctx context.Context, pw string, cost int) (string, error) {
	var (
		h   string
		err error
	)
	if perr := p.run(ctx, func() { h, err = HashPassword(pw, cost) }); perr != nil {
		return "", perr
	}
	return h, err
}
