package statedb

import "slices"

// What becomes of a deleted project's security groups.
//
// Keystone deletes a project whatever it still owns, and Neutron leaves
// the project's groups behind for good, orphaned. peerstack removes them
// with the project instead — the default group included — except those
// still used by ports of the project (servers or ports left behind):
// those keep filtering their ports exactly as before, since deleting a
// project must not change what running servers can reach, and go in the
// command that deletes their last port. The project's own quota limits
// go with it too, and its address groups once no remaining rule names
// them. Rules of other groups naming a removed group as their
// remote group go with it: the group had no members, so they matched
// nothing.

// dropProjectLeftovers removes a project's quota limits and its unused
// security groups; the project delete calls it.
func dropProjectLeftovers(t *Txn, projectID string) error {
	if qs, ok := t.read().QuotaSet(projectID); ok {
		if err := t.delete(tblQuotas, qs); err != nil {
			return err
		}
	}
	return dropOrphanSecGroups(t, projectID)
}

// dropOrphanSecGroups removes the security groups no port uses of a
// project that no longer exists. Called after ports are deleted; for a
// project that exists it is one lookup.
func dropOrphanSecGroups(t *Txn, projectID string) error {
	if projectID == "" {
		return nil
	}
	sn := t.read()
	if _, ok := sn.Project(projectID); ok {
		return nil
	}
	groups := sn.SecGroupsOfProject(projectID)
	used := map[string]bool{}
	for _, p := range sn.Ports() {
		for _, g := range p.SecurityGroups {
			used[g] = true
		}
	}
	var touched []string // groups that lost a rule naming a removed one
	for _, g := range groups {
		if used[g.ID] {
			continue
		}
		rules := append(sn.SecRulesOf(g.ID), sn.SecRulesReferring(g.ID)...)
		for _, r := range rules {
			if _, ok := t.read().SecRule(r.ID); !ok {
				continue // both of the group and naming it
			}
			if err := t.delete(tblSecRules, r); err != nil {
				return err
			}
			touched = append(touched, r.GroupID)
		}
		if err := t.delete(tblSecGroups, g); err != nil {
			return err
		}
	}
	slices.Sort(touched)
	for _, id := range slices.Compact(touched) {
		if g, ok := t.read().SecGroup(id); ok {
			if err := touchSecGroup(t, g, cmdTime(t)); err != nil {
				return err
			}
		}
	}
	// Address groups go once no rule names them.
	for _, ag := range listBy[AddressGroup](t.read(), tblAddrGroups, "ProjectID", projectID) {
		if len(t.read().SecRulesOfAddressGroup(ag.ID)) == 0 {
			if err := t.delete(tblAddrGroups, ag); err != nil {
				return err
			}
		}
	}
	return nil
}
