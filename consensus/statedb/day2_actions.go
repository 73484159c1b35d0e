package statedb

import (
	"slices"
	"time"
)

// finishDeletedActions ends the open events of a removed instance's
// actions (its delete among them) with Success: the history outlives the
// instance, at most maxActionsPerInstance actions of it.
func finishDeletedActions(t *Txn, now time.Time, inst *Instance) error {
	for _, a := range t.read().InstanceActions(inst.ID) {
		if a.Finished() {
			continue
		}
		cp := *a
		cp.Events = slices.Clone(a.Events)
		for i := range cp.Events {
			if cp.Events[i].Result == "" {
				cp.Events[i].FinishTime, cp.Events[i].Result = now, ResultSuccess
				if cp.Events[i].Host == "" {
					cp.Events[i].Host = inst.Host
				}
			}
		}
		cp.UpdatedAt = now
		if err := t.insert(tblInstanceActions, &cp); err != nil {
			return err
		}
	}
	return nil
}

// DeletedInstanceProject returns the project of a removed instance whose
// action history is kept; ok is false for an id nothing knows.
func (sn *Snapshot) DeletedInstanceProject(id string) (string, bool) {
	if _, live := sn.Instance(id); live {
		return "", false
	}
	u, ok := get[InstanceUsage](sn, tblInstanceUsage, id)
	if !ok || len(sn.InstanceActions(id)) == 0 {
		return "", false
	}
	return u.ProjectID, true
}

// everyMemberAtLeast reports whether every member reported version v or
// newer. Apply functions may branch on it: it reads only the state.
func everyMemberAtLeast(sn *Snapshot, v string) bool {
	_, older := sn.MemberOlderThan(v)
	return !older
}

// MemberOlderThan returns a member that reported a version older than v
// (or none), if there is one.
func (sn *Snapshot) MemberOlderThan(v string) (*Member, bool) {
	for _, m := range sn.Members() {
		if CompareVersions(m.Version, v) < 0 {
			return m, true
		}
	}
	return nil, false
}
