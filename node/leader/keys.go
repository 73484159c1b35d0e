package leader

import (
	"context"
	"crypto/rand"
	"log/slog"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/identity"
)

// Proposer proposes a command through Raft and returns the index it was
// applied at, or the error it failed with.
type Proposer interface {
	Propose(ctx context.Context, t statedb.CmdType, payload any) (uint64, error)
}

// KeyRotation is how often the leader rotates the token signing key.
const KeyRotation = 24 * time.Hour

// Keys rotates the token signing key once the active one is older than
// KeyRotation; the old key stays valid for a token lifetime.
type Keys struct {
	State    StateSource
	Proposer Proposer
	// Now is the proposer clock.
	Now      func() time.Time
	Interval time.Duration
	Logger   *slog.Logger
}

// Routine is the key rotation as a leader routine.
func (k Keys) Routine() Routine { return Every("keys", k.Interval, k.rotate) }

// rotate rotates the token signing key once the active one is old.
func (k Keys) rotate(ctx context.Context) {
	sn := k.State.State()
	cfg, ok := sn.Cluster()
	if !ok {
		return
	}
	now := k.Now()
	for _, key := range sn.SigningKeys() {
		if key.RetireAt.IsZero() && now.Sub(key.CreatedAt) < KeyRotation {
			return
		}
	}
	key, err := identity.NewKey(rand.Reader)
	if err != nil {
		return
	}
	life := cfg.Settings.TokenLifetime
	if life == 0 {
		life = time.Hour
	}
	_, err = k.Proposer.Propose(ctx, statedb.CmdRotateSigningKeys, statedb.RotateSigningKeysCmd{
		New: statedb.SigningKey{ID: key.ID, Secret: key.Secret, CreatedAt: now}, RetireOldAt: now.Add(life + 5*time.Minute),
	})
	if err != nil {
		k.Logger.Warn("rotate signing keys", "err", err)
		return
	}
	k.Logger.Info("rotated token signing key", "key", key.ID)
}
