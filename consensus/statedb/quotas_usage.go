package statedb

import (
	"fmt"

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
		// The stored row was changed in place, so what it counted
		// before is lost: count the owner again from the rows.
		return recountOwner(txn, tbl, owner)
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
		if err := txn.Delete(tblUsage, row); err != nil && err != memdb.ErrNotFound {
			return fmt.Errorf("delete usage of %s: %w", owner, err)
		}
		return nil
	}
	if err := txn.Insert(tblUsage, row); err != nil {
		return fmt.Errorf("write usage of %s: %w", owner, err)
	}
	return nil
}

// recountOwner sets owner's counters of tbl's resources from tbl's rows.
func recountOwner(txn *memdb.Txn, tbl, owner string) error {
	if owner == "" {
		return nil
	}
	var fresh usageVec
	it, err := txn.Get(tbl, "id")
	if err != nil {
		return fmt.Errorf("recount %s: %w", tbl, err)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if _, w, u := usageOf(o); w == owner {
			fresh.add(u, 1)
		}
	}
	var cur usageVec
	if o, err := txn.First(tblUsage, "id", owner); err != nil {
		return fmt.Errorf("read usage of %s: %w", owner, err)
	} else if o != nil {
		cur = o.(*usageRow).Used
	}
	// Only tbl's resources change: the others come from other tables.
	var delta usageVec
	for _, i := range countedTables[tbl] {
		delta[i] = fresh[i] - cur[i]
	}
	return addUsage(txn, owner, delta, 1)
}

// rebuildUsage counts every owner's usage from the rows of a state that
// has no counters yet (a restored snapshot).
func rebuildUsage(txn *memdb.Txn) error {
	sums := map[string]usageVec{}
	for _, t := range tables {
		tbl := t.schema.Name
		if countedTables[tbl] == nil {
			continue
		}
		it, err := txn.Get(tbl, "id")
		if err != nil {
			return fmt.Errorf("count %s: %w", tbl, err)
		}
		for o := it.Next(); o != nil; o = it.Next() {
			if _, owner, u := usageOf(o); owner != "" {
				s := sums[owner]
				s.add(u, 1)
				sums[owner] = s
			}
		}
	}
	for owner, u := range sums {
		if err := addUsage(txn, owner, u, 1); err != nil {
			return err
		}
	}
	return nil
}

// usageRowOf reads owner's counters (all zero if it holds nothing).
func (sn *Snapshot) usageRowOf(owner string) usageVec {
	if r, ok := get[usageRow](sn, tblUsage, owner); ok {
		return r.Used
	}
	return usageVec{}
}
