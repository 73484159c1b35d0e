package statedb

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Quotas: per-project limits on how much a project may hold. Usage is
// checked inside the very command that creates a resource
// (quotas_apply.go), against counters the same transaction keeps with
// every row it writes (quotas_usage.go), so there is no reservation to
// drift and two hosts creating at once are ordered by the Raft log — the
// second command sees the first one's resources and is refused.
//
// Limits resolve in three steps: a project's own QuotaSet, else the
// cluster default (Settings.Quotas, set by an admin), else the built-in
// default (BuiltinQuota). -1 is unlimited.
//
// Commands 191-199: 191 CmdSetQuotas, 192 CmdDeleteQuotas, 193
// CmdSetDefaultQuotas, 194 CmdEnableQuotas.
//
// Checks run only once Settings.QuotasEnforced is set, so entries written
// before quotas existed replay as they applied.
const tblQuotas = "quotas"

var quotaTables = []table{idTable(tblQuotas, func() any { return &QuotaSet{} })}

// KindOverQuota is a create refused because the project would exceed a
// quota. Each REST service renders it with its own status (Nova 403,
// Neutron 409, Cinder 413).
const KindOverQuota Kind = "over_quota"

// ErrOverQuota matches any over-quota error with errors.Is.
var ErrOverQuota = &Error{Kind: KindOverQuota}

// Unlimited is the limit value that means no limit.
const Unlimited int64 = -1

// Compute (Nova) quota resources.
const (
	QuotaInstances          = "instances"
	QuotaCores              = "cores"
	QuotaRAM                = "ram"
	QuotaKeyPairs           = "key_pairs"
	QuotaMetadataItems      = "metadata_items"
	QuotaServerGroups       = "server_groups"
	QuotaServerGroupMembers = "server_group_members"
)

// Network (Neutron) quota resources.
const (
	QuotaNetworks           = "network"
	QuotaSubnets            = "subnet"
	QuotaPorts              = "port"
	QuotaRouters            = "router"
	QuotaFloatingIPs        = "floatingip"
	QuotaSecurityGroups     = "security_group"
	QuotaSecurityGroupRules = "security_group_rule"
)

// Block storage (Cinder) quota resources. Snapshots and backups do not
// exist yet: they are reported (0 used) so clients find the keys.
const (
	QuotaVolumes            = "volumes"
	QuotaGigabytes          = "gigabytes"
	QuotaPerVolumeGigabytes = "per_volume_gigabytes"
	QuotaSnapshots          = "snapshots"
	QuotaBackups            = "backups"
	QuotaBackupGigabytes    = "backup_gigabytes"
)

// ComputeQuotas lists the compute quota resources in display order.
func ComputeQuotas() []string {
	return []string{QuotaInstances, QuotaCores, QuotaRAM, QuotaKeyPairs, QuotaMetadataItems, QuotaServerGroups, QuotaServerGroupMembers}
}

// NetworkQuotas lists the network quota resources in display order.
func NetworkQuotas() []string {
	return []string{QuotaNetworks, QuotaSubnets, QuotaPorts, QuotaRouters, QuotaFloatingIPs, QuotaSecurityGroups, QuotaSecurityGroupRules}
}

// VolumeQuotas lists the block storage quota resources in display order.
func VolumeQuotas() []string {
	return []string{QuotaVolumes, QuotaGigabytes, QuotaPerVolumeGigabytes, QuotaSnapshots, QuotaBackups, QuotaBackupGigabytes}
}

// BuiltinQuota is the default limit of a resource when neither the
// project nor the cluster sets one: the upstream services' defaults.
// ok is false for a name that is not a quota resource.
func BuiltinQuota(resource string) (limit int64, ok bool) {
	switch resource {
	case QuotaInstances, QuotaServerGroups, QuotaServerGroupMembers, QuotaRouters,
		QuotaSecurityGroups, QuotaVolumes, QuotaSnapshots, QuotaBackups:
		return 10, true
	case QuotaCores:
		return 20, true
	case QuotaRAM:
		return 51200, true
	case QuotaKeyPairs, QuotaNetworks, QuotaSubnets, QuotaSecurityGroupRules:
		return 100, true
	case QuotaMetadataItems:
		return 128, true
	case QuotaPorts:
		return 500, true
	case QuotaFloatingIPs:
		return 50, true
	case QuotaGigabytes, QuotaBackupGigabytes:
		return 1000, true
	case QuotaPerVolumeGigabytes:
		return Unlimited, true
	}
	return 0, false
}

// QuotaCeiling is the largest limit a resource may be given; 0 means no
// ceiling beyond the int64 range. metadata_items is capped by the hard
// per-server limit (quotas_limits.go): no quota can raise it.
func QuotaCeiling(resource string) int64 {
	if resource == QuotaMetadataItems {
		return MaxServerMetadataItems
	}
	return 0
}

// QuotaSet is one project's own limits; resources it does not name use
// the cluster's defaults. ID is the project id.
type QuotaSet struct {
	ID     string           `json:"id"`
	Limits map[string]int64 `json:"limits"`
}

// SetQuotasCmd sets some of a project's limits; the others stay.
type SetQuotasCmd struct {
	ProjectID string           `json:"project_id"`
	Limits    map[string]int64 `json:"limits"`
}

// CheckQuotaLimits validates limits as a set or settings command would:
// known resources, values -1 or more, ceilings respected.
func CheckQuotaLimits(limits map[string]int64) error {
	keys := slices.Sorted(maps.Keys(limits))
	for _, k := range keys {
		v := limits[k]
		if _, ok := BuiltinQuota(k); !ok {
			return Errorf(KindInvalid, "Bad key(s) %s in quota_set", k)
		}
		if v < Unlimited {
			return Errorf(KindInvalid, "Quota limit %d for %s must be -1 (unlimited) or more.", v, k)
		}
		if c := QuotaCeiling(k); c > 0 && (v == Unlimited || v > c) {
			return Errorf(KindInvalid, "Quota limit %d for %s must be between 0 and the hard limit %d.", v, k, c)
		}
	}
	return nil
}

// QuotasEnforced reports whether apply checks quotas and hard limits.
func (sn *Snapshot) QuotasEnforced() bool {
	cfg, ok := sn.Cluster()
	return ok && cfg.Settings.QuotasEnforced
}

// enableQuotas sets Settings.QuotasEnforced (a no-op before bootstrap:
// nothing can be created then).
func enableQuotas(t *Txn) error {
	old, ok := t.read().Cluster()
	if !ok || old.Settings.QuotasEnforced {
		return nil
	}
	cfg := *old
	cfg.Settings.QuotasEnforced = true
	return t.insert(tblMeta, &cfg)
}

func applyEnableQuotas(t *Txn, _ *Command) error { return enableQuotas(t) }

func applySetQuotas(t *Txn, c *Command) error {
	r, err := decode[SetQuotasCmd](c)
	if err != nil {
		return err
	}
	if r.ProjectID == "" {
		return Errorf(KindInvalid, "a quota set needs a project")
	}
	if err := CheckQuotaLimits(r.Limits); err != nil {
		return err
	}
	if err := enableQuotas(t); err != nil {
		return err
	}
	qs := &QuotaSet{ID: r.ProjectID, Limits: map[string]int64{}}
	if old, ok := t.read().QuotaSet(r.ProjectID); ok {
		maps.Copy(qs.Limits, old.Limits)
	}
	maps.Copy(qs.Limits, r.Limits)
	return t.insert(tblQuotas, qs)
}

func applySetDefaultQuotas(t *Txn, c *Command) error {
	r, err := decode[SetQuotasCmd](c)
	if err != nil {
		return err
	}
	if err := CheckQuotaLimits(r.Limits); err != nil {
		return err
	}
	old, ok := t.read().Cluster()
	if !ok {
		return Errorf(KindConflict, "the cluster is not bootstrapped")
	}
	cfg := *old
	cfg.Settings.QuotasEnforced = true
	cfg.Settings.Quotas = maps.Clone(old.Settings.Quotas)
	if cfg.Settings.Quotas == nil {
		cfg.Settings.Quotas = map[string]int64{}
	}
	maps.Copy(cfg.Settings.Quotas, r.Limits)
	return t.insert(tblMeta, &cfg)
}

func applyDeleteQuotas(t *Txn, c *Command) error {
	d, err := decode[DeleteCmd](c)
	if err != nil {
		return err
	}
	if qs, ok := t.read().QuotaSet(d.ID); ok {
		return t.delete(tblQuotas, qs)
	}
	return nil // nothing of its own: already at the defaults
}

// QuotaSet returns a project's own limits.
func (sn *Snapshot) QuotaSet(projectID string) (*QuotaSet, bool) {
	return get[QuotaSet](sn, tblQuotas, projectID)
}

// DefaultQuota is the limit a project without its own gets: the cluster
// default, else the built-in one.
func (sn *Snapshot) DefaultQuota(resource string) int64 {
	cfg, _ := sn.Cluster()
	return quotaLimit(nil, cfg, resource)
}

// QuotaLimit is a project's effective limit of a resource.
func (sn *Snapshot) QuotaLimit(projectID, resource string) int64 {
	own, _ := sn.QuotaSet(projectID)
	cfg, _ := sn.Cluster()
	return quotaLimit(own, cfg, resource)
}

// quotaLimit resolves a limit: the project's own (own may be nil), else
// the cluster default (cfg may be nil), else the built-in one.
func quotaLimit(own *QuotaSet, cfg *ClusterConfig, resource string) int64 {
	if own != nil {
		if v, ok := own.Limits[resource]; ok {
			return v
		}
	}
	if cfg != nil {
		if v, ok := cfg.Settings.Quotas[resource]; ok {
			return v
		}
	}
	v, _ := BuiltinQuota(resource)
	return v
}

// QuotaUsage is what a project holds of a resource, read from the usage
// counters the state machine keeps with every write (quotas_usage.go).
// key_pairs belong to users: userID names whose are counted ("" counts
// none). Per-item resources (metadata_items, server_group_members,
// per_volume_gigabytes) and resources that do not exist yet count 0.
// A project's default security group and its rules count like any other
// (Neutron counts them too) although creating them is never refused
// (secgroups_apply.go).
func (sn *Snapshot) QuotaUsage(projectID, userID, resource string) int64 {
	i := usageIndex(resource)
	switch {
	case i < 0:
		return 0
	case i == uKeyPairs:
		if userID == "" {
			return 0
		}
		return sn.usageOfOwner(userOwner(userID))[i]
	case projectID == "":
		return 0
	}
	return sn.usageOfOwner(projectOwner(projectID))[i]
}

// QuotaUsages counts a project's usage of each of resources.
func (sn *Snapshot) QuotaUsages(projectID, userID string, resources []string) map[string]int64 {
	out := make(map[string]int64, len(resources))
	for _, r := range resources {
		out[r] = sn.QuotaUsage(projectID, userID, r)
	}
	return out
}

// OverQuotaResource returns the resource an over-quota error names.
func OverQuotaResource(err error) string {
	e := AsError(err)
	if e.Kind != KindOverQuota {
		return ""
	}
	tail, ok := strings.CutPrefix(e.Msg, overQuotaPrefix)
	if !ok {
		return ""
	}
	res, _, _ := strings.Cut(tail, ":")
	return res
}

const overQuotaPrefix = "Quota exceeded for "

// overQuota is Nova's message, which every service's error starts from.
func overQuota(resource string, requested, used, limit int64) error {
	return &Error{Kind: KindOverQuota, Msg: fmt.Sprintf("%s%s: Requested %d, but already used %d of %d %s",
		overQuotaPrefix, resource, requested, used, limit, resource)}
}

// quotaSortedKeys returns a map's keys in order, for deterministic checks.
func quotaSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
