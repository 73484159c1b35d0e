package statedb

import "time"

// Revoked hosts: a member removed by an administrator (RemoveHost) is
// recorded here by member id, and every host refuses a certificate naming
// a revoked id on its internal endpoints (API, Raft) from the moment it
// applies the command. Member ids are never reused, so a revoked id stays
// revoked; records are small and kept forever.

const tblRevokedHosts = "revoked_hosts"

// RevokedHost is a member id whose certificates are no longer accepted.
type RevokedHost struct {
	ID        string    `json:"id"` // member id (the certificate's common name)
	Name      string    `json:"name,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// RemoveHostCmd removes a member and revokes its certificates in one
// step.
type RemoveHostCmd struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

func applyRemoveHost(t *Txn, c *Command) error {
	r, err := decode[RemoveHostCmd](c)
	if err != nil {
		return err
	}
	if r.ID == "" {
		return Errorf(KindInvalid, "Removing a host needs its member id.")
	}
	sn := t.read()
	m, member := sn.Member(r.ID)
	_, revoked := sn.RevokedHost(r.ID)
	if !member && !revoked {
		return Errorf(KindNotFound, "No member with id %s.", r.ID)
	}
	if member && len(sn.Members()) <= 1 {
		return Errorf(KindConflict, "The last member of a cluster cannot be removed.")
	}
	rec := &RevokedHost{ID: r.ID, RevokedAt: c.Time, Reason: r.Reason}
	if member {
		rec.Name = m.Name
		if err := t.delete(tblMembers, m); err != nil {
			return err
		}
	}
	if revoked {
		return nil // idempotent
	}
	return t.insert(tblRevokedHosts, rec)
}

// RevokedHost returns the revocation record of member id, if revoked.
func (sn *Snapshot) RevokedHost(id string) (*RevokedHost, bool) {
	return get[RevokedHost](sn, tblRevokedHosts, id)
}

// RevokedHosts lists every revoked member id.
func (sn *Snapshot) RevokedHosts() []*RevokedHost { return list[RevokedHost](sn, tblRevokedHosts) }
