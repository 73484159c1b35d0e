package statedb

import (
	"errors"
	"strings"
)

// The quota checks each create command runs before it writes: read from
// the transaction's own usage counters, so whatever the log ordered
// before this command is included and nothing is reserved.

// charge is one resource a command asks for: n more of it.
type charge struct {
	resource string
	n        int64
}

// checkQuota refuses the command if any charge takes the project over its
// limit of that resource. Charges of 0 or less are not checked.
func checkQuota(t *Txn, projectID, userID string, charges ...charge) error {
	sn := t.read()
	cfg, ok := sn.Cluster()
	if !ok || !cfg.Settings.QuotasEnforced {
		return nil
	}
	own, _ := sn.QuotaSet(projectID)
	var project *usageVec // the project's counters, read once
	for _, ch := range charges {
		if ch.n <= 0 {
			continue
		}
		limit := quotaLimit(own, cfg, ch.resource)
		if limit == Unlimited {
			continue
		}
		var used int64
		switch i := usageIndex(ch.resource); {
		case i < 0 || i == uKeyPairs || projectID == "":
			used = sn.QuotaUsage(projectID, userID, ch.resource)
		default:
			if project == nil {
				u := sn.usageOfOwner(projectOwner(projectID))
				project = &u
			}
			used = project[i]
		}
		if used+ch.n > limit {
			return overQuota(ch.resource, ch.n, used, limit)
		}
	}
	return nil
}

// checkPerItem refuses a single item larger than a per-item quota
// (metadata_items per server, per_volume_gigabytes per volume).
func checkPerItem(sn *Snapshot, projectID, resource string, n int64) error {
	if !sn.QuotasEnforced() {
		return nil
	}
	limit := sn.QuotaLimit(projectID, resource)
	if limit != Unlimited && n > limit {
		return overQuota(resource, n, 0, limit)
	}
	return nil
}

// quotaCreateInstances checks a whole server create: instances, cores,
// RAM, the ports and boot volumes it makes, metadata items per server and
// members per server group. Over quota with MinCount set below the
// number asked for, it keeps the largest leading part that fits (at least
// MinCount), as Nova caps max_count to the headroom when min_count fits;
// if not even MinCount fits, the error names the whole request, as Nova's
// does.
func quotaCreateInstances(t *Txn, r *CreateInstancesCmd) error {
	err := quotaInstancesFit(t, r.Instances)
	if err == nil || !errors.Is(err, ErrOverQuota) || r.MinCount <= 0 || r.MinCount >= len(r.Instances) {
		return err
	}
	for k := len(r.Instances) - 1; k >= r.MinCount; k-- {
		if quotaInstancesFit(t, r.Instances[:k]) == nil {
			if k == 1 {
				// Nova names a lone server as asked, without "-1".
				inst := &r.Instances[0].Instance
				inst.Name = strings.TrimSuffix(inst.Name, "-1")
			}
			r.Instances = r.Instances[:k]
			return nil
		}
	}
	return err
}

// quotaInstancesFit checks instances as one server create's charges.
func quotaInstancesFit(t *Txn, instances []InstanceCreate) error {
	sn := t.read()
	type sums struct{ instances, cores, ram, ports, volumes, gb int64 }
	per := map[string]*sums{}
	users := map[string]string{}
	groups := map[string]int64{}
	groupProject := map[string]string{}
	for i := range instances {
		ic := &instances[i]
		inst := &ic.Instance
		s := per[inst.ProjectID]
		if s == nil {
			s = &sums{}
			per[inst.ProjectID] = s
			users[inst.ProjectID] = inst.UserID
		}
		s.instances++
		s.cores += int64(inst.Flavor.VCPUs)
		s.ram += int64(inst.Flavor.RAMMB)
		for _, nic := range ic.NICs {
			if nic.Create != nil {
				s.ports++
			}
		}
		if ic.Root != nil && ic.Root.New != nil {
			s.volumes++
			s.gb += int64(ic.Root.New.SizeGB)
			if err := checkPerItem(sn, inst.ProjectID, QuotaPerVolumeGigabytes, int64(ic.Root.New.SizeGB)); err != nil {
				return err
			}
		}
		if err := checkPerItem(sn, inst.ProjectID, QuotaMetadataItems, int64(len(inst.Metadata))); err != nil {
			return err
		}
		if inst.GroupID != "" {
			groups[inst.GroupID]++
			groupProject[inst.GroupID] = inst.ProjectID
		}
	}
	for _, p := range quotaSortedKeys(per) {
		s := per[p]
		if err := checkQuota(t, p, users[p],
			charge{QuotaInstances, s.instances}, charge{QuotaCores, s.cores}, charge{QuotaRAM, s.ram},
			charge{QuotaPorts, s.ports}, charge{QuotaVolumes, s.volumes}, charge{QuotaGigabytes, s.gb}); err != nil {
			return err
		}
	}
	for _, id := range quotaSortedKeys(groups) {
		if !sn.QuotasEnforced() {
			break
		}
		g, ok := sn.ServerGroup(id)
		if !ok {
			continue // createInstance reports the missing group
		}
		limit := sn.QuotaLimit(groupProject[id], QuotaServerGroupMembers)
		if used := int64(len(g.Members)); limit != Unlimited && used+groups[id] > limit {
			return overQuota(QuotaServerGroupMembers, groups[id], used, limit)
		}
	}
	return nil
}

// quotaCreateKeypair checks key_pairs, which Nova counts per user against
// the limit of the user's default project (else the cluster default).
func quotaCreateKeypair(t *Txn, k *Keypair) error {
	project := ""
	if u, ok := t.read().User(k.UserID); ok {
		project = u.DefaultProjectID
	}
	return checkQuota(t, project, k.UserID, charge{QuotaKeyPairs, 1})
}

// quotaCreateVolume checks a new volume, or growth of an existing one by
// grow GB (extend: volumes is not charged).
func quotaCreateVolume(t *Txn, projectID string, newVolume bool, sizeGB, grow int64) error {
	if err := checkPerItem(t.read(), projectID, QuotaPerVolumeGigabytes, sizeGB); err != nil {
		return err
	}
	n := int64(0)
	if newVolume {
		n = 1
	}
	return checkQuota(t, projectID, "", charge{QuotaVolumes, n}, charge{QuotaGigabytes, grow})
}
