package statedb

import "time"

// Role changes that change what tokens grant, each one command with the
// token revocation it implies: tokens carry role names, so a revoked
// grant, a deleted role or a renamed role must stop working in the same
// log entry that changes the role, never in a second proposal a client
// disconnect could lose.

// RevokeRoleCmd revokes a grant and every earlier token of its user.
type RevokeRoleCmd struct {
	Assignment
	// TokensExpireAt is when the revoked tokens would expire anyway (the
	// proposer's clock plus the token lifetime): the revocation record is
	// dropped after it.
	TokensExpireAt time.Time `json:"tokens_expire_at"`
}

// DeleteRoleCmd deletes a role, its grants and the tokens of its holders.
type DeleteRoleCmd struct {
	ID             string    `json:"id"`
	TokensExpireAt time.Time `json:"tokens_expire_at"`
}

// UpdateRoleCmd updates a role; a new name revokes its holders' tokens.
type UpdateRoleCmd struct {
	Role           Role      `json:"role"`
	TokensExpireAt time.Time `json:"tokens_expire_at"`
}

// roleHolderIDs is every user holding role id anywhere, once each.
func roleHolderIDs(sn *Snapshot, roleID string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range listBy[Assignment](sn, tblAssignments, "RoleID", roleID) {
		if !seen[a.UserID] {
			seen[a.UserID] = true
			out = append(out, a.UserID)
		}
	}
	return out
}

func revokeUsers(t *Txn, users []string, now, until time.Time) error {
	for _, u := range users {
		if err := revokeUser(t, u, now, until); err != nil {
			return err
		}
	}
	return nil
}

func applyRevokeRoleTokens(t *Txn, c *Command) error {
	r, err := decode[RevokeRoleCmd](c)
	if err != nil {
		return err
	}
	old, ok := get[Assignment](t.read(), tblAssignments, AssignmentID(r.ProjectID, r.UserID, r.RoleID))
	if !ok {
		return Errorf(KindNotFound, "Could not find role assignment.")
	}
	if err := t.delete(tblAssignments, old); err != nil {
		return err
	}
	return revokeUser(t, r.UserID, c.Time, r.TokensExpireAt)
}

func applyDeleteRoleTokens(t *Txn, c *Command) error {
	d, err := decode[DeleteRoleCmd](c)
	if err != nil {
		return err
	}
	holders := roleHolderIDs(t.read(), d.ID)
	if err := applyDeleteRole(t, &Command{Type: CmdDeleteRole, Time: c.Time, payload: &DeleteCmd{ID: d.ID}}); err != nil {
		return err
	}
	return revokeUsers(t, holders, c.Time, d.TokensExpireAt)
}

func applyUpdateRoleTokens(t *Txn, c *Command) error {
	u, err := decode[UpdateRoleCmd](c)
	if err != nil {
		return err
	}
	old, ok := t.read().Role(u.Role.ID)
	if !ok {
		return Errorf(KindNotFound, "Could not find role: %s.", u.Role.ID)
	}
	renamed := old.Name != u.Role.Name
	role := u.Role
	if err := applyUpdateRole(t, &Command{Type: CmdUpdateRole, Time: c.Time, payload: &role}); err != nil {
		return err
	}
	if !renamed {
		return nil
	}
	return revokeUsers(t, roleHolderIDs(t.read(), u.Role.ID), c.Time, u.TokensExpireAt)
}
