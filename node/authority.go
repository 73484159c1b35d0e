package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/node/membership"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/identity"
	"github.com/peerstack/peerstack/rest"
)

// callerOf names the API caller a command proposed with ctx acts for:
// the verified credential of the request ctx belongs to, if any.
func callerOf(ctx context.Context) *statedb.Caller {
	cred := rest.CredentialFrom(ctx)
	if cred == nil {
		return nil
	}
	return callerOfCred(cred)
}

// callerOfCred is the identity a user command carries for cred: the same
// rules the API's policy applies (identity.Authorize).
func callerOfCred(cred *rest.Credential) *statedb.Caller {
	return &statedb.Caller{
		UserID: cred.UserID, ProjectID: cred.ProjectID, Admin: cred.IsAdmin(),
		Writer: slices.Contains(cred.Roles, identity.RoleMember) || slices.Contains(cred.Roles, identity.RoleAdmin),
	}
}

// forbiddenMessage is the message of a 403 body from the internal API.
func forbiddenMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return "The cluster's leader refused the command."
}

// refuseRevoked makes cfg refuse certificates of members the state has
// revoked (statedb.RevokedHost); before Raft runs (state unset) none is.
func refuseRevoked(cfg *tls.Config, state *atomic.Pointer[consensus.Node]) *tls.Config {
	return membership.RefuseRevoked(cfg, func(id string) bool {
		rn := state.Load()
		if rn == nil {
			return false
		}
		_, revoked := rn.State().RevokedHost(id)
		return revoked
	})
}

// RemoveHost removes member id from the cluster and revokes its
// certificates in one command (cluster.Backend): from the moment a host
// applies it, that host refuses the member's certificate. The leader then
// drops the member from Raft.
func (n *Node) RemoveHost(ctx context.Context, id string) error {
	if id == n.id.NodeID {
		return rest.BadRequest("a host cannot remove itself; use leave on it, or remove it through another host")
	}
	if _, err := n.raft.Propose(ctx, statedb.CmdRemoveHost, statedb.RemoveHostCmd{ID: id, Reason: "removed by an administrator"}); err != nil {
		return fmt.Errorf("remove host %s: %w", id, err)
	}
	return nil
}
