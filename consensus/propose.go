package consensus

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Propose builds a command of type t around payload, stamped with a fresh
// request id and the configured clock (Config.NewID, Config.Now), and
// applies it like Apply: through the leader, at most once, returning after
// the local state has applied it. Leader routines and host agents propose
// through it.
func (n *Node) Propose(ctx context.Context, t statedb.CmdType, payload any) (uint64, error) {
	cmd, err := statedb.NewCommand(t, n.cfg.NewID(), n.cfg.Now(), payload)
	if err != nil {
		return 0, err
	}
	return n.Apply(ctx, cmd)
}

// randomID is the default request id generator: 128 random bits in hex.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
