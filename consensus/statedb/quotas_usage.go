package statedb

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/go-memdb"
)

// Usage counters: what each project (and, for key pairs, each user) holds
// of every counted quota resource, so a quota check and a usage read cost
// one lookup instead of a walk over the project's rows.
//
// The counters are derived state. Txn.insert and Txn.delete adjust them
// in the same memdb transaction as the row they write, so they commit and
// abort with it and cannot drift from the rows; every write of a counted
// table goes through those two. They are never dumped into a Raft
// snapshot: Restore counts them again from the restored rows. The one
// rule of what a row counts is usageOf.

// tblUsage holds one usageRow per owner. It is in the schema but not in
// tables, so Dump never writes it and Restore never reads it.
const tblUsage = "usage"

var usageTable = idTable(tblUsage, func() any { return &usageRow{} })

// countedResources are the quota resources kept in counters, in the order
// of usageVec. The others (per-item limits, resources that do not exist)
// count 0.
var countedResources = [...]string{
	QuotaInstances, QuotaCores, QuotaRAM, QuotaKeyPairs, QuotaServerGroups,
	QuotaNetworks, QuotaSubnets, QuotaPorts, QuotaRouters, QuotaFloatingIPs,
	QuotaSecurityGroups, QuotaSecurityGroupRules, QuotaVolumes, QuotaGigabytes,
}

// Positions in usageVec.
const (
	uInstances = iota
	uCores
	uRAM
	uKeyPairs
	uServerGroups
	uNetworks
	uSubnets
	uPorts
	uRouters
	uFloatingIPs
	uSecGroups
	uSecRules
	uVolumes
	uGigabytes
	nUsage
)

// usageVec is an owner's counts, indexed like countedResources.
type usageVec [nUsage]int64

func (u *usageVec) add(o usageVec, sign int64) {
	for i := range u {
		u[i] += sign * o[i]
	}
}

// usageIndex is the position of a counted resource, or -1.
func usageIndex(resource string) int {
	for i, r := range countedResources {
		if r == resource {
			return i
		}
	}
	return -1
}

// usageRow is one owner's counters. ID is projectOwner or userOwner of
// the owner's id, so a project and a user of the same id never share one.
type usageRow struct {
	ID   string
	Used usageVec
}

func projectOwner(id string) string { return "p/" + id }
func userOwner(id string) string    { return "u/" + id }

// countedTables maps each table usageOf counts rows of to the usageVec
// positions its rows count.
var countedTables = map[string][]int{
	tblInstances: {uInstances, uCores, uRAM}, tblVolumes: {uVolumes, uGigabytes}, tblKeypairs: {uKeyPairs},
	tblServerGroups: {uServerGroups}, tblNetworks: {uNetworks}, tblSubnets: {uSubnets}, tblPorts: {uPorts},
	tblRouters: {uRouters}, tblFloatingIPs: {uFloatingIPs}, tblSecGroups: {uSecGroups}, tblSecRules: {uSecRules},
}

// usageOf is what one row of a counted table counts and for whom: a
// project's instances (with their flavor's cores and RAM), volumes (with
// their size), server groups and network resources; a user's key pairs.
// A row without an owner counts for no one (no quota reads an empty id).
// id is the row's primary key.
func usageOf(o any) (id, owner string, u usageVec) {
	one := func(i int, projectID string) (string, usageVec) {
		var v usageVec
		v[i] = 1
		return projectID, v
	}
	var who string
	switch r := o.(type) {
	case *Instance:
		id, who = r.ID, r.ProjectID
		u[uInstances], u[uCores], u[uRAM] = 1, int64(r.Flavor.VCPUs), int64(r.Flavor.RAMMB)
	case *Volume:
		id, who = r.ID, r.ProjectID
		u[uVolumes], u[uGigabytes] = 1, int64(r.SizeGB)
	case *Keypair:
		id = r.ID
		if r.UserID == "" {
			return id, "", usageVec{}
		}
		u[uKeyPairs] = 1
		return id, userOwner(r.UserID), u
	case *ServerGroup:
		id = r.ID
		who, u = one(uServerGroups, r.ProjectID)
	case *Network:
		id = r.ID
		who, u = one(uNetworks, r.ProjectID)
	case *Subnet:
		id = r.ID
		who, u = one(uSubnets, r.ProjectID)
	case *Port:
		id = r.ID
		who, u = one(uPorts, r.ProjectID)
	case *Router:
		id = r.ID
		who, u = one(uRouters, r.ProjectID)
	case *FloatingIP:
		id = r.ID
		who, u = one(uFloatingIPs, r.ProjectID)
	case *SecurityGroup:
		id = r.ID
		who, u = one(uSecGroups, r.ProjectID)
	case *SecurityGroupRule:
		id = r.ID
		who, u = one(uSecRules, r.ProjectID)
	default:
		panic(fmt.Sprintf("statedb: usageOf(%T): not a counted row", o)) // a programming error
	}
	if who == "" {
		return id, "", usageVec{}
	}
	return id, projectOwner(who), u
}

// countInsert runs write, which puts o in tbl in place of the row of
// the same id (if any), and adjusts the counters once it has succeeded.
func countInsert(txn *memdb.Txn, tbl string, o any, write func() error) error {
	if countedTables[tbl] == nil {
		return write()
	}
	id, owner, u := usageOf(o)
	old, err := txn.First(tbl, "id", id)
	if err != nil {
		return fmt.Errorf("read %s %s: %w", tbl, id, err)
	}
	if err := write(); err != nil {
		return err
	}
	switch {
	case old == nil:
		return addUsage(txn, owner, u, 1)
	case old == o:
		// The stored row was changed in place (apply code must copy
		// first), so what it counted before is lost: count the
		// table's resources again from its rows.
		return recountTable(txn, tbl)
	}
	_, oldOwner, ou := usageOf(old)
	if oldOwner == owner && ou == u {
		return nil
	}
	if err := addUsage(txn, oldOwner, ou, -1); err != nil {
		return err
	}
	return addUsage(txn, owner, u, 1)
}

// countDelete runs write, which removes the row of o's id from tbl, and
// takes what that row counted out of the counters once it has succeeded.
func countDelete(txn *memdb.Txn, tbl string, o any, write func() error) error {
	if countedTables[tbl] == nil {
		return write()
	}
	id, _, _ := usageOf(o)
	old, err := txn.First(tbl, "id", id)
	if err != nil {
		return fmt.Errorf("read %s %s: %w", tbl, id, err)
	}
	if err := write(); err != nil {
		return err
	}
	if old == nil {
		return nil
	}
	_, owner, u := usageOf(old)
	return addUsage(txn, owner, u, -1)
}

// addUsage adds sign × u to owner's counters; a row left all zero is
// removed, so the table holds only owners that hold something.
func addUsage(txn *memdb.Txn, owner string, u usageVec, sign int64) error {
	if owner == "" || u == (usageVec{}) {
		return nil
	}
	row := &usageRow{ID: owner}
	if cur, err := txn.First(tblUsage, "id", owner); err != nil {
		return fmt.Errorf("read usage of %s: %w", owner, err)
	} else if cur != nil {
		row.Used = cur.(*usageRow).Used
	}
	row.Used.add(u, sign)
	if row.Used == (usageVec{}) {
		if err := txn.Delete(tblUsage, row); err != nil && !errors.Is(err, memdb.ErrNotFound) {
			return fmt.Errorf("delete usage of %s: %w", owner, err)
		}
		return nil
	}
	if err := txn.Insert(tblUsage, row); err != nil {
		return fmt.Errorf("write usage of %s: %w", owner, err)
	}
	return nil
}

// recountTable sets every owner's counters of tbl's resources from tbl's
// rows, leaving those of other tables as they are.
func recountTable(txn *memdb.Txn, tbl string) error {
	fresh := map[string]usageVec{}
	it, err := txn.Get(tbl, "id")
	if err != nil {
		return fmt.Errorf("count %s: %w", tbl, err)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if _, owner, u := usageOf(o); owner != "" {
			s := fresh[owner]
			s.add(u, 1)
			fresh[owner] = s
		}
	}
	cur := map[string]usageVec{}
	if it, err = txn.Get(tblUsage, "id"); err != nil {
		return fmt.Errorf("read usage: %w", err)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		r := o.(*usageRow)
		cur[r.ID] = r.Used
	}
	for owner := range fresh {
		if _, ok := cur[owner]; !ok {
			cur[owner] = usageVec{}
		}
	}
	for _, owner := range slices.Sorted(maps.Keys(cur)) {
		var delta usageVec
		for _, i := range countedTables[tbl] {
			delta[i] = fresh[owner][i] - cur[owner][i]
		}
		if err := addUsage(txn, owner, delta, 1); err != nil {
			return err
		}
	}
	return nil
}

// rebuildUsage counts every owner's usage from the rows (a restored
// snapshot, which carries no counters).
func rebuildUsage(txn *memdb.Txn) error {
	for _, tbl := range slices.Sorted(maps.Keys(countedTables)) {
		if err := recountTable(txn, tbl); err != nil {
			return err
		}
	}
	return nil
}

// usageOfOwner reads owner's counters (all zero if it holds nothing).
func (sn *Snapshot) usageOfOwner(owner string) usageVec {
	if r, ok := get[usageRow](sn, tblUsage, owner); ok {
		return r.Used
	}
	return usageVec{}
}
