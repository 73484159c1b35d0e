package statedb

// JoinFloor returns the oldest version a new member must run to apply the
// log of sn's cluster: the newest MinVersion among the commands the
// current members may already have applied (a command is allowed once
// every member is at its MinVersion, so any of them may be in the log or
// the snapshot a joiner receives). "" when no gated command is allowed yet.
func (r *Registry) JoinFloor(sn *Snapshot) string {
	members := sn.Members()
	if len(members) == 0 {
		return ""
	}
	oldest := members[0].Version
	for _, m := range members[1:] {
		if CompareVersions(m.Version, oldest) < 0 {
			oldest = m.Version
		}
	}
	floor := ""
	for _, s := range r.byType {
		if s.MinVersion == "" || CompareVersions(oldest, s.MinVersion) < 0 {
			continue
		}
		if floor == "" || CompareVersions(s.MinVersion, floor) > 0 {
			floor = s.MinVersion
		}
	}
	return floor
}
